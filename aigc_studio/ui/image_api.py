"""Public API of the views inside the image models (issue 23): image to image (SDEdit), the
forward (noising) process, and what each prompt word drew. Registered by ui/api.py with the
other endpoints, so they are also MCP tools.

An input picture arrives as a gradio FileData dict (gradio_client's `handle_file(path)`
uploads the file first), as a `data:image/...;base64,` URL (MCP clients), or as that URL
inside the dict's `url`. Files are read only from Gradio's upload folder; nothing is fetched
from the network.
"""


import asyncio
import base64
import binascii
import io
import threading
from typing import Any, AsyncIterator, Literal

import gradio as gr
from PIL import Image, UnidentifiedImageError

from aigc_studio.params import ParamError
from aigc_studio.studio import GenerationStopped
from aigc_studio import params as knobs
from aigc_studio.actions.variants import SEEDS, SWEEP, make_variants
from aigc_studio.params import ImageParams
from aigc_studio.recipe import RECIPE_KEY
from aigc_studio.ui.api import (
    File, _count, _file, _knob_name, _mode, _model, _picture_file, _text, studio, uploaded_bytes,
)
from aigc_studio.ui.files import cached_png, keep_or_cache
from aigc_studio.ui.image_tab import MODELS, axis_values, compare_choices, keep_walk, preview_steps, whole
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.streaming import run_in_worker

MAX_PICTURE_BYTES = 20 * 2**20  # an input picture's file, before decoding
Scheduler = Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"]


def load_picture(value: Any, field: str = "image") -> Image.Image:
    """The picture a client sent (see the module's docstring), decoded; a ParamError names
    `field` for anything else: no picture, a file outside the upload folder, not an image."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("url")
    if not isinstance(value, str) or not value:
        raise ParamError(field, "must be a picture: an uploaded file (gradio_client.handle_file) or a data:image URL")
    if value.startswith("data:"):
        header, _, payload = value.partition(",")
        if not header.startswith("data:image/") or ";base64" not in header:
            raise ParamError(field, "a data URL must be data:image/...;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ParamError(field, "the data URL is not valid base64") from None
    else:
        data = uploaded_bytes(value, field)
    if len(data) > MAX_PICTURE_BYTES:
        raise ParamError(field, f"the file is {len(data):,} bytes, above the limit of {MAX_PICTURE_BYTES:,}")
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            return picture.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ParamError(field, f"must be a PNG, JPEG or WebP picture; this file could not be read as one ({error})") from None


def _cached(picture: Image.Image) -> File:
    return _file(gr.processing_utils.save_pil_to_cache(picture, gr.utils.get_upload_folder(), format="png"))


async def image_to_image(prompt: str, image: File, strength: float | None = None, steps: int | None = None,
                         guidance: float | None = None, seed: int | None = None, scheduler: Scheduler | None = None,
                         negative_prompt: str | None = None, model: str | None = None) -> AsyncIterator[File]:
    """Image to image (SDEdit): the picture is noised to the timestep `strength` selects, then
    denoised with the prompt. Streams the noised start and up to 3 denoising previews, then the
    final PNG, whose recipe records strength, the picture's SHA-256 (of its RGB pixels) and size.

    Args:
        prompt: what to draw (the embedded shapes model understands e.g. "a red circle").
        image: the start picture (PNG, JPEG or WebP, 8-4096 px a side; transparency counts as white).
        strength: 0-1 (default 0.75): 0 returns the picture, 1 starts from pure noise and ignores it.
        steps: 1-150 steps of the full schedule; int(steps * strength) of them run.
        guidance: 0-20 classifier-free guidance.
        seed: -1 to 2147483647; -1 draws one (the recipe records it).
        scheduler: the sampler.
        negative_prompt: what to steer away from.
        model: a diffusion model id of the catalog (the VAE and GAN have no image to image).
    Returns:
        The noised start and previews, then the PNG file.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        picture = load_picture(image)
        chosen = s.params("image", model, strength=strength, steps=steps, guidance=guidance, seed=seed,
                          scheduler=scheduler, negative_prompt=negative_prompt)
        stop = threading.Event()
        streamed = preview_steps(chosen.steps)

        def work(emit):
            def on_step(step, total):
                nonlocal streamed
                streamed = preview_steps(total)

            def on_preview(step, preview):
                if step == -1 or step in streamed:  # -1: the noised start
                    emit(preview)

            return s.images(prompt, [("", chosen)], model, on_step, on_preview, stop, init_image=picture)

        try:
            async for kind, value in run_in_worker(work, stop):
                if kind == "update":
                    yield await asyncio.to_thread(_cached, value)
                else:
                    yield await asyncio.to_thread(_picture_file, s.save, value[0])
        except GenerationStopped as stopped:
            gr.Info(f"Stopped ({stopped}).")


def noise_image(image: File, steps: int | None = None, scheduler: Scheduler | None = None,
                model: str | None = None, seed: int | None = None) -> list[dict]:
    """The forward (noising) process of a picture: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise at the
    timesteps the scheduler visits, cleanest first (shapes model: in pixels; Stable Diffusion: in its
    latent space, decoded by its VAE).

    Args:
        image: the picture (PNG, JPEG or WebP, 8-4096 px a side).
        steps: 1-50 frames (default 10).
        scheduler: whose timesteps to show (default: the model's recommended scheduler).
        model: a diffusion model id of the catalog.
        seed: 0-2147483647, the one noise draw every frame shares (default 0).
    Returns:
        [{"image": PNG, "timestep": t, "signal": sqrt(a_t), "noise": sqrt(1 - a_t), "caption"}], one per frame.
    """
    with user_errors():
        frames = studio().noise_image(load_picture(image), steps, scheduler, _model(model), 0 if seed is None else seed)
        return [{"image": _cached(f.picture), "timestep": f.timestep, "signal": f.signal, "noise": f.noise,
                 "caption": f"t={f.timestep}: {f.signal:.2f} signal, {f.noise:.2f} noise"} for f in frames]


def prompt_map(prompt: str, seed: int | None = None, steps: int | None = None, guidance: float | None = None,
               model: str | None = None) -> dict:
    """What each prompt word drew: a heat map per word over the generated image. shapes-diffusion:
    the condition contrast |eps(x_t, c) - eps(x_t, c without the word)| summed over channels and
    steps; Stable Diffusion: its cross-attention probabilities (DAAM) summed over heads, layers, steps.

    Args:
        prompt: what to draw.
        seed: -1 to 2147483647; -1 draws one.
        steps: 1-150.
        guidance: 0-20.
        model: a diffusion model id of the catalog.
    Returns:
        {"image": PNG with its recipe, "method", "words": [{"word", "reads_as", "overlay": PNG,
        "heat": rows of numbers in [0, 1] (max 1) at the model's working resolution}]}.
    """
    from aigc_studio.engines.image_inside import overlay

    with user_errors():
        s = studio()
        result, words, method = s.prompt_map(prompt, _model(model), threading.Event(), seed=seed, steps=steps,
                                             guidance=guidance)
        return {"image": _picture_file(s.save, result), "method": method,
                "words": [{"word": w.word, "reads_as": w.reads_as, "overlay": _cached(overlay(result.output, w.heat)),
                           "heat": [[round(float(v), 5) for v in row] for row in w.heat]} for w in words]}


# ----- image ----------------------------------------------------------------------------------

def _image_params(model: str | None, **values: Any) -> ImageParams:
    return studio().params("image", model, **values)


async def generate_image(prompt: str, negative_prompt: str | None = None, steps: int | None = None,
                         guidance: float | None = None, width: int | None = None, height: int | None = None,
                         seed: int | None = None,
                         scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
                         model: str | None = None, batch_size: int | None = None) -> AsyncIterator[File]:
    """Generate an image for a prompt; streams up to 3 denoising previews, then the final PNG,
    whose recipe (model, every knob, seed, versions) is embedded in its text chunk `aigc-studio-recipe`.

    Args:
        prompt: what to draw (the embedded shapes model understands e.g. "a small red circle").
        negative_prompt: what to steer away from.
        steps: 1-150 denoising steps (None: the model's recommendation).
        guidance: 0-20 classifier-free guidance (how strongly the image follows the prompt).
        width: 16-1536 pixels, a multiple of 8.
        height: 16-1536 pixels, a multiple of 8.
        seed: -1 to 2147483647; -1 draws one (the recipe records it).
        scheduler: the sampler; "lcm" only for consistency models.
        model: an image model id of the catalog.
        batch_size: 1-8 images at seeds seed, seed+1, ...; the result is the first.
    Returns:
        Previews, then the PNG file.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                               height=height, seed=seed, scheduler=scheduler, batch_size=batch_size)
        stop = threading.Event()
        streamed = preview_steps(chosen.steps)

        def work(emit):
            def on_step(step, total):
                nonlocal streamed
                streamed = preview_steps(total)  # some schedulers run more iterations than steps

            def on_preview(step, picture):
                if step in streamed:
                    emit(picture)

            return s.images(prompt, [("", chosen)], model, on_step, on_preview, stop)

        try:
            async for kind, value in run_in_worker(work, stop):
                if kind == "update":
                    yield _file(await asyncio.to_thread(gr.processing_utils.save_pil_to_cache, value,
                                                        gr.utils.get_upload_folder(), format="png"))
                else:
                    yield await asyncio.to_thread(_picture_file, s.save, value[0])
        except GenerationStopped as stopped:
            gr.Info(f"Stopped ({stopped}).")


def compare_image(prompt: str, mode: Literal["Different seeds", "Sweep one knob", "Different models"] | None = None,
                  count: int | None = None,
                  knob_name: str | None = None, values: str | None = None, negative_prompt: str | None = None,
                  steps: int | None = None, guidance: float | None = None, width: int | None = None,
                  height: int | None = None, seed: int | None = None,
                  scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
                  model: str | None = None, models: str | None = None) -> list[dict]:
    """2-4 labelled image variants of one prompt (seed variants share one batched call), or one
    prompt and seed on 2-4 image models side by side.

    Args:
        prompt: what to draw.
        mode: "Different seeds" (count consecutive seeds), "Sweep one knob" (knob_name over values)
            or "Different models" (the models, one seed; each at its recommended knobs under the knobs given).
        count: 2-4 images for "Different seeds" (default 3).
        knob_name: the image knob to sweep, e.g. "guidance" or "steps".
        values: 2-4 comma-separated values, e.g. "1, 3, 7".
        negative_prompt: what to steer away from.
        steps: 1-150.
        guidance: 0-20.
        width: 16-1536, a multiple of 8.
        height: 16-1536, a multiple of 8.
        seed: -1 to 2147483647.
        scheduler: the sampler.
        model: an image model id of the catalog.
        models: "Different models": 2-4 comma-separated image model ids (default: the embedded
            shapes-diffusion, shapes-vae, shapes-gan); columns are labelled model=<id>.
    Returns:
        A gallery: [{"image": PNG file with its recipe, "caption": the variant's label}].
    """
    with user_errors():
        s = studio()
        model = _model(model)
        mode = _mode(mode, (MODELS,))
        if mode == MODELS:
            ids = [m.strip() for m in _text("models", models, ", ".join(compare_choices(s))).split(",") if m.strip()]
            given = dict(negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width, height=height,
                         seed=seed, scheduler=scheduler)
            results = s.compare_models(prompt, ids, stop=threading.Event(), **given)
            return [{"image": _picture_file(s.save, r), "caption": r.label} for r in results]
        base = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                             height=height, seed=seed, scheduler=scheduler)
        count = _count(count) if mode == SEEDS else 3
        knob_name = _knob_name("knob_name", knob_name, ImageParams, "guidance") if mode == SWEEP else "guidance"
        variants = make_variants(base, mode, count, knob_name, _text("values", values, "1, 3, 7"))
        results = s.images(prompt, variants, model, stop=threading.Event())
        return [{"image": _picture_file(s.save, r), "caption": r.label} for r in results]


def image_grid(prompt: str, x_knob: str | None = None, x_values: str | None = None, y_knob: str | None = None,
               y_values: str | None = None, negative_prompt: str | None = None, steps: int | None = None,
               guidance: float | None = None, width: int | None = None, height: int | None = None,
               seed: int | None = None,
               scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
               model: str | None = None) -> tuple[File, list[dict]]:
    """An X/Y grid: one or two image knobs over their values, the seed fixed unless it is an axis.
    An axis may also be "model": its values are image model ids (e.g. "shapes-diffusion, shapes-vae, shapes-gan").

    Args:
        prompt: what to draw.
        x_knob: the knob (or "model") across columns, e.g. "steps" (default "steps").
        x_values: 1-6 comma-separated values (default "4, 8, 16, 32"), or model ids for "model".
        y_knob: the knob (or "model") down rows, or "none" for one row (default "guidance").
        y_values: 1-6 comma-separated values (default "1, 3, 7").
        negative_prompt: what to steer away from.
        steps: 1-150.
        guidance: 0-20.
        width: 16-1536 per cell, a multiple of 8.
        height: 16-1536 per cell, a multiple of 8.
        seed: -1 to 2147483647.
        scheduler: the sampler.
        model: an image model id of the catalog.
    Returns:
        The labelled grid PNG (every cell's recipe embedded) and a gallery of the cells.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        base = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                             height=height, seed=seed, scheduler=scheduler)
        axes = [name for name in knobs.sweepable(ImageParams) if name != "batch_size"] + ["model"]
        x_knob = x_knob if x_knob is not None else "steps"
        if not isinstance(x_knob, str) or x_knob not in axes:
            raise knobs.ParamError("x_knob", f"must be one of {', '.join(axes)}, got {x_knob!r}")
        y_knob = y_knob if y_knob is not None else "guidance"
        if not isinstance(y_knob, str) or y_knob not in ("none", *axes):
            raise knobs.ParamError("y_knob", f"must be one of none, {', '.join(axes)}, got {y_knob!r}")
        xs = axis_values(_text("x_values", x_values, "4, 8, 16, 32"), x_knob, "x_values")
        use_y = y_knob != "none"
        ys = axis_values(_text("y_values", y_values, "1, 3, 7"), y_knob, "y_values") if use_y else None
        picture, cells = s.image_grid(prompt, base, x_knob, xs, y_knob if use_y else None, ys, model,
                                      stop=threading.Event())
        grid_file = keep_or_cache(lambda: _file(s.save_grid(picture, cells)), lambda: _file(cached_png(picture)))
        return grid_file, [{"image": _picture_file(s.save, c), "caption": c.label} for c in cells]


def latent_walk(prompt: str, seed_a: int | None = None, seed_b: int | None = None, frames: int | None = None,
                model: str | None = None, negative_prompt: str | None = None, steps: int | None = None,
                guidance: float | None = None, width: int | None = None, height: int | None = None,
                scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
                latent_temperature: float | None = None, truncation: float | None = None) -> tuple[File, list[dict]]:
    """A latent walk: images from seed A's to seed B's, the starting noise (diffusion) or latent
    (VAE, GAN) slerped between them; the first and last frames are the two seeds' own images.

    Args:
        prompt: what to draw (e.g. "a blue triangle").
        seed_a: 0-2147483647, where the walk starts (default 3).
        seed_b: 0-2147483647, where it ends (default 7).
        frames: 2-32 images along the walk (default 8).
        model: an image model id of the catalog (e.g. shapes-diffusion, shapes-vae, shapes-gan).
        negative_prompt: what to steer away from.
        steps: 1-150 (diffusion).
        guidance: 0-20 (diffusion).
        width: 16-1536, a multiple of 8.
        height: 16-1536, a multiple of 8.
        scheduler: the sampler (diffusion).
        latent_temperature: 0-2 (VAE): how far from the mean latent.
        truncation: 0-1 (GAN): 1 = as trained, lower = less varied.
    Returns:
        The animated GIF (there and back; its recipe, with walk_to_seed and walk_frames, in the GIF
        comment) and a gallery of the frames: [{"image": PNG with its recipe, "caption"}].
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                               height=height, scheduler=scheduler, latent_temperature=latent_temperature,
                               truncation=truncation)
        # whole() turns a client's 8.0 into 8; the studio checks the ranges and names the field
        seed_a, seed_b, frames = (whole(default if value is None else value)
                                  for value, default in ((seed_a, 3), (seed_b, 7), (frames, 8)))
        results, animation = s.latent_walk(prompt, seed_a, seed_b, frames, model, chosen, stop=threading.Event())
        return _file(keep_walk(s, animation)), [{"image": _cached_picture(r), "caption": r.label} for r in results]


def _cached_picture(result) -> File:
    """A frame as a PNG in Gradio's cache (not the output folder: a walk's GIF keeps it), its recipe inside."""
    picture = result.output.copy()
    picture.info[RECIPE_KEY] = result.recipe.to_json()
    return _file(gr.processing_utils.save_pil_to_cache(picture, gr.utils.get_upload_folder(), format="png"))


ENDPOINTS = {generate_image: "image", compare_image: "image", image_grid: "image", latent_walk: "image",
             image_to_image: "image", noise_image: "image", prompt_map: "image"}
