"""Image tab: prompt -> image through diffusers, every knob, the denoising trajectory,
variants side by side (seeds, a knob, or models), an X/Y grid (knobs or models), a latent
walk from one seed to another, what a VAE or GAN learned, and recipes restored from
studio PNGs."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from aigc_studio.engines.image import FAMILY_KINDS
from aigc_studio.engines.image_inside import check_input, fingerprint
from aigc_studio.grid import MAX_AXIS_VALUES, MODEL_AXIS
from aigc_studio.params import MAX_SEED, ImageParams, ParamError, parse_values
from aigc_studio.studio import GenerationStopped, Result, Studio, UnknownModelError, read_recipe
from aigc_studio.ui.image_inside_tab import (
    NOTHING, make_maps, map_controls, show_noising, start_controls, start_picture, wire_sources,
)
from aigc_studio.actions.variants import check_sweep, make_variants, sweep_names
from aigc_studio.ui.components import KnobDropdown, KnobNumber, KnobSlider, SweepDropdown, model_dropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import (
    control, knob_choices_for, knob_updates, sweep_updates, sweep_values, variant_controls,
)
from aigc_studio.ui.page import busy, error_box, page_assets, ready
from aigc_studio.ui.recipe_view import model_card, recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import run_in_worker
from aigc_studio.ui.files import keep_or_cache, with_recipe

KNOBS = ("negative_prompt", "steps", "guidance", "width", "height", "seed", "scheduler")
# Every knob of ImageParams, in its order (new knobs appear when a model reads them).
ALL_KNOBS = tuple(f.name for f in dataclasses.fields(ImageParams))
BASIC_KNOBS = ("steps", "guidance", "seed")  # the rest sit under "Advanced knobs"
STRIP_THUMB = 96  # px per step in the trajectory strip (shown at least 64 px tall)
STRIP_COLUMNS = 10  # steps per row of the strip
STRIP_GAP, STRIP_CAPTION = 4, 14  # px between thumbnails; the step number sits below each, never over it
VIEW_PX = 256  # the largest side of a kept trajectory step (the step view shows 256 px high)
# Each streamed preview costs a file in Gradio's cache (30 per image before), so a
# request streams this many, evenly spaced; the trajectory strip still shows every step.
MAX_PREVIEWS = 3
MODELS = "Different models"  # the side-by-side mode whose columns differ by model (one prompt, one seed)
MAX_WALK_FRAMES = 32

log = logging.getLogger(__name__)


def preview_steps(total: int, limit: int = MAX_PREVIEWS) -> set[int]:
    """Indices (from 0) of the steps whose previews are streamed: at most `limit`,
    evenly spaced, the last step included (30 steps: 9, 19, 29)."""
    return {total * k // limit - 1 for k in range(1, limit + 1)} - {-1}


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


def keep_pictures(save, results: list[Result]) -> list:
    """Save each result with save(result) and return the paths to show. When the
    output folder cannot be written (disk full), the pictures themselves are shown,
    their recipe in their PNG text (Gradio keeps it), with one warning that they were
    not kept; earlier files are untouched."""
    return keep_or_cache(lambda: [str(save(result)) for result in results],
                         lambda: [with_recipe(result) for result in results])


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


def family_gallery(studio: Studio, model_id: str | None) -> tuple:
    """(accordion update, gallery update) for a model: its training views, or hidden."""
    if not is_family(studio, model_id):
        return gr.update(visible=False), gr.update(value=None)
    with user_errors():
        views = studio.family_views(model_id)
    return gr.update(visible=True), gr.update(value=[(picture, caption) for caption, picture in views])


def axis_values(text: str, knob: str, field: str) -> list:
    """1-6 values for a grid axis: a knob's (checked when the grid is planned) or model ids."""
    if knob != MODEL_AXIS:
        return parse_values(text, ImageParams, knob, low=1, high=MAX_AXIS_VALUES, field=field)
    values = [v.strip() for v in str(text or "").split(",") if v.strip()]
    if not 1 <= len(values) <= MAX_AXIS_VALUES:
        raise ParamError(field, f"give 1 to {MAX_AXIS_VALUES} comma-separated model ids, got {len(values)}")
    return values


def whole(value):
    """A slider's 8.0 as 8; anything else unchanged, for the backend to name and refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def keep_walk(studio: Studio, animation: bytes) -> str:
    """Write a walk's GIF into the output folder; when it cannot be written (disk full),
    into Gradio's upload folder, with a warning (the file still carries its recipe)."""
    def cached() -> str:
        path = Path(tempfile.mkdtemp(dir=gr.utils.get_upload_folder())) / "walk.gif"
        path.write_bytes(animation)
        return str(path)

    return keep_or_cache(lambda: str(studio.save_walk(animation)), cached)


def build(studio: Studio, sessions: Sessions) -> None:
    try:
        spec = studio.model_spec("image")
        header, default_id, defaults = model_card(spec), spec.id, spec.defaults
        used, schedulers = studio.knobs_used("image"), spec.schedulers
    except UnknownModelError as error:
        header, default_id, defaults, used, schedulers = f"⚠️ {error}", None, {}, ALL_KNOBS, None
    if default_id == "shapes-diffusion":
        header += "\n\nThe embedded model draws one coloured shape: red, green, blue or yellow; circle, square or triangle."
    with gr.Tab("Image", id="image"):
        page_assets()
        card = gr.Markdown(header)
        controls = {}
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="image-prompt",
                                    placeholder="e.g. a small yellow triangle")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="image-generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="image-stop")
                error_box("image-generate")
                # no label over the picture: the heading above says what it is
                image = gr.Image(type="filepath", format="png", show_label=False, height=512, elem_id="image-output",
                                 buttons=["download", "fullscreen"])
                batch = gr.Gallery(label="Batch (batch size > 1)", columns=4, object_fit="contain", height="auto",
                                   visible=False, elem_id="image-batch")
                # a VAE or GAN draws in one pass: no steps to show
                with gr.Accordion("Denoising trajectory: the predicted image after each step", open=True,
                                  visible=not is_family(studio, default_id), elem_id="image-trajectory") as trajectory_box:
                    strip = gr.Image(type="pil", show_label=False, interactive=False, elem_id="image-strip",
                                     buttons=["fullscreen"])
                    with gr.Row():
                        step_slider = gr.Slider(1, 2, value=1, step=1, label="step", elem_id="image-step", scale=2)
                        step_view = gr.Image(type="pil", show_label=False, interactive=False, height=192, scale=1,
                                             elem_id="image-step-view")
                recipe, recipe_raw = recipe_view("Recipe (embedded in the PNG)")
            with gr.Column(scale=2):
                model = model_dropdown(studio.catalog.choices("image"), default_id)
                for name in BASIC_KNOBS:
                    controls[name] = control(ImageParams, name, defaults.get(name), elem_id=f"image-{name}",
                                             visible=name in used)
                with gr.Accordion("Advanced knobs", open=False, elem_id="image-advanced"):
                    for name in ALL_KNOBS:
                        if name not in controls and name != "strength":  # strength sits with the start picture
                            controls[name] = control(ImageParams, name, defaults.get(name), elem_id=f"image-{name}",
                                                     visible=name in used,
                                                     **({"choices": schedulers} if name == "scheduler" else {}))
                with gr.Accordion("Start from a picture (image to image)", open=False, elem_id="image-start-box"):
                    start = start_controls(defaults, used)
                    controls["strength"] = start["strength"]
                # in the shorter right column: a closed accordion there leaves the page's height as it was
                with gr.Accordion("What each prompt word drew", open=False, elem_id="image-map-box"):
                    mapping = map_controls()
                upload = gr.File(label="Load a studio PNG to restore its recipe", file_types=[".png"],
                                 elem_id="image-upload")
        with gr.Accordion("Side by side: 2-4 variants of one prompt", open=False):
            mode, count, knob_name, values = variant_controls(
                ImageParams, [n for n in used if n != "batch_size"], "image", extra_modes=(MODELS,),
                info="What differs between the columns. Different models: one prompt and seed, each model at its "
                     "recommended knobs.")
            models = KnobDropdown(studio.catalog.choices("image"), value=compare_choices(studio), multiselect=True,
                                  label="Models (2-4)", visible=False, knob_name="models", elem_id="image-models")
            mode.change(lambda m: gr.update(visible=m == MODELS), mode, models, api_visibility="private", queue=False)
            if "guidance" in used:
                knob_name.value = "guidance"
            values.value = sweep_values(studio.params("image") if default_id else ImageParams(), knob_name.value)
            compare = gr.Button("Compare", elem_id="image-compare")
            error_box("image-compare")
            gallery = gr.Gallery(label="Variants", elem_id="image-gallery", columns=4, object_fit="contain",
                                 height="auto", elem_classes=["studio-grid"])
            compare_recipes, compare_recipes_raw = recipe_view("Recipes")
        with gr.Accordion("X/Y grid: one or two knobs over their values", open=False):
            axes = grid_axes(used)
            # "model" is an axis too: its values are model ids (diffusion vs VAE vs GAN, one seed)
            every_axis = (*grid_axes(ALL_KNOBS), MODEL_AXIS)
            with gr.Row():
                x_knob = SweepDropdown(knob_choices_for([*axes, MODEL_AXIS]), value="steps" if "steps" in axes else axes[0],
                                       label="X knob", info="The knob (or model) that varies across columns.",
                                       knob_name="x_knob", sweepable=every_axis)
                x_values = gr.Textbox(value="4, 8, 16, 32", label="X values (1-6, comma-separated)")
                y_knob = SweepDropdown([("none", "none"), *knob_choices_for([*axes, MODEL_AXIS])],
                                       value="guidance" if "guidance" in axes else "none",
                                       label="Y knob", info="The knob (or model) that varies down rows (none: one row).",
                                       knob_name="y_knob", sweepable=("none", *every_axis))
                y_values = gr.Textbox(value="1, 3, 7", label="Y values")
            make_grid = gr.Button("Make grid", elem_id="image-grid-button")
            error_box("image-grid-button")
            grid_image = gr.Image(type="filepath", format="png", show_label=False, elem_id="image-grid")
            grid_gallery = gr.Gallery(label="Cells", columns=6, object_fit="contain", height="auto",
                                      elem_id="image-grid-cells", elem_classes=["studio-grid"])
        with gr.Accordion("Latent walk: from one seed to another", open=False):
            with gr.Row():
                seed_a = KnobNumber(3, label="seed A", precision=0, minimum=0, maximum=MAX_SEED,
                                    knob_name="seed_a", elem_id="image-seed_a")
                seed_b = KnobNumber(7, label="seed B", precision=0, minimum=0, maximum=MAX_SEED,
                                    knob_name="seed_b", elem_id="image-seed_b")
                frames = KnobSlider(2, MAX_WALK_FRAMES, value=8, step=1, label="frames", knob_name="frames",
                                    knob_range=(2, MAX_WALK_FRAMES), elem_id="image-frames",
                                    info="Images from seed A's to seed B's, the noise (or latent) between slerped.")
            walk = gr.Button("Walk", elem_id="image-walk")
            error_box("image-walk")
            # the heading says what they are: a label pill would sit over the pictures
            gr.Markdown("The walk as an animated GIF (there and back; its recipe inside), then frame by frame:")
            with gr.Row():
                walk_gif = gr.Image(type="filepath", label="The walk (GIF)", show_label=False,
                                    elem_id="image-walk-gif", buttons=["download", "fullscreen"], scale=1)
                walk_frames = gr.Gallery(label="Frames", show_label=False, columns=4, object_fit="contain",
                                         height="auto", format="png", elem_id="image-walk-frames",
                                         elem_classes=["studio-grid"], scale=2)
            walk_recipe, walk_recipe_raw = recipe_view("Walk recipe (in the GIF comment)")
        with gr.Accordion("What this model learned", open=True, visible=is_family(studio, default_id),
                          elem_id="image-family") as family_box:
            family_views = gr.Gallery(family_gallery(studio, default_id)[1]["value"], label="Training views", columns=3,
                                      object_fit="contain", height="auto", format="png", elem_id="image-family-views",
                                      elem_classes=["studio-grid"])

    knob_inputs = [controls[name] for name in ALL_KNOBS]
    start_inputs = [start["source"], start["upload"], start["sketch"]]

    def image_params(model, knob_values, **overrides) -> ImageParams:
        return studio.params("image", model, **{**dict(zip(ALL_KNOBS, knob_values)), **overrides})

    # request and progress come first: Gradio fills these special arguments only among the
    # positional parameters before *knob_values (after it they would stay None: no session).
    async def generate_image(request: gr.Request, progress=gr.Progress(), prompt="", model=None, *values):
        """One image for prompt (from the start picture, if one is chosen): streams a few
        denoising previews, then the PNG (with its recipe embedded). With batch_size > 1
        the Batch gallery shows them all."""
        with user_errors():
            knob_values, picture = split_start(values)
            chosen = image_params(model, knob_values)
            check_restored_start(request, picture)
            stop_event = sessions.fresh_stop(request, "image")
            previews: list[bytes] = []  # every step, compact, for the strip
            streamed = preview_steps(chosen.steps)

            def work(emit):
                def on_step(step, total):
                    nonlocal streamed
                    streamed = preview_steps(total)  # some schedulers run more iterations than steps
                    progress((step + 1, total), desc="denoising")

                def on_preview(step, preview):
                    previews.append(compact(preview))
                    if step in streamed:
                        emit(preview)

                return studio.images(prompt, [("", chosen)], model, on_step, on_preview, stop_event,
                                     init_image=picture)

            try:
                async for kind, value in run_in_worker(work, stop_event):
                    if kind == "update":
                        yield value
                    else:
                        sessions.keep_recipes(request, [r.recipe for r in value])
                        sessions.keep(request, "trajectory", previews)
                        sessions.keep(request, "trajectory_start", picture is not None and len(previews) > 0)
                        shown = await asyncio.to_thread(keep_pictures, studio.save, value)
                        sessions.keep(request, "batch", list(zip(shown, [r.label for r in value])))
                        yield shown[0]
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")

    def compare_image(request: gr.Request, progress=gr.Progress(), prompt="", mode=None, count=None, knob_name=None,
                      values=None, models=None, model=None, *more):
        """2-4 labelled variants (seed variants share one batched call), or 2-4 models at
        one seed, each at its recommended knobs; a gallery of PNGs. With a start picture
        every variant is image to image (sweep strength to see how far each goes)."""
        with user_errors():
            knob_values, picture = split_start(more)
            base = image_params(model, knob_values, batch_size=1)
            on_step = lambda step, total: progress((step + 1, total), desc="denoising")
            stop_event = sessions.fresh_stop(request, "image")
            if mode == MODELS and picture is not None:
                raise ParamError("start picture", "side by side by model draws from the prompt only: "
                                                  "start from nothing, or compare one model's knobs")
            if mode == MODELS:
                run = lambda: studio.compare_models(prompt, list(models or []), None, on_step, stop_event,
                                                    seed=base.seed)
            else:
                check_sweep(studio, "image", model, mode, knob_name)
                variants = make_variants(base, mode, count, knob_name, values)
                run = lambda: studio.images(prompt, variants, model, on_step, stop=stop_event, init_image=picture)
            try:
                results = run()
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")
                return gr.skip()
            sessions.keep_recipes(request, [r.recipe for r in results])
            return list(zip(keep_pictures(studio.save, results), [r.label for r in results]))

    def image_grid(request: gr.Request, progress=gr.Progress(), prompt="", x_knob=None, x_values=None, y_knob=None,
                   y_values=None, model=None, *values):
        """An X/Y grid over one or two knobs (seed fixed unless it is an axis), from the
        start picture if one is chosen. Returns the labelled grid PNG and a gallery of every cell."""
        with user_errors():
            knob_values, picture = split_start(values)
            base = image_params(model, knob_values, batch_size=1)
            xs = axis_values(x_values, x_knob, "x_values")
            use_y = y_knob and y_knob != "none"
            ys = axis_values(y_values, y_knob, "y_values") if use_y else None
            on_step = lambda step, total: progress((step + 1, total), desc="denoising")
            try:
                picture, cells = studio.image_grid(prompt, base, x_knob, xs, y_knob if use_y else None, ys, model,
                                                   on_step, stop=sessions.fresh_stop(request, "image"),
                                                   init_image=picture)
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")
                return gr.skip(), gr.skip()
            sessions.keep_recipes(request, [c.recipe for c in cells])
            labels = [c.label for c in cells]
            return keep_or_cache(lambda: (str(studio.save_grid(picture, cells)),
                                          list(zip(keep_pictures(studio.save, cells), labels))),
                                 lambda: (picture, list(zip(map(with_recipe, cells), labels))))

    async def walk_image(request: gr.Request, progress=gr.Progress(), prompt="", seed_a=None, seed_b=None,
                         frames=None, model=None, *knob_values):
        """A latent walk from seed A to seed B (2-32 frames, the chosen model at the knobs
        shown): the GIF (its recipe in the comment), the frames (each PNG with its recipe)
        and the walk's recipe."""
        with user_errors():
            chosen = image_params(model, knob_values, batch_size=1)
            stop_event = sessions.fresh_stop(request, "image")

            def work(emit):
                on_step = lambda step, total: progress((step + 1, total), desc="walking")
                return studio.latent_walk(prompt, whole(seed_a), whole(seed_b), whole(frames), model, chosen, on_step,
                                          stop_event)

            try:
                async for kind, value in run_in_worker(work, stop_event):
                    if kind == "result":
                        results, animation = value
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")
                return
            path = await asyncio.to_thread(keep_walk, studio, animation)
            walked = read_recipe(path)  # what the file itself carries
            if sessions.history is not None:  # the walk's GIF joins the browser's history
                sessions.history.add(sessions.key(request), walked)
                sessions.history.attach(walked, path)
            # short captions: a long one covers a small frame (each frame's recipe keeps the full label)
            frames_shown = [(with_recipe(r), f"{i + 1}/{len(results)}") for i, r in enumerate(results)]
            yield path, frames_shown, recipe_card([walked]), recipe_json([walked])

    def stop_image(request: gr.Request):
        sessions.stop(request, "image")

    def show_recipes(request: gr.Request):
        kept = sessions.recipes(request)
        return recipe_card(kept), recipe_json(kept)

    def show_trajectory(request: gr.Request):
        previews = sessions.kept(request, "trajectory", [])
        if not previews:
            return None, gr.update(maximum=2, value=1), None
        last = len(previews)
        first = "noised" if sessions.kept(request, "trajectory_start", False) else None
        return (trajectory_strip([expand(p) for p in previews], first), gr.update(minimum=1, maximum=max(last, 2), value=last),
                expand(previews[-1]))

    def show_batch(request: gr.Request):
        cells = sessions.kept(request, "batch", [])
        return gr.update(value=cells, visible=len(cells) > 1)

    def show_step(step, request: gr.Request):
        previews = sessions.kept(request, "trajectory", [])
        return expand(previews[min(int(step), len(previews)) - 1]) if previews else None

    def check_restored_start(request: gr.Request, picture) -> None:
        """Warn when a restored image-to-image recipe gets another start picture than its own."""
        expected = sessions.kept(request, "expected_start", None)
        if expected and picture is not None and fingerprint(check_input(picture)) != expected:
            gr.Warning("This start picture is not the one the restored recipe used (its SHA-256 differs): "
                       "the image will not be the same.")

    def restore_recipe(file, request: gr.Request = None):
        """Every knob (and the prompt and model) from a studio PNG's embedded recipe; the
        knobs the recipe's model reads are shown, the others hidden. An image-to-image
        recipe asks for its start picture (it records the picture's SHA-256 and size)."""
        if file is None:
            return [gr.update()] * (len(ALL_KNOBS) + 3)
        with user_errors():
            saved = read_recipe(file)
            if saved.modality != "image":
                raise ValueError(f"recipe file: holds a {saved.modality} recipe, not an image one")
            # a batch's images reproduce exactly only in a batch of that size: batch_size is restored too
            chosen = studio.params("image", saved.model_id, **{k: v for k, v in saved.params.items() if k in ALL_KNOBS})
            used = studio.knobs_used("image", saved.model_id)
        gr.Info(f"Restored the recipe of a {saved.model_id} image (seed {chosen.seed}).")
        expected = saved.params.get("init_image_sha256")
        sessions.keep(request, "expected_start", expected)
        if expected:
            width, height = saved.params.get("init_image_size") or ("?", "?")
            gr.Info(f"It started from a {width}x{height} picture (SHA-256 {str(expected)[:12]}...): choose the same "
                    f"picture under 'Start from a picture' to make the same image.", duration=15)
        source = gr.update() if expected else NOTHING  # a text-to-image recipe starts from nothing
        return [saved.prompt, saved.model_id] + [gr.update(value=getattr(chosen, name), visible=name in used)
                                                 for name in ALL_KNOBS] + [source]

    def model_views(model_id):
        """What shows for a model beside its knobs: its card, the denoising trajectory
        (diffusion only) and what a VAE or GAN learned."""
        with user_errors():
            chosen = studio.model_spec("image", model_id)
        return (model_card(chosen), gr.update(visible=not is_family(studio, model_id)),
                *family_gallery(studio, model_id))

    def use_model(model_id, x, y, knob):
        """A newly picked model: its card, its knobs (shown when it reads them, at its
        recommended values and ranges), the knobs side by side and the grid can vary."""
        with user_errors():
            chosen = studio.model_spec("image", model_id)
            names = studio.knobs_used("image", model_id)
            picker, sweep = sweep_updates(studio, "image", model_id, knob)
            axes = grid_axes(names)
            grid_choices = knob_choices_for([*axes, MODEL_AXIS])
            card_update, trajectory_update, family_update, views_update = model_views(model_id)
            return (card_update, *knob_updates(studio, "image", model_id, controls), picker, sweep,
                    gr.update(choices=grid_choices, value=x if x in (*axes, MODEL_AXIS) else axes[0]),
                    gr.update(choices=[("none", "none"), *grid_choices], value=y if y in (*axes, MODEL_AXIS) else "none"),
                    trajectory_update, family_update, views_update)

    def model_pickers(model_id, x, y, knob):
        """(side-by-side picker, its values, grid X, grid Y) for a model: the knobs it reads,
        the chosen ones kept where it reads them (after a recipe restore too)."""
        with user_errors():
            picker, sweep = sweep_updates(studio, "image", model_id, knob)
            axes = grid_axes(studio.knobs_used("image", model_id))
        grid_choices = knob_choices_for([*axes, MODEL_AXIS])
        return (picker, sweep, gr.update(choices=grid_choices, value=x if x in (*axes, MODEL_AXIS) else axes[0]),
                gr.update(choices=[("none", "none"), *grid_choices], value=y if y in (*axes, MODEL_AXIS) else "none"))

    def sweep_for(knob, model_id, *knob_values):
        with user_errors():
            return sweep_values(image_params(model_id, knob_values), knob)

    def grid_values_for(knob, model_id, *knob_values):
        if knob == "none":
            return ""
        if knob == MODEL_AXIS:
            return ", ".join(compare_choices(studio))
        with user_errors():
            return sweep_values(image_params(model_id, knob_values), knob)

    run = gr.on([generate.click, prompt.submit], lambda: busy(), outputs=generate, queue=False,
                api_visibility="private").then(
        generate_image, inputs=[prompt, model, *knob_inputs, *start_inputs], outputs=image, api_visibility="private",
        concurrency_id="image")  # public: ui/api.py
    run.then(lambda: ready(), outputs=generate, queue=False, api_visibility="private")
    run.failure(lambda: ready(), outputs=generate, queue=False, api_visibility="private")
    run.then(show_batch, outputs=batch, api_visibility="private")
    run.then(show_recipes, outputs=[recipe, recipe_raw], api_visibility="private")
    run.then(show_trajectory, outputs=[strip, step_slider, step_view], api_visibility="private")
    step_slider.release(show_step, step_slider, step_view, api_visibility="private")
    comparing = compare.click(lambda: busy(), outputs=compare, queue=False, api_visibility="private").then(
        compare_image, inputs=[prompt, mode, count, knob_name, values, models, model, *knob_inputs, *start_inputs],
        outputs=gallery,
        api_visibility="private", concurrency_id="image")
    comparing.then(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.failure(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.then(show_recipes, outputs=[compare_recipes, compare_recipes_raw], api_visibility="private")
    gridding = make_grid.click(lambda: busy(), outputs=make_grid, queue=False, api_visibility="private").then(
        image_grid, inputs=[prompt, x_knob, x_values, y_knob, y_values, model, *knob_inputs, *start_inputs],
        outputs=[grid_image, grid_gallery], api_visibility="private", concurrency_id="image")
    gridding.then(lambda: ready("Make grid"), outputs=make_grid, queue=False, api_visibility="private")
    gridding.failure(lambda: ready("Make grid"), outputs=make_grid, queue=False, api_visibility="private")
    walking = walk.click(lambda: busy(), outputs=walk, queue=False, api_visibility="private").then(
        walk_image, inputs=[prompt, seed_a, seed_b, frames, model, *knob_inputs],
        outputs=[walk_gif, walk_frames, walk_recipe, walk_recipe_raw], api_visibility="private", concurrency_id="image")
    walking.then(lambda: ready("Walk"), outputs=walk, queue=False, api_visibility="private")
    walking.failure(lambda: ready("Walk"), outputs=walk, queue=False, api_visibility="private")
    # The stop event ends a running generation at its next step; cancels also drops
    # one still waiting in the queue, which would otherwise start after Stop.
    stop.click(stop_image, None, None, cancels=[run, comparing, gridding, walking], api_visibility="private").then(
        lambda: (ready(), ready("Compare"), ready("Make grid"), ready("Walk")),
        outputs=[generate, compare, make_grid, walk], queue=False, api_visibility="private")
    hook = {"restore": restore_recipe, "outputs": [prompt, model, start["source"], *knob_inputs]}  # History tab
    upload.upload(restore_recipe, upload, [prompt, model, *knob_inputs, start["source"]],
                  api_visibility="private").success(
        model_views, model, [card, trajectory_box, family_box, family_views], api_visibility="private")
    model.input(use_model, [model, x_knob, y_knob, knob_name],
                [card, *controls.values(), knob_name, values, x_knob, y_knob, trajectory_box, family_box, family_views],
                api_visibility="private")
    # a restore (recipe file, History) sets the model without model.input: the pickers follow it here
    model.change(model_pickers, [model, x_knob, y_knob, knob_name], [knob_name, values, x_knob, y_knob],
                 api_visibility="private", queue=False)
    knob_name.input(sweep_for, [knob_name, model, *knob_inputs], values, api_visibility="private")
    x_knob.input(grid_values_for, [x_knob, model, *knob_inputs], x_values, api_visibility="private")
    y_knob.input(grid_values_for, [y_knob, model, *knob_inputs], y_values, api_visibility="private")
    wire_sources(start)
    start["noise_button"].click(
        lambda *values: show_noising(studio, *values),
        [model, *start_inputs, controls["steps"], controls["scheduler"], controls["seed"]], start["frames"],
        api_visibility="private", concurrency_id="image")
    maps_run = mapping["button"].click(lambda: busy(), outputs=mapping["button"], queue=False,
                                       api_visibility="private").then(
        lambda *values: make_maps(studio, *values), [prompt, model, controls["steps"], controls["guidance"],
                                                     controls["seed"]],
        [mapping["method"], mapping["maps"]], api_visibility="private", concurrency_id="image")
    for done in (maps_run.then, maps_run.failure):
        done(lambda: ready("Map the prompt"), outputs=mapping["button"], queue=False, api_visibility="private")
    return hook


def split_start(values: tuple) -> tuple[tuple, object]:
    """(the knob values, the start picture or None) from a handler's trailing inputs: every
    knob of ALL_KNOBS, then the start picture's source, upload and sketch (left out: none)."""
    knob_values, start = values[:len(ALL_KNOBS)], values[len(ALL_KNOBS):]
    return knob_values, start_picture(*start) if start else None


def grid_axes(used) -> list[str]:
    """The knobs a grid can vary: those the model reads and sweeps, one image per cell."""
    return [name for name in sweep_names(ImageParams, used) if name != "batch_size"]
