"""Typed knob dataclasses: one home for every knob's default, range and help.

The UI reads ranges and help text from here for its sliders and tooltips; the
Gradio API, CLI and Python API all validate through `validate()`, so a bad value
gets the same message everywhere: it names the field and the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any, TypeVar

MAX_SEED = 2**31 - 1
MAX_PROMPT_CHARS = 4000


class ParamError(ValueError):
    """A knob or prompt is out of range; the message names the field and the range."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def knob(default: Any, low: float | None = None, high: float | None = None, help: str = "", choices: tuple = ()) -> Any:
    return field(default=default, metadata={"low": low, "high": high, "help": help, "choices": choices})


@dataclass
class TextParams:
    temperature: float = knob(0.7, 0.0, 2.0, "Divides the logits: < 1 sharpens toward the likeliest token, > 1 flattens.")
    top_k: int = knob(50, 0, 1000, "Keep only the k likeliest tokens (0 = off).")
    top_p: float = knob(0.95, 0.01, 1.0, "Nucleus: keep the smallest set of tokens whose probability sums to p.")
    max_new_tokens: int = knob(128, 1, 1024, "Upper bound on the answer length, in tokens.")
    repetition_penalty: float = knob(1.1, 1.0, 2.0, "Divides the score of tokens already used (1 = off).")
    seed: int = knob(-1, -1, MAX_SEED, "Random seed; -1 draws a new one (the recipe records it).")
    greedy: bool = knob(False, help="Always take the likeliest token; ignores temperature, top-k, top-p, min-p and typical-p.")
    min_p: float = knob(0.0, 0.0, 1.0, "Drop tokens less likely than min-p times the likeliest token's probability (0 = off).")
    typical_p: float = knob(1.0, 0.01, 1.0, "Typical sampling: keep the tokens whose surprise is closest to the average, up to this mass (1 = off).")
    no_repeat_ngram_size: int = knob(0, 0, 10, "Never repeat a run of this many tokens (0 = off).")
    stop_sequences: str = knob("", help="Comma-separated texts that end the answer (left out of it); write \\n for a newline.")
    system_prompt: str = knob("", help="Chat mode: instructions the model reads before your prompt (empty = the model's own default).")
    prompt_mode: str = knob("chat", help="chat wraps the prompt in the model's chat template; completion continues the text as written.",
                            choices=("chat", "completion"))


MAX_STOP_SEQUENCES = 4

# Sampling styles set every sampling knob at once (the UI's Precise / Balanced / Creative),
# relative to a model's recommended knobs: Balanced *is* the recommendation. Seed,
# length, stop sequences, system prompt and mode are left alone.
SAMPLING_STYLES = ("Precise", "Balanced", "Creative")
STYLE_KNOBS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size",
                "greedy")


def sampling_style(name: str, recommended: TextParams | None = None) -> dict[str, Any]:
    """The sampling knobs of a style around `recommended` (a model's recommended
    knobs; TextParams() when None): Precise halves the temperature and narrows top-k
    (<= 20) and top-p (<= 0.9); Balanced is the recommendation; Creative raises the
    temperature (to max(2t, t + 0.4), at most 2), turns top-k and top-p off and keeps
    min-p 0.05 as a floor against junk tokens."""
    if name not in SAMPLING_STYLES:
        raise ParamError("style", f"must be one of {', '.join(SAMPLING_STYLES)}, got {name!r}")
    base = recommended or TextParams()
    values = {knob_name: getattr(base, knob_name) for knob_name in STYLE_KNOBS}
    values["greedy"] = False
    t = base.temperature
    if name == "Precise":
        values.update(temperature=round(t / 2, 3), top_k=min(base.top_k or 20, 20), top_p=min(base.top_p, 0.9))
    elif name == "Creative":
        values.update(temperature=round(min(2.0, max(2 * t, t + 0.4)), 3), top_k=0, top_p=1.0, min_p=0.05)
    return values


def stop_sequences(text: str) -> list[str]:
    """'###, \\n\\n' -> ['###', '\\n\\n']: comma-separated, with \\n and \\t written as backslash escapes."""
    sequences = [s.strip().replace("\\n", "\n").replace("\\t", "\t") for s in str(text or "").split(",") if s.strip()]
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise ParamError("stop_sequences", f"give at most {MAX_STOP_SEQUENCES} comma-separated sequences, got {len(sequences)}")
    return sequences


# The one scheduler registry: the name a person picks -> the diffusers class it means
# ("default" keeps the model's own). The engine resolves the classes, the catalog lists
# which names each model can sample with, the UI and the API offer these names.
SCHEDULERS = {
    "default": None,
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "lcm": "LCMScheduler",  # only for consistency-distilled models (the Studio checks)
}


@dataclass
class ImageParams:
    negative_prompt: str = knob("", help="What to steer away from (classifier-free guidance uses it instead of the empty prompt).")
    steps: int = knob(30, 1, 150, "Denoising steps: more is slower and usually cleaner.")
    guidance: float = knob(3.0, 0.0, 20.0, "Classifier-free guidance: how strongly the image follows the prompt (0 ignores it on the shapes model; SD-Turbo wants 0).")
    width: int = knob(256, 16, 1536, "Output width in pixels (a multiple of 8).")
    height: int = knob(256, 16, 1536, "Output height in pixels (a multiple of 8).")
    seed: int = knob(-1, -1, MAX_SEED, "Random seed; -1 draws a new one (the recipe records it).")
    batch_size: int = knob(1, 1, 8, "Images per Generate: seeds seed, seed+1, ... in one batched call.")
    scheduler: str = knob("default", help="The sampler that walks from noise to image.",
                          choices=tuple(SCHEDULERS))
    latent_temperature: float = knob(1.0, 0.0, 2.0, "VAE: scale of the prior sample z ~ N(0, T^2): < 1 stays near the typical image (cleaner, less varied), > 1 wanders (more varied, less faithful); 0 gives the same image for every seed.")
    truncation: float = knob(1.0, 0.0, 1.0, "GAN: truncation psi pulls the latent toward its mean, z * psi: 1 = off, lower is cleaner and less varied, 0 gives the same image for every seed.")
    strength: float = knob(0.75, 0.0, 1.0, "Image to image: how far the input picture is noised before denoising with the prompt (0 returns the input, 1 starts from pure noise and ignores it).")


# The chorale model's keys (major and minor on every pitch class) and instrument timbres.
MUSIC_KEYS = tuple(f"{tonic} {mode}" for tonic in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
                   for mode in ("major", "minor"))
TIMBRES = ("organ", "strings", "flute", "choir")
MAX_START_CHARS = 8000  # four lines of 32 bars of eighth notes, with bar lines


@dataclass
class AudioParams:
    speed: float = knob(1.0, 0.25, 4.0, "Speaking rate (Piper, MMS-TTS): > 1 is faster, < 1 slower.")
    seed: int = knob(-1, -1, MAX_SEED, "Random seed; -1 draws a new one (the recipe records it).")
    noise_scale: float = knob(0.667, 0.0, 1.5, "Speech (Piper, MMS-TTS): variation in timbre and intonation (0 = flat, deterministic).")
    noise_w: float = knob(0.8, 0.0, 1.5, "Speech (Piper, MMS-TTS): variation in phoneme durations (rhythm).")
    sentence_silence: float = knob(0.2, 0.0, 2.0, "Speech: seconds of silence between sentences.")
    temperature: float = knob(1.0, 0.05, 2.0, "Music: sampling temperature of the audio tokens.")
    top_k: int = knob(250, 0, 2048, "Music: keep only the k likeliest audio tokens (0 = off).")
    top_p: float = knob(1.0, 0.01, 1.0, "Music: nucleus sampling over audio tokens.")
    guidance: float = knob(3.0, 1.0, 10.0, "Music: classifier-free guidance toward the text (1 = off).")
    duration: float = knob(8.0, 0.5, 30.0, "Music: length in seconds.")
    semantic_temperature: float = knob(0.7, 0.05, 1.5, "Bark: temperature of the text-to-semantic stage (what is said, and how).")
    coarse_temperature: float = knob(0.7, 0.05, 1.5, "Bark: temperature of the first two audio codebooks (voice and prosody).")
    fine_temperature: float = knob(0.5, 0.05, 1.5, "Bark: temperature of the remaining codebooks (detail); exactly 1.0 takes the likeliest codes.")
    gain_db: float = knob(0.0, -40.0, 40.0, "Gain in dB applied to the finished audio (clipped to full scale); side by side sets it to match loudness.")
    # the chorale model (bach-chorales): temperature, top_k, top_p and seed above act on its notes as on text tokens
    bars: int = knob(8, 1, 32, "Chorale: length in bars.")
    tempo: float = knob(80.0, 30.0, 240.0, "Chorale: tempo in quarter notes per minute (BPM).")
    key: str = knob("C major", help="Chorale: the key it is written in (a transposition of the model's C major / A minor).",
                    choices=MUSIC_KEYS)
    metre: str = knob("4/4", help="Chorale: the time signature.", choices=("4/4", "3/4"))
    timbre: str = knob("organ", help="Chorale: the instrument the four voices are played on (additive synthesis).",
                       choices=TIMBRES)
    start: str = knob("", help="Chorale: notes to begin from, one item per eighth note (C5, F#4, Bb3; '-' holds, "
                               "'r' rests, '|' bar lines optional). One line is a soprano melody the model harmonises; "
                               "four lines (soprano, alto, tenor, bass) are first bars it continues. Empty: free.")


# Full fine-tuning is for small models (SmolLM2-135M and -360M): above this it is refused
# (aigc_studio/tune.py checks it with the memory it needs); LoRA has no such limit.
FULL_MAX_PARAMETERS = 500_000_000


@dataclass
class TuneParams:
    """Knobs of a fine-tune (aigc_studio/tune.py): LoRA by default, or full fine-tuning of a small
    model. The defaults finish a ~20 kB text on the embedded SmolLM2-135M in a few minutes on a
    2-core CPU. rank and alpha apply to LoRA only."""

    rank: int = knob(8, 1, 256, "LoRA rank r: the size of the low-rank update per weight matrix (more = more capacity, more memory).")
    alpha: int = knob(16, 1, 1024, "LoRA alpha: the update is scaled by alpha / rank.")
    learning_rate: float = knob(1e-3, 1e-6, 1e-1, "AdamW step size (LoRA: around 1e-3; full fine-tuning wants far less, around 3e-5).")
    steps: int = knob(20, 1, 5000, "Optimizer steps; each reads batch_size blocks of sequence_length tokens.")
    batch_size: int = knob(4, 1, 64, "Blocks of text per step.")
    sequence_length: int = knob(128, 8, 2048, "Tokens per block (the text is cut into blocks of this length).")
    seed: int = knob(0, -1, MAX_SEED, "Random seed of the split, the adapter's start and the batches; -1 draws one (the recipe records it).")
    eval_every: int = knob(10, 1, 5000, "Measure the held-out perplexity every this many steps (and at the start and end).")
    method: str = knob("lora", help="lora trains small low-rank matrices beside the weights (saved: ~1 MB); full trains "
                                    "every weight (saved: the whole model in fp32, ~540 MB for SmolLM2-135M; small "
                                    f"models only: up to {FULL_MAX_PARAMETERS // 10**6}M parameters, within the "
                                    "memory budget).",
                      choices=("lora", "full"))


Params = TypeVar("Params", TextParams, ImageParams, AudioParams, TuneParams)


def spec(params_type: type, name: str) -> dict:
    """The metadata (low, high, help, choices) and default of one knob."""
    for f in dataclasses.fields(params_type):
        if f.name == name:
            return {**f.metadata, "default": f.default}
    raise ParamError(name, f"unknown knob; known: {', '.join(f.name for f in dataclasses.fields(params_type))}")


def _coerce(name: str, value: Any, kind: type, meta: dict) -> Any:
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise ParamError(name, f"must be true or false, got {value!r}")
    if kind is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ParamError(name, f"must be text, got {type(value).__name__}")
        if meta["choices"] and value not in meta["choices"]:
            raise ParamError(name, f"must be one of {', '.join(meta['choices'])}, got {value!r}")
        return check_prompt(value, name, allow_empty=True)
    low, high = meta["low"], meta["high"]
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise ParamError(name, f"must be a number in [{low}, {high}], got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        raise ParamError(name, f"must be a number in [{low}, {high}], got {value!r}")
    if kind is int:
        if number != int(number):
            raise ParamError(name, f"must be a whole number in [{low}, {high}], got {value!r}")
        return int(number)
    return number


def validate(params: Params) -> Params:
    """Return a checked copy with values coerced to their declared types.

    Raises ParamError naming the field and its allowed range.
    """
    hints = {f.name: f.type for f in dataclasses.fields(params)}
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    values = {}
    for f in dataclasses.fields(params):
        values[f.name] = _coerce(f.name, getattr(params, f.name), kinds[hints[f.name]], f.metadata)
    if isinstance(params, ImageParams):
        for name in ("width", "height"):
            if values[name] % 8:
                raise ParamError(name, f"must be a multiple of 8 in [16, 1536], got {values[name]}")
    if isinstance(params, TextParams):
        stop_sequences(values["stop_sequences"])  # refuses too many, naming the field
    if isinstance(params, AudioParams) and len(values["start"]) > MAX_START_CHARS:
        raise ParamError("start", f"at most {MAX_START_CHARS} characters, got {len(values['start'])}")
    return type(params)(**values)


def make(params_type: type[Params], **overrides: Any) -> Params:
    """Build and validate params from keyword values; unknown names are refused."""
    known = {f.name for f in dataclasses.fields(params_type)}
    for name in overrides:
        if name not in known:
            raise ParamError(name, f"unknown knob; known: {', '.join(sorted(known))}")
    return validate(params_type(**{k: v for k, v in overrides.items() if v is not None}))


def whole_number(name: str, value, default: int) -> int:
    """An API or Number value as an int (None = default); the studio checks the range."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range is whole: the caller's range check names the bound
        return int(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ParamError(name, f"must be a whole number, got {value!r}")
    return int(number)


def check_prompt(prompt: Any, name: str = "prompt", allow_empty: bool = False) -> str:
    """Strip control characters and bound the length of a prompt."""
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise ParamError(name, f"must be text, got {type(prompt).__name__}")
    cleaned = "".join(c for c in prompt if c in "\n\t" or c.isprintable()).strip()
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise ParamError(name, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(cleaned)}")
    if not cleaned and not allow_empty:
        raise ParamError(name, "must not be empty")
    return cleaned


def resolve_seed(params: Params) -> Params:
    """Replace seed -1 by a concrete random seed so the recipe can reproduce it."""
    if params.seed >= 0:
        return params
    return dataclasses.replace(params, seed=random.randint(0, MAX_SEED))


def variants(params: Params, knob_name: str, values: list[Any]) -> list[tuple[str, Params]]:
    """Labelled copies of params with one knob swept over values (2-4 of them).

    Seed -1 is drawn once here, so the variants differ only by the swept knob.
    """
    spec(type(params), knob_name)
    if not 2 <= len(values) <= 4:
        raise ParamError("values", f"give 2 to 4 values to compare, got {len(values)}")
    params = resolve_seed(params)
    out = []
    for value in values:
        varied = validate(dataclasses.replace(params, **{knob_name: value}))
        out.append((f"{knob_name}={getattr(varied, knob_name)}", varied))
    return out


def seed_variants(params: Params, count: int) -> list[tuple[str, Params]]:
    """`count` (2-4) copies of params that differ only by consecutive seeds."""
    if not 2 <= count <= 4:
        raise ParamError("count", f"must be 2 to 4, got {count}")
    base = resolve_seed(params).seed
    return variants(params, "seed", [(base + i) % (MAX_SEED + 1) for i in range(count)])


def comma_list(text) -> list[str]:
    """'0.3, 0.8,, 1.5' -> ['0.3', '0.8', '1.5']: the stripped, non-empty items of a
    comma-separated input (None: none)."""
    return [item.strip() for item in str(text or "").split(",") if item.strip()]


def parse_values(text: str, params_type: type, knob_name: str, low: int = 2, high: int = 4,
                 field: str = "values") -> list[Any]:
    """Parse '0.3, 0.8, 1.5' into `low`-`high` values for one knob (sweeps and grids);
    field names the input in messages."""
    spec(params_type, knob_name)  # refuses unknown knobs
    values = comma_list(text)
    if not low <= len(values) <= high:
        raise ParamError(field, f"give {low} to {high} comma-separated values for {knob_name}, got {len(values)}")
    return values  # variants() coerces and range-checks each with the knob's own message


def sweepable(params_type: type) -> list[str]:
    """Knobs that make sense to sweep side by side (numbers, booleans and choices)."""
    return [f.name for f in dataclasses.fields(params_type) if f.type != "str" or f.metadata["choices"]]
