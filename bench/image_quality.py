"""Prompt adherence of the embedded shapes model, per guidance value and per scheduler,
scored by the deterministic checker over every colour x shape; plus seconds per image.
    python bench/image_quality.py [--per-class 20] [--steps 30]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from aigc_studio.train import evaluate, load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline()
    images = 12 * args.per_class
    print(f"{images} images per row, {args.steps} steps")
    for guidance in (0.0, 1.0, 2.0, 3.0, 5.0, 8.0):
        print(f"guidance={guidance:<4} scheduler=dpm++   adherence={evaluate(pipe, args.per_class, guidance, 'dpm++', args.steps):.3f}")
    for scheduler in ("ddpm", "ddim", "dpm++", "euler", "euler_a"):
        start = time.perf_counter()
        adherence = evaluate(pipe, args.per_class, 3.0, scheduler, args.steps)
        seconds = (time.perf_counter() - start) / images
        print(f"guidance=3.0  scheduler={scheduler:<7} adherence={adherence:.3f} seconds_per_image={seconds:.4f}")


if __name__ == "__main__":
    main()
