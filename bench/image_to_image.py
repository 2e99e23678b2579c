"""Image to image (SDEdit) on the embedded shapes-diffusion model, measured with the
deterministic checker, procedural renders as inputs (48: every colour x shape, 4 seeds each).

- adherence_full: at strength 1.0 the output follows the prompt (a colour and shape other than
  the input's), whatever the input: the checker reads the prompt back (bar >= 0.90).
- keep_low: at strength 0.3 the output keeps the input's shape and place: mean intersection over
  union of the non-background masks (the checker's: > 60 from white at 16x16) (bar >= 0.7).
- monotonic: the mean distance to the input (mean |pixel difference| in [0, 1]) rises with strength
  over 0.1 ... 1.0: Spearman's rank correlation of the means (bar >= 0.9).
Runs through the image engine (engines/image.generate), one image per call, one thread.
    python bench/image_to_image.py [--steps 30] [--per-class 4]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from aigc_studio import shapes
from aigc_studio.catalog import EMBEDDED_MODELS
from aigc_studio.engines import image as image_engine
from aigc_studio.params import ImageParams
from aigc_studio.train import load_pipeline

STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CLASSES = [(c, s) for c in shapes.COLOUR_NAMES for s in shapes.SHAPES]


def mask(picture) -> np.ndarray:
    """The checker's non-background pixels (shapes.check: > 60 from white at 16x16)."""
    small = np.asarray(picture.convert("RGB").resize((shapes.NATIVE_SIZE,) * 2), dtype=np.float32)
    return np.linalg.norm(small - np.array(shapes.BACKGROUND, np.float32), axis=-1) > 60


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def spearman(xs, ys) -> float:
    rx, ry = np.argsort(np.argsort(xs)), np.argsort(np.argsort(ys))
    return float(np.corrcoef(rx, ry)[0, 1])


def cases(per_class: int):
    """(input picture, prompt, seed): the input a render of one class, the prompt the next class
    (another colour and shape), so following the prompt and keeping the input differ."""
    out = []
    for k, (colour, shape) in enumerate(CLASSES):
        target_colour = shapes.COLOUR_NAMES[(shapes.COLOUR_NAMES.index(colour) + 1) % len(shapes.COLOUR_NAMES)]
        target_shape = shapes.SHAPES[(shapes.SHAPES.index(shape) + 1) % len(shapes.SHAPES)]
        for i in range(per_class):
            seed = 1000 + k * per_class + i
            out.append((shapes.render(colour, shape, np.random.default_rng(seed)), f"a {target_colour} {target_shape}",
                        seed))
    return out


def shapes_setup() -> tuple[argparse.Namespace, object, ImageParams]:
    """(the --steps/--per-class arguments, the embedded shapes pipeline, its default knobs at 16x16),
    on one thread: what this bench and bench/prompt_map.py start from."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    defaults = next(s for s in EMBEDDED_MODELS if s.id == "shapes-diffusion").defaults
    params = ImageParams(steps=args.steps, guidance=defaults["guidance"], scheduler=defaults["scheduler"],
                         width=shapes.NATIVE_SIZE, height=shapes.NATIVE_SIZE)
    return args, load_pipeline(), params


def main() -> None:
    args, pipe, base = shapes_setup()
    started = time.perf_counter()
    inputs = cases(args.per_class)
    distances = {s: [] for s in STRENGTHS}
    follows, keeps = [], []
    for picture, prompt, seed in inputs:
        source = np.asarray(picture, dtype=np.float32) / 255
        for strength in STRENGTHS:
            params = ImageParams(**{**base.__dict__, "strength": strength})
            out = image_engine.generate(pipe, [prompt], params, [seed], init_image=picture)[0]
            distances[strength].append(float(np.abs(np.asarray(out, dtype=np.float32) / 255 - source).mean()))
            if strength == 1.0:
                follows.append(shapes.check(out) == shapes.parse_prompt(prompt))
            if strength == 0.3:
                keeps.append(iou(mask(out), mask(picture)))
    means = [float(np.mean(distances[s])) for s in STRENGTHS]
    rho = spearman(list(STRENGTHS), means)
    print(f"images={len(inputs)}")
    print(f"steps={args.steps}")
    print(f"adherence_full={np.mean(follows):.3f}")
    print(f"keep_low={np.mean(keeps):.3f}")
    print("distance_by_strength=" + ",".join(f"{s}:{m:.4f}" for s, m in zip(STRENGTHS, means)))
    print(f"spearman={rho:.3f}")
    print(f"monotonic={'true' if rho >= 0.9 else 'false'}")
    print(f"seconds={time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
