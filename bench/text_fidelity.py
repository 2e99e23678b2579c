"""How faithful the embedded text model's default runtime (ONNX int8 on CPU) is to
transformers fp32, position by position.

transformers fp32 answers each prompt greedily; then both runtimes score the same
prompt + answer in one pass, and at every answer position we compare their next-token
distributions: top-1 agreement and KL(fp32 || runtime). ONNX fp32 must also answer
greedily token for token like transformers.
Last line: agreement=<top-1 agreement> kl=<mean KL, nats> positions=<n> fp32_greedy_equal=<yes|no>
    python bench/text_fidelity.py [--tokens 80]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from aigc_studio.catalog import Catalog
from aigc_studio.config import Settings
from aigc_studio.engines import text as text_engine
from aigc_studio.params import TextParams

PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rain forms, step by step.",
           "What are three good habits for learning a language?", "Describe a busy market in the morning.",
           "Give me a recipe for a simple tomato soup.", "Why is the sky blue?"]


def greedy_ids(text_model, prompt: str, tokens: int) -> list[int]:
    params = TextParams(greedy=True, max_new_tokens=tokens, repetition_penalty=1.0, seed=0)
    return [token.id for _, token in text_engine.generate(text_model, prompt, [params])]


def top1_agreement(reference, tested, tokens: int, verbose: bool = False) -> tuple[list[bool], list[float]]:
    """Per answer position over PROMPTS: (top-1 agreement, KL(reference || tested)), where
    reference answers each prompt greedily and both score the same prompt + answer."""
    agree, kls = [], []
    for prompt in PROMPTS:
        answer = greedy_ids(reference, prompt, tokens)
        prompt_ids = text_engine.encode_prompt(reference, prompt)
        ids = torch.cat([prompt_ids, torch.tensor([answer])], dim=1)
        start = prompt_ids.shape[1] - 1  # the logits that predict the answer's tokens
        expected = torch.log_softmax(reference.backend.logits(ids)[start:-1], dim=-1)
        got = torch.log_softmax(tested.backend.logits(ids)[start:-1], dim=-1)
        agree += (expected.argmax(-1) == got.argmax(-1)).tolist()
        kls += (expected.exp() * (expected - got)).sum(-1).tolist()
        if verbose:
            print(f"{prompt[:40]:40s} positions {len(answer):3d}  agreement {sum(agree[-len(answer):]) / len(answer):.3f}")
    return agree, kls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings.from_env()
    spec = Catalog.for_preset("offline").get(None, "text")
    default = text_engine.resolve_runtime("auto", spec, "cpu")
    load = lambda runtime: text_engine.load(spec, "cpu", torch.float32, settings.cache_dir, print, runtime=runtime, threads=1)
    reference, tested, onnx_fp32 = load("torch"), load(default), load("onnx-fp32")

    agree, kls = top1_agreement(reference, tested, args.tokens, verbose=True)
    fp32_prompt = "Write a long story about a lighthouse keeper and the sea."
    torch_answer = greedy_ids(reference, fp32_prompt, 128)
    onnx_answer = greedy_ids(onnx_fp32, fp32_prompt, 128)
    equal = torch_answer == onnx_answer
    if not equal:
        first = next(i for i, (a, b) in enumerate(zip(torch_answer + [-1], onnx_answer + [-2])) if a != b)
        print(f"ONNX fp32 parts from transformers at token {first} of {len(torch_answer)}")
    print(f"runtime {default} against transformers fp32")
    print(f"agreement={sum(agree) / len(agree):.3f} kl={sum(kls) / len(kls):.4f} positions={len(agree)} "
          f"fp32_greedy_equal={'yes' if equal else 'no'} ({len(torch_answer)} tokens)")


if __name__ == "__main__":
    main()
