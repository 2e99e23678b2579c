"""Prompt adherence of the embedded shapes model, per guidance value and per scheduler,
scored by the deterministic checker over every colour x shape; plus seconds per image.
Then one row per model family (diffusion, VAE, GAN) at its default knobs: adherence,
diversity (mean pairwise pixel distance between seeds of one prompt), seconds per
image, weights size and training minutes.
    python bench/image_quality.py [--per-class 20] [--steps 30] [--families-only]
"""

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from aigc_studio.train import evaluate, load_pipeline

import numpy as np

from aigc_studio import families, shapes
from aigc_studio.catalog import EMBEDDED_MODELS
from aigc_studio.engines import image as image_engine
from aigc_studio.params import ImageParams
from aigc_studio.train import evaluate_family

# training minutes of the diffusion model on this machine (README; it logs no JSON)
DIFFUSION_TRAIN_MINUTES = 43.6


def diversity(draw, seeds: list[int]) -> float:
    """Mean over the 12 colour x shape prompts of the mean pairwise distance between the
    16x16 images of different seeds (mean absolute difference per pixel and channel, 0-1)."""
    per_prompt = []
    for colour, kind in itertools.product(shapes.COLOUR_NAMES, shapes.SHAPES):
        arrays = [np.asarray(im, np.float32) / 255 for im in draw(f"a {colour} {kind}", seeds)]
        per_prompt.append(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(arrays, 2)]))
    return float(np.mean(per_prompt))


def family_rows(per_class: int, diversity_seeds: int, models: tuple[str, ...] = ("shapes-diffusion", "shapes-vae", "shapes-gan")) -> None:
    """One row per model family at its catalog defaults, measured through the image engine."""
    specs = {s.id: s for s in EMBEDDED_MODELS}
    seeds = list(range(10_000, 10_000 + diversity_seeds))
    print(f"\nfamily rows: adherence over {12 * per_class} images (seeds 0..{per_class - 1} per prompt), "
          f"diversity over {diversity_seeds} seeds per prompt")
    print("| model | adherence | diversity | seconds/image | weights MB | training minutes |")
    print("|---|---|---|---|---|---|")
    for model_id in models:
        spec = specs[model_id]
        folder = Path(spec.location)
        if spec.kind == "shapes":
            pipe = load_pipeline(folder)
            d = spec.defaults
            knobs = ImageParams(steps=d["steps"], guidance=d["guidance"], scheduler=d["scheduler"], width=16, height=16)
            start = time.perf_counter()
            adherence = evaluate(pipe, per_class, d["guidance"], d["scheduler"], d["steps"])
            seconds = (time.perf_counter() - start) / (12 * per_class)
            draw = lambda prompt, s: image_engine.generate(pipe, [prompt] * len(s), knobs, s)
            weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
            minutes = DIFFUSION_TRAIN_MINUTES
        else:
            model = families.load(folder)
            knobs = ImageParams(**{k: v for k, v in spec.defaults.items() if k not in ("width", "height")}, width=16, height=16)
            start = time.perf_counter()
            adherence = evaluate_family(model, per_class, temperature=knobs.latent_temperature, truncation=knobs.truncation)
            seconds = (time.perf_counter() - start) / (12 * per_class)
            draw = lambda prompt, s: families.generate(model, [prompt] * len(s), s, knobs.latent_temperature, knobs.truncation)
            weights = folder / families.WEIGHTS
            minutes = json.loads((folder / families.TRAINING_LOG).read_text())["train_minutes"]
        spread = diversity(draw, seeds)
        print(f"| {model_id} | {adherence:.3f} | {spread:.3f} | {seconds:.4f} | {weights.stat().st_size / 2**20:.2f} | "
              f"{minutes:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--diversity-seeds", type=int, default=8)
    parser.add_argument("--families-only", action="store_true", help="only the row per model family")
    parser.add_argument("--models", default="shapes-diffusion,shapes-vae,shapes-gan", help="family rows: which models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.families_only:
        family_rows(args.per_class, args.diversity_seeds, tuple(args.models.split(",")))
        return
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
    family_rows(args.per_class, args.diversity_seeds, tuple(args.models.split(",")))


if __name__ == "__main__":
    main()
