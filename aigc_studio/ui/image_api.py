"""The image endpoints of the public API: generation, side by side, the X/Y grid, the latent
walk, image to image (SDEdit), the forward (noising) process and what each prompt word drew.
Each calls its operation in aigc_studio/actions/image.py, as the Image tab does, and turns the
results into files. Registered by ui/api.py's register(), so they are also MCP tools.

An input picture arrives as a gradio FileData dict (gradio_client's `handle_file(path)`
uploads the file first), as a `data:image/...;base64,` URL (MCP clients), or as that URL
inside the dict's `url`. Files are read only from Gradio's upload folder; nothing is fetched
from the network.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Literal

import gradio as gr
from PIL import Image

from aigc_studio.actions.checks import model_input
from aigc_studio.actions import image as actions
from aigc_studio.params import ImageParams, ParamError
from aigc_studio.studio import GenerationStopped
from aigc_studio.ui.api import File, _file, _picture_file, studio, uploaded_bytes
from aigc_studio.ui.endpoint import REQUIRED, Arg, endpoint, knob_args
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.files import cached_png, keep_or_cache, keep_walk, with_recipe
from aigc_studio.ui.streaming import run_in_worker

KNOBS = ("negative_prompt", "steps", "guidance", "width", "height", "seed", "scheduler")  # the first endpoints' knobs


def image_knobs(names, **docs: str) -> list[Arg]:
    """The named ImageParams knobs as arguments (None: the model's recommendation); docs: what
    a knob means to this endpoint, where it differs from its help."""
    return knob_args(ImageParams, names, docs=docs)


def prompt_arg(doc: str = "what to draw (the embedded shapes model understands e.g. \"a small red circle\").") -> Arg:
    return Arg("prompt", str, doc, REQUIRED)


MODEL = Arg("model", str | None, "an image model id of the catalog (None: the preset's default).")
PICTURE = Arg("image", File, "the picture (PNG, JPEG or WebP, 8-4096 px a side; transparency counts as white).", REQUIRED)


# ----- files ------------------------------------------------------------------------------------

def load_picture(value: Any, field: str = "image") -> Image.Image:
    """The picture a client sent (see the module's docstring), decoded; a ParamError names
    `field` for anything else: no picture, a file outside the upload folder, not an image."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("url")
    if not isinstance(value, str) or not value:
        raise ParamError(field, "must be a picture: an uploaded file (gradio_client.handle_file) or a data:image URL")
    data = actions.data_url_bytes(value, field) if value.startswith("data:") else uploaded_bytes(value, field)
    return actions.open_picture(data, field)


def cached_file(picture: Image.Image) -> File:
    """A picture (a preview, an overlay, a frame with its recipe) as a PNG in Gradio's cache."""
    return _file(cached_png(picture))


def gallery(save, results) -> list[dict]:
    return [{"image": _picture_file(save, r), "caption": r.label} for r in results]


# ----- generate and image to image --------------------------------------------------------------

async def stream_images(job: actions.GenerateImage, show_start: bool = False) -> AsyncIterator[File]:
    """The previews (and with show_start the noised start) as they come, then the PNG."""
    s = studio()
    stop = threading.Event()

    def work(emit):
        return actions.generate(s, job, emit, stop, show_start=show_start)

    try:
        async for kind, value in run_in_worker(work, stop):
            if kind == "update":
                yield await asyncio.to_thread(cached_file, value)
            else:
                yield await asyncio.to_thread(_picture_file, s.save, value[0])
    except GenerationStopped as stopped:
        gr.Info(f"Stopped ({stopped}).")


async def _generate_image(prompt: str, model: str | None, **knob_values: Any) -> AsyncIterator[File]:
    with user_errors():
        async for file in stream_images(actions.GenerateImage(prompt, knob_values, model_input(model))):
            yield file


generate_image = endpoint(
    "generate_image", "Generate an image for a prompt; streams up to 3 denoising previews, then the final PNG, "
                      "whose recipe (model, every knob, seed, versions) is embedded in its text chunk "
                      "`aigc-studio-recipe`. A knob left out (None) takes the model's recommended value.",
    [prompt_arg(), *image_knobs(KNOBS), MODEL, *image_knobs(["batch_size"])],
    "Previews, then the PNG file (with batch_size > 1, the first image).", _generate_image, AsyncIterator[File])


async def _image_to_image(prompt: str, image: File, model: str | None, **knob_values: Any) -> AsyncIterator[File]:
    with user_errors():
        job = actions.GenerateImage(prompt, knob_values, model_input(model), init_image=load_picture(image))
        async for file in stream_images(job, show_start=True):
            yield file


image_to_image = endpoint(
    "image_to_image", "Image to image (SDEdit): the picture is noised to the timestep `strength` selects, then "
                      "denoised with the prompt. Streams the noised start and up to 3 denoising previews, then the "
                      "final PNG, whose recipe records strength, the picture's SHA-256 (of its RGB pixels) and size.",
    [prompt_arg(), Arg("image", File, "the start picture (PNG, JPEG or WebP, 8-4096 px a side; transparency "
                                      "counts as white).", REQUIRED),
     *image_knobs(["strength", "steps", "guidance", "seed", "scheduler", "negative_prompt"],
                  steps="1-150 steps of the full schedule; int(steps * strength) of them run."),
     Arg("model", str | None, "a diffusion model id of the catalog (the VAE and GAN have no image to image).")],
    "The noised start and previews, then the PNG file.", _image_to_image, AsyncIterator[File])


# ----- side by side, the grid and the walk ------------------------------------------------------

def _compare_image(prompt: str, mode: str | None, count: int | None, knob_name: str | None, values: str | None,
                   model: str | None, models: str | None, **knob_values: Any) -> list[dict]:
    with user_errors():
        s = studio()
        job = actions.CompareImage(prompt, knob_values, model_input(model), mode, count, knob_name, values, models)
        return gallery(s.save, actions.compare(s, job, stop=threading.Event()))


compare_image = endpoint(
    "compare_image", "2-4 labelled image variants of one prompt (seed variants share one batched call), or one "
                     "prompt and seed on 2-4 image models side by side.",
    [prompt_arg("what to draw."),
     Arg("mode", Literal["Different seeds", "Sweep one knob", "Different models"] | None,
         '"Different seeds" (count consecutive seeds), "Sweep one knob" (knob_name over values) or "Different '
         'models" (the models, one seed; each at its recommended knobs under the knobs given).'),
     Arg("count", int | None, '2-4 images for "Different seeds" (default 3).'),
     Arg("knob_name", str | None, 'the image knob to sweep, e.g. "guidance" or "steps"; one the model reads.'),
     Arg("values", str | None, '2-4 comma-separated values, e.g. "1, 3, 7".'),
     *image_knobs(KNOBS), MODEL,
     Arg("models", str | None, '"Different models": 2-4 comma-separated image model ids (default: the embedded '
                               'shapes-diffusion, shapes-vae, shapes-gan); columns are labelled model=<id>.')],
    'A gallery: [{"image": PNG file with its recipe, "caption": the variant\'s label}].', _compare_image,
    list[dict])


def _image_grid(prompt: str, x_knob: str | None, x_values: str | None, y_knob: str | None, y_values: str | None,
                model: str | None, **knob_values: Any) -> tuple[File, list[dict]]:
    with user_errors():
        s = studio()
        job = actions.ImageGrid(prompt, knob_values, model_input(model), x_knob, x_values, y_knob, y_values)
        picture, cells = actions.image_grid(s, job, stop=threading.Event())
        grid_file = keep_or_cache(lambda: _file(s.save_grid(picture, cells)), lambda: cached_file(picture))
        return grid_file, gallery(s.save, cells)


image_grid = endpoint(
    "image_grid", 'An X/Y grid: one or two image knobs over their values, the seed fixed unless it is an axis. An '
                  'axis may also be "model": its values are image model ids (e.g. "shapes-diffusion, shapes-vae, '
                  'shapes-gan").',
    [prompt_arg("what to draw."),
     Arg("x_knob", str | None, 'the knob (or "model") across columns, e.g. "steps" (default "steps").'),
     Arg("x_values", str | None, '1-6 comma-separated values (default "4, 8, 16, 32"), or model ids for "model".'),
     Arg("y_knob", str | None, 'the knob (or "model") down rows, or "none" for one row (default "guidance").'),
     Arg("y_values", str | None, '1-6 comma-separated values (default "1, 3, 7").'),
     *image_knobs(KNOBS), MODEL],
    "The labelled grid PNG (every cell's recipe embedded) and a gallery of the cells.", _image_grid,
    tuple[File, list[dict]])


def _latent_walk(prompt: str, seed_a: int | None, seed_b: int | None, frames: int | None, model: str | None,
                 **knob_values: Any) -> tuple[File, list[dict]]:
    with user_errors():
        s = studio()
        job = actions.LatentWalk(prompt, knob_values, model_input(model), seed_a, seed_b, frames)
        results, animation = actions.latent_walk(s, job, stop=threading.Event())
        # each frame in Gradio's cache, not the output folder: the walk's GIF keeps it
        return (_file(keep_walk(s, animation)),
                [{"image": cached_file(with_recipe(r)), "caption": r.label} for r in results])


latent_walk = endpoint(
    "latent_walk", "A latent walk: images from seed A's to seed B's, the starting noise (diffusion) or latent (VAE, "
                   "GAN) slerped between them; the first and last frames are the two seeds' own images.",
    [prompt_arg('what to draw (e.g. "a blue triangle").'),
     Arg("seed_a", int | None, "0-2147483647, where the walk starts (default 3)."),
     Arg("seed_b", int | None, "0-2147483647, where it ends (default 7)."),
     Arg("frames", int | None, f"2-{actions.MAX_WALK_FRAMES} images along the walk (default 8)."),
     Arg("model", str | None, "an image model id of the catalog (e.g. shapes-diffusion, shapes-vae, shapes-gan)."),
     *image_knobs(["negative_prompt", "steps", "guidance", "width", "height", "scheduler", "latent_temperature",
                   "truncation"])],
    "The animated GIF (there and back; its recipe, with walk_to_seed and walk_frames, in the GIF comment) and a "
    'gallery of the frames: [{"image": PNG with its recipe, "caption"}].', _latent_walk, tuple[File, list[dict]])


# ----- inside the model -------------------------------------------------------------------------

def _noise_image(image: File, steps: int | None, scheduler: str | None, model: str | None,
                 seed: int | None) -> list[dict]:
    with user_errors():
        job = actions.NoiseImage(load_picture(image), model_input(model), steps, scheduler, seed)
        return [{"image": cached_file(f.picture), "timestep": f.timestep, "signal": f.signal, "noise": f.noise,
                 "caption": actions.noise_caption(f)} for f in actions.noise_image(studio(), job)]


noise_image = endpoint(
    "noise_image", "The forward (noising) process of a picture: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise at the "
                   "timesteps the scheduler visits, cleanest first (shapes model: in pixels; Stable Diffusion: in "
                   "its latent space, decoded by its VAE).",
    [PICTURE,
     *image_knobs(["steps", "scheduler"], steps="1-50 frames (default 10).",
                  scheduler="whose timesteps to show (default: the model's recommended scheduler)."),
     Arg("model", str | None, "a diffusion model id of the catalog."),
     *image_knobs(["seed"], seed="0-2147483647, the one noise draw every frame shares (default 0).")],
    '[{"image": PNG, "timestep": t, "signal": sqrt(a_t), "noise": sqrt(1 - a_t), "caption"}], one per frame.',
    _noise_image, list[dict])


def _prompt_map(prompt: str, model: str | None, **knob_values: Any) -> dict:
    with user_errors():
        s = studio()
        mapped = actions.prompt_map(s, actions.PromptMap(prompt, knob_values, model_input(model)), threading.Event())
        return {"image": _picture_file(s.save, mapped.result), "method": mapped.method,
                "words": [{"word": w.word, "reads_as": w.reads_as, "overlay": cached_file(shown),
                           "heat": [[round(float(v), 5) for v in row] for row in w.heat]}
                          for w, shown in zip(mapped.words, mapped.overlays)]}


prompt_map = endpoint(
    "prompt_map", "What each prompt word drew: a heat map per word over the generated image. shapes-diffusion: the "
                  "condition contrast |eps(x_t, c) - eps(x_t, c without the word)| summed over channels and steps; "
                  "Stable Diffusion: its cross-attention probabilities (DAAM) summed over heads, layers, steps.",
    [prompt_arg("what to draw."), *image_knobs(["seed", "steps", "guidance"]),
     Arg("model", str | None, "a diffusion model id of the catalog.")],
    '{"image": PNG with its recipe, "method", "words": [{"word", "reads_as", "overlay": PNG, "heat": rows of '
    'numbers in [0, 1] (max 1) at the model\'s working resolution}]}.', _prompt_map, dict)


ENDPOINTS = {generate_image: "image", compare_image: "image", image_grid: "image", latent_walk: "image",
             image_to_image: "image", noise_image: "image", prompt_map: "image"}
