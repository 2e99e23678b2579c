"""Seconds per image through Studio vs a direct pipeline call on the same model and knobs,
and a batched-seed grid vs the same cells generated one call at a time.

Rounds alternate so machine noise hits both alike. Prints `ratio=<raw seconds / studio seconds>`
(1.0 = no overhead) and `batched_speedup=<sequential / batched>`.
    python bench/image_overhead.py [--rounds 3] [--steps 30]
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
from aigc_studio.engines.image import set_scheduler
from aigc_studio.params import ImageParams

PROMPT = "a yellow triangle"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    settings = Settings.from_env()
    settings.threads = args.threads
    studio = Studio(settings)
    knobs = studio.params("image", steps=args.steps, seed=1)
    studio.load("image")
    pipe = studio.models.get(studio.model_spec("image").id, lambda: None).value

    def raw() -> None:
        set_scheduler(pipe, knobs.scheduler)
        pipe(PROMPT, num_inference_steps=knobs.steps, guidance_scale=knobs.guidance,
             generator=torch.Generator("cpu").manual_seed(knobs.seed))

    def through_studio() -> None:
        studio.image(PROMPT, steps=knobs.steps, seed=knobs.seed, scheduler=knobs.scheduler, guidance=knobs.guidance)

    raw(), through_studio()  # warm-up
    raw_s, studio_s = [], []
    for i in range(args.rounds):
        raw_s.append(timed(raw))
        studio_s.append(timed(through_studio))
        print(f"round {i}: raw {raw_s[-1]:.3f} s/image, studio {studio_s[-1]:.3f} s/image")

    seeds = [("", ImageParams(**{**knobs.__dict__, "seed": s})) for s in range(8)]
    batched = statistics.median(timed(lambda: studio.images(PROMPT, seeds)) for _ in range(args.rounds))
    sequential = statistics.median(timed(lambda: [studio.images(PROMPT, [cell]) for cell in seeds]) for _ in range(args.rounds))
    print(f"model={studio.model_spec('image').id} steps={args.steps} scheduler={knobs.scheduler} threads={args.threads}")
    print(f"8 seeds: batched {batched:.2f} s, sequential {sequential:.2f} s, batched_speedup={sequential / batched:.2f}")
    print(f"raw={statistics.median(raw_s):.3f} s/image studio={statistics.median(studio_s):.3f} s/image")
    print(f"ratio={statistics.median(raw_s) / statistics.median(studio_s):.3f}")


if __name__ == "__main__":
    main()
