"""How fast the attention view answers on the embedded text model, one CPU thread.

A prompt and answer of --tokens tokens in all (chat template included). The model is
loaded first (load_s: the torch copy the view reads; the app's ONNX model has no weights).
warm_s: the first /attention call on a context the studio has not seen (one forward pass with
eager attention, weights and matrix rounded into lists, the logit lens); the median of --runs
new contexts. cached_s: the same context again with another token, layer and head (no
forward pass). overview_s: the layer x head heat-map grid of a cached context.
    python bench/attention_view.py [--tokens 200] [--runs 3]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from aigc_studio.config import Settings
from aigc_studio.studio import Studio

PROMPT = "Tell me about the history of the lighthouse on the rocky coast, and the keepers who lived there."
STORY = ("The lighthouse stood on the rocks for two hundred years. Its keepers climbed the narrow stairs every "
         "evening to light the lamp, and in storms they stayed awake all night to watch the sea. ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings.from_env()
    settings.preset, settings.device, settings.dtype, settings.threads = "offline", "cpu", "auto", 1
    studio = Studio(settings)
    started = time.perf_counter()
    studio.attention("Hi")
    load_s = time.perf_counter() - started
    tokenizer = studio.models.get(f"{studio.model_spec('text').id}@torch", lambda: None).value.tokenizer
    prompt_tokens = len(studio.attention(PROMPT)["tokens"])
    words = tokenizer.encode(STORY * 20, add_special_tokens=False)
    warm = []
    openings = ["Once", "Long", "Many", "Today", "Still", "Where", "Every", "After", "Before", "Some"]
    for run in range(args.runs):  # each run a context never seen: a new first word
        first = tokenizer.encode(openings[run % len(openings)] * (1 + run // len(openings)), add_special_tokens=False)
        answer = [*first, *words][: args.tokens - prompt_tokens]
        started = time.perf_counter()
        view = studio.attention(PROMPT, answer=answer)
        warm.append(time.perf_counter() - started)
    started = time.perf_counter()
    studio.attention(PROMPT, answer=answer, position=len(view["tokens"]) // 2, layer=3, head=1)
    cached_s = time.perf_counter() - started
    started = time.perf_counter()
    studio.attention_overview(PROMPT, answer=answer, layer=3, head=1)
    overview_s = time.perf_counter() - started
    print(f"tokens={len(view['tokens'])} layers={view['layers']} heads={view['heads']} threads=1")
    print(f"load_s={load_s:.2f}")
    print(f"warm_s={statistics.median(warm):.3f} warm_runs={','.join(f'{w:.3f}' for w in warm)}")
    print(f"cached_s={cached_s:.3f} overview_s={overview_s:.3f}")


if __name__ == "__main__":
    main()
