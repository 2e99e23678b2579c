"""X/Y comparison grids: which knob values go in which cell, and the labelled grid image.

An axis is an ImageParams knob, or `model` (catalog ids: diffusion vs VAE vs GAN
for one prompt and seed). Also the animated image of a latent walk.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

from aigc_studio import params as knobs
from aigc_studio.params import ImageParams, ParamError

MAX_AXIS_VALUES = 6
MAX_GRID_MEGAPIXELS = 24  # about 72 MB as RGB: a 6 x 6 grid of 768 x 768 cells
LABEL_HEIGHT = 28
GAP = 6  # pixels between cells
GAP_COLOUR = (200, 200, 200)
MODEL_AXIS = "model"  # an axis over catalog model ids instead of a knob


@dataclass
class GridPlan:
    x_knob: str
    x_labels: list[str]
    y_knob: str | None
    y_labels: list[str]
    cells: list[tuple[str, ImageParams]]  # row-major: y outer, x inner
    models: list[str | None] = field(default_factory=list)  # per cell, when `model` is an axis (else empty)


def plan(base: ImageParams, x_knob: str, x_values: list, y_knob: str | None = None, y_values: list | None = None) -> GridPlan:
    """Every cell's params: base with the x (and y) knob set. The seed stays fixed
    across cells unless seed is an axis. 1-6 values per axis."""
    base = dataclasses.replace(knobs.resolve_seed(knobs.validate(base)), batch_size=1)  # one image per cell
    axes = [("x", x_knob, x_values)] + ([("y", y_knob, y_values or [])] if y_knob else [])
    for axis, name, values in axes:
        if name != MODEL_AXIS:
            knobs.spec(ImageParams, name)
        if name == "batch_size":
            raise ParamError(f"{axis}_knob", "batch_size cannot be an axis: every cell is one image")
        if not 1 <= len(values) <= MAX_AXIS_VALUES:
            raise ParamError(f"{axis}_values", f"give 1 to {MAX_AXIS_VALUES} values for {name}, got {len(values)}")
    if y_knob == x_knob:
        raise ParamError("y_knob", f"must differ from x_knob ({x_knob})")
    rows = y_values if y_knob else [None]
    cells, models = [], []
    for y in rows:
        for x in x_values:
            changes = {x_knob: x} | ({y_knob: y} if y_knob else {})
            model = str(changes.pop(MODEL_AXIS)).strip() if MODEL_AXIS in changes else None
            cell = knobs.resolve_seed(knobs.validate(dataclasses.replace(base, **changes)))  # a -1 axis value too
            label = ", ".join(f"{k}={model if k == MODEL_AXIS else getattr(cell, k)}"
                              for k in ([x_knob, y_knob] if y_knob else [x_knob]))
            cells.append((label, cell))
            models.append(model)
    megapixels = sum(cell.width * cell.height for _, cell in cells) / 1e6
    if megapixels > MAX_GRID_MEGAPIXELS:
        raise ParamError("width/height", f"the grid's {len(cells)} cells make {megapixels:.1f} megapixels, at most "
                                         f"{MAX_GRID_MEGAPIXELS}: use fewer values or a smaller size")
    axis_label = lambda name, i: f"{name}={models[i] if name == MODEL_AXIS else getattr(cells[i][1], name)}"
    x_labels = [axis_label(x_knob, i) for i in range(len(x_values))]
    y_labels = [axis_label(y_knob, r * len(x_values)) for r in range(len(rows))] if y_knob else []
    return GridPlan(x_knob, x_labels, y_knob, y_labels, cells, models if MODEL_AXIS in (x_knob, y_knob) else [])


def render(images: list[Image.Image], grid: GridPlan) -> Image.Image:
    """One image: column labels centred on top, row labels centred on the left, cells
    row-major with GAP pixels of grey between them (white pictures do not merge)."""
    columns = len(grid.x_labels)
    rows = max(1, len(grid.y_labels))
    width, height = max(i.width for i in images), max(i.height for i in images)
    font = ImageFont.load_default(size=14)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max([int(measure.textlength(t, font=font)) + 12 for t in grid.y_labels] or [0])
    canvas = Image.new("RGB", (left + columns * (width + GAP) + GAP, LABEL_HEIGHT + rows * (height + GAP) + GAP),
                       GAP_COLOUR)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, LABEL_HEIGHT - 1), fill="white")
    if left:
        draw.rectangle((0, 0, left - 1, canvas.height), fill="white")
    for c, label in enumerate(grid.x_labels):
        centre = cell_origin(left, c, 0, width, height)[0] + width // 2
        draw.text((centre, LABEL_HEIGHT // 2), label, fill="black", font=font, anchor="mm")
    for r, label in enumerate(grid.y_labels):
        centre = cell_origin(left, 0, r, width, height)[1] + height // 2
        draw.text((left // 2, centre), label, fill="black", font=font, anchor="mm")
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        canvas.paste(image, cell_origin(left, c, r, width, height))
    return canvas


def cell_origin(left: int, column: int, row: int, width: int, height: int) -> tuple[int, int]:
    """Top-left pixel of a cell in a rendered grid."""
    return left + GAP + column * (width + GAP), LABEL_HEIGHT + GAP + row * (height + GAP)


def animate(frames: list[Image.Image], recipe_json: str, seconds_per_frame: float = 0.15,
            image_format: str = "GIF") -> bytes:
    """An animated GIF (or WebP) of frames that loops back and forth, its recipe in the
    file's comment (GIF) or XMP (WebP) field."""
    sequence = [f.convert("RGB") for f in frames]
    sequence += sequence[-2:0:-1]  # ping-pong: the walk returns to its start
    buffer = io.BytesIO()
    extra = {"comment": recipe_json.encode()} if image_format == "GIF" else {"xmp": recipe_json.encode()}
    sequence[0].save(buffer, format=image_format, save_all=True, append_images=sequence[1:],
                     duration=int(seconds_per_frame * 1000), loop=0, **extra)
    return buffer.getvalue()
