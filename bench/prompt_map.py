"""Prompt maps on the embedded shapes-diffusion model (condition contrast): how much of each
word's map falls inside the generated shape, over 48 images (every colour x shape, 4 seeds).

- shape_in_mask: the share of the shape word's map inside the shape's mask (the checker's
  non-background pixels: > 60 from white at 16x16), averaged over the images (bar >= 0.7).
- colour_in_mask: the same for the colour word.
- baseline: the mask's mean area fraction: what a map spread evenly over the image would score.
The maps are the studio's own: the contrast above its median (the floor every pixel gets when a
word is dropped), divided by its peak.
Runs through engines/image_inside.prompt_maps, as the studio does, one thread.
    python bench/prompt_map.py [--steps 30] [--per-class 4]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from aigc_studio import shapes
from aigc_studio.engines import image_inside

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_to_image import CLASSES, mask, shapes_setup  # noqa: E402


def main() -> None:
    args, pipe, params = shapes_setup()
    started = time.perf_counter()
    share = {"colour": [], "shape": []}
    areas, adherent = [], []
    for k, (colour, shape) in enumerate(CLASSES):
        for i in range(args.per_class):
            prompt = f"a {colour} {shape}"
            image, words, _ = image_inside.prompt_maps(pipe, prompt, params, 2000 + k * args.per_class + i)
            inside = mask(image)
            areas.append(float(inside.mean()))
            adherent.append(shapes.check(image) == shapes.Condition(colour, shape))
            for word, role in zip(words, ("colour", "shape")):
                share[role].append(float((word.heat * inside).sum() / max(word.heat.sum(), 1e-9)))
    print(f"images={len(areas)}")
    print(f"steps={args.steps}")
    print(f"adherence={np.mean(adherent):.3f}")
    print(f"shape_in_mask={np.mean(share['shape']):.3f}")
    print(f"colour_in_mask={np.mean(share['colour']):.3f}")
    print(f"baseline={np.mean(areas):.3f}")
    print(f"seconds={time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
