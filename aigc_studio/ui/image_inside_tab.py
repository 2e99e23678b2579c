"""The Image tab's views inside the models (issue 23): a start picture for image to image (an
upload or a scribble on a small sketch pad) with its strength and its forward (noising)
process, and "what each prompt word drew". image_tab.py places these and passes the start
picture to Generate, side by side and the X/Y grid."""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from aigc_studio.params import ImageParams, ParamError
from aigc_studio.studio import Studio
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import control
from aigc_studio.ui.page import error_box

NOTHING, UPLOAD, SKETCH = "Nothing (text to image)", "The uploaded picture", "The sketch"
# the shapes model's colours, so a scribble reads as one of them
SKETCH_COLOURS = ["#dc2828", "#28aa3c", "#2850dc", "#ebc81e", "#000000"]


def start_controls(defaults: dict, used) -> dict:
    """The start picture's components (inside an open Accordion): which picture, an upload,
    a sketch pad, the strength knob and the forward-process view. Returns them by name."""
    gr.Markdown("Start from your own picture: it is noised to the timestep **strength** picks, then denoised "
                "with the prompt (SDEdit). 0 keeps the picture, 1 ignores it. Diffusion models only: the VAE "
                "and GAN draw in one pass from a latent and have no image to image.")
    parts = {"source": gr.Radio([NOTHING, UPLOAD, SKETCH], value=NOTHING, label="Start from",
                                elem_id="image-start-source")}
    with gr.Tabs():
        with gr.Tab("Sketch"):
            parts["sketch"] = gr.Sketchpad(
                type="pil", image_mode="RGBA", canvas_size=(256, 256), height=300, layers=False, transforms=(),
                brush=gr.Brush(colors=SKETCH_COLOURS, default_color=SKETCH_COLOURS[0], color_mode="defaults",
                               default_size=24),
                label="Scribble a shape (pick a colour)", elem_id="image-sketch")
        with gr.Tab("Upload"):
            parts["upload"] = gr.Image(type="pil", image_mode="RGBA", sources=["upload", "clipboard"], height=220,
                                       label="Start picture (PNG, JPEG or WebP)", elem_id="image-start")
    parts["strength"] = control(ImageParams, "strength", defaults.get("strength"), elem_id="image-strength",
                                visible="strength" in used)
    with gr.Row():
        parts["noise_button"] = gr.Button("Show the noising (forward process)", size="sm", elem_id="image-noise-button")
    error_box("image-noise-button")
    parts["frames"] = gr.Gallery(label="x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise, cleanest first", columns=5,
                                 object_fit="contain", height="auto", elem_id="image-noise-frames")
    return parts


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


def wire_sources(parts: dict) -> None:
    """Uploading a picture or drawing selects it as the start."""
    parts["upload"].upload(lambda: UPLOAD, None, parts["source"], queue=False, api_visibility="private")
    parts["sketch"].input(lambda: SKETCH, None, parts["source"], queue=False, api_visibility="private")


def show_noising(studio: Studio, model, source, upload, sketch, steps, scheduler, seed):
    """The forward process of the start picture at the scheduler's timesteps (10 frames)."""
    with user_errors():
        picture = start_picture(source, upload, sketch)
        if picture is None:
            raise ParamError("start picture", "choose a picture to noise (upload one or draw on the sketch pad)")
        frames = studio.noise_image(picture, steps=10, scheduler=scheduler, model=model,
                                    seed=max(int(seed), 0) if seed is not None else 0)
        return [(f.picture, f"t={f.timestep}: {f.signal:.2f} signal, {f.noise:.2f} noise") for f in frames]


def map_controls() -> dict:
    """'What each prompt word drew': a button, a note on the method and each word's map."""
    gr.Markdown("Where each word of the prompt went, for the prompt, model, steps, guidance and seed above. "
                "shapes-diffusion: the condition contrast |eps(x_t, c) - eps(x_t, c without the word)| summed over "
                "the steps; Stable Diffusion: its cross-attention to the word's tokens (DAAM). Bright = more.")
    parts = {"button": gr.Button("Map the prompt", elem_id="image-map-button")}
    error_box("image-map-button")
    parts["method"] = gr.Markdown(elem_id="image-map-method")
    parts["maps"] = gr.Gallery(label="Each word's map over the picture", columns=3, object_fit="contain",
                               height="auto", elem_id="image-map-words")
    return parts


def make_maps(studio: Studio, prompt, model, steps, guidance, seed):
    """The image and one overlay per word the model reads."""
    from aigc_studio.engines.image_inside import overlay

    with user_errors():
        result, words, method = studio.prompt_map(prompt, model, seed=seed, steps=steps, guidance=guidance)
        shown = [(result.output, f"the image (seed {result.recipe.params['seed']})")]
        shown += [(overlay(result.output, w.heat), w.word if w.word == w.reads_as else f"{w.word} (= {w.reads_as})")
                  for w in words]
        note = f"Method: **{method}**." + ("" if words else " The model reads no word of this prompt.")
        return note, shown
