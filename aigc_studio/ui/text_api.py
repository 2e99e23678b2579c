"""The text endpoints of the public API: generation, side by side, the next-token explainer,
perplexity, attention, the X/Y grid and fine-tuning. Registered by ui/api.py's register().

Each endpoint checks its raw inputs' types, builds the operation's request and calls its
action (aigc_studio/actions/text.py), the same one the Text and Tune tabs call. The knob
arguments come from the dataclasses (text_endpoint_args): a knob added to TextParams joins
every endpoint that takes the text knobs, with its type, default and help."""

import json
import threading
from typing import Any, AsyncIterator, Iterator, Literal

from aigc_studio.actions.checks import model_input, text_input
from aigc_studio import params as knobs
from aigc_studio.actions import text as text_actions
from aigc_studio.actions.text import CompareText, ExplainToken, FineTuneText, GenerateText, TextGrid
from aigc_studio.params import TextParams, TuneParams, whole_number
from aigc_studio.ui.api import File, _file, studio
from aigc_studio.ui.endpoint import REQUIRED, Arg, endpoint, knob_args
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.streaming import paced, run_in_worker

PROMPT = Arg("prompt", str, "what to answer (chat mode) or continue (completion mode), at most 4000 characters.",
             REQUIRED)
TEXT_MODEL = Arg("model", str | None, "a text model id of the catalog (None: the preset's default).")


def text_endpoint_args(params_type: type = TextParams, before: tuple[Arg, ...] = (),
                       after: tuple[Arg, ...] = (), prompt: Arg = PROMPT) -> list[Arg]:
    """An endpoint's arguments around the knobs of params_type: prompt, `before`, the knobs
    /generate_text shipped with, `model`, every later knob, `after`. The historical order, so
    positional callers keep working, and a new field joins at the end of the knobs."""
    names = text_actions.knob_names(params_type)
    first, later = names[:text_actions.FIRST_KNOBS], names[text_actions.FIRST_KNOBS:]
    return [prompt, *before, *knob_args(params_type, first), TEXT_MODEL, *knob_args(params_type, later), *after]


def text_params(model: str | None, knob_values: dict) -> TextParams:
    """The model's recommended knobs under the given ones (None: the recommendation)."""
    return studio().params("text", model, **knob_values)


# ----- generate ---------------------------------------------------------------------------------

def _generate_text(prompt: str, model: str | None, **knob_values: Any) -> Iterator[str]:
    with user_errors():
        s, model = studio(), model_input(model)
        request = GenerateText(prompt, text_params(model, knob_values), model)
        stop = threading.Event()
        try:
            for update in paced(text_actions.generate(s, request, stop)):
                yield update.text or update.status
        finally:
            stop.set()  # a cancelled request (Stop, a vanished client) ends the generation


generate_text = endpoint(
    "generate_text", "Generate text for a prompt with the studio's text model, streamed token by token. A knob "
                     "left out (None) takes the model's recommended value.",
    text_endpoint_args(), "The answer so far (each update); the last one is the whole answer.", _generate_text,
    Iterator[str])


# ----- compare side by side -----------------------------------------------------------------------

COMPARE_ARGS = (
    Arg("mode", Literal["Different seeds", "Sweep one knob", "Styles side by side", "Different models",
                        "Presets side by side"] | None,
        '"Different seeds" (count consecutive seeds), "Sweep one knob" (knob_name over values), '
        '"Styles side by side" (the sampling styles Precise, Balanced, Creative with one seed; '
        '"Presets side by side", its earlier name, still works) or "Different models" (the models in '
        '`models`, each column labelled by its model id).'),
    Arg("count", int | None, "2-4 columns for \"Different seeds\" (default 3)."),
    Arg("knob_name", str | None, 'the text knob to sweep, e.g. "temperature".'),
    Arg("values", str | None, '2-4 comma-separated values for the swept knob, e.g. "0.3, 0.8, 1.4".'),
)
MODELS_ARG = Arg("models", list[str] | str | None,
                 'for "Different models", 2-4 text model ids (a list or comma-separated), e.g. '
                 '["smollm2-135m-instruct", "smollm2-135m-instruct+mine"]; None: `model` (or the preset\'s '
                 'default) and its tuned versions "<model>+<name>" (fine_tune_text).')


def _compare_text(prompt: str, mode, count, knob_name, values, model, models,
                  **knob_values: Any) -> Iterator[tuple[str, str, str, str, dict | None]]:
    with user_errors():
        s, model = studio(), model_input(model)
        request = CompareText(prompt, text_params(model, knob_values), model, mode, count, knob_name, values, models)
        stop = threading.Event()
        try:
            for frame in paced(text_actions.compare(s, request, stop)):
                yield (*frame.texts, text_actions.column_numbers(frame.finished) if frame.finished else None)
        finally:
            stop.set()


compare_text = endpoint(
    "compare_text", "Generate 2-4 variants of one prompt side by side, streamed together (one batched step per "
                    "token), or the same prompt, knobs and seed on 2-4 text models (one model after another). "
                    "A knob left out (None) takes the model's recommended value; seeds, sweeps and styles share one "
                    "seed.",
    text_endpoint_args(before=COMPARE_ARGS, after=(MODELS_ARG,),
                       prompt=Arg("prompt", str, "the prompt every column answers.", REQUIRED)),
    'Four column texts (unused columns are ""), then, on the last update only, the numbers: '
    '{"first_difference": token index or null, "columns": [{"label", "tokens", "tokens_per_s", "mean_logprob"}]}.',
    _compare_text, Iterator[tuple[str, str, str, str, dict | None]])


# ----- explain the next token, perplexity, attention ----------------------------------------------

def explain_endpoint_args(params_type: type = TextParams) -> list[Arg]:
    """The explainer's arguments: prompt, answer, position, its knobs, top_n, model."""
    return [Arg("prompt", str, "the prompt the answer follows.", REQUIRED),
            Arg("answer", str | None, 'an answer to the prompt (e.g. from generate_text); "" explains the first token.'),
            Arg("position", int | None, "0 = the first token after the prompt; k = the token after the first k "
                                        "answer tokens; -1 = the token after the whole answer."),
            *knob_args(params_type, text_actions.explain_knobs(params_type)),
            Arg("top_n", int | None, "1-50 candidates listed (default 10)."), TEXT_MODEL]


def _explain_next_token(prompt: str, answer, position, top_n, model, **knob_values: Any) -> dict:
    with user_errors():
        s, model = studio(), model_input(model)
        request = ExplainToken(prompt, text_params(model, knob_values), model, answer, position, top_n)
        return text_actions.explain(s, request)


explain_next_token = endpoint(
    "explain_next_token", "Explain one next token: the likeliest candidates and their probability at each sampling "
                          "stage (raw, penalties, temperature, top-k, top-p, min-p, typical-p), and which ones each "
                          "stage cuts.",
    explain_endpoint_args(),
    '{"context", "position", "candidate_ids", "candidates", "chosen_id", '
    '"stages": [{"name", "setting", "probs", "kept", "kept_tokens", "mass_kept"}]}.',
    _explain_next_token, dict)


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
        return text_actions.perplexity(studio(), text, model_input(model))


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
        model = model_input(model)
        chosen = s.params("text", model, system_prompt=system_prompt, prompt_mode=prompt_mode)
        return s.attention(prompt, chosen, model, answer=text_input("answer", answer),
                           position=None if position is None else whole_number("position", position, -1),
                           layer=None if layer is None else whole_number("layer", layer, 0),
                           head=None if head is None else whole_number("head", head, 0))


# ----- the X/Y grid ------------------------------------------------------------------------------

GRID_ARGS = (
    Arg("x_knob", str | None, 'the text knob across columns (default "temperature"); one the model reads.'),
    Arg("x_values", str | None, '1-6 comma-separated values (default "0.3, 0.8, 1.4").'),
    Arg("y_knob", str | None, 'the knob down rows, or "none"/None for one row.'),
    Arg("y_values", str | None, "1-6 comma-separated values for y_knob."),
)


def _text_grid(prompt: str, x_knob, x_values, y_knob, y_values, model, **knob_values: Any) -> tuple[dict, File, File]:
    with user_errors():
        s, model = studio(), model_input(model)
        request = TextGrid(prompt, text_params(model, knob_values), model, x_knob, x_values, y_knob, y_values)
        stop = threading.Event()
        try:
            plan, cells = text_actions.text_grid(s, request, stop)
        finally:
            stop.set()
        json_path, csv_path = s.save_text_grid(plan, cells)
        return json.loads(json_path.read_text()), _file(json_path), _file(csv_path)


text_grid = endpoint(
    "text_grid", "An X/Y grid of text answers: one or two knobs over their values, every cell one column of a "
                 "single batched generation, the seed fixed unless it is an axis (at most 16 cells). The knobs apply "
                 "to every cell; a knob left out (None) takes the model's recommended value.",
    text_endpoint_args(before=GRID_ARGS, prompt=Arg("prompt", str, "what every cell answers.", REQUIRED)),
    'The grid {"x_knob", "x_labels", "y_knob", "y_labels", "cells": [{"row", "column", "label", "text", '
    '"tokens", "tokens_per_s", "mean_logprob" (nats/token), "first_difference" (the index of the cell\'s first '
    'token that differs from another cell\'s, or null), "recipe"}]}, then the same as a JSON file and a CSV file '
    "(one line per cell, its recipe as JSON).",
    _text_grid, tuple[dict, File, File])


# ----- fine-tuning ---------------------------------------------------------------------------------

# the TuneParams knobs /fine_tune_text has always taken, in its order (the page sets the others)
TUNE_FIRST, TUNE_LATER = ("rank", "alpha", "learning_rate", "steps", "seed"), ("method",)


async def _fine_tune_text(text: str, model, name, **knob_values: Any) -> AsyncIterator[dict]:
    with user_errors():
        s = studio()
        request = FineTuneText(text, knobs.make(TuneParams, **knob_values), model_input(model), name)
        stop = threading.Event()
        async for kind, value in run_in_worker(lambda emit: text_actions.fine_tune(s, request, emit, stop), stop):
            yield text_actions.tune_progress(value) if kind == "update" else text_actions.tune_result(value)


fine_tune_text = endpoint(
    "fine_tune_text", "Fine-tune a text model on your own text (LoRA, or every weight of a small model); streams "
                      "progress, then the result. The tuned model joins the catalog as \"<model>+<name>\" (runs on "
                      "torch): pass it as `model` to generate_text, compare_text, explain_next_token or perplexity. "
                      "Full fine-tuning wants a far lower learning_rate, around 3e-5.",
    [Arg("text", str, "the writing to tune on (up to 1,000,000 characters); 10% of its blocks are held out.",
         REQUIRED),
     Arg("model", str | None, "the base text model id (None: the preset's default)."),
     *knob_args(TuneParams, TUNE_FIRST),
     Arg("name", str | None, "the adapter's name: 1-40 letters, digits, '-', '_' or '.' (default \"tuned\")."),
     *knob_args(TuneParams, TUNE_LATER)],
    'Progress as {"step", "steps", "loss", "perplexity"} (perplexity when measured), then '
    '{"adapter", "method", "perplexity_before", "perplexity_after", "train_tokens", "heldout_tokens"}.',
    _fine_tune_text, AsyncIterator[dict])


ENDPOINTS = {generate_text: "text", compare_text: "text", explain_next_token: "text", perplexity: "text",
             attention: "text", text_grid: "text"}
