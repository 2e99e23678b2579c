"""Image engine: text-to-image diffusion pipelines through diffusers.

Hub repos and local folders load with AutoPipelineForText2Image (safetensors
only); the embedded shapes model loads as a ShapesPipeline from assets/. Both
are driven the same way, so steps, guidance, seed, scheduler and per-step
callbacks work for every model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PIL import Image

from aigc_studio.catalog import ModelSpec
from aigc_studio.params import ImageParams

# diffusers and torch take seconds to import: they load with the first image
# model, so the server answers without them (issue 12).
if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderTiny, DiffusionPipeline

log = logging.getLogger(__name__)

# diffusers class names, resolved on first use (see __getattr__ for SCHEDULERS).
SCHEDULER_CLASSES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "lcm": "LCMScheduler",  # only for consistency-distilled models (Studio checks)
}

# Called after each denoising iteration with (index from 0, total iterations).
StepCallback = Callable[[int, int], None]
# Called after each iteration with (index from 0, preview of the first image's predicted result).
PreviewCallback = Callable[[int, Image.Image], None]

# Linear map from Stable Diffusion's 4 latent channels to RGB: a cheap per-step
# preview without running the VAE (the factors ComfyUI and A1111 use for SD 1.x/2.x).
SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def __getattr__(name: str):
    """SCHEDULERS (name -> diffusers scheduler class) imports diffusers when first asked for."""
    if name == "SCHEDULERS":
        import diffusers

        return {key: getattr(diffusers, cls) for key, cls in SCHEDULER_CLASSES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class MemoryOptions:
    """Speed-for-memory trades for small GPUs, each off by default (diffusers' own switches)."""

    attention_slicing: bool = False  # compute attention in slices: less peak memory, a little slower
    vae_tiling: bool = False  # decode large images tile by tile
    cpu_offload: bool = False  # keep each sub-model on the CPU until it runs (accelerators only)


class GenerationStopped(Exception):
    """The Stop button (or a vanished client) ended a generation between two steps."""


def load(spec: ModelSpec, device: str, dtype: torch.dtype, memory: MemoryOptions | None = None) -> DiffusionPipeline:
    """Load spec's pipeline onto device in dtype; remembers its own scheduler config."""
    from diffusers import AutoPipelineForText2Image, DDPMScheduler, UNet2DModel

    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    memory = memory or MemoryOptions()
    if spec.kind == "shapes":
        folder = Path(spec.location)
        unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, dtype=dtype)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        pipe = ShapesPipeline(unet=unet, scheduler=scheduler)
    else:
        pipe = AutoPipelineForText2Image.from_pretrained(
            spec.location, revision=spec.revision, dtype=dtype, use_safetensors=True
        )
        if getattr(pipe, "safety_checker", None) is None and "requires_safety_checker" in pipe.config:
            pipe.register_to_config(requires_safety_checker=False)
    if memory.cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if memory.attention_slicing:
        pipe.enable_attention_slicing()
    if memory.vae_tiling and hasattr(pipe, "vae"):
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    pipe.default_scheduler_config = dict(pipe.scheduler.config)
    pipe.preview_decoder = _load_preview_decoder(spec, device, dtype)
    return pipe


def _load_preview_decoder(spec: ModelSpec, device: str, dtype: torch.dtype) -> AutoencoderTiny | None:
    """TAESD for sharp per-step previews; without it previews use a linear latent projection."""
    if spec.preview_decoder is None:
        return None
    from diffusers import AutoencoderTiny

    try:
        decoder = AutoencoderTiny.from_pretrained(spec.preview_decoder, dtype=dtype, use_safetensors=True)
    except OSError as error:  # offline or missing: previews still work, just blurrier
        log.warning("no preview decoder %s (%s); using a linear latent preview", spec.preview_decoder, error)
        return None
    return decoder.to(device).eval()


def set_scheduler(pipe: DiffusionPipeline, name: str) -> None:
    """Swap the scheduler; 'default' restores the one the model shipped with."""
    import diffusers

    config = pipe.default_scheduler_config
    cls = getattr(diffusers, config["_class_name"] if name == "default" else SCHEDULER_CLASSES[name])
    pipe.scheduler = cls.from_config(config)


def preview(tensors: dict, size: tuple[int, int], decoder: AutoencoderTiny | None = None) -> Image.Image | None:
    """What the first image would look like if denoising stopped now.

    Shapes model: its predicted clean image. SD-style latents: decoded by the
    tiny autoencoder (TAESD) when there is one, else a linear RGB projection.
    None when neither is available."""
    import torch

    clean = tensors.get("pred_original_sample")
    latents = tensors.get("latents")
    if clean is not None:
        rgb = clean[0].float().clamp(-1, 1).permute(1, 2, 0)
    elif decoder is not None and latents is not None:
        with torch.no_grad():
            decoded = decoder.decode(latents[:1].to(decoder.dtype)).sample[0]
        rgb = decoded.float().clamp(-1, 1).permute(1, 2, 0)
    else:
        if latents is None or latents.shape[1] != 4:
            return None
        rgb = (latents[0].float().permute(1, 2, 0) @ torch.tensor(SD_LATENT_RGB, device=latents.device)).clamp(-1, 1)
    array = ((rgb + 1) * 127.5).round().byte().cpu().numpy()
    return Image.fromarray(array).resize(size, Image.Resampling.NEAREST)


def generate(pipe: DiffusionPipeline, prompts: list[str], params: ImageParams, seeds: list[int],
             on_step: StepCallback | None = None, on_preview: PreviewCallback | None = None,
             stop: threading.Event | None = None) -> list[Image.Image]:
    """One image per (prompt, seed) pair, in one batched pipeline call.

    Each image has its own torch.Generator, so an image depends only on its own
    seed and recipe, not on what else is in the batch. on_preview receives the
    denoising trajectory of the first image, one preview per iteration. Setting
    `stop` raises GenerationStopped after the current step; the pipeline stays usable.
    """
    import torch

    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    set_scheduler(pipe, params.scheduler)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    is_shapes = isinstance(pipe, ShapesPipeline)

    def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
        if stop is not None and stop.is_set():
            raise GenerationStopped(f"stopped after step {step + 1}")
        if on_step is not None:  # some schedulers (PNDM) run more iterations than steps
            on_step(step, len(pipeline.scheduler.timesteps))
        if on_preview is not None:
            picture = preview(tensors, (params.width, params.height), getattr(pipeline, "preview_decoder", None))
            if picture is not None:
                on_preview(step, picture)
        return tensors

    kwargs = dict(
        prompt=prompts,
        negative_prompt=[params.negative_prompt] * len(prompts) if params.negative_prompt else None,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance,
        generator=generators,
        callback_on_step_end=step_end,
    )
    if not is_shapes:
        kwargs.update(width=params.width, height=params.height)
    images = pipe(**kwargs).images
    if is_shapes:  # drawn at 16x16; nearest-neighbour keeps the pixels honest
        images = [im.resize((params.width, params.height), Image.Resampling.NEAREST) for im in images]
    return images
