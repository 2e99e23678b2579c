"""Text tab: prompt -> streamed answer coloured by probability, every sampling knob
(with Precise / Balanced / Creative sampling styles), a next-token explainer, the attention
view and logit lens (ui/attention_view.py), 2-4 variants
streamed side by side (seeds, a swept knob, styles, or different models such as a base and
its tuned versions), and the perplexity of a pasted text."""

from __future__ import annotations

import dataclasses
import html

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.params import STYLE_KNOBS, SAMPLING_STYLES, TextParams, whole_number
from aigc_studio.studio import Studio
from aigc_studio.ui import attention_view, text_grid
from aigc_studio.actions.variants import check_sweep, make_variants, variant_labels
from aigc_studio.ui.components import model_dropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import (
    column_updates, control, knob_updates, sweep_updates, sweep_values, variant_controls,
)
from aigc_studio.ui.page import busy, error_box, page_assets, ready
from aigc_studio.ui.recipe_view import model_card, recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import paced

MAX_COLUMNS = 4
STYLES = "Styles side by side"  # a third variants mode: Precise, Balanced, Creative with one seed
# what the mode was called before "preset" came to mean only the model preset (hub, offline)
LEGACY_STYLES = "Presets side by side"
# a fourth: the same prompt, knobs and seed on 2-4 text models (a base and its tuned versions)
MODELS = "Different models"
# /generate_text's original keywords, in order; the newer knobs follow `model` (NEW_KNOB_NAMES).
KNOB_NAMES = ("temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty", "seed", "greedy")
NEW_KNOB_NAMES = ("min_p", "typical_p", "no_repeat_ngram_size", "stop_sequences", "system_prompt", "prompt_mode")
EXPLAIN_KNOB_NAMES = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
                      "no_repeat_ngram_size", "greedy", "system_prompt", "prompt_mode")

# Token colours by the model's probability of the token: confident tokens pale, surprising ones strong.
PROBABILITY_BINS = ((0.9, "p ≥ 0.9"), (0.5, "p 0.5–0.9"), (0.1, "p 0.1–0.5"), (0.0, "p < 0.1"))
DIVERGES = "first difference"
UNKNOWN = "p unknown"  # a remote server that sends no probabilities
COLOR_MAP = {"p ≥ 0.9": "#d1fae5", "p 0.5–0.9": "#fef3c7", "p 0.1–0.5": "#fed7aa", "p < 0.1": "#fca5a5",
             UNKNOWN: "#e5e7eb", DIVERGES: "#818cf8"}
SOMETIMES = (UNKNOWN, DIVERGES)  # legend entries shown only when some token has them


# ----- pure helpers: studio objects -> what the components show (tested without a browser) -----

def token_dicts(tokens: list) -> list[dict]:
    """Generated tokens (text_engine.Token) as plain data for a gr.State."""
    return [{"id": t.id, "text": t.text, "p": t.probability, "logprob": t.logprob, "special": t.special,
             "alternatives": [[text, p] for text, p in t.alternatives]} for t in tokens]


def probability_label(p: float) -> str:
    """The colour bin of a probability; NaN (the server sent none) has its own."""
    return next((label for low, label in PROBABILITY_BINS if p >= low), UNKNOWN)


def shown(text: str) -> str:
    """A token's text with its spaces and line breaks visible."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def highlighted(tokens: list[dict], diverge_at: int | None = None) -> list[tuple[str, str]]:
    """(text, category) per token for gr.HighlightedText: its probability bin, or
    DIVERGES for the first token where side-by-side columns differ."""
    out = []
    for index, token in enumerate(tokens):
        text = token["text"] or ("⟨end⟩" if token["special"] else "")
        out.append((text, DIVERGES if index == diverge_at else probability_label(token["p"])))
    return out


def legend_colors(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The colour map for highlighted pairs: every probability bin (a stable legend),
    "p unknown" and "first difference" only when a token is in them."""
    used = {category for _, category in pairs}
    return {label: color for label, color in COLOR_MAP.items() if label not in SOMETIMES or label in used}


def alternatives_markdown(tokens: list[dict], index: int) -> str:
    token = tokens[index]
    rows = "\n".join(f"| `{shown(text)}` | {100 * p:.1f}% |" for text, p in token["alternatives"])
    return (f"**Token {index}: `{shown(token['text'] or '⟨end⟩')}`** — probability {100 * token['p']:.1f}% "
            f"under the model\n\n| likeliest here | probability |\n|---|---|\n{rows}")


def mean_logprob(tokens: list[dict]) -> float:
    return sum(t["logprob"] for t in tokens) / len(tokens) if tokens else 0.0


def column_label(label: str, tokens: list[dict], tokens_per_s: float) -> str:
    return f"{label} · {len(tokens)} tokens · {tokens_per_s:.1f} tok/s · mean log-prob {mean_logprob(tokens):.2f}"


def column_numbers(state: dict) -> dict:
    """A finished comparison's figures for API users: per column its label, token
    count, tokens/s and mean log-probability; and the first token index where the
    columns differ (null when they agree)."""
    return {"first_difference": state["diverge_at"],
            "columns": [{"label": label, "tokens": len(tokens), "tokens_per_s": round(rate, 2),
                         "mean_logprob": round(mean_logprob(tokens), 4)}
                        for label, tokens, rate in zip(state["labels"], state["columns"], state["rates"])]}


def _bar(p: float, kept: bool) -> str:
    color = "#6366f1" if kept else "#d1d5db"
    width = max(0.0, min(100.0, 100 * p))
    cell = (f'<div style="background:{color};height:0.7em;width:{width:.1f}%;min-width:1px;border-radius:2px"></div>'
            f'<span style="font-size:0.8em">{100 * p:.1f}%</span>')
    if not kept:
        cell = f'<div style="opacity:0.45;text-decoration:line-through">{cell}</div><span style="font-size:0.75em">cut</span>'
    return f'<td style="min-width:6em;padding:2px 6px">{cell}</td>'


def context_html(explanation: dict, prompt: str | None, state: dict | None) -> str:
    """What the next token follows, as a person wrote it: the prompt, then the answer's
    first `position` tokens (not the chat template the model reads around them)."""
    if prompt is None:
        return f"<code>{html.escape(explanation['context'])}</code>"
    position = explanation["position"]
    answer = "".join(t["text"] for t in state["tokens"][:position]) if state else ""
    short = prompt if len(prompt) <= 160 else "…" + prompt[-160:]
    shown_answer = answer if len(answer) <= 200 else "…" + answer[-200:]
    return (f"<q>{html.escape(short)}</q>" + (f" → <code>{html.escape(shown_answer)}</code>" if shown_answer else ""))


def chart_html(explanation: dict | None, prompt: str | None = None, state: dict | None = None) -> str:
    """The explainer as a table: one row per candidate token, one column per sampling
    stage, a bar for its probability there; cut tokens are struck through, and each
    stage says how many tokens and how much probability it keeps. The header shows the
    prompt as written (and the answer so far) when given."""
    if not explanation:
        return ""
    stages = explanation["stages"]
    header = "".join(
        f'<th style="padding:2px 6px;text-align:left;{"opacity:0.5" if "off" in s["setting"] else ""}">'
        f'{html.escape(s["name"])}<br><span style="font-weight:normal;font-size:0.8em">{html.escape(s["setting"])}</span></th>'
        for s in stages)
    rows = []
    for row, (token_id, text) in enumerate(zip(explanation["candidate_ids"], explanation["candidates"])):
        mark = " ★" if token_id == explanation["chosen_id"] else ""
        cells = "".join(_bar(s["probs"][row], s["kept"][row]) for s in stages)
        rows.append(f'<tr><td style="padding:2px 6px"><code>{html.escape(shown(text))}</code>{mark}</td>{cells}</tr>')
    kept = "".join(f'<td style="padding:2px 6px;font-size:0.8em">{s["kept_tokens"]} tokens<br>'
                   f'mass kept {100 * s["mass_kept"]:.1f}%</td>' for s in stages)
    chosen = " · ★ = the token generated here" if explanation["chosen_id"] is not None else ""
    return (f'<div style="overflow-x:auto"><p>Next token after {context_html(explanation, prompt, state)} '
            f'(answer token {explanation["position"]}){chosen}</p>'
            f'<table style="border-collapse:collapse"><tr><th style="text-align:left">token</th>{header}</tr>'
            f'{"".join(rows)}<tr><td style="font-size:0.8em">kept</td>{kept}</tr></table></div>')


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
        picked = [m.strip() for m in picked.split(",") if m.strip()]
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


def compare_stream(studio: Studio, prompt: str, base: TextParams, model: str | None, mode: str, count: int,
                   knob_name: str, values: str, models=None, stop=None):
    """(column labels, CompareUpdate stream) of a side-by-side run in any mode: variants of
    one model batched together, or (MODELS) each model in turn with the same knobs and seed."""
    if mode == MODELS:
        names = models_to_compare(studio, model, models)
        return names, studio.text_models_stream(prompt, names, base, stop=stop)
    variants = text_variants(base, mode, count, knob_name, values, studio.params("text", model))
    return [label for label, _ in variants], studio.text_compare_stream(prompt, variants, model, stop=stop)


# ----- the tab --------------------------------------------------------------------------------

def build(studio: Studio, sessions: Sessions) -> None:
    spec = studio.model_spec("text")
    recommended = spec.defaults  # the sliders start at the model's recommended knobs
    used = studio.knobs_used("text")
    with gr.Tab("Text", id="text") as tab:
        page_assets()
        card = gr.Markdown(model_card(spec))
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="text-prompt", placeholder="Ask anything, e.g. Write a haiku about rain.")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="text-generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="text-stop")
                error_box("text-generate")
                answer = gr.Textbox("", label="Answer", lines=8, buttons=["copy"], elem_id="text-answer")
                # "Loading …" and notes get their own line, so Stop never leaves them in the answer
                answer_status = gr.Markdown("", elem_id="text-status")
                coloured = gr.HighlightedText(label="Answer tokens, coloured by the model's probability (select one to see its alternatives)",
                                              color_map=legend_colors([]), show_legend=True, show_inline_category=False,
                                              elem_id="text-tokens")
                alternatives = gr.Markdown(elem_id="text-alternatives")
                recipe, recipe_raw = recipe_view()
            with gr.Column(scale=2):
                model = model_dropdown(studio.catalog.choices("text"), spec.id)
                style = gr.Radio(list(SAMPLING_STYLES), value="Balanced", label="Sampling style",
                                  info="Sets the sampling knobs at once: Precise (focused), Balanced (the model's recommended knobs), Creative (varied).")
                temperature = control(TextParams, "temperature", recommended.get("temperature"), elem_id="text-temperature")
                top_p = control(TextParams, "top_p", recommended.get("top_p"), elem_id="text-top_p")
                max_new_tokens = control(TextParams, "max_new_tokens", elem_id="text-max_new_tokens")
                with gr.Row():
                    seed = control(TextParams, "seed", min_width=120, elem_id="text-seed")
                    greedy = control(TextParams, "greedy", min_width=120, elem_id="text-greedy")
                with gr.Accordion("Advanced knobs", open=False, elem_id="text-advanced"):
                    top_k = control(TextParams, "top_k", recommended.get("top_k"), elem_id="text-top_k")
                    min_p = control(TextParams, "min_p", recommended.get("min_p"), elem_id="text-min_p")
                    typical_p = control(TextParams, "typical_p", recommended.get("typical_p"), elem_id="text-typical_p")
                    repetition_penalty = control(TextParams, "repetition_penalty", recommended.get("repetition_penalty"),
                                                 elem_id="text-repetition_penalty")
                    no_repeat_ngram_size = control(TextParams, "no_repeat_ngram_size",
                                                   recommended.get("no_repeat_ngram_size"),
                                                   elem_id="text-no_repeat_ngram_size")
                    stop_sequences = control(TextParams, "stop_sequences", elem_id="text-stop_sequences")
                    prompt_mode = control(TextParams, "prompt_mode", elem_id="text-prompt_mode")
                    system_prompt = control(TextParams, "system_prompt", lines=1, elem_id="text-system_prompt")
        with gr.Accordion("Side by side: 2-4 variants of one prompt, streamed together", open=False):
            mode, count, knob_name, values = variant_controls(
                TextParams, used, "text", extra_modes=(STYLES, MODELS),
                info="What differs between the columns (sweeps, styles and models share one seed).")
            values.value = sweep_values(studio.params("text"), knob_name.value)
            models = gr.Dropdown(studio.catalog.choices("text"), value=[], multiselect=True, max_choices=MAX_COLUMNS,
                                 label="Models (2-4)", visible=False, elem_id="text-compare-models",
                                 info="Empty: the chosen model and its tuned versions (Tune tab), same knobs and seed.")
            compare = gr.Button("Compare", elem_id="text-compare")
            error_box("text-compare")
            with gr.Row():
                columns = [gr.Textbox(label=f"Variant {i + 1}", lines=8, elem_id=f"text-variant-{i}") for i in range(MAX_COLUMNS)]
            with gr.Row():
                column_tokens = [gr.HighlightedText(label=f"Variant {i + 1} tokens", color_map=legend_colors([]), show_legend=i == 0,
                                                    show_inline_category=False, elem_id=f"text-variant-tokens-{i}")
                                 for i in range(MAX_COLUMNS)]
            # the figures are in each column's label; API users get them as numbers
            compare_numbers = gr.JSON(label="Column numbers", visible=False, elem_id="text-compare-numbers")
            compare_recipes, compare_recipes_raw = recipe_view("Recipes")
            # nested in side by side (closed): the page at first load is no taller
            grid_parts = text_grid.build(studio, sessions, used)
        with gr.Accordion("Why this token? The next-token distribution at each sampling stage", open=True):
            gr.Markdown("The model runs once per position; moving a knob re-applies the sampling steps to the cached "
                        "result. Select a token of the answer to explain that position.")
            with gr.Row():
                position = gr.Number(value=0, precision=0, minimum=-1, label="answer token",
                                     info="0 = the first token after the prompt; k = after k answer tokens; -1 = after the whole answer.")
                top_n = gr.Slider(1, 50, value=10, step=1, label="candidates shown",
                                  info="How many of the likeliest next tokens the chart lists.")
                explain = gr.Button("Explain", elem_id="text-explain")
            error_box("text-explain")
            chart = gr.HTML(elem_id="text-explainer")
            with gr.Accordion("Explainer numbers", open=False):
                explanation = gr.JSON(label="Explainer numbers")
        with gr.Accordion("Inside the model: what each token attends to, and what each layer predicts", open=False,
                          elem_id="text-inside"):
            inside = attention_view.View()
        with gr.Accordion("Perplexity: how natural a text is to the model", open=False):
            pasted = gr.Textbox(label="Text", lines=4, elem_id="text-perplexity-input",
                                placeholder="Paste a passage; the model scores every token given the ones before it.")
            score = gr.Button("Perplexity", elem_id="text-perplexity")
            error_box("text-perplexity")
            perplexity_out = gr.Number(label="Perplexity (lower = more natural to the model)", elem_id="text-perplexity-value")
        answer_state = gr.State(None)  # the last answer: {"text", "tokens"} with token ids and probabilities
        compare_state = gr.State(None)  # the last comparison: {"columns": [tokens...], "diverge_at", "rates"}

    knob_inputs = [temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed, greedy]
    new_knob_inputs = [min_p, typical_p, no_repeat_ngram_size, stop_sequences, system_prompt, prompt_mode]
    explain_knob_inputs = [temperature, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size,
                           greedy, system_prompt, prompt_mode]
    style_outputs = [temperature, top_k, top_p, min_p, typical_p, repetition_penalty, no_repeat_ngram_size, greedy]

    def chosen_params(model, values: dict) -> TextParams:
        return studio.params("text", model, **values)

    def generate_text(prompt, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed, greedy,
                      model=None, min_p=None, typical_p=None, no_repeat_ngram_size=None, stop_sequences=None,
                      system_prompt=None, prompt_mode=None, request: gr.Request = None):
        """Stream an answer to prompt from the text model (default: the model preset's)."""
        with user_errors():
            chosen = chosen_params(model, dict(
                temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                repetition_penalty=repetition_penalty, seed=seed, greedy=greedy, min_p=min_p, typical_p=typical_p,
                no_repeat_ngram_size=no_repeat_ngram_size, stop_sequences=stop_sequences,
                system_prompt=system_prompt, prompt_mode=prompt_mode))
            told = ""
            for update in paced(studio.text_stream(prompt, chosen, model, stop=sessions.fresh_stop(request))):
                if update.status.startswith("Note:") and update.status != told:
                    # e.g. a server that refused logprobs: said once, beside the answer that streams on
                    told = update.status
                    gr.Warning(update.status)
                state = None
                if update.result is not None:
                    sessions.keep_recipes(request, [update.result.recipe], [update.result.output])
                    state = {"text": update.text, "tokens": token_dicts(update.tokens)}
                # the status line shows loading (and notes) while the run goes on; the last update clears it
                yield update.text, state, "" if update.result is not None else update.status

    def explain_next_token(prompt, answer, position, temperature, top_k, top_p, min_p, typical_p, repetition_penalty,
                           no_repeat_ngram_size, greedy, system_prompt, prompt_mode, top_n, model=None, answer_state=None):
        """The top candidates for one token of the answer (position 0 = the first token after the prompt)
        and their probability raw, after penalties, temperature, top-k, top-p, min-p and typical-p."""
        with user_errors():
            chosen = chosen_params(model, dict(
                temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size, greedy=greedy,
                system_prompt=system_prompt, prompt_mode=prompt_mode))
            answer = answer or ""
            if answer_state and answer_state["text"] == answer:  # the generated ids, not a re-tokenisation
                answer = [t["id"] for t in answer_state["tokens"]]
            result = studio.explain_next_token(prompt, chosen, model, answer=answer, position=whole_number("position", position, 0),
                                               top_n=whole_number("top_n", top_n, 10))
            return dataclasses.asdict(result)

    def explain_when_shown(current, prompt, answer, position, *rest):
        """Knob moved: update the chart if one is showing (never an error popup while typing)."""
        if not current or not (prompt or "").strip():
            return gr.skip()
        return explain_next_token(prompt, answer, position, *rest)

    def compare_text(prompt, mode, count, knob_name, values, temperature, top_k, top_p, max_new_tokens,
                     repetition_penalty, seed, greedy, model=None, min_p=None, typical_p=None,
                     no_repeat_ngram_size=None, stop_sequences=None, system_prompt=None, prompt_mode=None,
                     models=None, request: gr.Request = None):
        """Stream 2-4 variants of one prompt together, token by token in turn, each labelled with
        its settings (or 2-4 models one after another, labelled by model)."""
        with user_errors():
            base = chosen_params(model, dict(
                temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                repetition_penalty=repetition_penalty, seed=seed, greedy=greedy, min_p=min_p, typical_p=typical_p,
                no_repeat_ngram_size=no_repeat_ngram_size, stop_sequences=stop_sequences,
                system_prompt=system_prompt, prompt_mode=prompt_mode))
            check_sweep(studio, "text", model, mode, knob_name)
            labels, stream = compare_stream(studio, prompt, base, model, mode, count, knob_name, values, models,
                                            sessions.fresh_stop(request))
            texts = [""] * MAX_COLUMNS
            for update in paced(stream):
                for i, column in enumerate(update.columns):
                    texts[i] = column.text or update.status
                state = numbers = None
                if all(column.result is not None for column in update.columns):
                    sessions.keep_recipes(request, [column.result.recipe for column in update.columns],
                                          [column.result.output for column in update.columns])
                    state = {"labels": labels, "diverge_at": update.diverge_at,
                             "columns": [token_dicts(c.tokens) for c in update.columns],
                             "rates": [c.tokens_per_s for c in update.columns]}
                    numbers = column_numbers(state)
                yield *texts, state, numbers

    def perplexity(text, model=None):
        """Perplexity of text under the text model: exp of the mean negative log-likelihood per token."""
        with user_errors():
            value, _ = studio.perplexity(text, model)
            return round(value, 3)

    def show_tokens(state):
        pairs = highlighted(state["tokens"]) if state else []
        return gr.update(value=pairs or None, color_map=legend_colors(pairs))

    def select_token(state, evt: gr.SelectData):
        if not state or evt.index is None:
            return gr.skip(), gr.skip()
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        return alternatives_markdown(state["tokens"], index), index

    def show_columns(state):
        if not state:
            return [gr.update(value=None, visible=False)] * MAX_COLUMNS
        columns = [highlighted(tokens, state["diverge_at"]) for tokens in state["columns"]]
        every_pair = [pair for pairs in columns for pair in pairs]  # one legend (on the first column) for all
        shown_columns = [gr.update(value=pairs, visible=True, label=column_label(label, tokens, rate),
                                   color_map=legend_colors(every_pair))
                         for pairs, label, tokens, rate in zip(columns, state["labels"], state["columns"],
                                                               state["rates"])]
        return shown_columns + [gr.update(value=None, visible=False)] * (MAX_COLUMNS - len(shown_columns))

    def apply_style(name, model):
        with user_errors():
            values = studio.sampling_style(name, model)
        return [values[n] for n in STYLE_KNOBS]

    def label_columns(mode, count, knob_name, values, models, model, *knob_values):
        with user_errors():
            base = studio.params("text", model, **dict(zip(KNOB_NAMES + NEW_KNOB_NAMES, knob_values)))
            if mode in (STYLES, LEGACY_STYLES):
                labels = list(SAMPLING_STYLES)
            elif mode == MODELS:
                labels = models_to_compare(studio, model, models)
            else:
                check_sweep(studio, "text", model, mode, knob_name)
                labels = variant_labels(base, mode, count, knob_name, values)
            return column_updates(labels, MAX_COLUMNS, clear=True)

    def label_from_recipes(request: gr.Request):
        return column_updates([r.label for r in sessions.recipes(request)], MAX_COLUMNS, clear=False)

    def show_recipes(request: gr.Request):
        kept = sessions.recipes(request)
        return recipe_card(kept), recipe_json(kept)

    def use_model(model_id, knob):
        """A newly picked model: its card, its knobs (the Balanced style around its
        recommendation), and the knobs it can sweep."""
        with user_errors():
            spec = studio.model_spec("text", model_id)
            picker, sweep = sweep_updates(studio, "text", model_id, knob)
            return (model_card(spec), "Balanced", *apply_style("Balanced", model_id),
                    *knob_updates(studio, "text", model_id, controls), picker, sweep)

    def sweep_for(knob, model_id, *knob_values):
        with user_errors():
            return sweep_values(studio.params("text", model_id, **dict(zip(KNOB_NAMES + NEW_KNOB_NAMES, knob_values))), knob)

    controls = {name: component for name, component in zip(KNOB_NAMES + NEW_KNOB_NAMES, knob_inputs + new_knob_inputs)}
    explain_inputs = [prompt, answer, position, *explain_knob_inputs, top_n, model, answer_state]

    explain.click(explain_next_token, inputs=explain_inputs, outputs=explanation, api_visibility="private",
                  concurrency_id="text")  # public: ui/api.py
    # Generate shows "Running…" and waits while a run is in flight (Stop ends it)
    run = gr.on([generate.click, prompt.submit], lambda: busy(), outputs=generate, queue=False,
                api_visibility="private").then(
        generate_text, inputs=[prompt, *knob_inputs, model, *new_knob_inputs],
        outputs=[answer, answer_state, answer_status], api_visibility="private", concurrency_id="text")
    run.then(lambda: (ready(), ""), outputs=[generate, answer_status], queue=False, api_visibility="private")
    run.failure(lambda: (ready(), ""), outputs=[generate, answer_status], queue=False, api_visibility="private")
    run.then(show_recipes, outputs=[recipe, recipe_raw], api_visibility="private")
    shown_tokens = run.then(show_tokens, inputs=answer_state, outputs=coloured, api_visibility="private")
    shown_tokens.then(lambda: 0, outputs=position, api_visibility="private").then(
        explain_next_token, inputs=explain_inputs, outputs=explanation, api_visibility="private")
    selected = coloured.select(select_token, inputs=answer_state, outputs=[alternatives, position],
                               api_visibility="private")
    selected.then(explain_next_token, inputs=explain_inputs, outputs=explanation, api_visibility="private")
    # the attention view: from the explainer's token to its attention, and back (ui/attention_view.py)
    back, (follow, follow_inputs, follow_outputs) = attention_view.wire(
        inside, studio, prompt, answer, answer_state, position, system_prompt, prompt_mode, model)
    back.success(explain_next_token, inputs=explain_inputs, outputs=explanation, api_visibility="private")
    selected.then(follow, inputs=follow_inputs, outputs=follow_outputs, api_visibility="private")

    gr.on([c.change for c in explain_knob_inputs + [top_n, model]], explain_when_shown,
          inputs=[explanation, *explain_inputs], outputs=explanation, trigger_mode="always_last",
          api_visibility="private")
    explanation.change(chart_html, inputs=[explanation, prompt, answer_state], outputs=chart, api_visibility="private")
    style.change(apply_style, inputs=[style, model], outputs=style_outputs, api_visibility="private")
    # models tuned in the Tune tab join the catalog while the page is open: coming back here lists them
    tab.select(lambda: [gr.update(choices=studio.catalog.choices("text"))] * 2, outputs=[model, models], queue=False,
               api_visibility="private")
    mode.change(lambda m: gr.update(visible=m == MODELS), mode, models, api_visibility="private", queue=False)
    # a newly picked model starts at its own recommended knobs (the Balanced style)
    model.input(use_model, inputs=[model, knob_name],
                outputs=[card, style, *style_outputs, *controls.values(), knob_name, values], api_visibility="private")
    # a restore (History) sets the model without model.input: the side-by-side picker follows it here
    model.change(lambda m, k: sweep_updates(studio, "text", m, k), [model, knob_name], [knob_name, values],
                 api_visibility="private", queue=False)
    knob_name.input(sweep_for, inputs=[knob_name, model, *knob_inputs, *new_knob_inputs], outputs=values,
                    api_visibility="private")

    labelled = compare.click(lambda: busy(), outputs=compare, queue=False, api_visibility="private").then(
        label_columns, inputs=[mode, count, knob_name, values, models, model, *knob_inputs, *new_knob_inputs],
        outputs=columns, api_visibility="private")
    comparing = labelled.success(compare_text, inputs=[prompt, mode, count, knob_name, values, *knob_inputs, model,
                                                       *new_knob_inputs, models],
                                 outputs=[*columns, compare_state, compare_numbers], api_visibility="private",
                                 concurrency_id="text")
    labelled.failure(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.then(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.failure(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.then(show_recipes, outputs=[compare_recipes, compare_recipes_raw], api_visibility="private")
    comparing.then(label_from_recipes, outputs=columns, api_visibility="private")
    comparing.then(show_columns, inputs=compare_state, outputs=column_tokens, api_visibility="private")

    score.click(perplexity, inputs=[pasted, model], outputs=perplexity_out, api_visibility="private",
                concurrency_id="text")
    gridding = text_grid.wire(studio, sessions, grid_parts, prompt, model, controls)
    stop.click(sessions.stop, None, None, cancels=[run, comparing, gridding], api_visibility="private").then(
        lambda: (ready(), ready("Compare"), ready("Make grid"), "", ""),
        outputs=[generate, compare, grid_parts["make"], answer_status, grid_parts["status"]], queue=False,
        api_visibility="private")
    return {"prompt": prompt, "model": model, "controls": controls}  # what the History tab restores
