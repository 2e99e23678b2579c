"""The text endpoints of the public API: generation, side by side, the next-token explainer,
perplexity, attention, the X/Y grid and fine-tuning. Registered by ui/api.py's register()."""

import dataclasses
import json
import threading
from typing import Any, AsyncIterator, Iterator, Literal

from aigc_studio import params as knobs
from aigc_studio.actions.variants import SEEDS, SWEEP
from aigc_studio.params import TextParams
from aigc_studio.ui.api import File, _count, _file, _knob_name, _mode, _model, _text, axes, studio
from aigc_studio.ui.endpoint import REQUIRED, Arg, endpoint, knob_args, split_knobs
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.streaming import paced, run_in_worker
from aigc_studio.ui.text_grid import axis_values
from aigc_studio.ui.text_tab import (
    LEGACY_STYLES, MAX_COLUMNS, STYLES, column_numbers, compare_stream, token_dicts, whole_number,
)
from aigc_studio.ui.text_tab import MODELS as TEXT_MODELS


# ----- text -----------------------------------------------------------------------------------

def _generate_text(prompt: str, model: str | None, **values: Any) -> Iterator[str]:
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = s.params("text", model, **values)
        stop = threading.Event()
        try:
            for update in paced(s.text_stream(prompt, chosen, model, stop=stop)):
                yield update.text or update.status
        finally:
            stop.set()  # a cancelled request (Stop, a vanished client) ends the generation


TEXT_FIRST, TEXT_LATER = split_knobs(TextParams, 7)  # the knobs generate_text shipped with come before `model`
PROMPT = Arg("prompt", str, "what to answer (chat mode) or continue (completion mode), at most 4000 characters.",
             REQUIRED)
TEXT_MODEL = Arg("model", str | None, "a text model id of the catalog (None: the preset's default).")

generate_text = endpoint(
    "generate_text", "Generate text for a prompt with the studio's text model, streamed token by token. A knob "
                     "left out (None) takes the model's recommended value.",
    [PROMPT, *knob_args(TextParams, TEXT_FIRST), TEXT_MODEL, *knob_args(TextParams, TEXT_LATER)],
    "The answer so far (each update); the last one is the whole answer.", _generate_text, Iterator[str])


def compare_text(prompt: str, mode: Literal["Different seeds", "Sweep one knob", "Styles side by side", "Different models",
                                             "Presets side by side"] | None = None,
                 count: int | None = None, knob_name: str | None = None, values: str | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 max_new_tokens: int | None = None, repetition_penalty: float | None = None,
                 seed: int | None = None, greedy: bool | None = None, model: str | None = None,
                 min_p: float | None = None, typical_p: float | None = None,
                 no_repeat_ngram_size: int | None = None, stop_sequences: str | None = None,
                 system_prompt: str | None = None, prompt_mode: Literal["chat", "completion"] | None = None,
                 models: list[str] | str | None = None) -> Iterator[tuple[str, str, str, str, dict | None]]:
    """Generate 2-4 variants of one prompt side by side, streamed together (one batched step per token),
    or the same prompt, knobs and seed on 2-4 text models (one model after another).

    Args:
        prompt: the prompt every column answers.
        mode: "Different seeds" (count consecutive seeds), "Sweep one knob" (knob_name over values)
            "Styles side by side" (the sampling styles Precise, Balanced, Creative with one seed;
            "Presets side by side", its earlier name, still works) or "Different models" (the
            models in `models`, each column labelled by its model id).
        count: 2-4 columns for "Different seeds" (default 3).
        knob_name: the text knob to sweep, e.g. "temperature".
        values: 2-4 comma-separated values for the swept knob, e.g. "0.3, 0.8, 1.4".
        temperature: 0-2 (see generate_text); the other knobs are as in generate_text.
        top_k: 0-1000.
        top_p: 0.01-1.
        max_new_tokens: 1-1024 tokens per column.
        repetition_penalty: 1-2.
        seed: -1 to 2147483647; columns swept or preset share it.
        greedy: always take the likeliest token.
        model: a text model id of the catalog.
        min_p: 0-1.
        typical_p: 0.01-1.
        no_repeat_ngram_size: 0-10.
        stop_sequences: up to 4 comma-separated texts.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
        models: for "Different models", 2-4 text model ids (a list or comma-separated), e.g.
            ["smollm2-135m-instruct", "smollm2-135m-instruct+mine"]; None: `model` (or the
            preset's default) and its tuned versions "<model>+<name>" (fine_tune_text).
    Returns:
        Four column texts (unused columns are ""), then, on the last update only, the numbers:
        {"first_difference": token index or null, "columns": [{"label", "tokens", "tokens_per_s", "mean_logprob"}]}.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        mode = _mode(mode, (STYLES, TEXT_MODELS, LEGACY_STYLES))
        base = s.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p,
                        max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, seed=seed,
                        greedy=greedy, min_p=min_p, typical_p=typical_p, no_repeat_ngram_size=no_repeat_ngram_size,
                        stop_sequences=stop_sequences, system_prompt=system_prompt, prompt_mode=prompt_mode)
        count = _count(count) if mode == SEEDS else 3
        knob_name = _knob_name("knob_name", knob_name, type(base), "temperature") if mode == SWEEP else "temperature"
        stop = threading.Event()
        labels, stream = compare_stream(s, prompt, base, model, mode, count, knob_name,
                                        _text("values", values, "0.3, 0.8, 1.4"), models, stop)
        texts = [""] * MAX_COLUMNS
        try:
            for update in paced(stream):
                for i, column in enumerate(update.columns):
                    texts[i] = column.text or update.status
                numbers = None
                if all(column.result is not None for column in update.columns):
                    numbers = column_numbers({"labels": labels,
                                              "diverge_at": update.diverge_at,
                                              "columns": [token_dicts(c.tokens) for c in update.columns],
                                              "rates": [c.tokens_per_s for c in update.columns]})
                yield (*texts, numbers)
        finally:
            stop.set()


def explain_next_token(prompt: str, answer: str | None = None, position: int | None = None,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       min_p: float | None = None, typical_p: float | None = None,
                       repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
                       greedy: bool | None = None, system_prompt: str | None = None,
                       prompt_mode: Literal["chat", "completion"] | None = None, top_n: int | None = None,
                       model: str | None = None) -> dict:
    """Explain one next token: the likeliest candidates and their probability at each sampling stage
    (raw, penalties, temperature, top-k, top-p, min-p, typical-p), and which ones each stage cuts.

    Args:
        prompt: the prompt the answer follows.
        answer: an answer to the prompt (e.g. from generate_text); "" explains the first token.
        position: 0 = the first token after the prompt; k = the token after the first k answer
            tokens; -1 = the token after the whole answer.
        temperature: 0-2.
        top_k: 0-1000 (0 = off).
        top_p: 0.01-1.
        min_p: 0-1 (0 = off).
        typical_p: 0.01-1 (1 = off).
        repetition_penalty: 1-2 (1 = off).
        no_repeat_ngram_size: 0-10 (0 = off).
        greedy: always take the likeliest token.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
        top_n: 1-50 candidates listed (default 10).
        model: a text model id of the catalog.
    Returns:
        {"context", "position", "candidate_ids", "candidates", "chosen_id",
        "stages": [{"name", "setting", "probs", "kept", "kept_tokens", "mass_kept"}]}.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = s.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          typical_p=typical_p, repetition_penalty=repetition_penalty,
                          no_repeat_ngram_size=no_repeat_ngram_size, greedy=greedy, system_prompt=system_prompt,
                          prompt_mode=prompt_mode)
        top_n = whole_number("top_n", top_n, 10)
        if not 1 <= top_n <= 50:
            raise knobs.ParamError("top_n", f"must be a number in [1, 50], got {top_n}")
        result = s.explain_next_token(prompt, chosen, model, answer=_text("answer", answer),
                                      position=whole_number("position", position, 0), top_n=top_n)
        return dataclasses.asdict(result)


def perplexity(text: str, model: str | None = None) -> float:
    """Perplexity of a text under the text model: exp of the mean negative log-likelihood per token.
    Lower = more natural to the model (fluent text scores far below shuffled words).

    Args:
        text: the passage to score, at most 4000 characters.
        model: a text model id of the catalog (None: the preset's default).
    Returns:
        The perplexity (>= 1), rounded to 3 decimals.
    """
    with user_errors():
        value, _ = studio().perplexity(text, _model(model))
        return round(value, 3)


def attention(prompt: str, answer: str | None = None, position: int | None = None, layer: int | None = None,
              head: int | None = None, system_prompt: str | None = None,
              prompt_mode: Literal["chat", "completion"] | None = None, model: str | None = None) -> dict:
    """What one token attends to in every layer and head of the text model, one layer and head's whole
    causal attention matrix, and the logit lens (what each layer would predict next). Computed with the
    model's eager attention on torch, once per context (prompt + answer).

    Args:
        prompt: the prompt, encoded as generation encodes it (chat template or plain).
        answer: an answer to the prompt (e.g. from generate_text); its tokens follow the prompt's.
        position: index into tokens of the token whose attention is shown; None or -1 = the last.
        layer: 0 to layers - 1 (None = the last layer): the layer of `matrix`.
        head: 0 to heads - 1; None = the average of the layer's heads, for `matrix`.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
        model: a text model id of the catalog that runs here (a remote server sends no attention weights).
    Returns:
        {"tokens": [{"index", "id", "text", "kind": "template" | "system" | "prompt" | "answer"}],
        "position", "layers", "heads", "layer", "head",
        "weights": [layer][head][token] (the position's attention: each row sums to 1, 0 on later tokens),
        "matrix": [query][token] for layer and head,
        "lens": [{"layer", "ids", "tokens", "probs"}] per layer, the top 5 next tokens after position
        (the last layer is the model's own next-token distribution),
        "prompt_tokens", "explain_position" (the explain_next_token position of the token after this one)}.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = s.params("text", model, system_prompt=system_prompt, prompt_mode=prompt_mode)
        return s.attention(prompt, chosen, model, answer=_text("answer", answer),
                           position=None if position is None else whole_number("position", position, -1),
                           layer=None if layer is None else whole_number("layer", layer, 0),
                           head=None if head is None else whole_number("head", head, 0))


# ----- fine-tuning (issue 16) -------------------------------------------------------------------

async def fine_tune_text(text: str, model: str | None = None, rank: int | None = None, alpha: int | None = None,
                         learning_rate: float | None = None, steps: int | None = None, seed: int | None = None,
                         name: str | None = None, method: Literal["lora", "full"] | None = None
                         ) -> AsyncIterator[dict]:
    """Fine-tune a text model on your own text (LoRA, or every weight of a small model); streams
    progress, then the result.
    The tuned model joins the catalog as "<model>+<name>" (runs on torch): pass it as `model`
    to generate_text, compare_text, explain_next_token or perplexity.

    Args:
        text: the writing to tune on (up to 1,000,000 characters); 10% of its blocks are held out.
        model: the base text model id (None: the preset's default).
        rank: 1-256 LoRA rank (default 8).
        alpha: 1-1024 LoRA alpha; the update is scaled by alpha / rank (default 16).
        learning_rate: 1e-6 to 0.1 (default 0.001).
        steps: 1-5000 optimizer steps of 4 blocks of 128 tokens (default 20).
        seed: -1 to 2147483647; the same seed, text and knobs give the same adapter (default 0).
        name: the adapter's name: 1-40 letters, digits, '-', '_' or '.' (default "tuned").
        method: "lora" (default) or "full": every weight trains and is saved (fp32, ~540 MB for
            SmolLM2-135M); refused for models above 500M parameters or the memory budget.
            Full fine-tuning wants a far lower learning_rate, around 3e-5.
    Returns:
        Progress as {"step", "steps", "loss", "perplexity"} (perplexity when measured), then
        {"adapter", "method", "perplexity_before", "perplexity_after", "train_tokens", "heldout_tokens"}.
    """
    with user_errors():
        s = studio()
        chosen = knobs.make(knobs.TuneParams, rank=rank, alpha=alpha, learning_rate=learning_rate, steps=steps, seed=seed,
                            method=method)
        stop = threading.Event()

        def work(emit):
            return s.fine_tune(_text("text", text), _model(model), chosen, _text("name", name, "tuned"),
                               on_progress=emit, stop=stop)

        async for kind, value in run_in_worker(work, stop):
            if kind == "update":
                yield {"step": value.step, "steps": value.steps, "loss": value.loss, "perplexity": value.perplexity}
            else:
                yield {"adapter": value.adapter, "method": value.recipe["kind"], "perplexity_before": round(value.perplexity_before, 4),
                       "perplexity_after": round(value.perplexity_after, 4), "train_tokens": value.train_tokens,
                       "heldout_tokens": value.heldout_tokens}


def text_grid(prompt: str, x_knob: str | None = None, x_values: str | None = None, y_knob: str | None = None,
              y_values: str | None = None, temperature: float | None = None, top_k: int | None = None,
              top_p: float | None = None, max_new_tokens: int | None = None,
              repetition_penalty: float | None = None, seed: int | None = None, greedy: bool | None = None,
              model: str | None = None, min_p: float | None = None, typical_p: float | None = None,
              no_repeat_ngram_size: int | None = None, stop_sequences: str | None = None,
              system_prompt: str | None = None,
              prompt_mode: Literal["chat", "completion"] | None = None) -> tuple[dict, File, File]:
    """An X/Y grid of text answers: one or two knobs over their values, every cell one column of a
    single batched generation, the seed fixed unless it is an axis (at most 16 cells).

    Args:
        prompt: what every cell answers.
        x_knob: the text knob across columns (default "temperature"); one the model reads.
        x_values: 1-6 comma-separated values (default "0.3, 0.8, 1.4").
        y_knob: the knob down rows, or "none"/None for one row.
        y_values: 1-6 comma-separated values for y_knob.
        temperature: 0-2; the other knobs are as in generate_text and apply to every cell.
        top_k: 0-1000.
        top_p: 0.01-1.
        max_new_tokens: 1-1024 tokens per cell.
        repetition_penalty: 1-2.
        seed: -1 to 2147483647; -1 draws one seed for the whole grid.
        greedy: always take the likeliest token.
        model: a text model id of the catalog.
        min_p: 0-1.
        typical_p: 0.01-1.
        no_repeat_ngram_size: 0-10.
        stop_sequences: up to 4 comma-separated texts.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
    Returns:
        The grid {"x_knob", "x_labels", "y_knob", "y_labels", "cells": [{"row", "column", "label", "text",
        "tokens", "tokens_per_s", "mean_logprob" (nats/token), "first_difference" (the index of the
        cell's first token that differs from another cell's, or null), "recipe"}]}, then the same as a
        JSON file and a CSV file (one line per cell, its recipe as JSON).
    """
    with user_errors():
        s = studio()
        model = _model(model)
        base = s.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p,
                        max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, seed=seed,
                        greedy=greedy, min_p=min_p, typical_p=typical_p, no_repeat_ngram_size=no_repeat_ngram_size,
                        stop_sequences=stop_sequences, system_prompt=system_prompt, prompt_mode=prompt_mode)
        x_knob, y_knob = axes(x_knob, y_knob, "temperature")
        xs = axis_values(_text("x_values", x_values, "0.3, 0.8, 1.4"))
        ys = axis_values(_text("y_values", y_values)) if y_knob else None
        stop = threading.Event()
        try:
            plan, cells = s.text_grid(prompt, base, x_knob, xs, y_knob, ys, model, stop=stop)
        finally:
            stop.set()
        json_path, csv_path = s.save_text_grid(plan, cells)
        return json.loads(json_path.read_text()), _file(json_path), _file(csv_path)


ENDPOINTS = {generate_text: "text", compare_text: "text", explain_next_token: "text", perplexity: "text",
             attention: "text", text_grid: "text"}
