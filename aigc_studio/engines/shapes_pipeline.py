"""ShapesPipeline: the embedded text-to-image model, a diffusers pipeline.

A small UNet2DModel whose class embedding is indexed by the (colour, shape)
condition parsed from the prompt (aigc_studio.shapes), plus any diffusers
scheduler. It follows the contract of StableDiffusionPipeline closely enough
that the image engine drives both the same way: `num_inference_steps`,
`guidance_scale`, `negative_prompt`, `generator`, `callback_on_step_end`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers import SchedulerMixin
from PIL import Image

from aigc_studio import shapes


class ShapesPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.onnx_unet = None  # an ONNX Runtime session of the same UNet (use_onnx_runtime), else torch

    def use_onnx_runtime(self, threads: int = 1) -> None:
        """Run the UNet with ONNX Runtime on the CPU (fp32): its graph is exported once, in memory
        (~3 s at load, 7 MB). Measured on one thread: 30 UNet calls at batch 2 in ~0.21 s instead of
        ~0.58 s in torch (the per-op overhead of a 16x16 UNet dominates its arithmetic); outputs
        equal torch's within 1e-6. Calls it cannot take (another device or dtype) stay on torch."""
        import io
        import warnings

        import onnxruntime

        class Eps(torch.nn.Module):
            def __init__(self, unet):
                super().__init__()
                self.unet = unet

            def forward(self, x, t, labels):
                return self.unet(x, t, class_labels=labels).sample

        size = self.unet.config.sample_size
        example = (torch.zeros(2, self.unet.config.in_channels, size, size), torch.zeros(2), torch.zeros(2, dtype=torch.long))
        graph = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes on shape checks that hold for every batch we send
            torch.onnx.export(Eps(self.unet).eval(), example, graph, input_names=["x", "t", "labels"],
                              output_names=["eps"], dynamic_axes={"x": {0: "n"}, "t": {0: "n"}, "labels": {0: "n"}},
                              opset_version=17, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # a busy machine: yield, do not spin
        self.onnx_unet = onnxruntime.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])

    def _eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction for a batch (ONNX Runtime when it can take the call)."""
        # the traced graph fixed one branch of diffusers' upsampler, taken below a batch of 64
        if self.onnx_unet is None or x.device.type != "cpu" or x.dtype != torch.float32 or len(x) >= 64:
            return self.unet(x, t, class_labels=labels).sample
        times = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(len(x))
        eps = self.onnx_unet.run(None, {"x": x.contiguous().numpy(), "t": times.contiguous().numpy(),
                                        "labels": labels.numpy()})[0]
        return torch.from_numpy(eps)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        callback_on_step_end: Callable | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        strength: float = 1.0,
        callback_on_start: Callable | None = None,
        contrast_labels: list[int] | None = None,
    ) -> ImagePipelineOutput:
        """Denoise from Gaussian noise at the UNet's native size.

        guidance_scale: classifier-free guidance weight w in
        eps = eps_uncond + w * (eps_cond - eps_uncond): 0 ignores both prompts,
        1 is plain conditional sampling (one pass), > 1 pushes harder toward the
        prompt. A negative prompt replaces the null condition, so guidance
        pushes away from it. height/width are accepted for interface
        parity and must equal the native size (the engine upscales for display).
        latents: the starting noise (standard normal, one row per image) instead of
        drawing it from the generators, as in StableDiffusionPipeline (latent walks).
        image, strength: image to image (SDEdit). image is (batch, 3, size, size) in [-1, 1];
        strength in [0, 1] picks how much of the schedule runs: the image is noised to the
        timestep where the last int(steps * strength) steps begin (scheduler.add_noise) and
        denoised from there. 0 returns the image, 1 starts from pure noise (text to image).
        callback_on_start(latents): the noised start, before the first step (image to image).
        contrast_labels: condition labels compared against the first image's condition at
        every step (prompt maps): self.contrast_maps becomes their |eps(x_t, c) - eps(x_t, c')|
        summed over channels and steps, (len(contrast_labels), size, size).
        """
        size = self.unet.config.sample_size
        if (height or size) != size or (width or size) != size:
            raise ValueError(f"width/height: this model draws at {size}x{size} only")
        cond, uncond = self._condition_labels(prompt, negative_prompt, num_images_per_prompt)
        device = self._execution_device
        dtype = self.unet.dtype
        cond_labels = torch.tensor(cond, device=device)
        uncond_labels = torch.tensor(uncond, device=device)
        shape = (len(cond), self.unet.config.in_channels, size, size)
        noise = self._initial_noise(shape, latents, generator)
        latents, timesteps = self._start(noise, image, strength, num_inference_steps, device, dtype, callback_on_start)
        self.num_timesteps = len(timesteps)
        contrast = None
        if contrast_labels:  # the first image's condition, then each reduced one
            contrast = torch.tensor([cond[0], *contrast_labels], device=device)
            self.contrast_maps = torch.zeros(len(contrast_labels), size, size)
        for i, t in enumerate(self.progress_bar(timesteps)):
            noise_pred = self._guided_noise(latents, t, cond_labels, uncond_labels, guidance_scale, contrast)
            # the whole list: each image's step noise comes from its own seed, whatever the batch
            step = self.scheduler.step(noise_pred, t, latents, generator=generator)
            previous, latents = latents, step.prev_sample
            if callback_on_step_end is not None:
                predicted = getattr(step, "pred_original_sample", None)
                if predicted is None:  # DPM-Solver keeps x0 to itself: estimate it in alpha space
                    predicted = self._estimate_clean(previous, noise_pred, t)
                outputs = callback_on_step_end(self, i, t, {"latents": latents, "pred_original_sample": predicted})
                latents = (outputs or {}).get("latents", latents)
        return _output(latents, output_type)

    def _condition_labels(self, prompt: str | list[str], negative_prompt: str | list[str] | None,
                          per_prompt: int) -> tuple[list[int], list[int]]:
        """The condition label of every image and of its negative prompt (the null condition when none)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt] * len(prompts)
        cond = [shapes.parse_prompt(p).label for p in prompts for _ in range(per_prompt)]
        uncond = [shapes.parse_prompt(n or "", allow_empty=True).label for n in negatives for _ in range(per_prompt)]
        return cond, uncond

    @staticmethod
    def _initial_noise(shape: tuple[int, ...], latents: torch.Tensor | None,
                       generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
        """The starting noise (float32, CPU): the latents given, or drawn from the generator(s),
        one generator per image when a list is given."""
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents: expected shape {shape}, got {tuple(latents.shape)}")
            return latents
        if isinstance(generator, list):
            return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for g in generator])
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    def _start(self, noise: torch.Tensor, image: torch.Tensor | None, strength: float, steps: int, device, dtype,
               callback_on_start: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latents the first step denoises, the timesteps left): scaled noise, or the
        image noised part-way for image to image (see _noised_start)."""
        # set_timesteps first: Euler-type schedulers derive init_noise_sigma from the chosen timesteps
        self.scheduler.set_timesteps(steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = tuple(noise.shape)
        if image is not None and tuple(image.shape[1:]) != shape[1:]:
            raise ValueError(f"image: expected shape (n, {', '.join(map(str, shape[1:]))}), got {tuple(image.shape)}")
        if image is not None and strength < 1.0:
            image = image.expand(shape[0], -1, -1, -1) if image.shape[0] == 1 else image
            latents, timesteps = self._noised_start(image, noise, strength, steps, device, dtype)
            if callback_on_start is not None:
                callback_on_start(latents)
            return latents, timesteps
        return noise.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma, timesteps

    def _guided_noise(self, latents: torch.Tensor, t: torch.Tensor, cond_labels: torch.Tensor,
                      uncond_labels: torch.Tensor, guidance_scale: float, contrast: torch.Tensor | None) -> torch.Tensor:
        """The guided noise prediction for one step, in one UNet call. With contrast labels, the
        call also runs the first image under each of them and adds their difference to
        self.contrast_maps."""
        # w == 1 and w == 0 need one UNet pass (conditional / unconditional); others need both.
        # Like SD at guidance <= 1, the negative prompt only counts where guidance mixes the two.
        do_cfg = guidance_scale not in (0.0, 1.0)
        if do_cfg:
            model_input, labels = torch.cat([latents] * 2), torch.cat([uncond_labels, cond_labels])
        elif guidance_scale == 0.0:
            model_input, labels = latents, torch.full_like(cond_labels, shapes.NULL_CONDITION.label)
        else:
            model_input, labels = latents, cond_labels
        if contrast is not None:  # the guided batch plus the contrast rows
            model_input = torch.cat([model_input, latents[:1].expand(len(contrast), -1, -1, -1)])
            labels = torch.cat([labels, contrast])
        noise_pred = self._eps(self.scheduler.scale_model_input(model_input, t), t, labels)
        if contrast is not None:
            noise_pred, compared = noise_pred[: -len(contrast)], noise_pred[-len(contrast):]
            self.contrast_maps += (compared[:1] - compared[1:]).abs().sum(dim=1).float().cpu()
        if do_cfg:
            noise_uncond, noise_cond = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
        return noise_pred

    def _noised_start(self, image: torch.Tensor, noise: torch.Tensor, strength: float, steps: int,
                      device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """SDEdit's start, as diffusers' img2img pipelines do it: skip the first
        steps - int(steps * strength) timesteps and noise the image to the first one left.
        No step left (strength < 1 / steps): the image itself, and no timesteps."""
        kept = min(int(steps * strength), steps)
        begin = (steps - kept) * self.scheduler.order
        timesteps = self.scheduler.timesteps[begin:]
        if hasattr(self.scheduler, "set_begin_index"):  # multistep and Euler schedulers count steps from here
            self.scheduler.set_begin_index(begin)
        image = image.to(device=device, dtype=dtype)
        if kept == 0:
            return image, timesteps
        start = timesteps[:1].repeat(image.shape[0])
        return self.scheduler.add_noise(image, noise.to(device=device, dtype=dtype), start), timesteps

    def _estimate_clean(self, noisy: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
        """x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t), for schedulers that work in alpha space."""
        alphas = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas is None:
            return None
        alpha = alphas[int(t)].to(noisy.device, noisy.dtype)
        return (noisy - (1 - alpha).sqrt() * noise) / alpha.sqrt()


def _output(latents: torch.Tensor, output_type: str) -> ImagePipelineOutput:
    """Images in [0, 1] from latents in [-1, 1]: tensors ("pt"), arrays ("np") or PIL images."""
    images = (latents / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return ImagePipelineOutput(images=images)
    array = images.permute(0, 2, 3, 1).float().cpu().numpy()
    if output_type == "np":
        return ImagePipelineOutput(images=array)
    return ImagePipelineOutput(images=[Image.fromarray((a * 255).round().astype(np.uint8)) for a in array])
