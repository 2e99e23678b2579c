"""X/Y comparison grids: which knob values go in which cell, and the labelled grid image.

An axis is a knob of the params given (ImageParams, TextParams or AudioParams), or
`model` for images (catalog ids: diffusion vs VAE vs GAN for one prompt and seed).
Also the animated image of a latent walk, each text cell's first divergence from the
others, and a text grid's CSV/JSON export.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from aigc_studio import params as knobs
from aigc_studio.params import ImageParams, ParamError, Params

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


def plan(base: Params, x_knob: str, x_values: list, y_knob: str | None = None, y_values: list | None = None) -> GridPlan:
    """Every cell's params: base (ImageParams, TextParams or AudioParams) with the x
    (and y) knob set. The seed stays fixed across cells unless seed is an axis. 1-6
    values per axis."""
    base = knobs.resolve_seed(knobs.validate(base))
    if isinstance(base, ImageParams):
        base = dataclasses.replace(base, batch_size=1)  # one image per cell
    axes = [("x", x_knob, x_values)] + ([("y", y_knob, y_values or [])] if y_knob else [])
    for axis, name, values in axes:
        if name != MODEL_AXIS:
            knobs.spec(type(base), name)
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
    megapixels = sum(cell.width * cell.height for _, cell in cells) / 1e6 if isinstance(base, ImageParams) else 0
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


# ----- text and audio grids ---------------------------------------------------------------------

MAX_TEXT_CELLS = 16  # one batch of 16 columns: a 4 x 4 grid, or 6 x 2
MAX_AUDIO_CELLS = 16  # cells run one after another, each a full generation


def check_axes(model_id: str, readable: list[str], x_knob: str, y_knob: str | None, max_cells: int,
               cells: int) -> None:
    """Refuse an axis the model does not read (or the `model` axis, which only image grids
    take), naming the knobs it does; and more than max_cells cells."""
    for field_name, name in (("x_knob", x_knob), ("y_knob", y_knob)):
        if name is not None and name not in readable:
            raise ParamError(field_name, f"{model_id} does not use {name}; a grid axis is one of "
                                         f"{', '.join(readable)}")
    if cells > max_cells:
        raise ParamError("y_values" if y_knob else "x_values",
                         f"the grid has {cells} cells, at most {max_cells}: use fewer values")


def cell_divergence(columns: list[list[int]]) -> list[int | None]:
    """Per cell, the index of its first token that differs from another cell's token at
    that index (a cell that has ended differs from one that goes on): where this cell
    leaves the others. None where it matches every other cell to the end (or it is alone)."""
    out = []
    for i, mine in enumerate(columns):
        first = None
        for j, other in enumerate(columns):
            if j == i:
                continue
            common = min(len(mine), len(other))
            at = next((k for k in range(common) if mine[k] != other[k]),
                      common if len(mine) != len(other) else None)
            if at is not None and (first is None or at < first):
                first = at
        out.append(first)
    return out


def text_cells(grid: GridPlan, columns: list) -> list[dict]:
    """A finished text grid's cells as plain data, row-major: row, column, label, the
    answer, its token count, tokens/s, mean log-probability (nats per token), the index
    of its first token that differs from another cell's (cell_divergence) and its
    recipe. columns: the studio's TextUpdates (text, tokens, tokens_per_s, mean_logprob,
    result)."""
    width = len(grid.x_labels)
    firsts = cell_divergence([[t.id for t in c.tokens] for c in columns])
    return [{"row": index // width, "column": index % width, "label": label, "text": column.text,
             "tokens": len(column.tokens), "tokens_per_s": round(column.tokens_per_s, 2),
             "mean_logprob": round(column.mean_logprob, 4), "first_difference": first,
             "recipe": json.loads(column.result.recipe.to_json()) if column.result is not None else None}
            for index, ((label, _), column, first) in enumerate(zip(grid.cells, columns, firsts))]


TEXT_COLUMNS = ("row", "column", "label", "text", "tokens", "tokens_per_s", "mean_logprob", "first_difference",
                "recipe")


def text_export(grid: GridPlan, cells: list[dict]) -> tuple[str, str]:
    """(JSON, CSV) of a text grid: its axes and every cell (row-major) with its answer,
    figures and recipe. The CSV has one line per cell, the recipe as a JSON string."""
    document = {"x_knob": grid.x_knob, "x_labels": grid.x_labels, "y_knob": grid.y_knob,
                "y_labels": grid.y_labels, "cells": cells}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TEXT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for cell in cells:
        writer.writerow({**cell, "recipe": json.dumps(cell["recipe"])})
    return json.dumps(document, indent=2), buffer.getvalue()


def audio_zip(files: list[tuple[str, str]], grid: GridPlan, recipes: list[dict]) -> bytes:
    """A zip of an audio grid: each cell's file (named by its row, column and label) and
    grid.json with the axes and every cell's recipe."""
    buffer = io.BytesIO()
    columns = len(grid.x_labels)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        names = []
        for index, ((label, path), recipe) in enumerate(zip(files, recipes)):
            row, column = divmod(index, columns)
            safe = "".join(c if c.isalnum() or c in "=.-" else "_" for c in label)[:80]
            name = f"r{row + 1}c{column + 1}-{safe}{Path(path).suffix}"
            archive.write(path, name)
            names.append({"row": row, "column": column, "label": label, "file": name, "recipe": recipe})
        archive.writestr("grid.json", json.dumps({"x_knob": grid.x_knob, "x_labels": grid.x_labels,
                                                  "y_knob": grid.y_knob, "y_labels": grid.y_labels,
                                                  "cells": names}, indent=2))
    return buffer.getvalue()
