"""The shapes world of the embedded image model: vocabulary, prompt parsing,
procedural renders (training data) and a deterministic checker.

Pure PIL/numpy: the training script, the image engine and the tests share it.
A condition is a pair (colour, shape); either may be None ("any"), which is
also what the classifier-free-guidance null condition is made of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Synonyms a creator is likely to type; each maps to a canonical word.
_SYNONYMS = {
    "round": "circle", "disc": "circle", "disk": "circle", "dot": "circle", "ball": "circle",
    "box": "square", "rectangle": "square", "block": "square",
    "pyramid": "triangle",
}
BACKGROUND = (255, 255, 255)
NATIVE_SIZE = 16
# Shape side as a fraction of the canvas: large enough that a circle and a
# square still differ at 16x16 pixels.
MIN_FRACTION, MAX_FRACTION = 0.45, 0.85
# Number of embedding rows: (4 colours + any) x (3 shapes + any).
NUM_CONDITIONS = (len(COLOURS) + 1) * (len(SHAPES) + 1)


class UnknownPromptError(ValueError):
    """A prompt names no colour and no shape of the shapes vocabulary."""


@dataclass(frozen=True)
class Condition:
    colour: str | None = None
    shape: str | None = None

    @property
    def label(self) -> int:
        """Row of the UNet's class embedding; None counts as 'any'."""
        c = COLOUR_NAMES.index(self.colour) if self.colour else len(COLOUR_NAMES)
        s = SHAPES.index(self.shape) if self.shape else len(SHAPES)
        return c * (len(SHAPES) + 1) + s

    @property
    def text(self) -> str:
        return " ".join(w for w in (self.colour, self.shape) if w) or "(unconditional)"


NULL_CONDITION = Condition()


def vocabulary_text() -> str:
    return f"colours: {', '.join(COLOUR_NAMES)}; shapes: {', '.join(SHAPES)}"


def parse_prompt(prompt: str, allow_empty: bool = False) -> Condition:
    """Map free text to a Condition: case-insensitive, extra words ignored,
    the first colour and first shape word win ("draw a small yellow triangle please")."""
    colour = shape = None
    for word in re.findall(r"[a-z]+", prompt.lower()):
        word = _canonical(word)
        if colour is None and word in COLOURS:
            colour = word
        elif shape is None and word in SHAPES:
            shape = word
    if colour is None and shape is None and not allow_empty:
        # the vocabulary first: UI messages are cut at a few hundred characters, a prompt may be thousands
        quoted = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        raise UnknownPromptError(
            f"prompt: use at least one of the {vocabulary_text()} "
            f"(the embedded shapes model knows no word in {quoted!r})"
        )
    return Condition(colour, shape)


def _canonical(word: str) -> str:
    """The vocabulary word for a synonym or plural ("balls" -> "circle"), else word."""
    for candidate in (word, word[:-1] if word.endswith("s") else word, word[:-2] if word.endswith("es") else word):
        candidate = _SYNONYMS.get(candidate, candidate)
        if candidate in SHAPES or candidate in COLOURS:
            return candidate
    return word


def render(colour: str, shape: str, rng: np.random.Generator, size: int = NATIVE_SIZE) -> Image.Image:
    """Draw one shape of random size and position on a plain background.

    Drawn at 8x and box-downsampled so edges are anti-aliased like a photo.
    """
    scale = 8
    big = size * scale
    side = rng.uniform(MIN_FRACTION, MAX_FRACTION) * big
    x0 = rng.uniform(0, big - side)
    y0 = rng.uniform(0, big - side)
    rgb = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[colour])
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    box = (x0, y0, x0 + side, y0 + side)
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    else:
        draw.polygon([(x0 + side / 2, y0), (x0 + side, y0 + side), (x0, y0 + side)], fill=rgb)
    return image.resize((size, size), Image.Resampling.BOX)


def check(image: Image.Image) -> Condition:
    """Read colour and shape back from an image (any size, shown at native size).

    Colour: the reference colour nearest to the mean of the pixels that are not
    background. Shape: soft area over soft bounding box (square ~1.0, circle
    ~0.79, triangle ~0.5), with soft coverage so sub-pixel edges count.
    """
    small = image.convert("RGB").resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32)
    distance = np.linalg.norm(pixels - np.array(BACKGROUND, np.float32), axis=-1)
    mask = distance > 60
    if mask.sum() < 3:
        return NULL_CONDITION
    mean = pixels[mask].mean(axis=0)
    colour = min(COLOURS, key=lambda n: np.linalg.norm(mean - np.array(COLOURS[n], np.float32)))
    full = np.linalg.norm(np.array(COLOURS[colour], np.float32) - np.array(BACKGROUND, np.float32))
    coverage = np.clip(distance / full, 0.0, 1.0)
    coverage[coverage < 0.15] = 0.0  # ignore faint speckle
    width = coverage.max(axis=0).sum()
    height = coverage.max(axis=1).sum()
    fill = coverage.sum() / max(width * height, 1e-6)
    # A triangle's top half holds ~1/4 of its area, a circle's or square's ~1/2.
    top_half_mass = _top_half_mass(coverage.sum(axis=1))
    if top_half_mass < 0.36 or fill < 0.62:
        shape = "triangle"
    elif fill > 0.9:
        shape = "square"
    else:
        shape = "circle"
    return Condition(colour, shape)


def _top_half_mass(rows: np.ndarray) -> float:
    """Share of the shape's mass above the middle of its vertical extent."""
    total = rows.sum()
    occupied = np.nonzero(rows > 0)[0]
    first, last = occupied[0], occupied[-1] + 1
    weights = rows[first:last]
    middle = (last - first) / 2
    cut = int(middle)
    above = weights[:cut].sum() + weights[cut] * (middle - cut) if cut < len(weights) else weights.sum()
    return float(above / total)
