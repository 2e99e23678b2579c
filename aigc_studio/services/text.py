"""Text: streamed answers and side-by-side columns, the next-token explainer, perplexity,
the attention views, several models side by side, X/Y grids of text.

A text model runs here (engines/text.py: transformers or ONNX Runtime) or on an
OpenAI-compatible server (engines/text_remote.py). Which one is decided once per model,
by `text_backend`; the tasks below speak only to the backend it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from PIL import Image

from aigc_studio import grid
from aigc_studio import params as knobs
from aigc_studio import recipe as recipes
from aigc_studio.catalog import ModelSpec
from aigc_studio.engines import text_remote
from aigc_studio.params import TextParams
from aigc_studio.recipe import Result
from aigc_studio.services.runtime import ModelLoadError, Runtime, text_engine

log = logging.getLogger(__name__)


@dataclass
class TextUpdate:
    """One step of a streamed text generation.

    text: the answer so far; status: a progress note (e.g. while loading);
    result: set on the last update only; tokens: the generated tokens so far, each
    with its probability and alternatives (text_engine.Token).
    """

    text: str = ""
    status: str = ""
    result: Result | None = None
    tokens: list = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return text_engine().tokens_per_second(self.tokens)

    @property
    def mean_logprob(self) -> float:
        return text_engine().mean_logprob(self.tokens)


@dataclass
class CompareUpdate:
    """One step of side-by-side text columns streaming together.

    columns: one TextUpdate per variant (each result set on the last update);
    diverge_at: index of the first token where the columns differ (None while they agree).
    """

    columns: list[TextUpdate]
    status: str = ""
    diverge_at: int | None = None


# ----- backends: where a text model runs ---------------------------------------------------------

class TextBackend(Protocol):
    """What the text tasks need from a model, wherever it runs."""

    def loading_note(self) -> str:
        """A status to show before the first token ("" when the model is ready)."""

    def open(self):
        """A context manager giving the model for one request (engines' generate takes it)."""

    def generate(self, model, prompt: str, columns: list[TextParams], stop, alternatives: int) -> Iterator[tuple]:
        """(column index, Token) as the columns stream, and (index, note) for a note (a str)."""

    def explain(self, prompt: str, params: TextParams, answer: str | list[int], position: int, top_n: int):
        """The next-token explanation (text.Explanation or text_remote.RemoteExplanation)."""

    def perplexity(self, text: str) -> tuple[float, int]:
        """(perplexity, tokens scored)."""

    def torch_model(self):
        """A context manager giving the model on torch, for the views that read its weights."""


class LocalText:
    """A text model that runs in this process: engines/text.py over the runtime's models."""

    def __init__(self, runtime: Runtime, spec: ModelSpec):
        self.runtime, self.spec = runtime, spec

    def loading_note(self) -> str:
        if self.runtime.models.is_loaded(self.spec.id):
            return ""
        return f"Loading {self.spec.id} (first use; the embedded model is converted once)..."

    def open(self):
        return self.runtime.use(self.spec)

    def generate(self, model, prompt: str, columns: list[TextParams], stop, alternatives: int) -> Iterator[tuple]:
        return text_engine().generate(model, prompt, columns, stop=stop, alternatives=alternatives)

    def explain(self, prompt: str, params: TextParams, answer: str | list[int], position: int, top_n: int):
        import torch

        with self.open() as text_model:
            prompt_ids = text_engine().encode_prompt(text_model, prompt, params).reshape(-1)
            if isinstance(answer, str):
                answer_ids = text_model.tokenizer.encode(answer, add_special_tokens=False) if answer else []
            else:
                answer_ids = [int(i) for i in answer]
            if position == -1:
                position = len(answer_ids)
            if not 0 <= position <= len(answer_ids):
                raise knobs.ParamError("position", f"must be -1 or a whole number in [0, {len(answer_ids)}] "
                                                   f"(tokens in the answer), got {position!r}")
            context = torch.cat([prompt_ids, torch.tensor(answer_ids[:position], dtype=prompt_ids.dtype)])
            chosen_id = answer_ids[position] if position < len(answer_ids) else None
            return text_engine().explain_next_token(text_model, context, params, top_n, chosen_id, position)

    def perplexity(self, text: str) -> tuple[float, int]:
        with self.open() as text_model:
            return text_engine().perplexity(text_model, text)

    @contextmanager
    def torch_model(self) -> Iterator[Any]:
        """The model on torch. ONNX Runtime has no weights to read: a model that runs there
        gets a torch copy of the same safetensors, loaded once as '<id>@torch' and evicted
        like any model; one already on torch is used as it is."""
        engine, runtime, spec = text_engine(), self.runtime, self.spec
        on_onnx = engine.resolve_runtime(runtime.settings.text_runtime, spec, runtime.device) in engine.ONNX_RUNTIMES
        if not on_onnx or spec.source == "adapter":
            with self.open() as text_model:
                yield text_model
            return
        copy = dataclasses.replace(spec, id=f"{spec.id}@torch")
        load = lambda: engine.load(spec, runtime.device, runtime.dtype, runtime.settings.cache_dir,
                                   log.info, "torch", runtime.threads)
        while True:
            loaded = runtime.models.get(copy.id, load, lambda text_model: text_model.memory_bytes(),
                                        expected_bytes=spec.size_mb * 2**20)
            with loaded.lock:
                if loaded.value is not None:
                    yield loaded.value
                    return


class RemoteText:
    """A text model on an OpenAI-compatible server: nothing loads here, requests run
    concurrently, and a server's error becomes ModelLoadError naming the endpoint."""

    def __init__(self, runtime: Runtime, spec: ModelSpec):
        self.runtime, self.spec = runtime, spec

    def loading_note(self) -> str:
        return ""

    @contextmanager
    def open(self) -> Iterator[Any]:
        settings = self.runtime.settings
        try:
            yield text_remote.connect(self.spec, settings.text_endpoint, settings.text_api_key,
                                      settings.text_timeout_s)
        except text_remote.RemoteError as error:
            raise ModelLoadError(str(error)) from error

    def generate(self, model, prompt: str, columns: list[TextParams], stop, alternatives: int) -> Iterator[tuple]:
        return text_remote.generate(model, prompt, columns, stop=stop, alternatives=alternatives)

    def explain(self, prompt: str, params: TextParams, answer: str | list[int], position: int, top_n: int):
        """The server's top-20 through the studio's stages: approximate, and it says so."""
        with self.open() as remote:
            return text_remote.explain_next_token(remote, prompt, params, answer, position, top_n)

    def perplexity(self, text: str) -> tuple[float, int]:
        with self.open() as remote:
            return text_remote.perplexity(remote, text)

    def torch_model(self):
        raise knobs.ParamError("model", f"{self.spec.id} runs on a server that sends no attention weights; "
                                        f"pick a text model that runs here")


def text_backend(runtime: Runtime, spec: ModelSpec) -> TextBackend:
    """Where spec runs: on a server (source "remote") or here."""
    return RemoteText(runtime, spec) if spec.source == "remote" else LocalText(runtime, spec)


# ----- tasks: the work that runs a model (runtime.run sends them where models run) ---------------

def compare_stream(runtime: Runtime, prompt: str, variants: list[tuple[str, TextParams]], model: str | None,
                   stop: threading.Event | None, alternatives: int, most: int) -> Iterator[CompareUpdate]:
    """Stream 1-`most` labelled variants of one prompt together (Studio.text_compare_stream)."""
    prompt = knobs.check_prompt(prompt)
    spec = runtime.model_spec("text", model)
    if not 1 <= len(variants) <= most:
        raise knobs.ParamError("values", f"give 1 to {most} variants, got {len(variants)}")
    shared_seed = knobs.resolve_seed(TextParams()).seed
    chosen = []
    for label, params in variants:
        checked = knobs.validate(params)
        chosen.append((label, checked if checked.seed >= 0 else dataclasses.replace(checked, seed=shared_seed)))
    stops = [knobs.stop_sequences(p.stop_sequences) for _, p in chosen]
    backend = text_backend(runtime, spec)
    if backend.loading_note():
        yield CompareUpdate([TextUpdate() for _ in chosen], status=backend.loading_note())
    started = time.perf_counter()
    tokens: list[list] = [[] for _ in chosen]
    raw = [""] * len(chosen)

    def columns(final: bool) -> list[TextUpdate]:
        return [TextUpdate(text=text_engine().visible_text(raw[i], stops[i], final), tokens=tokens[i])
                for i in range(len(chosen))]

    notes: list[str] = []  # a remote server's: a knob it refused, no probabilities
    with backend.open() as text_model:
        runtime_name = text_model.runtime
        if text_model.runtime_note:
            yield CompareUpdate(columns(final=False), status=f"Note: {text_model.runtime_note}")
        for i, token in backend.generate(text_model, prompt, [p for _, p in chosen], stop, alternatives):
            if isinstance(token, str):
                notes.append(token)
                yield CompareUpdate(columns(final=False), status="Note: " + "; ".join(notes))
                continue
            tokens[i].append(token)
            raw[i] += token.text
            yield CompareUpdate(columns(final=False), status="Note: " + "; ".join(notes) if notes else "",
                                diverge_at=first_divergence(tokens, finished=False))
    final = columns(final=True)
    for column, (label, params) in zip(final, chosen):
        column.result = Result(column.text, runtime.recipe(spec, prompt, params, label, started, runtime_name))
    yield CompareUpdate(final, status="Note: " + "; ".join(notes) if notes else "",
                        diverge_at=first_divergence(tokens, finished=True))


def explain_next_token(runtime: Runtime, prompt: str, params: TextParams | None, model: str | None,
                       answer: str | list[int], position: int, top_n: int):
    """The candidates for one token at each sampling stage (Studio.explain_next_token)."""
    prompt = knobs.check_prompt(prompt)
    spec = runtime.model_spec("text", model)
    chosen = knobs.validate(params or runtime.params("text", spec.id))
    return text_backend(runtime, spec).explain(prompt, chosen, answer, position, top_n)


def perplexity(runtime: Runtime, text: str, model: str | None) -> tuple[float, int]:
    """(perplexity, tokens scored) of text (Studio.perplexity)."""
    text = knobs.check_prompt(text, "text")
    return text_backend(runtime, runtime.model_spec("text", model)).perplexity(text)


def attention(runtime: Runtime, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int],
              position: int | None, layer: int | None, head: int | None) -> dict:
    """The attention view and logit lens of one token (Studio.attention)."""
    return _inside(runtime, prompt, params, model, answer, lambda inside, text_model, tokens, prompt_length: (
        inside.attention(text_model.model, text_model.tokenizer, tokens, prompt_length, position, layer, head,
                         runtime.forward_cache)))


def attention_overview(runtime: Runtime, prompt: str, params: TextParams | None, model: str | None,
                       answer: str | list[int], layer: int | None, head: int | None) -> Image.Image:
    """Every layer x head causal matrix as small heat maps (Studio.attention_overview)."""
    return _inside(runtime, prompt, params, model, answer, lambda inside, text_model, tokens, prompt_length: (
        inside.overview_of(text_model.model, tokens, layer, head, runtime.forward_cache)))


def _inside(runtime: Runtime, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int],
            read):
    prompt = knobs.check_prompt(prompt)
    spec = runtime.model_spec("text", model)
    chosen = knobs.validate(params or runtime.params("text", spec.id))
    backend = text_backend(runtime, spec)
    from aigc_studio import inside

    with backend.torch_model() as text_model:
        tokens, prompt_length = inside.context(text_model, prompt, chosen, answer)
        return read(inside, text_model, tokens, prompt_length)


def first_divergence(columns: list[list], finished: bool) -> int | None:
    """Index of the first token where the columns' token ids differ. While they stream,
    only the tokens every column already has are compared; once finished, a column
    that ended earlier than another diverges where it ended."""
    if len(columns) < 2:
        return None
    common = min(len(c) for c in columns)
    for index in range(common):
        if len({c[index].id for c in columns}) > 1:
            return index
    if finished and any(len(c) != common for c in columns):
        return common
    return None


# ----- the service: what the Studio's text methods do -------------------------------------------

class TextService:
    """The Studio's text operations; model work goes through runtime.run."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def compare_stream(self, prompt: str, variants: list[tuple[str, TextParams]], model: str | None = None,
                       stop: threading.Event | None = None, alternatives: int = 5,
                       most: int = 4) -> Iterator[CompareUpdate]:
        return self.runtime.run(compare_stream, prompt, variants, model, stop, alternatives, most)

    def stream(self, prompt: str, params: TextParams | None, model: str | None, stop: threading.Event | None,
               label: str) -> Iterator[TextUpdate]:
        chosen = params or self.runtime.params("text", model)
        for update in self.compare_stream(prompt, [(label, chosen)], model, stop):
            column = update.columns[0]
            yield TextUpdate(text=column.text, status=update.status, result=column.result, tokens=column.tokens)

    def text(self, prompt: str, model: str | None, values: dict[str, Any]) -> Result:
        chosen = self.runtime.params("text", model, **values)
        update = TextUpdate()
        for update in self.stream(prompt, chosen, model, None, ""):
            pass
        return update.result

    def explain_next_token(self, prompt: str, params: TextParams | None, model: str | None,
                           answer: str | list[int], position: int, top_n: int):
        return self.runtime.run(explain_next_token, prompt, params, model, answer, position, top_n)

    def perplexity(self, text: str, model: str | None) -> tuple[float, int]:
        return self.runtime.run(perplexity, text, model)

    def attention(self, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int],
                  position: int | None, layer: int | None, head: int | None) -> dict:
        return self.runtime.run(attention, prompt, params, model, answer, position, layer, head)

    def attention_overview(self, prompt: str, params: TextParams | None, model: str | None,
                           answer: str | list[int], layer: int | None, head: int | None) -> Image.Image:
        return self.runtime.run(attention_overview, prompt, params, model, answer, layer, head)

    def models_stream(self, prompt: str, models: list[str], params: TextParams | None,
                      stop: threading.Event | None, alternatives: int) -> Iterator[CompareUpdate]:
        """2-4 models, one after another, each column streaming as it goes (Studio.text_models_stream)."""
        if not isinstance(models, (list, tuple)) or not 2 <= len(models) <= 4:
            raise knobs.ParamError("models", f"give 2 to 4 text models, got {models!r}")
        specs = [self.runtime.model_spec("text", m) for m in models]  # every id is checked before anything runs
        chosen = knobs.resolve_seed(knobs.validate(params or self.runtime.params("text", specs[0].id)))
        done: list[TextUpdate] = [TextUpdate() for _ in specs]
        for index, spec in enumerate(specs):
            for update in self.compare_stream(prompt, [(spec.id, chosen)], spec.id, stop, alternatives):
                done[index] = update.columns[0]
                finished = index == len(specs) - 1 and done[index].result is not None
                yield CompareUpdate(list(done), status=update.status,
                                    diverge_at=first_divergence([c.tokens for c in done[:index + 1]], finished))
            if stop is not None and stop.is_set():
                return

    def by_model(self, prompt: str, models: list[str], params: TextParams | None) -> list[Result]:
        update = CompareUpdate([])
        for update in self.models_stream(prompt, models, params, None, 5):
            pass
        return [column.result for column in update.columns]

    # ----- X/Y grids ------------------------------------------------------------------------------
    def grid_stream(self, prompt: str, base: TextParams, x_knob: str, x_values: list, y_knob: str | None,
                    y_values: list | None, model: str | None,
                    stop: threading.Event | None) -> tuple[grid.GridPlan, Iterator[CompareUpdate]]:
        plan = self.runtime.grid_plan("text", base, x_knob, x_values, y_knob, y_values, model)
        return plan, self.compare_stream(prompt, plan.cells, model, stop, most=grid.MAX_TEXT_CELLS)

    def grid(self, prompt: str, base: TextParams, x_knob: str, x_values: list, y_knob: str | None,
             y_values: list | None, model: str | None, stop: threading.Event | None) -> tuple[grid.GridPlan, list[dict]]:
        plan, stream = self.grid_stream(prompt, base, x_knob, x_values, y_knob, y_values, model, stop)
        update = None
        for update in stream:
            pass
        return plan, grid.text_cells(plan, update.columns)

    def save_grid(self, plan: grid.GridPlan, cells: list[dict]) -> tuple[Path, Path]:
        from aigc_studio.storage import write_atomically

        document, table = grid.text_export(plan, cells)
        path = write_atomically(recipes._new_path(self.runtime.settings.output_dir, "text-grid", ".json"),
                                lambda part: part.write_text(document))
        return path, write_atomically(path.with_suffix(".csv"), lambda part: part.write_text(table))

