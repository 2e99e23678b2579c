"""Public API of the views inside the image models (issue 23): image to image (SDEdit), the
forward (noising) process, and what each prompt word drew. Registered by ui/api.py with the
other endpoints, so they are also MCP tools.

An input picture arrives as a gradio FileData dict (gradio_client's `handle_file(path)`
uploads the file first), as a `data:image/...;base64,` URL (MCP clients), or as that URL
inside the dict's `url`. Files are read only from Gradio's upload folder; nothing is fetched
from the network.
"""

from __future__ import annotations

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
from aigc_studio.ui.api import File, _file, _model, _picture_file, studio, uploaded_bytes
from aigc_studio.ui.image_tab import preview_steps
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


ENDPOINTS = {image_to_image: "image", noise_image: "image", prompt_map: "image"}
