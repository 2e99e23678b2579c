"""Image tab: prompt -> image through diffusers, every knob, the denoising trajectory,
variants side by side (seeds, a knob, or models), an X/Y grid (knobs or models), a latent
walk from one seed to another, what a VAE or GAN learned, and recipes restored from
studio PNGs.

In three parts: layout(studio) builds the components, the module's handlers run the
operations of aigc_studio/actions/image.py for one session, and wire() binds them to the
events. build() is the two together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import gradio as gr

from aigc_studio.actions import image as actions
from aigc_studio.actions.image import (
    ALL_KNOBS, MODELS, NOTHING, compact, compare_choices, expand, grid_axes, is_family, knobs_and_start, trajectory_strip,
)
from aigc_studio.engines.image_inside import check_input, fingerprint
from aigc_studio.grid import MODEL_AXIS
from aigc_studio.params import ImageParams
from aigc_studio.studio import GenerationStopped, Result, Studio, UnknownModelError
from aigc_studio.ui.components import KnobDropdown, model_dropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.files import keep_or_cache, with_recipe
from aigc_studio.ui.image_inside_tab import (
    denoising, make_maps, map_controls, show_noising, start_controls, walk_image, walk_parts, wire_sources,
)
from aigc_studio.ui.knob_controls import (
    NO_AXIS, GridPickers, grid_pickers, knob_choices_for, knob_controls, knob_updates, sweep_updates, sweep_values,
    VariantControls, variant_controls,
)
from aigc_studio.ui.page import busy_run, error_box, page_assets, ready
from aigc_studio.ui.recipe_view import model_card, recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions, bind
from aigc_studio.ui.streaming import run_in_worker

BASIC_KNOBS = ("steps", "guidance", "seed")  # the rest sit under "Advanced knobs"
# strength sits with the start picture
ADVANCED_KNOBS = tuple(name for name in ALL_KNOBS if name not in BASIC_KNOBS and name != "strength")
SHAPES_NOTE = "\n\nThe embedded model draws one coloured shape: red, green, blue or yellow; circle, square or triangle."


# ----- the layout -----------------------------------------------------------------------------

@dataclass
class ImageLayout:
    """The Image tab's components, as wire() and the History tab need them."""

    card: gr.Markdown
    prompt: gr.Textbox
    generate: gr.Button
    stop: gr.Button
    image: gr.Image
    batch: gr.Gallery
    trajectory_box: gr.Accordion
    strip: gr.Image
    step_slider: gr.Slider
    step_view: gr.Image
    recipe: gr.Markdown
    recipe_raw: gr.JSON
    model: gr.Dropdown
    controls: dict  # knob name -> control, every ImageParams field
    start: dict  # the start picture's parts (image_inside_tab.start_controls)
    mapping: dict  # "What each prompt word drew" (image_inside_tab.map_controls)
    upload: gr.File
    variants: VariantControls  # side by side: mode, count, knob to sweep, values
    models: gr.Dropdown
    compare: gr.Button
    gallery: gr.Gallery
    compare_recipes: gr.Markdown
    compare_recipes_raw: gr.JSON
    grid: GridPickers
    make_grid: gr.Button
    grid_image: gr.Image
    grid_gallery: gr.Gallery
    seed_a: gr.Number
    seed_b: gr.Number
    frames: gr.Slider
    walk: gr.Button
    walk_gif: gr.Image
    walk_frames: gr.Gallery
    walk_recipe: gr.Markdown
    walk_recipe_raw: gr.JSON
    family_box: gr.Accordion
    family_views: gr.Gallery

    @property
    def knob_inputs(self) -> list:
        return [self.controls[name] for name in ALL_KNOBS]

    @property
    def start_inputs(self) -> list:
        return [self.start["source"], self.start["upload"], self.start["sketch"]]


def layout(studio: Studio) -> ImageLayout:
    try:
        spec = studio.model_spec("image")
        header, default_id, defaults = model_card(spec), spec.id, spec.defaults
        used, schedulers = studio.knobs_used("image"), spec.schedulers
    except UnknownModelError as error:
        header, default_id, defaults, used, schedulers = f"⚠️ {error}", None, {}, ALL_KNOBS, None
    if default_id == "shapes-diffusion":
        header += SHAPES_NOTE
    with gr.Tab("Image", id="image"):
        page_assets()
        card = gr.Markdown(header)
        with gr.Row():
            with gr.Column(scale=3):
                results = result_column(studio, default_id)
            with gr.Column(scale=2):
                model = model_dropdown(studio.catalog.choices("image"), default_id)
                controls = knob_controls(ImageParams, BASIC_KNOBS, defaults, used, prefix="image")
                with gr.Accordion("Advanced knobs", open=False, elem_id="image-advanced"):
                    for name in ADVANCED_KNOBS:  # the scheduler offers the samplers this model takes
                        controls |= knob_controls(ImageParams, [name], defaults, used, prefix="image",
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
            side = side_by_side(studio, used, default_id)
        with gr.Accordion("X/Y grid: one or two knobs over their values", open=False):
            grid = grid_parts(used)
        with gr.Accordion("Latent walk: from one seed to another", open=False):
            walk = walk_parts()
        with gr.Accordion("What this model learned", open=True, visible=is_family(studio, default_id),
                          elem_id="image-family") as family_box:
            family_views = gr.Gallery(actions.family_views(studio, default_id), label="Training views", columns=3,
                                      object_fit="contain", height="auto", format="png", elem_id="image-family-views",
                                      elem_classes=["studio-grid"])
    return ImageLayout(card=card, model=model, controls=controls, start=start, mapping=mapping, upload=upload,
                       family_box=family_box, family_views=family_views, **results, **side, **grid, **walk)


def result_column(studio: Studio, default_id: str | None) -> dict:
    """The prompt, Generate and Stop, the image, a batch, the denoising trajectory, the recipe."""
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="image-prompt", placeholder="e.g. a small yellow triangle")
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
        strip = gr.Image(type="pil", show_label=False, interactive=False, elem_id="image-strip", buttons=["fullscreen"])
        with gr.Row():
            step_slider = gr.Slider(1, 2, value=1, step=1, label="step", elem_id="image-step", scale=2)
            step_view = gr.Image(type="pil", show_label=False, interactive=False, height=192, scale=1,
                                 elem_id="image-step-view")
    recipe, recipe_raw = recipe_view("Recipe (embedded in the PNG)")
    return dict(prompt=prompt, generate=generate, stop=stop, image=image, batch=batch, trajectory_box=trajectory_box,
                strip=strip, step_slider=step_slider, step_view=step_view, recipe=recipe, recipe_raw=recipe_raw)


def side_by_side(studio: Studio, used, default_id: str | None) -> dict:
    variants = variant_controls(
        ImageParams, [n for n in used if n != "batch_size"], "image", extra_modes=(MODELS,),
        info="What differs between the columns. Different models: one prompt and seed, each model at its "
             "recommended knobs.")
    models = KnobDropdown(studio.catalog.choices("image"), value=compare_choices(studio), multiselect=True,
                          label="Models (2-4)", visible=False, knob_name="models", elem_id="image-models")
    if "guidance" in used:
        variants.knob_name.value = "guidance"
    variants.values.value = sweep_values(studio.params("image") if default_id else ImageParams(),
                                         variants.knob_name.value)
    compare = gr.Button("Compare", elem_id="image-compare")
    error_box("image-compare")
    gallery = gr.Gallery(label="Variants", elem_id="image-gallery", columns=4, object_fit="contain", height="auto",
                         elem_classes=["studio-grid"])
    compare_recipes, compare_recipes_raw = recipe_view("Recipes")
    return dict(variants=variants, models=models, compare=compare,
                gallery=gallery, compare_recipes=compare_recipes, compare_recipes_raw=compare_recipes_raw)


def grid_parts(used) -> dict:
    # "model" is an axis too: its values are model ids (diffusion vs VAE vs GAN, one seed)
    grid = grid_pickers(ImageParams, grid_axes(used), "image", "steps", "4, 8, 16, 32", "guidance", "1, 3, 7",
                        extra_axes=(MODEL_AXIS,), what="knob (or model)", most_cells=None)  # up to 6 x 6
    make_grid = gr.Button("Make grid", elem_id="image-grid-button")
    error_box("image-grid-button")
    grid_image = gr.Image(type="filepath", format="png", show_label=False, elem_id="image-grid")
    grid_gallery = gr.Gallery(label="Cells", columns=6, object_fit="contain", height="auto",
                              elem_id="image-grid-cells", elem_classes=["studio-grid"])
    return dict(grid=grid, make_grid=make_grid, grid_image=grid_image, grid_gallery=grid_gallery)


# ----- the handlers: one session's runs -------------------------------------------------------
# request and progress come first: Gradio fills these special arguments only among the
# positional parameters before *values (after it they would stay None: no session).

def keep_pictures(save, results: list[Result]) -> list:
    """Save each result with save(result) and return the paths to show. When the
    output folder cannot be written (disk full), the pictures themselves are shown,
    their recipe in their PNG text (Gradio keeps it), with one warning that they were
    not kept; earlier files are untouched."""
    return keep_or_cache(lambda: [str(save(result)) for result in results],
                         lambda: [with_recipe(result) for result in results])


def check_restored_start(sessions: Sessions, request: gr.Request, picture) -> None:
    """Warn when a restored image-to-image recipe gets another start picture than its own."""
    expected = sessions.kept(request, "expected_start", None)
    if expected and picture is not None and fingerprint(check_input(picture)) != expected:
        gr.Warning("This start picture is not the one the restored recipe used (its SHA-256 differs): "
                   "the image will not be the same.")


async def generate_image(studio: Studio, sessions: Sessions, request: gr.Request, progress=gr.Progress(), prompt="",
                         model=None, *values):
    """One image for prompt (from the start picture, if one is chosen): streams a few
    denoising previews, then the PNG (with its recipe embedded). With batch_size > 1
    the Batch gallery shows them all."""
    with user_errors():
        knobs, picture = knobs_and_start(values)
        check_restored_start(sessions, request, picture)
        stop = sessions.fresh_stop(request, "image")
        previews: list[bytes] = []  # every step, compact, for the strip
        job = actions.GenerateImage(prompt, knobs, model, picture)

        def work(emit):
            return actions.generate(studio, job, emit, stop, denoising(progress),
                                    on_picture=lambda step, preview: previews.append(compact(preview)))

        try:
            async for kind, value in run_in_worker(work, stop):
                if kind == "update":
                    yield value
                    continue
                sessions.keep_recipes(request, [r.recipe for r in value])
                sessions.keep(request, "trajectory", previews)
                sessions.keep(request, "trajectory_start", picture is not None and len(previews) > 0)
                shown = await asyncio.to_thread(keep_pictures, studio.save, value)
                sessions.keep(request, "batch", list(zip(shown, [r.label for r in value])))
                yield shown[0]
        except GenerationStopped as stopped:
            gr.Info(f"Stopped ({stopped}).")


def compare_image(studio: Studio, sessions: Sessions, request: gr.Request, progress=gr.Progress(), prompt="",
                  mode=None, count=None, knob_name=None, values=None, models=None, model=None, *more):
    """2-4 labelled variants (seed variants share one batched call), or 2-4 models at
    one seed, each at its recommended knobs; a gallery of PNGs. With a start picture
    every variant is image to image (sweep strength to see how far each goes)."""
    with user_errors():
        knobs, picture = knobs_and_start(more)
        if mode == MODELS:  # the knobs shown are this model's: the others keep their own, at one seed
            knobs = {"seed": knobs["seed"]}
        job = actions.CompareImage(prompt, knobs, model, mode, count, knob_name, values, models, picture)
        try:
            results = actions.compare(studio, job, denoising(progress), sessions.fresh_stop(request, "image"))
        except GenerationStopped as stopped:
            gr.Info(f"Stopped ({stopped}).")
            return gr.skip()
        sessions.keep_recipes(request, [r.recipe for r in results])
        return list(zip(keep_pictures(studio.save, results), [r.label for r in results]))


def image_grid(studio: Studio, sessions: Sessions, request: gr.Request, progress=gr.Progress(), prompt="",
               x_knob=None, x_values=None, y_knob=None, y_values=None, model=None, *values):
    """An X/Y grid over one or two knobs (seed fixed unless it is an axis), from the
    start picture if one is chosen. Returns the labelled grid PNG and a gallery of every cell."""
    with user_errors():
        knobs, picture = knobs_and_start(values)
        job = actions.ImageGrid(prompt, knobs, model, x_knob, x_values, y_knob or NO_AXIS, y_values, picture)
        try:
            grid, cells = actions.image_grid(studio, job, denoising(progress), sessions.fresh_stop(request, "image"))
        except GenerationStopped as stopped:
            gr.Info(f"Stopped ({stopped}).")
            return gr.skip(), gr.skip()
        sessions.keep_recipes(request, [c.recipe for c in cells])
        labels = [c.label for c in cells]
        return keep_or_cache(lambda: (str(studio.save_grid(grid, cells)),
                                      list(zip(keep_pictures(studio.save, cells), labels))),
                             lambda: (grid, list(zip(map(with_recipe, cells), labels))))


def stop_image(sessions: Sessions, request: gr.Request):
    sessions.stop(request, "image")


def show_recipes(sessions: Sessions, request: gr.Request):
    kept = sessions.recipes(request)
    return recipe_card(kept), recipe_json(kept)


def show_trajectory(sessions: Sessions, request: gr.Request):
    previews = sessions.kept(request, "trajectory", [])
    if not previews:
        return None, gr.update(maximum=2, value=1), None
    last = len(previews)
    first = "noised" if sessions.kept(request, "trajectory_start", False) else None
    return (trajectory_strip([expand(p) for p in previews], first), gr.update(minimum=1, maximum=max(last, 2), value=last),
            expand(previews[-1]))


def show_batch(sessions: Sessions, request: gr.Request):
    cells = sessions.kept(request, "batch", [])
    return gr.update(value=cells, visible=len(cells) > 1)


def show_step(sessions: Sessions, step, request: gr.Request):
    previews = sessions.kept(request, "trajectory", [])
    return expand(previews[min(int(step), len(previews)) - 1]) if previews else None


def restore_recipe(studio: Studio, sessions: Sessions, file, request: gr.Request = None):
    """The prompt, the model, every knob (in ALL_KNOBS' order) and the start picture's source
    from a studio file's embedded recipe; the knobs the recipe's model reads are shown, the
    others hidden. An image-to-image recipe asks for its start picture (it records the
    picture's SHA-256 and size)."""
    if file is None:
        return [gr.update()] * (len(ALL_KNOBS) + 3)
    with user_errors():
        saved = actions.restore(studio, file)
    gr.Info(f"Restored the recipe of a {saved.model} image (seed {saved.params.seed}).")
    sessions.keep(request, "expected_start", saved.start_sha256)
    if saved.start_sha256:
        width, height = saved.start_size or ("?", "?")
        gr.Info(f"It started from a {width}x{height} picture (SHA-256 {str(saved.start_sha256)[:12]}...): choose the "
                f"same picture under 'Start from a picture' to make the same image.", duration=15)
    source = gr.update() if saved.start_sha256 else NOTHING  # a text-to-image recipe starts from nothing
    return [saved.prompt, saved.model] + [gr.update(value=getattr(saved.params, name), visible=name in saved.used)
                                          for name in ALL_KNOBS] + [source]


def family_updates(studio: Studio, model_id) -> tuple:
    """(accordion update, gallery update) for a model: its training views, or hidden."""
    with user_errors():
        views = actions.family_views(studio, model_id)
    if views is None:
        return gr.update(visible=False), gr.update(value=None)
    return gr.update(visible=True), gr.update(value=views)


def model_views(studio: Studio, model_id):
    """What shows for a model beside its knobs: its card, the denoising trajectory
    (diffusion only) and what a VAE or GAN learned."""
    with user_errors():
        chosen = studio.model_spec("image", model_id)
    return (model_card(chosen), gr.update(visible=not is_family(studio, model_id)), *family_updates(studio, model_id))


def model_pickers(studio: Studio, model_id, x, y, knob):
    """(side-by-side picker, its values, grid X, grid Y) for a model: the knobs it reads,
    the chosen ones kept where it reads them (after a recipe restore too)."""
    with user_errors():
        picker, sweep = sweep_updates(studio, "image", model_id, knob)
        axes = [*grid_axes(studio.knobs_used("image", model_id)), MODEL_AXIS]
    choices = knob_choices_for(axes)
    return (picker, sweep, gr.update(choices=choices, value=x if x in axes else axes[0]),
            gr.update(choices=[(NO_AXIS, NO_AXIS), *choices], value=y if y in axes else NO_AXIS))


def use_model(studio: Studio, controls: dict, model_id, x, y, knob):
    """A newly picked model: its card, its knobs (shown when it reads them, at its
    recommended values and ranges), the knobs side by side and the grid can vary."""
    with user_errors():
        knob_changes = knob_updates(studio, "image", model_id, controls)
    card, trajectory, family_box, views = model_views(studio, model_id)
    return (card, *knob_changes, *model_pickers(studio, model_id, x, y, knob), trajectory, family_box, views)


def sweep_for(studio: Studio, knob, model_id, *values):
    with user_errors():
        return sweep_values(studio.params("image", model_id, **knobs_and_start(values)[0]), knob)


def grid_values_for(studio: Studio, knob, model_id, *values):
    if knob == NO_AXIS:
        return ""
    if knob == MODEL_AXIS:
        return ", ".join(compare_choices(studio))
    return sweep_for(studio, knob, model_id, *values)


# ----- the events -----------------------------------------------------------------------------

def wire(parts: ImageLayout, studio: Studio, sessions: Sessions) -> dict:
    """Bind the handlers to parts' events; returns the History tab's hook (restore and its outputs)."""
    p, knob_inputs, start_inputs = parts, parts.knob_inputs, parts.start_inputs
    private = dict(api_visibility="private")  # the public endpoints are ui/image_api.py's
    run = busy_run([p.generate.click, p.prompt.submit], bind(generate_image, studio, sessions),
                   [p.prompt, p.model, *knob_inputs, *start_inputs], p.image, p.generate, concurrency_id="image")
    run.then(bind(show_batch, sessions), outputs=p.batch, **private)
    run.then(bind(show_recipes, sessions), outputs=[p.recipe, p.recipe_raw], **private)
    run.then(bind(show_trajectory, sessions), outputs=[p.strip, p.step_slider, p.step_view], **private)
    p.step_slider.release(bind(show_step, sessions), p.step_slider, p.step_view, **private)
    mode = p.variants.mode
    mode.change(lambda m: gr.update(visible=m == MODELS), mode, p.models, queue=False, **private)
    comparing = busy_run([p.compare.click], bind(compare_image, studio, sessions),
                         [p.prompt, *p.variants.inputs(), p.models, p.model, *knob_inputs,
                          *start_inputs], p.gallery, p.compare, "Compare", concurrency_id="image")
    comparing.then(bind(show_recipes, sessions), outputs=[p.compare_recipes, p.compare_recipes_raw], **private)
    grid = p.grid
    gridding = busy_run([p.make_grid.click], bind(image_grid, studio, sessions),
                        [p.prompt, grid.x_knob, grid.x_values, grid.y_knob, grid.y_values, p.model, *knob_inputs,
                         *start_inputs], [p.grid_image, p.grid_gallery], p.make_grid, "Make grid", concurrency_id="image")
    walking = busy_run([p.walk.click], bind(walk_image, studio, sessions),
                       [p.prompt, p.seed_a, p.seed_b, p.frames, p.model, *knob_inputs],
                       [p.walk_gif, p.walk_frames, p.walk_recipe, p.walk_recipe_raw], p.walk, "Walk",
                       concurrency_id="image")
    # The stop event ends a running generation at its next step; cancels also drops
    # one still waiting in the queue, which would otherwise start after Stop.
    p.stop.click(bind(stop_image, sessions), None, None, cancels=[run, comparing, gridding, walking], **private).then(
        lambda: (ready(), ready("Compare"), ready("Make grid"), ready("Walk")),
        outputs=[p.generate, p.compare, p.make_grid, p.walk], queue=False, **private)
    restored = [p.prompt, p.model, *knob_inputs, p.start["source"]]  # restore_recipe's order
    p.upload.upload(bind(restore_recipe, studio, sessions), p.upload, restored, **private).success(
        bind(model_views, studio), p.model, [p.card, p.trajectory_box, p.family_box, p.family_views], **private)
    pickers = [p.variants.knob_name, p.variants.values, grid.x_knob, grid.y_knob]
    p.model.input(bind(use_model, studio, p.controls), [p.model, grid.x_knob, grid.y_knob, p.variants.knob_name],
                  [p.card, *p.controls.values(), *pickers, p.trajectory_box, p.family_box, p.family_views], **private)
    # a restore (recipe file, History) sets the model without model.input: the pickers follow it here
    p.model.change(bind(model_pickers, studio), [p.model, grid.x_knob, grid.y_knob, p.variants.knob_name], pickers,
                   queue=False, **private)
    p.variants.knob_name.input(bind(sweep_for, studio), [p.variants.knob_name, p.model, *knob_inputs], p.variants.values,
                               **private)
    for knob, values in ((grid.x_knob, grid.x_values), (grid.y_knob, grid.y_values)):
        knob.input(bind(grid_values_for, studio), [knob, p.model, *knob_inputs], values, **private)
    wire_inside(p, studio)
    return {"restore": bind(restore_recipe, studio, sessions), "outputs": restored}  # the History tab


def wire_inside(p: ImageLayout, studio: Studio) -> None:
    """The start picture's sources, its forward process and the prompt maps."""
    wire_sources(p.start)
    p.start["noise_button"].click(
        bind(show_noising, studio), [p.model, *p.start_inputs, p.controls["steps"], p.controls["scheduler"],
                                     p.controls["seed"]],
        p.start["frames"], api_visibility="private", concurrency_id="image")
    busy_run([p.mapping["button"].click], bind(make_maps, studio),
             [p.prompt, p.model, p.controls["steps"], p.controls["guidance"], p.controls["seed"]],
             [p.mapping["method"], p.mapping["maps"]], p.mapping["button"], "Map the prompt", concurrency_id="image")


def build(studio: Studio, sessions: Sessions) -> dict:
    """The Image tab; returns the History tab's hook: {"restore": fn(file, request), "outputs": [...]}."""
    return wire(layout(studio), studio, sessions)
