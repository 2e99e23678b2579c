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
from aigc_studio.engines import GenerationStopped
from aigc_studio.params import SCHEDULERS as SCHEDULER_REGISTRY
from aigc_studio.params import ImageParams

# diffusers and torch take seconds to import: they load with the first image
# model, so the server answers without them.
if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderTiny, DiffusionPipeline

log = logging.getLogger(__name__)

# diffusers class names of the studio's schedulers (params.SCHEDULERS), resolved on first use.
SCHEDULER_CLASSES = {name: cls for name, cls in SCHEDULER_REGISTRY.items() if cls is not None}

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


def load(spec: ModelSpec, device: str, dtype: torch.dtype, memory: MemoryOptions | None = None) -> DiffusionPipeline:
    """Load spec's pipeline onto device in dtype; remembers its own scheduler config."""
    if spec.kind in FAMILY_KINDS:  # the shapes VAE and GAN: plain torch modules, no diffusers
        return _load_family(spec, device, dtype)
    import torch
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
    if isinstance(pipe, ShapesPipeline) and device == "cpu" and dtype == torch.float32:
        _onnx_unet(pipe)
    pipe.default_scheduler_config = dict(pipe.scheduler.config)
    pipe.preview_decoder = _load_preview_decoder(spec, device, dtype)
    return pipe


def _onnx_unet(pipe) -> None:
    """The shapes UNet on ONNX Runtime (ShapesPipeline.use_onnx_runtime: ~2.7x faster per step on
    one thread, pixels as torch's); torch stays when the export or the runtime fails."""
    import torch

    try:
        pipe.use_onnx_runtime(torch.get_num_threads())
    except Exception as error:  # noqa: BLE001 - a speed-up only: the torch path is complete
        log.warning("shapes UNet stays on torch (ONNX Runtime export failed: %s)", error)


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
             stop: threading.Event | None = None, init_image: Image.Image | None = None,
             pipeline_kwargs: dict | None = None) -> list[Image.Image]:
    """One image per (prompt, seed) pair, in one batched pipeline call.

    Each image has its own torch.Generator, so an image depends only on its own
    seed and recipe, not on what else is in the batch. on_preview receives the
    denoising trajectory of the first image, one preview per iteration. Setting
    `stop` raises GenerationStopped after the current step; the pipeline stays usable.

    init_image (an RGB picture, any size): image to image (SDEdit) at params.strength,
    the picture resized to the output size. on_preview then first gets the noised
    start as step -1. A strength that leaves no step (int(steps * strength) == 0)
    returns the picture itself, resized. pipeline_kwargs go to the pipeline call as they are
    (the prompt maps' contrast_labels).
    """
    import torch

    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    if getattr(pipe, "family", None) in FAMILY_KINDS:
        if init_image is not None:
            raise ValueError(f"model: the {pipe.family.upper()} draws in one pass from a latent; it has no image to "
                             "image (use a diffusion model such as shapes-diffusion)")
        return _generate_family(pipe, prompts, params, seeds, on_step, on_preview, stop)
    size = (params.width, params.height)
    if init_image is not None and int(params.steps * params.strength) == 0:  # nothing to denoise: the input
        return [init_image.resize(size, Image.Resampling.BOX) for _ in prompts]
    set_scheduler(pipe, params.scheduler)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    is_shapes = isinstance(pipe, ShapesPipeline)

    def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
        if stop is not None and stop.is_set():
            raise GenerationStopped(f"stopped after step {step + 1}")
        if on_step is not None:  # some schedulers (PNDM) run more iterations than steps; image to image fewer
            on_step(step, getattr(pipeline, "num_timesteps", None) or len(pipeline.scheduler.timesteps))
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
        **(pipeline_kwargs or {}),
    )
    if init_image is not None:
        pipe = _with_start_picture(pipe, kwargs, init_image, params, on_preview)
    elif not is_shapes:
        kwargs.update(width=params.width, height=params.height)
    images = pipe(**kwargs).images
    if is_shapes:  # drawn at 16x16; nearest-neighbour keeps the pixels honest
        images = [im.resize((params.width, params.height), Image.Resampling.NEAREST) for im in images]
    return images


def _with_start_picture(pipe: DiffusionPipeline, kwargs: dict, init_image: Image.Image, params: ImageParams,
                        on_preview: PreviewCallback | None) -> DiffusionPipeline:
    """Turn a text-to-image call into image to image: the pipeline to call (the shapes
    pipeline itself, or diffusers' image-to-image pipeline sharing the loaded components)
    with kwargs completed. The noised start goes to on_preview as step -1."""
    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    size = (params.width, params.height)

    def show_start(latents) -> None:
        latents = latents[0] if isinstance(latents, tuple) else latents  # FLUX returns (latents, ids)
        picture = preview({"latents": latents}, size, getattr(pipe, "preview_decoder", None))
        if picture is not None:
            on_preview(-1, picture)

    kwargs["strength"] = params.strength
    if isinstance(pipe, ShapesPipeline):
        kwargs["image"] = to_tensor(init_image, pipe.unet.config.sample_size)
        if on_preview is not None:  # pixel space: the noised start is itself a picture
            kwargs["callback_on_start"] = lambda x: on_preview(-1, preview({"pred_original_sample": x}, size))
        return pipe
    img2img = image_to_image_pipeline(pipe)
    kwargs["image"] = init_image.resize(size, Image.Resampling.LANCZOS)
    if on_preview is not None:  # diffusers has no hook for the start: watch the method that makes it
        prepare = img2img.prepare_latents

        def prepare_and_show(*args, **more):
            latents = prepare(*args, **more)
            show_start(latents)
            return latents

        img2img.prepare_latents = prepare_and_show
    return img2img


def image_to_image_pipeline(pipe: DiffusionPipeline) -> DiffusionPipeline:
    """diffusers' image-to-image pipeline for a loaded text-to-image one, sharing its
    components (AutoPipelineForImage2Image.from_pipe: no second copy of the weights)."""
    from diffusers import AutoPipelineForImage2Image

    try:
        img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    except ValueError as error:  # a pipeline class with no image-to-image twin
        raise ValueError(f"model: {type(pipe).__name__} has no image-to-image pipeline in diffusers ({error})") from None
    img2img.set_progress_bar_config(disable=True)
    img2img.preview_decoder = getattr(pipe, "preview_decoder", None)
    return img2img


def to_tensor(picture: Image.Image, size: int) -> torch.Tensor:
    """An RGB picture as the shapes model's pixels: (1, 3, size, size) in [-1, 1], box-downsampled."""
    import numpy as np
    import torch

    small = np.asarray(picture.convert("RGB").resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    return torch.from_numpy(small / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)


# ----- the other model families: a conditional VAE and a conditional GAN (aigc_studio/families.py) -----

FAMILY_KINDS = ("vae", "gan")  # catalog kinds; their models carry .family with the same name


def _load_family(spec: ModelSpec, device: str, dtype: torch.dtype):
    from aigc_studio import families

    model = families.load(Path(spec.location), device, dtype)
    if model.family != spec.kind:
        raise OSError(f"{spec.location}: holds a {model.family} model, the catalog says {spec.kind}")
    return model


def _generate_family(model, prompts: list[str], params: ImageParams, seeds: list[int],
                     on_step: StepCallback | None = None, on_preview: PreviewCallback | None = None,
                     stop: threading.Event | None = None, latents=None) -> list[Image.Image]:
    """One decoder / generator pass for the whole batch (one step: Stop acts before it).
    Each image's latent comes from its own torch.Generator (families.generate)."""
    from aigc_studio import families

    if stop is not None and stop.is_set():
        raise GenerationStopped("stopped before the first step")
    images = families.generate(model, prompts, seeds, params.latent_temperature, params.truncation, latents)
    images = [im.resize((params.width, params.height), Image.Resampling.NEAREST) for im in images]
    if on_step is not None:
        on_step(0, 1)
    if on_preview is not None and images:
        on_preview(0, images[0])
    return images


def walk(pipe, prompt: str, params: ImageParams, seed_a: int, seed_b: int, frames: int,
         on_step: StepCallback | None = None, stop: threading.Event | None = None) -> list[Image.Image]:
    """A latent walk: `frames` images from seed_a's image to seed_b's, the starting noise
    (diffusion) or latent (VAE, GAN) slerped between the two seeds' draws. The first and
    last frames equal the two seeds' own images. For the diffusion model the per-step
    noise of stochastic schedulers (ddpm, euler_a) comes from seed_a (seed_b's for the
    last frame); the default dpm++ uses none. Only the embedded shapes models walk."""
    import torch

    from aigc_studio import families
    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    ts = [i / (frames - 1) for i in range(frames)]
    if getattr(pipe, "family", None) in FAMILY_KINDS:
        a, b = (pipe.draw_latent(torch.Generator("cpu").manual_seed(s)) for s in (seed_a, seed_b))
        latents = torch.cat([families.slerp(a, b, t) for t in ts])
        seeds = [seed_a] * (frames - 1) + [seed_b]  # a colour or shape the prompt leaves out: seed_a's, seed_b's at the end
        return _generate_family(pipe, [prompt] * frames, params, seeds, on_step, None, stop, latents)
    if not isinstance(pipe, ShapesPipeline):
        raise ValueError("model: the latent walk is for the embedded shapes models (diffusion, VAE, GAN)")
    set_scheduler(pipe, params.scheduler)
    size = pipe.unet.config.sample_size
    shape = (1, pipe.unet.config.in_channels, size, size)
    generators, noise = [], {}
    for seed in (seed_a, seed_b):  # draw as the pipeline does, so the generators move on as they would
        generator = torch.Generator("cpu").manual_seed(seed)
        noise[seed] = torch.randn(shape, generator=generator, dtype=torch.float32)
    for t in ts:
        generator = torch.Generator("cpu").manual_seed(seed_b if t >= 1 else seed_a)
        torch.randn(shape, generator=generator, dtype=torch.float32)
        generators.append(generator)
    latents = torch.cat([families.slerp(noise[seed_a], noise[seed_b], t) for t in ts])

    def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
        if stop is not None and stop.is_set():
            raise GenerationStopped(f"stopped after step {step + 1}")
        if on_step is not None:
            on_step(step, len(pipeline.scheduler.timesteps))
        return tensors

    images = pipe(prompt=[prompt] * frames,
                  negative_prompt=[params.negative_prompt] * frames if params.negative_prompt else None,
                  num_inference_steps=params.steps, guidance_scale=params.guidance, generator=generators,
                  callback_on_step_end=step_end, latents=latents).images
    return [im.resize((params.width, params.height), Image.Resampling.NEAREST) for im in images]


# Knobs only the VAE and GAN families read; their catalog entries list their own knobs.
FAMILY_KNOBS = ("latent_temperature", "truncation")


def knobs_used(kind: str) -> tuple[str, ...]:
    """The ImageParams a diffusion model (diffusers or the shapes pipeline) reads."""
    from dataclasses import fields

    return tuple(f.name for f in fields(ImageParams) if f.name not in FAMILY_KNOBS)
