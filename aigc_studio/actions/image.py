"""The image operations: generate (with its denoising previews), side by side, the X/Y grid,
the latent walk, the forward (noising) process, prompt maps, what a VAE or GAN learned and a
recipe restored. Each takes a small request whose non-knob inputs are checked here, once (the
knobs are checked by params.py); the Image tab and the typed API both call these, and only
turn what they return into components or files. Gradio-free."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aigc_studio import params as knobs
from aigc_studio.actions.checks import count_input, knob_name_input, mode_input, text_input
from aigc_studio.actions.variants import SEEDS, SWEEP, check_sweep, make_variants, sweep_names
from aigc_studio.engines.image import FAMILY_KINDS
from aigc_studio.grid import MAX_AXIS_VALUES, MODEL_AXIS
from aigc_studio.params import ImageParams, ParamError, comma_list, parse_values
from aigc_studio.studio import Result, Studio, read_recipe

# Every knob of ImageParams, in its order (new knobs appear when a model reads them).
ALL_KNOBS = tuple(f.name for f in dataclasses.fields(ImageParams))
MODELS = "Different models"  # the side-by-side mode whose columns differ by model (one prompt, one seed)
MAX_WALK_FRAMES = 32
# Each streamed preview costs a file in Gradio's cache (30 per image before), so a
# request streams this many, evenly spaced; the trajectory strip still shows every step.
MAX_PREVIEWS = 3
STRIP_THUMB = 96  # px per step in the trajectory strip (shown at least 64 px tall)
STRIP_COLUMNS = 10  # steps per row of the strip
STRIP_GAP, STRIP_CAPTION = 4, 14  # px between thumbnails; the step number sits below each, never over it
VIEW_PX = 256  # the largest side of a kept trajectory step (the step view shows 256 px high)
# Where image to image starts (the Image tab's choice; None: text to image).
NOTHING, UPLOAD, SKETCH = "Nothing (text to image)", "The uploaded picture", "The sketch"
MAX_PICTURE_BYTES = 20 * 2**20  # an input picture's file, before decoding

StepCallback = Callable[[int, int], None]  # (step from 0, total steps)


# ----- checks of the inputs that are not knobs --------------------------------------------------

def whole(value):
    """A slider's 8.0 as 8; anything else unchanged, for the backend to name and refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def model_ids(value: Any) -> list[str] | None:
    """Image model ids from a list or a comma-separated text (None: the default choice)."""
    if value is None or isinstance(value, list) and all(isinstance(m, str) for m in value):
        return None if value is None else [m.strip() for m in value if m.strip()]
    return comma_list(text_input("models", value))


def grid_axes(used) -> list[str]:
    """The knobs a grid can vary: those the model reads and sweeps, one image per cell."""
    return [name for name in sweep_names(ImageParams, used) if name != "batch_size"]


def axis_values(text: str, knob: str, field: str) -> list:
    """1-6 values for a grid axis: a knob's (checked when the grid is planned) or model ids."""
    if knob != MODEL_AXIS:
        return parse_values(text, ImageParams, knob, low=1, high=MAX_AXIS_VALUES, field=field)
    values = comma_list(text)
    if not 1 <= len(values) <= MAX_AXIS_VALUES:
        raise ParamError(field, f"give 1 to {MAX_AXIS_VALUES} comma-separated model ids, got {len(values)}")
    return values


def compare_choices(studio: Studio) -> list[str]:
    """The models "Different models" starts with: the catalog's embedded image models
    (diffusion, VAE, GAN: fast, no download), else its first image models; 2-4 of them."""
    ids = studio.catalog.choices("image")
    embedded = [i for i in ids if i in studio.catalog.specs and studio.catalog.specs[i].source == "embedded"]
    return (embedded if len(embedded) >= 2 else ids)[:4]


def is_family(studio: Studio, model_id: str | None) -> bool:
    """Whether a model has training views (a VAE or a GAN; diffusion models do not)."""
    try:
        return studio.model_spec("image", model_id).kind in FAMILY_KINDS
    except ValueError:  # no image model installed (UnknownModelError): nothing to show
        return False


def family_views(studio: Studio, model_id: str | None) -> list[tuple[Image.Image, str]] | None:
    """What a VAE or GAN learned as (picture, caption) pairs; None for a model without views."""
    if not is_family(studio, model_id):
        return None
    return [(picture, caption) for caption, picture in studio.family_views(model_id)]


# ----- the start picture --------------------------------------------------------------------

def start_picture(source: str | None, upload, sketch) -> Image.Image | None:
    """The picture to start from (None: text to image). A sketch pad's value is a dict whose
    'composite' is the drawing; an empty pad or upload is refused, naming the field."""
    if source in (None, NOTHING):
        return None
    if source == UPLOAD:
        if upload is None:
            raise ParamError("start picture", "upload a picture first, or start from the sketch or nothing")
        return upload
    drawing = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if drawing is None or not np.asarray(drawing.convert("RGBA"))[..., 3].any():
        raise ParamError("sketch", "draw something first (or start from nothing)")
    return drawing


def data_url_bytes(url: str, field: str = "image") -> bytes:
    """The bytes of a `data:image/...;base64,` URL (how MCP clients send a picture)."""
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise ParamError(field, "a data URL must be data:image/...;base64,...")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ParamError(field, "the data URL is not valid base64") from None


def knobs_and_start(values: tuple) -> tuple[dict, Image.Image | None]:
    """(the knob values by name, the start picture or None) from a tab handler's trailing
    inputs: every knob of ALL_KNOBS in order, then the start picture's source, upload and
    sketch (left out: none)."""
    knob_values, start = values[:len(ALL_KNOBS)], values[len(ALL_KNOBS):]
    return dict(zip(ALL_KNOBS, knob_values)), start_picture(*start) if start else None


def open_picture(data: bytes, field: str = "image") -> Image.Image:
    """A picture file's bytes decoded; too large a file or not a picture is refused naming `field`."""
    if len(data) > MAX_PICTURE_BYTES:
        raise ParamError(field, f"the file is {len(data):,} bytes, above the limit of {MAX_PICTURE_BYTES:,}")
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            return picture.copy()
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ParamError(field, f"must be a PNG, JPEG or WebP picture; this file could not be read as one ({error})") from None


# ----- generate: one image (or a batch), its previews and its trajectory ----------------------

def preview_steps(total: int, limit: int = MAX_PREVIEWS) -> set[int]:
    """Indices (from 0) of the steps whose previews are streamed: at most `limit`,
    evenly spaced, the last step included (30 steps: 9, 19, 29)."""
    return {total * k // limit - 1 for k in range(1, limit + 1)} - {-1}


@dataclass
class GenerateImage:
    """One image for a prompt (batch_size images at consecutive seeds), from init_image when
    given (image to image). knobs: ImageParams values by name, None = the model's recommendation."""

    prompt: str
    knobs: dict
    model: str | None = None
    init_image: Image.Image | None = None


def generate(studio: Studio, job: GenerateImage, show: Callable[[Image.Image], None],
             stop: threading.Event | None = None, on_step: StepCallback | None = None,
             on_picture: Callable[[int, Image.Image], None] | None = None, show_start: bool = False) -> list[Result]:
    """Run job. show(picture) gets at most MAX_PREVIEWS evenly spaced denoising previews (and,
    with show_start, image to image's noised start); on_picture(step, picture) every step's
    prediction, step -1 being the noised start (the trajectory); on_step the progress."""
    chosen = studio.params("image", job.model, **job.knobs)
    streamed = preview_steps(chosen.steps)

    def step(index: int, total: int) -> None:
        nonlocal streamed
        streamed = preview_steps(total)  # some schedulers run more iterations than steps
        if on_step is not None:
            on_step(index, total)

    def preview(index: int, picture: Image.Image) -> None:
        if on_picture is not None:
            on_picture(index, picture)
        if index in streamed or (show_start and index == -1):
            show(picture)

    return studio.images(job.prompt, [("", chosen)], job.model, step, preview, stop, init_image=job.init_image)


def compact(picture: Image.Image) -> bytes:
    """A trajectory step as kept per session: at most VIEW_PX on a side, JPEG (~10 KB;
    a 1024 px step kept raw is 3 MB, times 30 steps, times every session)."""
    small = picture.convert("RGB")
    small.thumbnail((VIEW_PX, VIEW_PX))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def expand(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def trajectory_strip(pictures: list[Image.Image], first: str | None = None) -> Image.Image:
    """Every step's predicted image in rows of STRIP_COLUMNS, STRIP_THUMB px each,
    with gaps, the step number under each thumbnail (never over it). first: the caption of
    a first picture that is no step (image to image's noised start); steps count after it."""
    rows = (len(pictures) + STRIP_COLUMNS - 1) // STRIP_COLUMNS
    columns = min(len(pictures), STRIP_COLUMNS)
    cell_w, cell_h = STRIP_THUMB + STRIP_GAP, STRIP_THUMB + STRIP_CAPTION + STRIP_GAP
    strip = Image.new("RGB", (columns * cell_w - STRIP_GAP, rows * cell_h - STRIP_GAP), "white")
    draw, font = ImageDraw.Draw(strip), ImageFont.load_default(size=11)
    for i, picture in enumerate(pictures):
        row, column = divmod(i, STRIP_COLUMNS)
        x, y = column * cell_w, row * cell_h
        strip.paste(picture.resize((STRIP_THUMB, STRIP_THUMB), Image.Resampling.NEAREST), (x, y))
        caption = first if first and i == 0 else str(i if first else i + 1)
        draw.text((x + STRIP_THUMB // 2, y + STRIP_THUMB + 1), caption, fill="#374151", font=font, anchor="mt")
    return strip


# ----- side by side -------------------------------------------------------------------------

@dataclass
class CompareImage:
    """2-4 labelled variants of one prompt: consecutive seeds (count), one knob over values
    (knob_name, values), or the models (MODELS: each at its recommended knobs under `knobs`,
    one seed). None takes the default; models None: compare_choices."""

    prompt: str
    knobs: dict
    model: str | None = None
    mode: str | None = SEEDS
    count: Any = 3
    knob_name: Any = "guidance"
    values: Any = "1, 3, 7"
    models: Any = None
    init_image: Image.Image | None = None

    def __post_init__(self):
        self.mode = mode_input(self.mode, (MODELS,))
        if self.mode == SEEDS:
            self.count = count_input(self.count)
        if self.mode == SWEEP:
            self.knob_name = knob_name_input("knob_name", self.knob_name, ImageParams, "guidance")
        self.values = text_input("values", self.values, "1, 3, 7")
        self.models = model_ids(self.models)
        if self.mode == MODELS and self.init_image is not None:
            raise ParamError("start picture", "side by side by model draws from the prompt only: "
                                              "start from nothing, or compare one model's knobs")


def compare(studio: Studio, job: CompareImage, on_step: StepCallback | None = None,
            stop: threading.Event | None = None) -> list[Result]:
    """The variants' results, in column order (seed variants share one batched call)."""
    if job.mode == MODELS:
        models = compare_choices(studio) if job.models is None else job.models
        return studio.compare_models(job.prompt, models, None, on_step, stop, **job.knobs)
    check_sweep(studio, "image", job.model, job.mode, job.knob_name)
    base = studio.params("image", job.model, **{**job.knobs, "batch_size": 1})  # one image per column
    variants = make_variants(base, job.mode, job.count, job.knob_name, job.values)
    return studio.images(job.prompt, variants, job.model, on_step, stop=stop, init_image=job.init_image)


# ----- the X/Y grid -------------------------------------------------------------------------

@dataclass
class ImageGrid:
    """One or two knobs (or "model") over 1-6 values each, the seed fixed unless it is an axis;
    y_knob "none": one row. None takes the default."""

    prompt: str
    knobs: dict
    model: str | None = None
    x_knob: Any = "steps"
    x_values: Any = "4, 8, 16, 32"
    y_knob: Any = "guidance"
    y_values: Any = "1, 3, 7"
    init_image: Image.Image | None = None
    xs: list = field(init=False)
    ys: list | None = field(init=False)

    def __post_init__(self):
        axes = [*grid_axes(ALL_KNOBS), MODEL_AXIS]
        self.x_knob = "steps" if self.x_knob is None else self.x_knob
        if not isinstance(self.x_knob, str) or self.x_knob not in axes:
            raise ParamError("x_knob", f"must be one of {', '.join(axes)}, got {self.x_knob!r}")
        self.y_knob = "guidance" if self.y_knob is None else self.y_knob
        if not isinstance(self.y_knob, str) or self.y_knob not in ("none", *axes):
            raise ParamError("y_knob", f"must be one of none, {', '.join(axes)}, got {self.y_knob!r}")
        self.xs = axis_values(text_input("x_values", self.x_values, "4, 8, 16, 32"), self.x_knob, "x_values")
        if self.y_knob == "none":
            self.y_knob, self.ys = None, None
        else:
            self.ys = axis_values(text_input("y_values", self.y_values, "1, 3, 7"), self.y_knob, "y_values")


def image_grid(studio: Studio, job: ImageGrid, on_step: StepCallback | None = None,
               stop: threading.Event | None = None) -> tuple[Image.Image, list[Result]]:
    """(the labelled grid picture, each cell's result, row by row)."""
    base = studio.params("image", job.model, **{**job.knobs, "batch_size": 1})  # one image per cell
    return studio.image_grid(job.prompt, base, job.x_knob, job.xs, job.y_knob, job.ys, job.model, on_step,
                             stop=stop, init_image=job.init_image)


# ----- the latent walk ----------------------------------------------------------------------

@dataclass
class LatentWalk:
    """From seed A's image to seed B's in `frames` images; None takes the default. A whole
    float (a slider's 8.0) counts as its int; the studio checks the ranges, naming the field."""

    prompt: str
    knobs: dict
    model: str | None = None
    seed_a: Any = 3
    seed_b: Any = 7
    frames: Any = 8

    def __post_init__(self):
        self.seed_a = whole(3 if self.seed_a is None else self.seed_a)
        self.seed_b = whole(7 if self.seed_b is None else self.seed_b)
        self.frames = whole(8 if self.frames is None else self.frames)


def latent_walk(studio: Studio, job: LatentWalk, on_step: StepCallback | None = None,
                stop: threading.Event | None = None) -> tuple[list[Result], bytes]:
    """(each frame's result, the animated GIF with the walk's recipe in its comment)."""
    chosen = studio.params("image", job.model, **{**job.knobs, "batch_size": 1})
    return studio.latent_walk(job.prompt, job.seed_a, job.seed_b, job.frames, job.model, chosen, on_step, stop)


# ----- inside the model: the forward process and prompt maps --------------------------------

@dataclass
class NoiseImage:
    """The forward process of a picture: `steps` (1-50) frames at the scheduler's timesteps,
    one noise draw (seed) shared by every frame."""

    picture: Image.Image
    model: str | None = None
    steps: int | None = None
    scheduler: str | None = None
    seed: Any = 0

    def __post_init__(self):
        self.seed = 0 if self.seed is None else self.seed


def noise_image(studio: Studio, job: NoiseImage) -> list:
    """The frames (engines.image_inside.NoiseFrame), cleanest first."""
    return studio.noise_image(job.picture, job.steps, job.scheduler, job.model, job.seed)


def noise_caption(frame) -> str:
    return f"t={frame.timestep}: {frame.signal:.2f} signal, {frame.noise:.2f} noise"


@dataclass
class PromptMap:
    """What each prompt word drew, for an image made at `knobs` (seed, steps, guidance)."""

    prompt: str
    knobs: dict
    model: str | None = None


@dataclass
class MappedPrompt:
    """The image with its recipe, the method, and per word the model reads its map
    (engines.image_inside.WordMap) and that map over the image."""

    result: Result
    method: str
    words: list
    overlays: list[Image.Image]


def prompt_map(studio: Studio, job: PromptMap, stop: threading.Event | None = None) -> MappedPrompt:
    from aigc_studio.engines.image_inside import overlay

    result, words, method = studio.prompt_map(job.prompt, job.model, stop, **job.knobs)
    return MappedPrompt(result, method, words, [overlay(result.output, w.heat) for w in words])


def word_caption(word) -> str:
    """A word as the model read it: "ball (= circle)" for a synonym."""
    return word.word if word.word == word.reads_as else f"{word.word} (= {word.reads_as})"


# ----- a recipe restored ---------------------------------------------------------------------

@dataclass
class Restored:
    """An image recipe read back: its knobs at the recipe's model, the knobs that model reads,
    and for image to image the start picture's SHA-256 and size (None otherwise)."""

    prompt: str
    model: str
    params: ImageParams
    used: tuple[str, ...]
    start_sha256: str | None
    start_size: tuple | None


def restore(studio: Studio, path: str) -> Restored:
    """The image recipe embedded in a studio file (a PNG, a walk's GIF, a recipe .json). A
    batch's images reproduce exactly only in a batch of that size: batch_size is restored too."""
    saved = read_recipe(path)
    if saved.modality != "image":
        raise ValueError(f"recipe file: holds a {saved.modality} recipe, not an image one")
    chosen = studio.params("image", saved.model_id, **{k: v for k, v in saved.params.items() if k in ALL_KNOBS})
    return Restored(saved.prompt, saved.model_id, chosen, studio.knobs_used("image", saved.model_id),
                    saved.params.get("init_image_sha256"), saved.params.get("init_image_size"))
