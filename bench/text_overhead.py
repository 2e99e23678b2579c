"""Tokens/s through Studio (streaming, every token with its probability and alternatives)
vs a direct model.generate, same model and settings.

Rounds alternate between the two so machine noise hits both alike.
Last line: ratio=<studio/raw> (1.0 = no overhead).
    python bench/text_overhead.py [--rounds 3] [--tokens 64]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from aigc_studio import Studio
from aigc_studio.config import Settings
from aigc_studio.engines.text import encode_prompt, generation_kwargs

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    settings = Settings.from_env()
    settings.threads = args.threads
    studio = Studio(settings)
    params = studio.params("text", greedy=True, max_new_tokens=args.tokens, seed=0, repetition_penalty=1.0)
    studio.load("text")
    loaded = studio.models.get(studio.model_spec("text").id, lambda: None).value
    input_ids = encode_prompt(loaded, PROMPT)

    def raw() -> int:
        with torch.inference_mode():
            out = loaded.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                        pad_token_id=loaded.tokenizer.pad_token_id, **generation_kwargs(params))
        return out.shape[1] - input_ids.shape[1]

    def through_studio() -> int:
        for update in studio.text_stream(PROMPT, params):
            pass
        return len(update.tokens)

    raw()  # warm-up both paths
    through_studio()
    raw_rates, studio_rates = [], []
    for round_index in range(args.rounds):
        start = time.perf_counter()
        tokens = raw()
        raw_rates.append(tokens / (time.perf_counter() - start))
        start = time.perf_counter()
        streamed = through_studio()
        studio_rates.append(streamed / (time.perf_counter() - start))
        assert streamed == tokens, f"greedy: studio streamed {streamed} tokens, raw made {tokens}"
        print(f"round {round_index}: raw {raw_rates[-1]:.1f} tok/s, studio {studio_rates[-1]:.1f} tok/s ({tokens} tokens)")
    raw_median, studio_median = statistics.median(raw_rates), statistics.median(studio_rates)
    print(f"model={studio.model_spec('text').id} device={studio.device} dtype={studio.dtype} threads={args.threads}")
    print(f"raw={raw_median:.2f} tok/s studio={studio_median:.2f} tok/s")
    print(f"ratio={studio_median / raw_median:.3f}")


if __name__ == "__main__":
    main()
