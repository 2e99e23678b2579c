"""Tokens per second of the embedded text model: the studio's default runtime against
transformers fp32 `generate()`, side by side in one run, at 1 thread (--threads: every
contender with that many; the thread policy gives a generation 2 threads from 6 cores up).

Every round runs each contender once on the same chat prompt (greedy, 128 new tokens),
so machine noise hits them alike; the median round counts. Also printed per runtime:
load time (conversion excluded: done once before timing) and time to first token;
then sampled with the model's default knobs against greedy, and 4 batched side-by-side
columns against one column (time per step).
Last line: ratio=<default runtime / generate()> columns4=<4 columns / 1 column> sampled=<sampled / greedy>
agreement=<top-1 agreement of the default runtime with transformers fp32, as bench/text_fidelity.py measures it>
    python bench/text_speed.py [--rounds 3] [--tokens 128] [--threads 1]
(llama.cpp runs the same GGUF at ~80 tok/s on this kind of machine, for scale.)
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aigc_studio.models import huge_pages_environment  # noqa: E402

if __name__ == "__main__" and (environment := huge_pages_environment(os.environ)) is not None:
    # as app.py runs: glibc's malloc on huge pages; it reads its tunables only at start
    os.execve(sys.executable, [sys.executable, *sys.argv], environment)

import torch

from aigc_studio.catalog import Catalog
from aigc_studio.config import Settings
from aigc_studio.engines import text as text_engine
from aigc_studio.params import TextParams
from text_fidelity import top1_agreement  # bench/ is this script's folder, first on sys.path

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def generate_rate(text_model: text_engine.TextModel, tokens: int) -> tuple[float, float]:
    """(tok/s, seconds to the first token) of transformers' own generate(), greedy."""
    ids = text_engine.encode_prompt(text_model, PROMPT)
    start = time.perf_counter()
    with torch.inference_mode():
        first = text_model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                                          pad_token_id=text_model.tokenizer.pad_token_id)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = text_model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                        min_new_tokens=tokens, do_sample=False,
                                        pad_token_id=text_model.tokenizer.pad_token_id)
    assert first.shape[1] == ids.shape[1] + 1
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - start), ttft


def loop_rate(text_model: text_engine.TextModel, columns: list[TextParams]) -> tuple[float, float, int]:
    """(steps/s, seconds to the first token, steps) of the studio's loop over `columns`."""
    start = time.perf_counter()
    ttft, steps = None, [0] * len(columns)
    for index, _ in text_engine.generate(text_model, PROMPT, columns):
        ttft = ttft or time.perf_counter() - start
        steps[index] += 1
    return max(steps) / (time.perf_counter() - start), ttft, max(steps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="threads of every contender (torch and ONNX Runtime)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    spec = Catalog.for_preset("offline").get(None, "text")
    default = text_engine.resolve_runtime("auto", spec, "cpu")
    load = lambda runtime: text_engine.load(spec, "cpu", torch.float32, settings.cache_dir, print, runtime=runtime,
                                            threads=args.threads)
    models, load_s = {}, {}
    for runtime in dict.fromkeys([default, "onnx-fp32", "torch"]):
        load(runtime)  # converts once
        start = time.perf_counter()
        models[runtime] = load(runtime)
        load_s[runtime] = time.perf_counter() - start
    reference = models["torch"]

    greedy = TextParams(greedy=True, max_new_tokens=args.tokens, repetition_penalty=1.0, seed=0)
    # the model's recommended knobs, as a newcomer's first answer uses them
    sampled = TextParams(**{**TextParams().__dict__, **spec.defaults, "max_new_tokens": args.tokens, "seed": 1})
    for model in models.values():  # warm-up
        loop_rate(model, [TextParams(greedy=True, max_new_tokens=8)])
    rates: dict[str, list[float]] = {"generate()": [], **{name: [] for name in models}}
    ttfts: dict[str, list[float]] = {name: [] for name in rates}
    sampled_rates, four_columns = [], []
    for round_ in range(args.rounds):
        rate, ttft = generate_rate(reference, args.tokens)
        rates["generate()"].append(rate)
        ttfts["generate()"].append(ttft)
        for name, model in models.items():
            rate, ttft, _ = loop_rate(model, [greedy])
            rates[name].append(rate)
            ttfts[name].append(ttft)
        sampled_rates.append(loop_rate(models[default], [sampled])[0])
        four = [TextParams(**{**sampled.__dict__, "seed": seed}) for seed in range(1, 5)]
        four_columns.append(loop_rate(models[default], four)[0])
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {r[-1]:.1f}" for name, r in rates.items()) + " tok/s")

    median = {name: statistics.median(r) for name, r in rates.items()}
    print("\nruntime        tok/s   first token   load")
    for name in rates:
        load = f"{load_s[name]:.2f} s" if name in load_s else "(transformers generate, fp32)"
        print(f"{name:12s} {median[name]:7.1f}   {statistics.median(ttfts[name]):7.3f} s   {load}")
    # paired within each round, like columns4: the machine's load drifts between rounds
    ratio = statistics.median(studio / reference for studio, reference in zip(rates[default], rates["generate()"]))
    # time per step, 4 columns / 1, paired within each round so a noisy round spoils one pair, not the figure
    columns4 = statistics.median(one / four for one, four in zip(sampled_rates, four_columns))
    sampled_ratio = statistics.median(sampled_rates) / median[default]
    print(f"default runtime: {default}, {args.threads} thread(s); sampled knobs: {spec.defaults}")
    agree, _ = top1_agreement(reference, models[default], 80)
    print(f"ratio={ratio:.2f} columns4={columns4:.2f} sampled={sampled_ratio:.2f} agreement={sum(agree) / len(agree):.3f}")


if __name__ == "__main__":
    main()
