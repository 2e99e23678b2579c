"""Image tab: prompt -> image through diffusers, every knob, the denoising trajectory,
variants side by side, an X/Y grid, and recipes restored from studio PNGs."""

from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path

import gradio as gr
from PIL import Image

from aigc_studio import shapes
from aigc_studio.catalog import UnknownModelError
from aigc_studio.engines.image import GenerationStopped
from aigc_studio.params import ImageParams, parse_values, sweepable
from aigc_studio import storage
from aigc_studio.recipe import RECIPE_KEY, Result, read_recipe
from aigc_studio.studio import Studio
from aigc_studio.ui.widgets import (
    KnobDropdown, Sessions, control, make_variants, model_card, model_dropdown, run_in_worker, user_errors, variant_controls,
)

KNOBS = ("negative_prompt", "steps", "guidance", "width", "height", "seed", "scheduler")
MODEL_DEFAULT_KNOBS = ("steps", "guidance", "width", "height", "scheduler")
STRIP_THUMB = 64  # px per step in the trajectory strip
VIEW_PX = 256  # the largest side of a kept trajectory step (the step view shows 256 px high)
# Each streamed preview costs a file in Gradio's cache (30 per image before), so a
# request streams this many, evenly spaced; the trajectory strip still shows every step.
MAX_PREVIEWS = 3

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
    try:
        return [str(save(result)) for result in results]
    except storage.NotKept as error:
        log.warning("%s", error)
        gr.Warning(f"{error}. Download it to keep it.")
        return [_with_recipe(result) for result in results]


def _with_recipe(result: Result) -> Image.Image:
    picture = result.output.copy()
    picture.info[RECIPE_KEY] = result.recipe.to_json()
    return picture


def start_pruning(settings) -> None:
    """Prune the output folder and Gradio's cache by age and size while the server runs."""
    storage.start_janitor([
        storage.Budget(settings.output_dir, settings.keep_hours, settings.max_output_mb),
        storage.Budget(Path(gr.utils.get_upload_folder()), settings.keep_hours, settings.max_cache_mb),
    ])


def build(studio: Studio, sessions: Sessions) -> None:
    start_pruning(studio.settings)
    try:
        spec = studio.model_spec("image")
        header, default_id, defaults = model_card(spec), spec.id, spec.defaults
    except UnknownModelError as error:
        header, default_id, defaults = f"⚠️ {error}", None, {}
    if default_id == "shapes-diffusion":
        header += f"\n\nThe embedded model draws one coloured shape. It understands {shapes.vocabulary_text()}."
    with gr.Tab("Image", id="image"):
        gr.Markdown(header)
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="image-prompt",
                                    placeholder="e.g. a small yellow triangle")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="image-generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="image-stop")
                image = gr.Image(label="Image (streams the denoising while it runs)", type="filepath", format="png",
                                 elem_id="image-output", buttons=["download", "fullscreen"])
                with gr.Accordion("Denoising trajectory", open=True):
                    strip = gr.Image(label="Predicted image after each step", type="pil", elem_id="image-strip",
                                     interactive=False)
                    step_slider = gr.Slider(1, 2, value=1, step=1, label="step", elem_id="image-step")
                    step_view = gr.Image(label="At this step", type="pil", interactive=False, height=256)
                batch = gr.Gallery(label="Batch (batch size > 1)", columns=4, object_fit="contain", height="auto",
                                   visible=False, elem_id="image-batch")
                recipe = gr.JSON(label="Recipe (embedded in the PNG)", open=False)
            with gr.Column(scale=2):
                controls = {name: control(ImageParams, name, defaults.get(name), elem_id=f"image-{name}") for name in KNOBS}
                model = model_dropdown(studio.catalog.choices("image"), default_id)
                batch_size = control(ImageParams, "batch_size", elem_id="image-batch_size")
                upload = gr.File(label="Load a studio PNG to restore its recipe", file_types=[".png"],
                                 elem_id="image-upload")
        with gr.Accordion("Side by side: 2-4 variants of one prompt", open=False):
            mode, count, knob_name, values = variant_controls(ImageParams)
            values.value, knob_name.value = "1, 3, 7", "guidance"
            compare = gr.Button("Compare", elem_id="image-compare")
            gallery = gr.Gallery(label="Variants", elem_id="image-gallery", columns=4, object_fit="contain",
                                 height="auto")
            compare_recipes = gr.JSON(label="Recipes", open=False)
        with gr.Accordion("X/Y grid: one or two knobs over their values", open=False):
            axes = [name for name in sweepable(ImageParams) if name != "batch_size"]  # every cell is one image
            with gr.Row():
                x_knob = KnobDropdown(axes, value="steps", label="X knob", info="The knob that varies across columns.")
                x_values = gr.Textbox(value="4, 8, 16, 32", label="X values (1-6, comma-separated)")
                y_knob = KnobDropdown(["none", *axes], value="guidance", label="Y knob",
                                      info="The knob that varies down rows (none: one row).")
                y_values = gr.Textbox(value="1, 3, 7", label="Y values")
            x_knob.knob_name, y_knob.knob_name = "x_knob", "y_knob"  # API errors name the endpoint's keywords
            make_grid = gr.Button("Make grid", elem_id="image-grid-button")
            grid_image = gr.Image(label="Grid", type="filepath", format="png", elem_id="image-grid")
            grid_gallery = gr.Gallery(label="Cells", columns=6, object_fit="contain", height="auto")

    knob_inputs = [controls[name] for name in KNOBS]

    def image_params(model, **values) -> ImageParams:
        return studio.params("image", model, **values)

    def generate_image(prompt, negative_prompt, steps, guidance, width, height, seed, scheduler="default",
                       model=None, batch_size=1, request: gr.Request = None, progress=gr.Progress()):
        """One image for prompt: streams a preview per denoising step, then the PNG
        (with its recipe embedded) as the final output. With batch_size > 1 the
        output is the first image; the tab's Batch gallery shows them all."""
        with user_errors():
            chosen = image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                  width=width, height=height, seed=seed, scheduler=scheduler, batch_size=batch_size)
            stop_event = sessions.fresh_stop(request, "image")
            previews: list[bytes] = []  # every step, compact, for the strip
            streamed = preview_steps(chosen.steps)

            def work(emit):
                def on_step(step, total):
                    nonlocal streamed
                    streamed = preview_steps(total)  # some schedulers run more iterations than steps
                    progress((step + 1, total), desc="denoising")

                def on_preview(step, picture):
                    previews.append(compact(picture))
                    if step in streamed:
                        emit(picture)

                return studio.images(prompt, [("", chosen)], model, on_step, on_preview, stop_event)

            try:
                for kind, value in run_in_worker(work, stop_event):
                    if kind == "update":
                        yield value
                    else:
                        sessions.keep_recipes(request, [r.recipe for r in value])
                        sessions.keep(request, "trajectory", previews)
                        shown = keep_pictures(studio.save, value)
                        sessions.keep(request, "batch", list(zip(shown, [r.label for r in value])))
                        yield shown[0]
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")

    def compare_image(prompt, mode, count, knob_name, values, negative_prompt, steps, guidance, width, height, seed,
                      scheduler="default", model=None, request: gr.Request = None, progress=gr.Progress()):
        """2-4 labelled variants (seed variants share one batched call); a gallery of PNGs."""
        with user_errors():
            base = image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                width=width, height=height, seed=seed, scheduler=scheduler)
            variants = make_variants(base, mode, count, knob_name, values)
            on_step = lambda step, total: progress((step + 1, total), desc="denoising")
            try:
                results = studio.images(prompt, variants, model, on_step, stop=sessions.fresh_stop(request, "image"))
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")
                return gr.skip()
            sessions.keep_recipes(request, [r.recipe for r in results])
            return list(zip(keep_pictures(studio.save, results), [r.label for r in results]))

    def image_grid(prompt, x_knob, x_values, y_knob, y_values, negative_prompt, steps, guidance, width, height, seed,
                   scheduler="default", model=None, request: gr.Request = None, progress=gr.Progress()):
        """An X/Y grid over one or two knobs (seed fixed unless it is an axis).
        Returns the labelled grid PNG and a gallery of every cell."""
        with user_errors():
            base = image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                width=width, height=height, seed=seed, scheduler=scheduler)
            xs = parse_values(x_values, ImageParams, x_knob, low=1, high=6, field="x_values")
            use_y = y_knob and y_knob != "none"
            ys = parse_values(y_values, ImageParams, y_knob, low=1, high=6, field="y_values") if use_y else None
            on_step = lambda step, total: progress((step + 1, total), desc="denoising")
            try:
                picture, cells = studio.image_grid(prompt, base, x_knob, xs, y_knob if use_y else None, ys, model,
                                                   on_step, stop=sessions.fresh_stop(request, "image"))
            except GenerationStopped as stopped:
                gr.Info(f"Stopped ({stopped}).")
                return gr.skip(), gr.skip()
            sessions.keep_recipes(request, [c.recipe for c in cells])
            try:
                grid_shown = str(studio.save_grid(picture, cells))
            except storage.NotKept as error:
                log.warning("%s", error)
                gr.Warning(f"{error}. Download it to keep it.")
                return picture, [(_with_recipe(c), c.label) for c in cells]
            return grid_shown, list(zip(keep_pictures(studio.save, cells), [c.label for c in cells]))

    def stop_image(request: gr.Request):
        sessions.stop(request, "image")

    def show_recipes(request: gr.Request):
        return [dataclasses.asdict(r) for r in sessions.recipes(request)]

    def show_trajectory(request: gr.Request):
        previews = sessions.kept(request, "trajectory", [])
        if not previews:
            return None, gr.update(maximum=2, value=1), None
        thumbs = [expand(p).resize((STRIP_THUMB, STRIP_THUMB), Image.Resampling.NEAREST) for p in previews]
        strip_image = Image.new("RGB", (STRIP_THUMB * len(thumbs), STRIP_THUMB), "white")
        for i, thumb in enumerate(thumbs):
            strip_image.paste(thumb, (i * STRIP_THUMB, 0))
        last = len(previews)
        return strip_image, gr.update(minimum=1, maximum=max(last, 2), value=last), expand(previews[-1])

    def show_batch(request: gr.Request):
        cells = sessions.kept(request, "batch", [])
        return gr.update(value=cells, visible=len(cells) > 1)

    def show_step(step, request: gr.Request):
        previews = sessions.kept(request, "trajectory", [])
        return expand(previews[min(int(step), len(previews)) - 1]) if previews else None

    def restore_recipe(file):
        """Every knob (and the prompt and model) from a studio PNG's embedded recipe."""
        if file is None:
            return [gr.update()] * (len(KNOBS) + 3)
        with user_errors():
            saved = read_recipe(file)
            if saved.modality != "image":
                raise ValueError(f"recipe file: holds a {saved.modality} recipe, not an image one")
            restored = (*KNOBS, "batch_size")  # a batch's images reproduce exactly only in a batch of that size
            chosen = studio.params("image", saved.model_id, **{k: v for k, v in saved.params.items() if k in restored})
        gr.Info(f"Restored the recipe of a {saved.model_id} image (seed {chosen.seed}).")
        return [saved.prompt, saved.model_id] + [getattr(chosen, name) for name in restored]

    def use_model_defaults(model_id):
        with user_errors():
            chosen = studio.params("image", model_id)
        return [getattr(chosen, name) for name in MODEL_DEFAULT_KNOBS]

    run = gr.on([generate.click, prompt.submit], generate_image, inputs=[prompt, *knob_inputs, model, batch_size],
                outputs=image, api_visibility="private")  # public: ui/api.py
    run.then(show_batch, outputs=batch, api_visibility="private")
    run.then(show_recipes, outputs=recipe, api_visibility="private")
    run.then(show_trajectory, outputs=[strip, step_slider, step_view], api_visibility="private")
    step_slider.release(show_step, step_slider, step_view, api_visibility="private")
    comparing = compare.click(compare_image, inputs=[prompt, mode, count, knob_name, values, *knob_inputs, model],
                              outputs=gallery, api_visibility="private")
    comparing.then(show_recipes, outputs=compare_recipes, api_visibility="private")
    gridding = make_grid.click(image_grid, inputs=[prompt, x_knob, x_values, y_knob, y_values, *knob_inputs, model],
                               outputs=[grid_image, grid_gallery], api_visibility="private")
    # The stop event ends a running generation at its next step; cancels also drops
    # one still waiting in the queue, which would otherwise start after Stop.
    stop.click(stop_image, None, None, cancels=[run, comparing, gridding], api_visibility="private")
    upload.upload(restore_recipe, upload, [prompt, model, *knob_inputs, batch_size], api_visibility="private")
    model.input(use_model_defaults, model, [controls[name] for name in MODEL_DEFAULT_KNOBS],
                api_visibility="private")
