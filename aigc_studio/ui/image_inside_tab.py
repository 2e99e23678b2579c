"""The Image tab's views inside the models: a start picture for image to image (an upload
or a scribble on a small sketch pad) with its strength and its forward (noising) process,
"what each prompt word drew", and the latent walk from one seed's image to another's.
image_tab.py places these and passes the start picture to Generate, side by side and the
X/Y grid; the operations are in actions/image.py."""

from __future__ import annotations

import asyncio

import gradio as gr

from aigc_studio.actions import image as actions
from aigc_studio.actions.image import MAX_WALK_FRAMES, NOTHING, SKETCH, UPLOAD, knobs_and_start, start_picture
from aigc_studio.params import MAX_SEED, ImageParams, ParamError
from aigc_studio.studio import GenerationStopped, Studio, read_recipe
from aigc_studio.ui.components import KnobNumber, KnobSlider
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.files import with_recipe
from aigc_studio.ui.files import keep_walk
from aigc_studio.ui.knob_controls import control
from aigc_studio.ui.page import error_box
from aigc_studio.ui.recipe_view import recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import run_in_worker

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


def wire_sources(parts: dict) -> None:
    """Uploading a picture or drawing selects it as the start."""
    parts["upload"].upload(lambda: UPLOAD, None, parts["source"], queue=False, api_visibility="private")
    parts["sketch"].input(lambda: SKETCH, None, parts["source"], queue=False, api_visibility="private")


def show_noising(studio: Studio, model, source, upload, sketch, steps, scheduler, seed):
    """The forward process of the start picture at the scheduler's timesteps (10 frames;
    the page's random seed -1 noises with seed 0)."""
    with user_errors():
        picture = start_picture(source, upload, sketch)
        if picture is None:
            raise ParamError("start picture", "choose a picture to noise (upload one or draw on the sketch pad)")
        job = actions.NoiseImage(picture, model, steps=10, scheduler=scheduler,
                                 seed=max(int(seed), 0) if seed is not None else 0)
        return [(f.picture, actions.noise_caption(f)) for f in actions.noise_image(studio, job)]


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
    with user_errors():
        mapped = actions.prompt_map(studio, actions.PromptMap(prompt, dict(seed=seed, steps=steps, guidance=guidance),
                                                              model))
        shown = [(mapped.result.output, f"the image (seed {mapped.result.recipe.params['seed']})")]
        shown += [(picture, actions.word_caption(w)) for w, picture in zip(mapped.words, mapped.overlays)]
        note = f"Method: **{mapped.method}**." + ("" if mapped.words else " The model reads no word of this prompt.")
        return note, shown


# ----- the latent walk ------------------------------------------------------------------------

def walk_parts() -> dict:
    with gr.Row():
        seed_a = KnobNumber(3, label="seed A", precision=0, minimum=0, maximum=MAX_SEED, knob_name="seed_a",
                            elem_id="image-seed_a")
        seed_b = KnobNumber(7, label="seed B", precision=0, minimum=0, maximum=MAX_SEED, knob_name="seed_b",
                            elem_id="image-seed_b")
        frames = KnobSlider(2, MAX_WALK_FRAMES, value=8, step=1, label="frames", knob_name="frames",
                            knob_range=(2, MAX_WALK_FRAMES), elem_id="image-frames",
                            info="Images from seed A's to seed B's, the noise (or latent) between slerped.")
    walk = gr.Button("Walk", elem_id="image-walk")
    error_box("image-walk")
    # the heading says what they are: a label pill would sit over the pictures
    gr.Markdown("The walk as an animated GIF (there and back; its recipe inside), then frame by frame:")
    with gr.Row():
        walk_gif = gr.Image(type="filepath", label="The walk (GIF)", show_label=False, elem_id="image-walk-gif",
                            buttons=["download", "fullscreen"], scale=1)
        walk_frames = gr.Gallery(label="Frames", show_label=False, columns=4, object_fit="contain", height="auto",
                                 format="png", elem_id="image-walk-frames", elem_classes=["studio-grid"], scale=2)
    walk_recipe, walk_recipe_raw = recipe_view("Walk recipe (in the GIF comment)")
    return dict(seed_a=seed_a, seed_b=seed_b, frames=frames, walk=walk, walk_gif=walk_gif, walk_frames=walk_frames,
                walk_recipe=walk_recipe, walk_recipe_raw=walk_recipe_raw)


def denoising(progress, desc: str = "denoising"):
    """An on_step callback that moves the page's progress bar."""
    return lambda step, total: progress((step + 1, total), desc=desc)


async def walk_image(studio: Studio, sessions: Sessions, request: gr.Request, progress=gr.Progress(), prompt="",
                     seed_a=None, seed_b=None, frames=None, model=None, *values):
    """A latent walk from seed A to seed B (2-32 frames, the chosen model at the knobs
    shown): the GIF (its recipe in the comment), the frames (each PNG with its recipe)
    and the walk's recipe."""
    with user_errors():
        knobs, _ = knobs_and_start(values)
        job = actions.LatentWalk(prompt, knobs, model, seed_a, seed_b, frames)
        stop = sessions.fresh_stop(request, "image")
        try:
            async for kind, value in run_in_worker(
                    lambda emit: actions.latent_walk(studio, job, denoising(progress, "walking"), stop), stop):
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
