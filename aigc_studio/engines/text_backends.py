"""Step backends for the text engine: they turn token ids into next-token logits, nothing more.

The decoding loop (engines/text.py) owns sampling, stopping and streaming; a backend
only runs the network and keeps its KV cache. Every backend gives the same two things:

    backend.decoder()                       a fresh decoding with its own cache:
        decoder.prefill(ids, rows)          prompt ids (1 x L) -> next-token logits (rows x V); the
                                            prompt's cache is computed once and shared by `rows` columns
        decoder.step(tokens)                one new token per row (rows,) -> next-token logits (rows x V)
        decoder.select_rows(sources)        the cache's rows become copies of these rows of it (a row
                                            may repeat: columns that shared it part)
    backend.logits(ids)                     ids (1 x L) -> logits at every position (L x V), no cache

Logits come back as float32 CPU tensors. Two backends:
- TorchBackend: any transformers causal LM (CPU, CUDA, MPS), with transformers' KV cache.
- OnnxBackend: a model converted once by the onnxruntime-genai model builder (int8 for
  Llama-family models: text_int8.py's recipe around it), run by a plain ONNX Runtime session
  (CPU); the KV cache lives in buffers ONNX Runtime writes in place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from aigc_studio.engines import text_int8

log = logging.getLogger(__name__)

ONNX_RUNTIMES = {"onnx-int8": "int8", "onnx-fp32": "fp32"}  # runtime name -> builder precision
# One MatMul for each MLP's gate and up projections instead of two: ~12% more tokens/s on
# CPU, the same numbers (bench/text_speed.py, bench/text_fidelity.py). A cache converted
# with other options is converted again.
BUILD_OPTIONS = ("fuse_mlp_gate_up=true",)
CONVERTED_MARKER = "converted.json"  # written last: a folder without it is half-written


# ----- transformers ---------------------------------------------------------------------------

class TorchDecoder:
    def __init__(self, model, device: str):
        self.model, self.device, self.cache = model, device, None

    def prefill(self, ids: torch.Tensor, rows: int = 1) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(ids.reshape(1, -1).to(self.device), use_cache=True, logits_to_keep=1)
        self.cache = out.past_key_values
        if rows > 1:
            self.cache.batch_repeat_interleave(rows)
        return out.logits[:, -1].float().cpu().expand(rows, -1).clone()

    def select_rows(self, sources: list[int]) -> None:
        self.cache.batch_select_indices(torch.tensor(sources, device=self.device))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(tokens.reshape(-1, 1).to(self.device), past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].float().cpu()


class TorchBackend:
    """A transformers causal LM; works on every device the studio supports."""

    def __init__(self, model, device: str):
        self.model, self.device, self.name = model, device, "torch"
        self.max_length = getattr(model.config, "max_position_embeddings", None) or 2048

    def decoder(self) -> TorchDecoder:
        return TorchDecoder(self.model, self.device)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            ids = ids.reshape(1, -1).to(self.device)
            return self.model(ids, attention_mask=torch.ones_like(ids)).logits[0].float().cpu()


# ----- ONNX Runtime ----------------------------------------------------------------------------

class OnnxDecoder:
    """One decoding on an OnnxBackend.

    The builder's GroupQueryAttention can share its past and present KV buffers, so the
    cache lives in fixed numpy arrays (rows x kv heads x capacity x head size) that ONNX
    Runtime writes the new position into in place: a step copies no cache and allocates
    nothing but its logits. The arrays double when an answer outgrows them.
    """

    ROOM = 128  # positions kept free after the prompt before the first doubling

    def __init__(self, backend: "OnnxBackend"):
        self.backend, self.cache, self.length = backend, [], 0
        self.binding = self.logits = None

    def _bind(self, logits: np.ndarray):
        """An IO binding whose KV outputs are its KV inputs and whose logits land in `logits`."""
        import onnxruntime as ort

        backend = self.backend
        binding = backend.session.io_binding()
        binding.bind_ortvalue_output(backend.logits_name, ort.OrtValue.ortvalue_from_numpy(logits))
        for name, array in zip(backend.past_names, self.cache):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        for name, array in zip(backend.present_names, self.cache):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
        return binding

    def _run(self, binding, ids: np.ndarray) -> None:
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", np.ones((ids.shape[0], self.length + ids.shape[1]), np.int64))
        self.backend.session.run_with_iobinding(binding)
        self.length += ids.shape[1]

    def _resize(self, sources: list[int], capacity: int) -> None:
        """Give the cache one row per entry of `sources`, each a copy of that row of the
        old cache, and room for `capacity` positions; the step binding follows the new arrays."""
        backend = self.backend
        resized = []
        for array in self.cache:
            new = np.zeros((len(sources), backend.kv_heads, capacity, backend.head_size), np.float32)
            new[:, :, :self.length] = array[sources, :, :self.length]
            resized.append(new)
        self.cache = resized
        self.logits = np.empty((len(sources), 1, backend.vocab_size), np.float32)
        self.binding = self._bind(self.logits)

    def all_logits(self, ids: torch.Tensor, room: int = 0) -> np.ndarray:
        """Run the prompt from an empty cache: logits at every position (1 x L x V)."""
        backend = self.backend
        ids = ids.reshape(1, -1).cpu().numpy().astype(np.int64)
        capacity = min(backend.max_length, ids.shape[1] + room)
        self.cache = [np.zeros((1, backend.kv_heads, capacity, backend.head_size), np.float32)
                      for _ in backend.past_names]
        self.length = 0
        logits = np.empty((1, ids.shape[1], backend.vocab_size), np.float32)
        self._run(self._bind(logits), ids)
        return logits

    def prefill(self, ids: torch.Tensor, rows: int = 1) -> torch.Tensor:
        # the prompt runs once; every column starts from a copy of its cache
        logits = self.all_logits(ids, self.ROOM)[:, -1]
        self._resize([0] * rows, self.cache[0].shape[2])
        return torch.from_numpy(np.repeat(logits, rows, axis=0))

    def select_rows(self, sources: list[int]) -> None:
        # new arrays (a copy of the cache so far): columns part in their first tokens, and
        # a lone column keeps the one row it needs
        self._resize(sources, self.cache[0].shape[2])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        capacity = self.cache[0].shape[2]
        if self.length + 1 > capacity:
            if capacity >= self.backend.max_length:
                raise RuntimeError(f"the answer reached the model's context length ({self.backend.max_length} tokens)")
            self._resize(list(range(self.cache[0].shape[0])), min(self.backend.max_length, 2 * capacity))
        self._run(self.binding, tokens.reshape(-1, 1).cpu().numpy().astype(np.int64))
        return torch.from_numpy(self.logits[:, -1].copy())


class OnnxBackend:
    """A model built by the onnxruntime-genai model builder, run with one InferenceSession."""

    def __init__(self, folder: Path, name: str, threads: int = 0):
        import onnxruntime as ort

        config = json.loads((folder / "genai_config.json").read_text())["model"]
        decoder = config["decoder"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ONNX Runtime's default
        if threads != 1:  # idle pool threads sleep instead of spinning on cores another process needs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are about graph fusions a user cannot act on
        self.folder, self.filename = folder, decoder["filename"]
        self.session = ort.InferenceSession(str(folder / decoder["filename"]), options, providers=["CPUExecutionProvider"])
        # what the weights take in memory, for the model manager's budget (they live outside torch)
        self.nbytes = sum(f.stat().st_size for f in folder.glob(decoder["filename"] + "*"))
        self.name = name
        self.max_length = config["context_length"]
        self.kv_heads, self.head_size = decoder["num_key_value_heads"], decoder["head_size"]
        layers = range(decoder["num_hidden_layers"])
        names = decoder["inputs"], decoder["outputs"]
        self.past_names = [n for i in layers for n in (names[0]["past_key_names"] % i, names[0]["past_value_names"] % i)]
        self.present_names = [n for i in layers for n in (names[1]["present_key_names"] % i,
                                                          names[1]["present_value_names"] % i)]
        self.logits_name = names[1]["logits"]
        self.vocab_size = config["vocab_size"]

    def decoder(self) -> OnnxDecoder:
        return OnnxDecoder(self)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.decoder().all_logits(ids)[0])  # a fresh array: no copy needed


def is_converted(folder: Path, options: tuple[str, ...] | None = None) -> bool:
    """A conversion folder is complete only once its marker exists (written last); with
    `options`, only if it was built with those builder options."""
    marker = folder / CONVERTED_MARKER
    if not marker.is_file():
        return False
    return options is None or tuple(json.loads(marker.read_text()).get("options", ())) == options


def conversion_options(runtime: str, source: Path) -> tuple[str, ...]:
    """What a conversion of `source` for `runtime` is built with, as recorded in its marker:
    the builder's options, and for int8 the quantisation recipe when text_int8 applies."""
    config = source / "config.json"
    if runtime == "onnx-int8" and config.is_file() and text_int8.smoothable(json.loads(config.read_text())):
        return (*BUILD_OPTIONS, f"int8_recipe={text_int8.RECIPE}")
    return BUILD_OPTIONS


def _run_child(command: list[str], result: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a conversion in a child process (it prints a lot and allocates the whole model again;
    a child keeps both out of the server). Raises RuntimeError with its last lines unless it
    exits 0 and leaves `result` behind."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not result.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {tail}")


def run_builder(source: Path, out: Path, precision: str) -> None:
    """Run the onnxruntime-genai model builder on the safetensors folder `source` into `out`, in
    a child process. Raises RuntimeError with the builder's last lines if it fails."""
    scratch = out.with_name(out.name + ".build-cache")
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(scratch), "--extra_options", *BUILD_OPTIONS]
    try:
        _run_child(command, out / "genai_config.json", "the ONNX model builder")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def convert_to_onnx(source: Path, out: Path, runtime: str, report: Callable[[str], None] = print) -> Path:
    """Build an ONNX model of the safetensors folder `source` into `out`, once.

    fp32, and int8 for model families text_int8 does not cover: the builder alone. int8 for
    Llama-family models: text_int8's recipe, in a child process like the builder. The result
    appears atomically: a half-written folder from a killed conversion is removed and converted
    again. Raises RuntimeError with the last lines of what failed.
    """
    precision = ONNX_RUNTIMES[runtime]
    options = conversion_options(runtime, source)
    partial = out.with_name(out.name + ".partial")
    for stale in (partial, out):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        if options == BUILD_OPTIONS:
            report(f"Converting {source.name} to ONNX {precision} once (about 20-40 s)...")
            run_builder(source, partial, precision)
        else:
            report(f"Converting {source.name} to ONNX {precision} once (calibrated, about 40-60 s)...")
            command = [sys.executable, "-m", "aigc_studio.engines.text_int8", str(source), str(partial)]
            package_root = str(Path(__file__).resolve().parents[2])  # the child imports aigc_studio from here
            paths = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
            _run_child(command, partial / "model.onnx", "the int8 conversion", env)
    except Exception:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    marker = {"source": str(source), "precision": precision, "options": list(options)}
    (partial / CONVERTED_MARKER).write_text(json.dumps(marker))
    partial.rename(out)
    report(f"Converted to {out}")
    return out
