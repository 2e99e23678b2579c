"""CPU tokens/s of the embedded text model in float32 and bfloat16, side by side in one run,
and how far bfloat16's outputs drift from float32's.

Rounds alternate between the two so machine noise hits both alike. Drift: next-token
distributions over a few prompts (largest probability difference, KL divergence,
same likeliest token), greedy answers (tokens in common before they part), and
perplexity of a passage.
Last line: fp32=<tok/s> bf16=<tok/s> speedup=<bf16/fp32> within_tolerance=<yes|no>
    python bench/text_dtype.py [--rounds 3] [--tokens 48] [--threads 1]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from aigc_studio.catalog import Catalog
from aigc_studio.config import Settings
from aigc_studio.engines import text as text_engine
from aigc_studio.params import TextParams

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "Explain photosynthesis in one sentence.",
           "List three fruits.", "How do I boil an egg?", "Who wrote Hamlet?"]
PASSAGE = ("The river runs through the old town, past the market and the stone bridge. In the morning the "
           "fishermen bring their boats to the shore, and children walk along the bank on their way to school.")
# bf16 may replace fp32 on CPU only if, on every prompt, the likeliest next token is the
# same and no probability moves by more than MAX_PROB_DIFF, and perplexity moves < MAX_PPL_CHANGE.
MAX_PROB_DIFF = 0.05
MAX_PPL_CHANGE = 0.05


def tokens_per_second(text_model: text_engine.TextModel, tokens: int) -> float:
    params = TextParams(greedy=True, max_new_tokens=tokens, repetition_penalty=1.0, seed=0)
    ids = text_engine.encode_prompt(text_model, "Write a long story about a lighthouse keeper.")
    start = time.perf_counter()
    with torch.inference_mode():
        out = text_model.model.generate(ids, attention_mask=torch.ones_like(ids), min_new_tokens=tokens,
                                        pad_token_id=text_model.tokenizer.pad_token_id, do_sample=False,
                                        max_new_tokens=params.max_new_tokens)
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start)


def greedy_ids(text_model: text_engine.TextModel, prompt: str, tokens: int) -> list[int]:
    params = TextParams(greedy=True, max_new_tokens=tokens, repetition_penalty=1.0, seed=0)
    ids = text_engine.encode_prompt(text_model, prompt)
    with torch.inference_mode():
        out = text_model.model.generate(ids, attention_mask=torch.ones_like(ids),
                                        pad_token_id=text_model.tokenizer.pad_token_id, do_sample=False,
                                        max_new_tokens=params.max_new_tokens)
    return out[0, ids.shape[1]:].tolist()


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    spec = Catalog.for_preset("offline").get(None, "text")
    models = {name: text_engine.load(spec, "cpu", dtype, settings.cache_dir, print, runtime="torch")
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    for model in models.values():  # warm-up
        tokens_per_second(model, 8)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(args.rounds):
        for name, model in models.items():
            rates[name].append(tokens_per_second(model, args.tokens))
        print(f"round {round_index}: " + ", ".join(f"{n} {r[-1]:.1f} tok/s" for n, r in rates.items()))

    worst_diff, worst_kl, same_top = 0.0, 0.0, 0
    for prompt in PROMPTS:
        probs = {}
        for name, model in models.items():
            ids = text_engine.encode_prompt(model, prompt)
            probs[name] = torch.softmax(text_engine.next_token_logits(model, ids), dim=-1)
        worst_diff = max(worst_diff, float((probs["fp32"] - probs["bf16"]).abs().max()))
        kl = float((probs["fp32"] * (probs["fp32"].clamp_min(1e-12).log() - probs["bf16"].clamp_min(1e-12).log())).sum())
        worst_kl = max(worst_kl, kl)
        same_top += int(probs["fp32"].argmax() == probs["bf16"].argmax())
    prefixes = [common_prefix(greedy_ids(models["fp32"], p, 24), greedy_ids(models["bf16"], p, 24)) for p in PROMPTS[:3]]
    ppl = {name: text_engine.perplexity(model, PASSAGE)[0] for name, model in models.items()}
    ppl_change = abs(ppl["bf16"] - ppl["fp32"]) / ppl["fp32"]

    fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    ok = same_top == len(PROMPTS) and worst_diff <= MAX_PROB_DIFF and ppl_change <= MAX_PPL_CHANGE
    print(f"model={spec.id} threads={args.threads} tokens={args.tokens} rounds={args.rounds}")
    print(f"next token over {len(PROMPTS)} prompts: same likeliest token {same_top}/{len(PROMPTS)}, "
          f"largest probability difference {worst_diff:.4f} (limit {MAX_PROB_DIFF}), largest KL {worst_kl:.5f} nats")
    print(f"greedy answers (24 tokens) agree for the first {prefixes} tokens")
    print(f"perplexity of the passage: fp32 {ppl['fp32']:.3f}, bf16 {ppl['bf16']:.3f} ({100 * ppl_change:.2f}% apart, "
          f"limit {100 * MAX_PPL_CHANGE:.0f}%)")
    print(f"fp32={fp32:.2f} bf16={bf16:.2f} speedup={bf16 / fp32:.2f} within_tolerance={'yes' if ok else 'no'}")


if __name__ == "__main__":
    main()
