"""Inside the image models: the forward (noising) process, and what each prompt word drew.

- Forward process: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, the closed form of q(x_t | x_0)
  (DDPMScheduler.add_noise over the model's own training schedule a_t = alphas_cumprod[t]),
  at the timesteps the chosen scheduler visits; in pixel space for the shapes model, in
  the VAE's latent space (then decoded) for Stable Diffusion.
- Prompt maps on the shapes model (a class embedding, no cross-attention): the condition
  contrast |eps(x_t, c) - eps(x_t, c without the word)|, summed over channels and steps,
  less its median (the floor every pixel gets). It was trained with each attribute dropped, so the reduced condition is one it knows.
- Prompt maps on Stable Diffusion: the cross-attention probabilities of every `attn2`
  layer ("Diffusion Attentive Attribution Maps", DAAM), captured by a processor installed
  only while a map is made (the default SDPA processor never forms them): the conditional
  half, upsampled to the latent size, summed over heads, layers and steps.
"""

from __future__ import annotations

import hashlib
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from PIL import Image

from aigc_studio import shapes
from aigc_studio.params import ImageParams, ParamError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

MIN_SIDE, MAX_SIDE = 8, 4096  # pixels: an input picture outside these is refused, naming the range
MAX_FRAMES = 50  # forward-process frames per request


# ----- the input picture --------------------------------------------------------------------

def check_input(picture: Any, field: str = "image") -> Image.Image:
    """An input picture as RGB, transparency flattened onto white (the shapes world's
    background; a sketch pad's empty canvas is transparent). Refuses anything that is not
    a picture, or a side outside [8, 4096] pixels, with a ParamError naming the field."""
    if isinstance(picture, np.ndarray):
        if picture.dtype != np.uint8 or picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[2] not in (1, 3, 4)):
            raise ParamError(field, f"must be an RGB(A) picture of 8-bit pixels, got an array of shape "
                                    f"{picture.shape} and type {picture.dtype}")
        picture = Image.fromarray(picture.squeeze(-1) if picture.ndim == 3 and picture.shape[2] == 1 else picture)
    if not isinstance(picture, Image.Image):
        raise ParamError(field, f"must be a picture (PNG, JPEG or WebP), got {type(picture).__name__}")
    width, height = picture.size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ParamError(field, f"each side must be {MIN_SIDE}-{MAX_SIDE} pixels, got {width}x{height}")
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        flat = Image.new("RGB", rgba.size, shapes.BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return picture.convert("RGB")


def fingerprint(picture: Image.Image) -> str:
    """SHA-256 (hex) of a checked picture's RGB pixels, row by row, 8 bits each: the same
    picture gives the same digest whatever file format carried it."""
    return hashlib.sha256(picture.convert("RGB").tobytes()).hexdigest()


# ----- the forward process ------------------------------------------------------------------

@dataclass
class NoiseFrame:
    """x_t at one timestep; signal = sqrt(a_t) and noise = sqrt(1 - a_t) are the weights of
    the clean image and of the Gaussian noise in it (signal^2 + noise^2 = 1)."""

    timestep: int
    signal: float
    noise: float
    picture: Image.Image


def noise_frames(pipe: DiffusionPipeline, picture: Image.Image, steps: int, scheduler: str, seed: int,
                 size: tuple[int, int]) -> list[NoiseFrame]:
    """The forward process of `picture` at the `steps` timesteps that `scheduler` visits when
    sampling with that many steps, cleanest first, one noise draw (seed) for every frame.
    Pictures are `size` (width, height)."""
    import torch
    from diffusers import DDPMScheduler

    from aigc_studio.engines import image as image_engine
    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    if getattr(pipe, "family", None) in image_engine.FAMILY_KINDS:
        raise ParamError("model", f"the {pipe.family.upper()} has no noising process: it draws in one pass from a latent")
    if "alphas_cumprod" not in dir(pipe.scheduler):
        raise ParamError("model", f"{type(pipe).__name__} samples by flow matching, not a noise schedule; "
                                  "the forward view is for noise-prediction models (shapes-diffusion, Stable Diffusion)")
    image_engine.set_scheduler(pipe, scheduler)
    pipe.scheduler.set_timesteps(steps)
    timesteps = sorted({int(t) for t in pipe.scheduler.timesteps})
    forward = DDPMScheduler.from_config(pipe.default_scheduler_config)  # q(x_t | x_0) of the training schedule
    alphas = forward.alphas_cumprod
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        if isinstance(pipe, ShapesPipeline):
            clean = image_engine.to_tensor(picture, pipe.unet.config.sample_size)
        else:
            clean = _encode(pipe, picture.resize(size, Image.Resampling.LANCZOS))
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(clean.device, clean.dtype)
        ts = torch.tensor(timesteps, dtype=torch.long)
        noisy = forward.add_noise(clean.expand(len(ts), -1, -1, -1), noise.expand(len(ts), -1, -1, -1), ts)
        rgb = noisy if isinstance(pipe, ShapesPipeline) else _decode(pipe, noisy)
    pictures = [_to_picture(x, size) for x in rgb]
    return [NoiseFrame(t, round(float(alphas[t].sqrt()), 6), round(float((1 - alphas[t]).sqrt()), 6), p)
            for t, p in zip(timesteps, pictures)]


def _encode(pipe, picture: Image.Image) -> torch.Tensor:
    import torch

    x = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1).unsqueeze(0)
    x = x.to(pipe.vae.device, pipe.vae.dtype)
    return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


def _decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.cat([pipe.vae.decode(z.unsqueeze(0) / pipe.vae.config.scaling_factor).sample for z in latents])


def _to_picture(x: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    array = ((x.float().clamp(-1, 1).permute(1, 2, 0) + 1) * 127.5).round().byte().cpu().numpy()
    return Image.fromarray(array).resize(size, Image.Resampling.NEAREST)


# ----- what each prompt word drew -------------------------------------------------------------

@dataclass
class WordMap:
    """One prompt word's map over the image: `heat` in [0, 1] (divided by its maximum) at the
    model's working resolution (16x16 pixels for shapes, the latent grid for SD); `reads_as`
    is what the model understood (a shapes synonym's vocabulary word, or the word itself)."""

    word: str
    reads_as: str
    heat: np.ndarray


def prompt_maps(pipe: DiffusionPipeline, prompt: str, params: ImageParams, seed: int,
                stop: threading.Event | None = None) -> tuple[Image.Image, list[WordMap], str]:
    """(the image, one WordMap per word the model reads, the method's name) for one seed."""
    from aigc_studio.engines import image as image_engine
    from aigc_studio.engines.shapes_pipeline import ShapesPipeline

    if isinstance(pipe, ShapesPipeline):
        return (*_contrast_maps(pipe, prompt, params, seed, stop), "condition contrast")
    unet = getattr(pipe, "unet", None)
    if unet is None or not any(name.endswith("attn2.processor") for name in unet.attn_processors):
        kind = getattr(pipe, "family", None) or type(pipe).__name__
        raise ParamError("model", f"{kind} has no cross-attention to map words with; prompt maps work on "
                                  "shapes-diffusion (condition contrast) and Stable Diffusion UNets (cross-attention)")
    scale = getattr(pipe, "vae_scale_factor", 8)
    with capture_cross_attention(pipe, (params.height // scale, params.width // scale)) as capture:
        image = image_engine.generate(pipe, [prompt], params, [seed], stop=stop)[0]
    return image, _word_maps(pipe, prompt, capture.total), "cross-attention (DAAM)"


def shapes_words(prompt: str) -> list[tuple[str, str, str]]:
    """(typed word, vocabulary word, 'colour' or 'shape') for the words the shapes model reads:
    the first colour word and the first shape word, as parse_prompt picks them."""
    found: dict[str, tuple[str, str, str]] = {}
    for word in re.findall(r"[A-Za-z]+", prompt):
        condition = shapes.parse_prompt(word, allow_empty=True)
        if condition.colour and "colour" not in found:
            found["colour"] = (word, condition.colour, "colour")
        elif condition.shape and "shape" not in found:
            found["shape"] = (word, condition.shape, "shape")
    return sorted(found.values(), key=lambda w: prompt.lower().find(w[0].lower()))


def _contrast_maps(pipe, prompt: str, params: ImageParams, seed: int,
                   stop: threading.Event | None) -> tuple[Image.Image, list[WordMap]]:
    from aigc_studio.engines import image as image_engine

    condition = shapes.parse_prompt(prompt)
    words = shapes_words(prompt)
    reduced = [shapes.Condition(None, condition.shape) if role == "colour" else shapes.Condition(condition.colour, None)
               for _, _, role in words]
    # one extra batch row per word in every UNet call of the generation
    image = image_engine.generate(pipe, [prompt], params, [seed], stop=stop,
                                  pipeline_kwargs={"contrast_labels": [c.label for c in reduced]})[0]
    maps = pipe.contrast_maps.numpy()
    return image, [WordMap(word, canonical, _normalised(_above_floor(heat))) for (word, canonical, _), heat
                   in zip(words, maps)]


def _above_floor(heat: np.ndarray) -> np.ndarray:
    """The contrast above its median. Dropping a word changes the whole denoising a little, so
    every pixel gets some contrast (about a third of the peak, measured); what the word itself
    drew is what rises above that floor (bench/prompt_map.py: 0.58 of the shape word's map fell
    inside the shape with the floor, 0.71 without)."""
    return np.clip(heat - np.median(heat), 0, None)


def _normalised(heat: np.ndarray) -> np.ndarray:
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).astype(np.float32)


class CrossAttentionCapture:
    """An attention processor for `attn2` layers: diffusers' plain AttnProcessor (which forms
    the softmax probabilities), plus a running sum of the conditional batch half's
    probabilities over heads, upsampled to the latent grid: total is (tokens, h, w)."""

    def __init__(self, latent_size: tuple[int, int]):
        self.latent_size = latent_size
        self.total = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        import torch

        batch, length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        context = encoder_hidden_states if encoder_hidden_states is not None else hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (batch * heads, pixels, tokens)
        self._add(probs.view(batch, attn.heads, *probs.shape[1:])[-1])  # guidance puts the conditional half last
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _add(self, probs: torch.Tensor) -> None:
        import torch

        height, width = self.latent_size
        pixels = probs.shape[1]
        rows = max(1, round((pixels * height / width) ** 0.5))  # this layer's grid, same aspect as the latent
        grid = probs.sum(0).float().T.reshape(1, -1, rows, pixels // rows)  # (1, tokens, rows, columns)
        upsampled = torch.nn.functional.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[0]
        self.total = upsampled if self.total is None else self.total + upsampled


@contextmanager
def capture_cross_attention(pipe, latent_size: tuple[int, int]) -> Iterator[CrossAttentionCapture]:
    """Install a CrossAttentionCapture on every attn2 layer for the duration; the UNet's own
    processors (SDPA by default) come back afterwards, whatever happened. latent_size is
    the latent grid (height, width) of the images about to be drawn."""
    unet = pipe.unet
    original = dict(unet.attn_processors)
    capture = CrossAttentionCapture(latent_size)
    unet.set_attn_processor({name: capture if name.endswith("attn2.processor") else processor
                             for name, processor in original.items()})
    try:
        yield capture
    finally:
        unet.set_attn_processor(original)


def _word_maps(pipe, prompt: str, total) -> list[WordMap]:
    """Each whitespace-separated word's map: the sum over its tokens (after the start token)."""
    if total is None:
        return []
    tokenizer = pipe.tokenizer
    ids = tokenizer(prompt, truncation=True).input_ids
    maps, position = [], 1
    for word in prompt.split():
        pieces = tokenizer(word, add_special_tokens=False).input_ids
        if position + len(pieces) > len(ids) - 1 or ids[position:position + len(pieces)] != pieces:
            break  # truncated at the encoder's length, or tokenised across words: stop honestly here
        heat = total[position:position + len(pieces)].sum(0).cpu().numpy()
        maps.append(WordMap(word, word, _normalised(heat)))
        position += len(pieces)
    return maps


# ----- overlays -----------------------------------------------------------------------------

def overlay(picture: Image.Image, heat: np.ndarray, strength: float = 0.75) -> Image.Image:
    """The picture dimmed to grey with a heat map over it (black -> red -> yellow as heat rises),
    heat resized to the picture smoothly."""
    grey = np.asarray(picture.convert("L").convert("RGB"), dtype=np.float32) * 0.5
    resized = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize(picture.size, Image.Resampling.BILINEAR)
    h = np.asarray(resized, dtype=np.float32)[..., None] / 255
    colour = np.concatenate([np.clip(h * 2, 0, 1), np.clip(h * 2 - 1, 0, 1), np.zeros_like(h)], axis=-1) * 255
    mixed = grey * (1 - strength * h) + colour * (strength * h)
    return Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
