"""Text operations, one gradio-free function per operation: generate, compare side by side
(seeds, a swept knob, sampling styles, or different models), explain the next token,
perplexity, the X/Y grid and fine-tuning. Each takes a small request dataclass that checks
the inputs that are not knobs (mode, count, knob name, values, axes, position ...) once;
the knobs themselves are checked by params.py. The Text and Tune tabs, the typed API
(ui/text_api.py) and the CLI all call these, so an operation has one path."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from aigc_studio import grid
from aigc_studio import params as knobs
from aigc_studio.actions.checks import axes_input, count_input, knob_name_input, mode_input, text_input, top_n_input
from aigc_studio.actions.variants import SEEDS, SWEEP, check_sweep, make_variants, sweep_names, variant_labels
from aigc_studio.catalog import ADAPTER_CONFIG, ADAPTER_WEIGHTS, FULL_WEIGHTS, TUNE_RECIPE
from aigc_studio.params import SAMPLING_STYLES, TextParams, TuneParams, comma_list, whole_number
from aigc_studio.studio import Studio

MAX_COLUMNS = 4
STYLES = "Styles side by side"  # a third variants mode: Precise, Balanced, Creative with one seed
# what the mode was called before "preset" came to mean only the model preset (hub, offline)
LEGACY_STYLES = "Presets side by side"
# a fourth: the same prompt, knobs and seed on 2-4 text models (a base and its tuned versions)
MODELS = "Different models"
SWEPT_VALUES = "0.3, 0.8, 1.4"  # what a sweep or a grid's X axis goes over when none are given

# /generate_text shipped with TextParams' first 7 knobs; every later knob follows `model`.
FIRST_KNOBS = 7
# The explainer's knobs, in the order /explain_next_token has always had; a knob added to
# TextParams joins them at the end, unless it shapes a whole answer rather than one next token.
EXPLAIN_ORDER = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
                 "no_repeat_ngram_size", "greedy", "system_prompt", "prompt_mode")
NOT_EXPLAINED = ("max_new_tokens", "seed", "stop_sequences")

ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, TUNE_RECIPE)
FULL_FILES = (FULL_WEIGHTS, TUNE_RECIPE)  # a full fine-tune (method "full")


def knob_names(params_type: type = TextParams) -> list[str]:
    """Every knob of params_type, in its dataclass order."""
    return [f.name for f in dataclasses.fields(params_type)]


def explain_knobs(params_type: type = TextParams) -> list[str]:
    """The knobs the next-token explainer reads: EXPLAIN_ORDER, then any newer knob."""
    names = [name for name in knob_names(params_type) if name not in NOT_EXPLAINED]
    return [n for n in EXPLAIN_ORDER if n in names] + [n for n in names if n not in EXPLAIN_ORDER]


# ----- results as plain data -------------------------------------------------------------------

def token_dicts(tokens: list) -> list[dict]:
    """Generated tokens (text_engine.Token) as plain data (a gr.State, a JSON answer)."""
    return [{"id": t.id, "text": t.text, "p": t.probability, "logprob": t.logprob, "special": t.special,
             "alternatives": [[text, p] for text, p in t.alternatives]} for t in tokens]


def mean_logprob(tokens: list[dict]) -> float:
    """The mean log-probability of token dicts, in nats per token (0 for none)."""
    return sum(t["logprob"] for t in tokens) / len(tokens) if tokens else 0.0


def column_numbers(state: dict) -> dict:
    """A finished comparison's figures for API users: per column its label, token
    count, tokens/s and mean log-probability; and the first token index where the
    columns differ (null when they agree)."""
    return {"first_difference": state["diverge_at"],
            "columns": [{"label": label, "tokens": len(tokens), "tokens_per_s": round(rate, 2),
                         "mean_logprob": round(mean_logprob(tokens), 4)}
                        for label, tokens, rate in zip(state["labels"], state["columns"], state["rates"])]}


def answer_ids(answer: str | None, state: dict | None) -> str | list[int]:
    """The answer as the generated token ids when it is the answer on show (state: the
    generation's {"text", "tokens"}), else as text: a re-tokenisation may split it otherwise."""
    answer = answer or ""
    if state and state["text"] == answer:
        return [t["id"] for t in state["tokens"]]
    return answer


# ----- generate ------------------------------------------------------------------------------

@dataclass
class GenerateText:
    """One answer to prompt with knobs params (studio.params: the model's recommendation
    under the given values) from model (None: the preset's)."""

    prompt: str
    params: TextParams
    model: str | None = None


def generate(studio: Studio, request: GenerateText, stop: threading.Event | None = None) -> Iterator:
    """TextUpdates with the answer so far; the last one carries the Result."""
    return studio.text_stream(request.prompt, request.params, request.model, stop=stop)


def answer_state(update) -> dict:
    """A finished generation as plain data: {"text", "tokens"} (token ids and probabilities)."""
    return {"text": update.text, "tokens": token_dicts(update.tokens)}


# ----- compare side by side ----------------------------------------------------------------------

def text_variants(base: TextParams, mode: str, count: int, knob_name: str, values: str,
                  recommended: TextParams | None = None) -> list[tuple[str, TextParams]]:
    """Labelled variants: seeds, one knob swept, or the three sampling styles (around the
    model's recommended knobs) over base."""
    if mode in (STYLES, LEGACY_STYLES):
        return [(name, knobs.validate(dataclasses.replace(base, **knobs.sampling_style(name, recommended))))
                for name in SAMPLING_STYLES]
    return make_variants(base, mode, count, knob_name, values)


def tuned_family(studio: Studio, model: str | None) -> list[str]:
    """The chosen model's base (itself, unless it is tuned) and the base's tuned versions
    (Tune tab), at most MAX_COLUMNS: what "Different models" compares when none are picked."""
    spec = studio.model_spec("text", model)
    base = spec.base or spec
    tuned = [m for m in studio.catalog.choices("text") if getattr(studio.model_spec("text", m).base, "id", None) == base.id]
    return [base.id, *tuned][:MAX_COLUMNS]


def models_to_compare(studio: Studio, model: str | None, picked) -> list[str]:
    """2-4 text model ids: the picked ones (a list, or comma-separated text), else the chosen
    model's family (tuned_family). Refused naming `models`."""
    if isinstance(picked, str):
        picked = comma_list(picked)
    if picked is not None and (not isinstance(picked, (list, tuple)) or not all(isinstance(m, str) for m in picked)):
        raise knobs.ParamError("models", f"must be a list of text model ids, got {picked!r}")
    names = list(dict.fromkeys(picked or tuned_family(studio, model)))
    if len(names) < 2:
        raise knobs.ParamError("models", f"pick 2 to {MAX_COLUMNS} text models, or tune "
                                         f"{names[0] if names else 'the model'} first (Tune tab) to compare it with its base")
    if len(names) > MAX_COLUMNS:
        raise knobs.ParamError("models", f"pick 2 to {MAX_COLUMNS} text models, got {len(names)}")
    for name in names:
        studio.model_spec("text", name)  # an unknown id names the catalog
    return names


@dataclass
class CompareText:
    """2-4 columns answering one prompt. mode: SEEDS (count consecutive seeds), SWEEP
    (knob_name over the comma-separated values), STYLES (Precise, Balanced, Creative) or
    MODELS (the same knobs on `models`, or on model's family). None takes the defaults:
    seeds, 3 columns, temperature over SWEPT_VALUES."""

    prompt: str
    params: TextParams
    model: str | None = None
    mode: str | None = None
    count: int | None = None
    knob_name: str | None = None
    values: str | None = None
    models: list[str] | str | None = None

    def __post_init__(self):
        self.mode = mode_input(self.mode, (STYLES, MODELS, LEGACY_STYLES))
        self.count = count_input(self.count) if self.mode == SEEDS else 3
        self.knob_name = (knob_name_input("knob_name", self.knob_name, type(self.params), "temperature")
                          if self.mode == SWEEP else "temperature")
        self.values = text_input("values", self.values, SWEPT_VALUES)


def compare_labels(studio: Studio, request: CompareText) -> list[str]:
    """The columns' labels, known before generating (a random seed is only known after)."""
    if request.mode in (STYLES, LEGACY_STYLES):
        return list(SAMPLING_STYLES)
    if request.mode == MODELS:
        return models_to_compare(studio, request.model, request.models)
    check_sweep(studio, "text", request.model, request.mode, request.knob_name)
    return variant_labels(request.params, request.mode, request.count, request.knob_name, request.values)


def compare_stream(studio: Studio, request: CompareText, stop: threading.Event | None = None):
    """(column labels, CompareUpdate stream): variants of one model batched together, or
    (MODELS) each model in turn with the same knobs and seed."""
    if request.mode == MODELS:
        names = models_to_compare(studio, request.model, request.models)
        return names, studio.text_models_stream(request.prompt, names, request.params, stop=stop)
    check_sweep(studio, "text", request.model, request.mode, request.knob_name)
    variants = text_variants(request.params, request.mode, request.count, request.knob_name, request.values,
                             studio.params("text", request.model))
    return [label for label, _ in variants], studio.text_compare_stream(request.prompt, variants, request.model,
                                                                        stop=stop)


@dataclass
class CompareFrame:
    """One moment of a comparison: MAX_COLUMNS texts (a column's answer so far, its status
    before it starts, "" when unused), the studio's update, and on the last frame `finished`:
    {"labels", "diverge_at", "columns": token dicts per column, "rates": tokens/s per column}."""

    texts: list[str]
    update: Any
    finished: dict | None = None


def compare(studio: Studio, request: CompareText, stop: threading.Event | None = None) -> Iterator[CompareFrame]:
    """Stream a comparison as CompareFrames (see compare_stream)."""
    labels, stream = compare_stream(studio, request, stop)
    texts = [""] * MAX_COLUMNS
    for update in stream:
        for i, column in enumerate(update.columns):
            texts[i] = column.text or update.status
        finished = None
        if all(column.result is not None for column in update.columns):
            finished = {"labels": labels, "diverge_at": update.diverge_at,
                        "columns": [token_dicts(c.tokens) for c in update.columns],
                        "rates": [c.tokens_per_s for c in update.columns]}
        yield CompareFrame(list(texts), update, finished)


# ----- explain the next token, perplexity ----------------------------------------------------------

@dataclass
class ExplainToken:
    """One next token of prompt + answer (text, or the token ids a generation gave): position
    0 = the first token after the prompt, k = after k answer tokens, -1 = after the whole
    answer; top_n (1-50) candidates listed."""

    prompt: str
    params: TextParams
    model: str | None = None
    answer: str | list[int] | None = ""
    position: int | None = 0
    top_n: int | None = 10

    def __post_init__(self):
        if not isinstance(self.answer, list):
            self.answer = text_input("answer", self.answer)
        self.position = whole_number("position", self.position, 0)
        self.top_n = top_n_input(self.top_n)


def explain(studio: Studio, request: ExplainToken) -> dict:
    """The candidates and their probability at each sampling stage, as plain data:
    {"context", "position", "candidate_ids", "candidates", "chosen_id", "stages": [...]}."""
    result = studio.explain_next_token(request.prompt, request.params, request.model, answer=request.answer,
                                       position=request.position, top_n=request.top_n)
    return dataclasses.asdict(result)


def perplexity(studio: Studio, text: str, model: str | None = None) -> float:
    """Perplexity of text under the model (exp of the mean negative log-likelihood per token),
    rounded to 3 decimals."""
    value, _ = studio.perplexity(text, model)
    return round(value, 3)


# ----- the X/Y grid -------------------------------------------------------------------------------

def grid_axes(studio: Studio, model: str | None) -> list[str]:
    """The knobs a text grid can vary for this model: those it reads that can be swept."""
    return sweep_names(TextParams, studio.knobs_used("text", model))


@dataclass
class TextGrid:
    """An X/Y grid: x_knob over the comma-separated x_values (default temperature over
    SWEPT_VALUES), and y_knob over y_values down rows (None or "none": one row)."""

    prompt: str
    params: TextParams
    model: str | None = None
    x_knob: str | None = None
    x_values: str | None = None
    y_knob: str | None = None
    y_values: str | None = None
    xs: list[str] = field(init=False)
    ys: list[str] | None = field(init=False)

    def __post_init__(self):
        self.x_knob, self.y_knob = axes_input(self.x_knob, self.y_knob, "temperature")
        # grid.plan coerces, range-checks and counts the values (1-6)
        self.xs = comma_list(text_input("x_values", self.x_values, SWEPT_VALUES))
        self.ys = comma_list(text_input("y_values", self.y_values)) if self.y_knob else None


def grid_stream(studio: Studio, request: TextGrid, stop: threading.Event | None = None):
    """(plan, CompareUpdate stream): every cell a column of one batched generation."""
    return studio.text_grid_stream(request.prompt, request.params, request.x_knob, request.xs, request.y_knob,
                                   request.ys, request.model, stop=stop)


def text_grid(studio: Studio, request: TextGrid, stop: threading.Event | None = None):
    """(plan, cells as plain data) of a finished grid (see grid_stream)."""
    return studio.text_grid(request.prompt, request.params, request.x_knob, request.xs, request.y_knob, request.ys,
                            request.model, stop=stop)


def grid_cells(plan: grid.GridPlan, columns: list) -> list[dict]:
    """A streamed grid's finished columns as cells to save (Studio.save_text_grid)."""
    return grid.text_cells(plan, columns)


# ----- fine-tuning --------------------------------------------------------------------------------

@dataclass
class FineTuneText:
    """Tune model (None: the preset's) on text and the .txt/.md files; the result joins the
    catalog as "<model>+<name>"."""

    text: str | None
    params: TuneParams
    model: str | None = None
    name: str | None = "tuned"
    files: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.text = text_input("text", self.text)
        self.name = text_input("name", self.name, "tuned")


def fine_tune(studio: Studio, request: FineTuneText, on_progress: Callable | None = None,
              stop: threading.Event | None = None):
    """Train (blocking; on_progress gets tune.TuneProgress reports) and return the tune.TuneResult."""
    return studio.fine_tune(request.text, request.model, request.params, request.name, on_progress=on_progress,
                            stop=stop, files=list(request.files) or None)


def tune_progress(update) -> dict:
    """A training report as plain data; perplexity when it was measured at this step."""
    return {"step": update.step, "steps": update.steps, "loss": update.loss, "perplexity": update.perplexity}


def tune_result(result) -> dict:
    """A finished tune as plain data: the tuned model's id, the method and the held-out perplexities."""
    return {"adapter": result.adapter, "method": result.recipe["kind"],
            "perplexity_before": round(result.perplexity_before, 4),
            "perplexity_after": round(result.perplexity_after, 4), "train_tokens": result.train_tokens,
            "heldout_tokens": result.heldout_tokens}


def restore_adapter(studio: Studio, paths: list) -> str:
    """Copy a tune's files (LoRA: ADAPTER_FILES; full: FULL_FILES) into the output folder and
    load them; returns the tuned model's id. Anything else is refused naming `adapter`."""
    paths = [Path(p) for p in paths]
    names = sorted(p.name for p in paths)
    if names not in (sorted(ADAPTER_FILES), sorted(FULL_FILES)):
        raise knobs.ParamError("adapter", f"upload exactly {', '.join(ADAPTER_FILES)} (LoRA) or "
                                          f"{', '.join(FULL_FILES)} (full); got {', '.join(names) or 'nothing'}")
    folder = studio.settings.output_dir / "adapters" / f"uploaded-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    for path in paths:
        shutil.copyfile(path, folder / path.name)
    try:
        return studio.load_adapter(folder)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing behind
        raise


def compare_tuned(studio: Studio, prompt: str, adapter: str | None, seed, max_new_tokens) -> tuple[str, str]:
    """(base answer, tuned answer): the same prompt and seed on a tuned model and its base,
    in completion mode."""
    if not adapter:
        raise knobs.ParamError("model", "train or load an adapter first")
    spec = studio.model_spec("text", adapter)
    chosen = studio.params("text", spec.base.id, seed=seed, max_new_tokens=max_new_tokens, prompt_mode="completion")
    base, tuned = studio.text_by_model(prompt, [spec.base.id, adapter], chosen)
    return base.output, tuned.output
