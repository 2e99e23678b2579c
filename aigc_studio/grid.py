"""X/Y comparison grids: which knob values go in which cell, and the labelled grid image."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from aigc_studio import params as knobs
from aigc_studio.params import ImageParams, ParamError

MAX_AXIS_VALUES = 6
MAX_GRID_MEGAPIXELS = 24  # about 72 MB as RGB: a 6 x 6 grid of 768 x 768 cells
LABEL_HEIGHT = 28


@dataclass
class GridPlan:
    x_knob: str
    x_labels: list[str]
    y_knob: str | None
    y_labels: list[str]
    cells: list[tuple[str, ImageParams]]  # row-major: y outer, x inner


def plan(base: ImageParams, x_knob: str, x_values: list, y_knob: str | None = None, y_values: list | None = None) -> GridPlan:
    """Every cell's params: base with the x (and y) knob set. The seed stays fixed
    across cells unless seed is an axis. 1-6 values per axis."""
    base = dataclasses.replace(knobs.resolve_seed(knobs.validate(base)), batch_size=1)  # one image per cell
    axes = [("x", x_knob, x_values)] + ([("y", y_knob, y_values or [])] if y_knob else [])
    for axis, name, values in axes:
        knobs.spec(ImageParams, name)
        if name == "batch_size":
            raise ParamError(f"{axis}_knob", "batch_size cannot be an axis: every cell is one image")
        if not 1 <= len(values) <= MAX_AXIS_VALUES:
            raise ParamError(f"{axis}_values", f"give 1 to {MAX_AXIS_VALUES} values for {name}, got {len(values)}")
    if y_knob == x_knob:
        raise ParamError("y_knob", f"must differ from x_knob ({x_knob})")
    rows = y_values if y_knob else [None]
    cells = []
    for y in rows:
        for x in x_values:
            changes = {x_knob: x} | ({y_knob: y} if y_knob else {})
            cell = knobs.resolve_seed(knobs.validate(dataclasses.replace(base, **changes)))  # a -1 axis value too
            label = ", ".join(f"{k}={getattr(cell, k)}" for k in changes)
            cells.append((label, cell))
    megapixels = sum(cell.width * cell.height for _, cell in cells) / 1e6
    if megapixels > MAX_GRID_MEGAPIXELS:
        raise ParamError("width/height", f"the grid's {len(cells)} cells make {megapixels:.1f} megapixels, at most "
                                         f"{MAX_GRID_MEGAPIXELS}: use fewer values or a smaller size")
    x_labels = [f"{x_knob}={getattr(cells[i][1], x_knob)}" for i in range(len(x_values))]
    y_labels = [f"{y_knob}={getattr(cells[r * len(x_values)][1], y_knob)}" for r in range(len(rows))] if y_knob else []
    return GridPlan(x_knob, x_labels, y_knob, y_labels, cells)


def render(images: list[Image.Image], grid: GridPlan) -> Image.Image:
    """One image: column labels on top, row labels on the left, cells row-major."""
    columns = len(grid.x_labels)
    rows = max(1, len(grid.y_labels))
    width, height = max(i.width for i in images), max(i.height for i in images)
    font = ImageFont.load_default(size=14)
    left = max([int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) + 12 for t in grid.y_labels] or [0])
    canvas = Image.new("RGB", (left + columns * width, LABEL_HEIGHT + rows * height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(grid.x_labels):
        draw.text((left + c * width + 6, 6), label, fill="black", font=font)
    for r, label in enumerate(grid.y_labels):
        draw.text((6, LABEL_HEIGHT + r * height + height // 2 - 7), label, fill="black", font=font)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        canvas.paste(image, (left + c * width, LABEL_HEIGHT + r * height))
    return canvas
