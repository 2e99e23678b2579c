"""Image engine: text-to-image diffusion pipelines through diffusers.

Hub repos and local folders load with AutoPipelineForText2Image (safetensors
only); the embedded shapes model loads as a ShapesPipeline from assets/. Both
are driven the same way, so steps, guidance, seed, scheduler and per-step
callbacks work for every model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import diffusers
import torch
from diffusers import (
    AutoPipelineForText2Image,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
)
from PIL import Image

from aigc_studio.catalog import ModelSpec
from aigc_studio.engines.shapes_pipeline import ShapesPipeline
from aigc_studio.params import ImageParams

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
}

# Called after each denoising iteration with (index from 0, total iterations).
StepCallback = Callable[[int, int], None]


def load(spec: ModelSpec, device: str, dtype: torch.dtype) -> DiffusionPipeline:
    """Load spec's pipeline onto device in dtype; remembers its own scheduler config."""
    if spec.kind == "shapes":
        folder = Path(spec.location)
        unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, torch_dtype=dtype)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        pipe = ShapesPipeline(unet=unet, scheduler=scheduler)
    else:
        pipe = AutoPipelineForText2Image.from_pretrained(
            spec.location, revision=spec.revision, torch_dtype=dtype, use_safetensors=True
        )
        if getattr(pipe, "safety_checker", None) is None and hasattr(pipe, "requires_safety_checker"):
            pipe.register_to_config(requires_safety_checker=False)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.default_scheduler_config = dict(pipe.scheduler.config)
    return pipe


def set_scheduler(pipe: DiffusionPipeline, name: str) -> None:
    """Swap the scheduler; 'default' restores the one the model shipped with."""
    config = pipe.default_scheduler_config
    cls = getattr(diffusers, config["_class_name"]) if name == "default" else SCHEDULERS[name]
    pipe.scheduler = cls.from_config(config)


def generate(pipe: DiffusionPipeline, prompts: list[str], params: ImageParams, seeds: list[int],
             on_step: StepCallback | None = None) -> list[Image.Image]:
    """One image per (prompt, seed) pair, in one batched pipeline call.

    Each image has its own torch.Generator, so an image depends only on its own
    seed and recipe, not on what else is in the batch.
    """
    set_scheduler(pipe, params.scheduler)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    is_shapes = isinstance(pipe, ShapesPipeline)

    def step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
        if on_step is not None:  # some schedulers (PNDM) run more iterations than steps
            on_step(step, len(pipeline.scheduler.timesteps))
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
