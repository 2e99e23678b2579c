"""Two more model families on the shapes world, beside the diffusion model:

- `ShapesVAE`: a conditional VAE. The encoder maps an image and its condition to
  q(z | x, c) = N(mu, sigma^2); the decoder maps z and the condition back to an
  image. Training maximises the ELBO = E_q[log p(x | z, c)] - KL(q(z | x, c) || N(0, I)).
  Sampling draws z ~ N(0, T^2 I) (T: the latent temperature) and decodes it.
- `ShapesGAN`: a conditional DCGAN. The generator maps z ~ N(0, I) and the condition
  to an image; a discriminator (spectral norm, projection of the class embedding)
  tells real renders from generated ones under the hinge loss, and a classifier trained
  on renders tells the generator which condition its image reads as. Sampling scales z by
  the truncation psi toward the latent mean (0): lower psi, cleaner and less varied.

Both read the same prompts and condition labels as the diffusion model
(shapes.parse_prompt, shapes.Condition.label) but learn full conditions only: a colour or
shape the prompt leaves out is drawn from the image's seed. They draw at 16x16 in [-1, 1] and ship as one
safetensors file plus a config.json. One torch.Generator per image draws its latent,
so an image depends only on its seed and knobs, never on the batch it ran in.
The training loops live in aigc_studio/train.py (`python -m aigc_studio.train vae|gan`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from aigc_studio import shapes

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINING_LOG = "training_log.json"


class ShapesVAE(nn.Module):
    """Conditional VAE: conv encoder 16 -> 8 -> 4, a small latent, transposed-conv decoder."""

    family = "vae"

    def __init__(self, latent_dim: int = 8, width: int = 16, embed_dim: int = 16,
                 num_conditions: int = shapes.NUM_CONDITIONS, size: int = shapes.NATIVE_SIZE):
        super().__init__()
        self.config = dict(latent_dim=latent_dim, width=width, embed_dim=embed_dim, num_conditions=num_conditions,
                           size=size)
        self.latent_dim, self.size = latent_dim, size
        w, cells = width, (size // 4) ** 2
        self.embed = nn.Embedding(num_conditions, embed_dim)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),  # 8x8
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.SiLU(),  # 4x4
            nn.Flatten(),
        )
        self.to_posterior = nn.Sequential(nn.Linear(4 * w * cells + embed_dim, 256), nn.SiLU(), nn.Linear(256, 2 * latent_dim))
        self.from_latent = nn.Sequential(nn.Linear(latent_dim + embed_dim, 256), nn.SiLU(),
                                         nn.Linear(256, 4 * w * cells), nn.SiLU())
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (4 * w, size // 4, size // 4)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),  # 8x8
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),  # 16x16
            nn.Conv2d(w, 3, 3, padding=1),
        )

    def encode(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log-variance of q(z | x, c) for images in [-1, 1]."""
        h = torch.cat([self.encoder(images), self.embed(labels)], dim=1)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-pixel Bernoulli logits of p(x | z, c) over [0, 1] intensities."""
        return self.decoder(self.from_latent(torch.cat([z, self.embed(labels)], dim=1)))

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image, in [-1, 1]."""
        return torch.sigmoid(self.decode_logits(z, labels)) * 2 - 1

    def elbo_terms(self, images: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, KL), each summed over an image and averaged over the batch;
        -ELBO = reconstruction + KL. noise ~ N(0, I) reparameterises z = mu + sigma * noise."""
        mu, logvar = self.encode(images, labels)
        z = mu + (0.5 * logvar).exp() * noise
        target = (images + 1) / 2
        reconstruction = F.binary_cross_entropy_with_logits(self.decode_logits(z, labels), target, reduction="sum")
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()
        return reconstruction / len(images), kl / len(images)

    def draw_latent(self, generator: torch.Generator) -> torch.Tensor:
        """One image's standard-normal latent, drawn from its own generator."""
        return torch.randn((1, self.latent_dim), generator=generator, dtype=torch.float32)

    def sample(self, latents: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, truncation: float = 1.0) -> torch.Tensor:
        """Images in [-1, 1] from standard-normal latents: z = temperature * latent."""
        return self.decode(latents * temperature, labels)


def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module)


class Generator(nn.Module):
    """DCGAN-style: project (z, class embedding) to 4x4, upsample + conv to 16x16. It draws
    a soft mask (the shape) and one fill colour over the white background: with ~1,500
    training steps on a CPU, a free RGB output stayed speckled (adherence ~0.5)."""

    def __init__(self, latent_dim: int, width: int, embed_dim: int, num_conditions: int, size: int):
        super().__init__()
        w, s = width, size // 4
        self.embed = nn.Embedding(num_conditions, embed_dim)
        self.project = nn.Sequential(nn.Linear(latent_dim + embed_dim, 4 * w * s * s), nn.Unflatten(1, (4 * w, s, s)),
                                     nn.BatchNorm2d(4 * w), nn.ReLU())
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),  # 8x8
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),  # 16x16
            nn.Conv2d(w, 1, 3, padding=1),  # mask logits
        )
        self.fill = nn.Sequential(nn.Linear(latent_dim + embed_dim, 64), nn.ReLU(), nn.Linear(64, 3), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.embed(labels)], dim=1)
        mask = torch.sigmoid(self.body(self.project(h)))
        colour = self.fill(h)[:, :, None, None]
        return mask * colour + (1 - mask)  # white (1.0) where the mask is empty


class Discriminator(nn.Module):
    """Spectral-norm convs, then a linear score plus the projection <embed(c), features>
    (Miyato & Koyama 2018), and an auxiliary classifier of the condition (Odena et al. 2017)."""

    def __init__(self, width: int, num_conditions: int, size: int):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _sn(nn.Conv2d(3, w, 3, padding=1)), nn.LeakyReLU(0.2),
            _sn(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),  # 8x8
            _sn(nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),  # 4x4
            nn.Flatten(),
        )
        features = 4 * w * (size // 4) ** 2
        self.score = _sn(nn.Linear(features, 1))
        self.embed = nn.Embedding(num_conditions, features)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.body(images)
        return self.score(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


class Classifier(nn.Module):
    """A plain CNN that names the condition of a render: trained on renders only, it tells
    the generator which shape its image reads as (an auxiliary classifier kept apart from
    the spectral-norm discriminator, whose constrained features learned shapes too slowly)."""

    def __init__(self, width: int, num_conditions: int, size: int):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),  # 4x4
            nn.Flatten(), nn.Linear(2 * w * (size // 4) ** 2, num_conditions),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class ShapesGAN(nn.Module):
    """Conditional GAN; only the generator ships (the discriminator is a training tool)."""

    family = "gan"

    def __init__(self, latent_dim: int = 32, width: int = 16, embed_dim: int = 32,
                 num_conditions: int = shapes.NUM_CONDITIONS, size: int = shapes.NATIVE_SIZE):
        super().__init__()
        self.config = dict(latent_dim=latent_dim, width=width, embed_dim=embed_dim, num_conditions=num_conditions,
                           size=size)
        self.latent_dim, self.size = latent_dim, size
        self.generator = Generator(latent_dim, width, embed_dim, num_conditions, size)

    def make_discriminator(self) -> Discriminator:
        return Discriminator(self.config["width"], self.config["num_conditions"], self.size)

    def make_classifier(self) -> Classifier:
        return Classifier(self.config["width"], self.config["num_conditions"], self.size)

    def draw_latent(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((1, self.latent_dim), generator=generator, dtype=torch.float32)

    def sample(self, latents: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, truncation: float = 1.0) -> torch.Tensor:
        """Images in [-1, 1]: the truncation trick pulls z toward the latent mean, z = psi * latent."""
        return self.generator(latents * truncation, labels)


FAMILIES = {"vae": ShapesVAE, "gan": ShapesGAN}


# ----- files -----------------------------------------------------------------------------

def save(model: ShapesVAE | ShapesGAN, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS, metadata={"family": model.family})
    (folder / CONFIG).write_text(json.dumps({"family": model.family, **model.config}, indent=1) + "\n")


def load(folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> ShapesVAE | ShapesGAN:
    """A family model from folder (config.json + model.safetensors), in eval mode."""
    from safetensors.torch import load_file

    from aigc_studio import storage

    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    family = config.pop("family")
    if family not in FAMILIES:
        raise OSError(f"{folder / CONFIG}: unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    check = getattr(storage, "check_safetensors", None)
    if check is not None:
        check(folder / WEIGHTS)
    model = FAMILIES[family](**config)
    model.load_state_dict(load_file(folder / WEIGHTS))
    return model.to(device=device, dtype=dtype).eval()


def training_log(folder: Path) -> dict:
    """What training logged per epoch (VAE: reconstruction, kl, elbo; GAN: d_loss, g_loss)."""
    return json.loads((Path(folder) / TRAINING_LOG).read_text())


# ----- sampling --------------------------------------------------------------------------

def labels_for(prompts: list[str], generators: list[torch.Generator], device: str | torch.device = "cpu") -> torch.Tensor:
    """Each prompt's condition label. The VAE and GAN learned full conditions only, so a
    colour or shape the prompt leaves out is drawn from that image's own generator."""
    labels = []
    for prompt, generator in zip(prompts, generators):
        condition = shapes.parse_prompt(prompt)
        colour = condition.colour or shapes.COLOUR_NAMES[_pick(len(shapes.COLOUR_NAMES), generator)]
        shape = condition.shape or shapes.SHAPES[_pick(len(shapes.SHAPES), generator)]
        labels.append(shapes.Condition(colour, shape).label)
    return torch.tensor(labels, device=device)


def _pick(count: int, generator: torch.Generator) -> int:
    return int(torch.randint(count, (1,), generator=generator))


def to_pictures(images: torch.Tensor) -> list[Image.Image]:
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


@torch.no_grad()
def generate(model: ShapesVAE | ShapesGAN, prompts: list[str], seeds: list[int], temperature: float = 1.0,
             truncation: float = 1.0, latents: torch.Tensor | None = None) -> list[Image.Image]:
    """One 16x16 image per (prompt, seed): each latent from its own torch.Generator
    (or the given standard-normal latents, one row per image; a colour or shape the
    prompt leaves out still comes from the seed)."""
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    drawn = torch.cat([model.draw_latent(g) for g in generators])  # first: the latent, then any missing attribute
    latents = drawn if latents is None else latents
    parameter = next(model.parameters())
    labels = labels_for(prompts, generators, parameter.device)
    images = model.sample(latents.to(parameter.device, parameter.dtype), labels, temperature, truncation)
    return to_pictures(images)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (t=0: a, t=1: b, exactly).
    Keeps the norm a Gaussian sample expects, where a straight line would shrink it."""
    if t <= 0:
        return a.clone()
    if t >= 1:
        return b.clone()
    fa, fb = a.flatten().double(), b.flatten().double()
    cos = torch.clamp(fa @ fb / (fa.norm() * fb.norm()), -1.0, 1.0)
    theta = torch.arccos(cos)
    if theta.abs() < 1e-6:
        out = (1 - t) * fa + t * fb
    else:
        out = (torch.sin((1 - t) * theta) * fa + torch.sin(t * theta) * fb) / torch.sin(theta)
    return out.reshape(a.shape).to(a.dtype)


@torch.no_grad()
def reconstruction_view(model: ShapesVAE, colour: str = "red", shape: str = "triangle", seed: int = 0,
                        scale: int = 8) -> Image.Image:
    """A reference render beside the VAE's reconstruction of it (encoder mean -> decoder),
    each `scale` times its native size."""
    picture = shapes.render(colour, shape, np.random.default_rng(seed), model.size)
    parameter = next(model.parameters())
    x = torch.from_numpy(np.asarray(picture, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    labels = torch.tensor([shapes.Condition(colour, shape).label], device=parameter.device)
    mu, _ = model.encode(x.to(parameter.device, parameter.dtype), labels)
    rebuilt = to_pictures(model.decode(mu, labels))[0]
    side = model.size * scale
    canvas = Image.new("RGB", (2 * side + scale, side), "white")
    canvas.paste(picture.resize((side, side), Image.Resampling.NEAREST), (0, 0))
    canvas.paste(rebuilt.resize((side, side), Image.Resampling.NEAREST), (side + scale, 0))
    return canvas


def curve_view(log: dict, keys: tuple[str, ...] | None = None, size: tuple[int, int] = (480, 240)) -> Image.Image:
    """A line chart of the per-epoch training log (VAE: reconstruction and KL; GAN:
    discriminator and generator losses), drawn with PIL; each series in its own colour."""
    from PIL import ImageDraw, ImageFont

    epochs = log["epochs"]
    keys = keys or tuple(k for k in epochs[0] if k != "epoch")
    colours = ((200, 40, 40), (40, 80, 220), (40, 160, 60), (160, 120, 20))
    width, height = size
    left, top, right, bottom = 48, 24, width - 12, height - 28
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    values = [e[k] for e in epochs for k in keys]
    low, high = min(values), max(values)
    high = high if high > low else low + 1
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    draw.text((4, top - 6), f"{high:.3g}", fill="black", font=font)
    draw.text((4, bottom - 6), f"{low:.3g}", fill="black", font=font)
    draw.text((left, bottom + 8), f"epoch 1 .. {len(epochs)}", fill="black", font=font)
    for index, key in enumerate(keys):
        colour = colours[index % len(colours)]
        points = [(left + (right - left) * i / max(len(epochs) - 1, 1),
                   bottom - (bottom - top) * (e[key] - low) / (high - low)) for i, e in enumerate(epochs)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((left + 8 + 130 * index, 4), key, fill=colour, font=font)
    return canvas


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

