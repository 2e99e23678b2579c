"""Image tab: prompt -> image through diffusers, every knob, variants side by side."""

from __future__ import annotations

import gradio as gr

from aigc_studio import shapes
from aigc_studio.catalog import UnknownModelError
from aigc_studio.params import ImageParams
from aigc_studio.studio import Studio
from aigc_studio.ui.widgets import Sessions, control, make_variants, model_card, user_errors, variant_controls

KNOBS = ("negative_prompt", "steps", "guidance", "width", "height", "seed", "scheduler")


def build(studio: Studio, sessions: Sessions) -> None:
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
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="image-prompt", placeholder="e.g. a small yellow triangle")
                generate = gr.Button("Generate", variant="primary", elem_id="image-generate")
                image = gr.Image(label="Image", type="filepath", format="png", elem_id="image-output", buttons=["download", "fullscreen"])
                recipe = gr.JSON(label="Recipe (embedded in the PNG)", open=False)
            with gr.Column(scale=2):
                controls = {name: control(ImageParams, name, defaults.get(name)) for name in KNOBS}
                model = gr.Dropdown(studio.catalog.choices("image"), value=default_id, label="model")
        with gr.Accordion("Side by side: 2-4 variants of one prompt", open=False):
            mode, count, knob_name, values = variant_controls(ImageParams)
            values.value = "1, 3, 7"
            knob_name.value = "guidance"
            compare = gr.Button("Compare", elem_id="image-compare")
            gallery = gr.Gallery(label="Variants", elem_id="image-gallery", columns=4, object_fit="contain", height="auto")
            compare_recipes = gr.JSON(label="Recipes", open=False)

    def image_params(model, values: dict) -> ImageParams:
        return studio.params("image", model, **values)

    def generate_image(prompt, negative_prompt, steps, guidance, width, height, seed, scheduler="default",
                       model=None, request: gr.Request = None, progress=gr.Progress()):
        """One image for prompt; returns the path of a PNG carrying its recipe."""
        with user_errors():
            chosen = image_params(model, dict(negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                              width=width, height=height, seed=seed, scheduler=scheduler))
            on_step = lambda step, total: progress((step + 1, total), desc="denoising")
            result = studio.images(prompt, [("", chosen)], model, on_step)[0]
            sessions.keep_recipes(request, [result.recipe])
            return str(studio.save(result))

    def compare_image(prompt, mode, count, knob_name, values, negative_prompt, steps, guidance, width, height, seed,
                      scheduler="default", model=None, request: gr.Request = None, progress=gr.Progress()):
        """2-4 labelled variants (seeds share one batched call); returns a gallery of PNGs."""
        with user_errors():
            base = image_params(model, dict(negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                            width=width, height=height, seed=seed, scheduler=scheduler))
            variants = make_variants(base, mode, count, knob_name, values)
            on_step = lambda step, total: progress((step + 1, total), desc="denoising")
            results = studio.images(prompt, variants, model, on_step)
            sessions.keep_recipes(request, [r.recipe for r in results])
            return [(str(studio.save(r)), r.label) for r in results]

    def show_recipes(request: gr.Request):
        return [r.__dict__ for r in sessions.recipes(request)]

    def use_model_defaults(model_id):
        chosen = studio.params("image", model_id)
        return [gr.update(value=getattr(chosen, name)) for name in KNOBS if name not in ("seed", "negative_prompt")]

    knob_inputs = [controls[name] for name in KNOBS]
    run = gr.on([generate.click, prompt.submit], generate_image, inputs=[prompt, *knob_inputs, model],
                outputs=image, api_name="generate_image")
    run.then(show_recipes, outputs=recipe, api_visibility="private")
    comparing = compare.click(compare_image, inputs=[prompt, mode, count, knob_name, values, *knob_inputs, model],
                              outputs=gallery, api_name="compare_image")
    comparing.then(show_recipes, outputs=compare_recipes, api_visibility="private")
    model.change(use_model_defaults, model,
                 [controls[name] for name in KNOBS if name not in ("seed", "negative_prompt")], api_visibility="private")
