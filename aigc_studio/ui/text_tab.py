"""Text tab: prompt -> streamed answer coloured by probability, every sampling knob
(with Precise / Balanced / Creative sampling styles), a next-token explainer, the attention
view and logit lens (ui/attention_view.py), 2-4 variants
streamed side by side (seeds, a swept knob, styles, or different models such as a base and
its tuned versions), and the perplexity of a pasted text.

In three parts: layout(studio) builds the components, the module-level handlers turn a
component's values into an action's request (aigc_studio/actions/text.py, the operations the
typed API calls too) and its result into what the components show, and wire() connects them."""

from __future__ import annotations

import dataclasses
import functools

import gradio as gr

from aigc_studio.actions import text as text_actions
from aigc_studio.actions.text import MAX_COLUMNS, MODELS, STYLES, CompareText, ExplainToken, GenerateText
from aigc_studio.params import SAMPLING_STYLES, STYLE_KNOBS, TextParams
from aigc_studio.studio import Studio
from aigc_studio.ui import attention_view, text_grid
from aigc_studio.ui.components import model_dropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import (
    VariantControls, column_updates, knob_controls, knob_updates, sweep_updates, sweep_values, variant_controls,
)
from aigc_studio.ui.page import busy, busy_run, error_box, page_assets, ready
from aigc_studio.ui.recipe_view import model_card, recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import paced
from aigc_studio.ui.token_views import alternatives_markdown, chart_html, column_label, highlighted, legend_colors

KNOB_NAMES = tuple(text_actions.knob_names(TextParams))  # every knob control, in the dataclass's order
EXPLAIN_KNOB_NAMES = tuple(text_actions.explain_knobs(TextParams))
# Where the knob controls sit: these under the prompt's column, seed and greedy in a row, the rest
# (and any knob added to TextParams) in the Advanced accordion, in this order.
MAIN_KNOBS = ("temperature", "top_p", "max_new_tokens")
ROW_KNOBS = ("seed", "greedy")
ADVANCED_ORDER = ("top_k", "min_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size", "stop_sequences",
                  "prompt_mode", "system_prompt")

# ----- the layout -------------------------------------------------------------------------------

@dataclasses.dataclass
class TextLayout:
    """The Text tab's components (layout() builds them; wire() connects them)."""

    tab: gr.Tab
    card: gr.Markdown
    prompt: gr.Textbox
    generate: gr.Button
    stop: gr.Button
    answer: gr.Textbox
    answer_status: gr.Markdown
    coloured: gr.HighlightedText
    alternatives: gr.Markdown
    recipe: gr.Markdown
    recipe_raw: gr.JSON
    model: gr.Dropdown
    style: gr.Radio
    controls: dict  # knob name -> its control, in KNOB_NAMES order
    variants: VariantControls  # side by side: mode, count, knob to sweep, values
    models: gr.Dropdown
    compare: gr.Button
    columns: list
    column_tokens: list
    compare_numbers: gr.JSON
    compare_recipes: gr.Markdown
    compare_recipes_raw: gr.JSON
    grid: text_grid.GridLayout
    position: gr.Number
    top_n: gr.Slider
    explain: gr.Button
    chart: gr.HTML
    explanation: gr.JSON
    inside: attention_view.View
    pasted: gr.Textbox
    score: gr.Button
    perplexity_out: gr.Number
    answer_state: gr.State  # the last answer: {"text", "tokens"} with token ids and probabilities
    compare_state: gr.State  # the last comparison: {"labels", "columns": [tokens...], "diverge_at", "rates"}

    def knobs(self, names=KNOB_NAMES) -> list:
        return [self.controls[name] for name in names]


def layout(studio: Studio) -> TextLayout:
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
                controls = knob_controls(TextParams, MAIN_KNOBS, recommended, prefix="text")
                with gr.Row():
                    controls |= knob_controls(TextParams, ROW_KNOBS, recommended, prefix="text", min_width=120)
                with gr.Accordion("Advanced knobs", open=False, elem_id="text-advanced"):
                    advanced = [*ADVANCED_ORDER, *(n for n in KNOB_NAMES if n not in (*MAIN_KNOBS, *ROW_KNOBS, *ADVANCED_ORDER))]
                    for name in advanced:
                        extra = {"lines": 1} if name == "system_prompt" else {}
                        controls |= knob_controls(TextParams, [name], recommended, prefix="text", **extra)
        with gr.Accordion("Side by side: 2-4 variants of one prompt, streamed together", open=False):
            variants = variant_controls(
                TextParams, used, "text", extra_modes=(STYLES, MODELS),
                info="What differs between the columns (sweeps, styles and models share one seed).")
            variants.values.value = sweep_values(studio.params("text"), variants.knob_name.value)
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
            grid = text_grid.layout(used)
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
        answer_state = gr.State(None)
        compare_state = gr.State(None)
    controls = {name: controls[name] for name in KNOB_NAMES}
    return TextLayout(tab, card, prompt, generate, stop, answer, answer_status, coloured, alternatives, recipe,
                      recipe_raw, model, style, controls, variants, models, compare, columns,
                      column_tokens, compare_numbers, compare_recipes, compare_recipes_raw, grid, position, top_n,
                      explain, chart, explanation, inside, pasted, score, perplexity_out, answer_state, compare_state)


# ----- the handlers: component values -> an action -> what the components show ------------------
# Those that take knobs take them last, in KNOB_NAMES (or EXPLAIN_KNOB_NAMES) order, so a knob
# added to TextParams needs no handler edit.

def knob_values(names, values) -> dict:
    return dict(zip(names, values))


def generate_text(studio: Studio, sessions: Sessions, request: gr.Request | None, prompt, model, *values):
    """Stream (answer, answer state once finished, status line) for prompt."""
    with user_errors():
        chosen = GenerateText(prompt, studio.params("text", model, **knob_values(KNOB_NAMES, values)), model)
        told = ""
        for update in paced(text_actions.generate(studio, chosen, sessions.fresh_stop(request))):
            if update.status.startswith("Note:") and update.status != told:
                # e.g. a server that refused logprobs: said once, beside the answer that streams on
                told = update.status
                gr.Warning(update.status)
            state = None
            if update.result is not None:
                sessions.keep_recipes(request, [update.result.recipe], [update.result.output])
                state = text_actions.answer_state(update)
            # the status line shows loading (and notes) while the run goes on; the last update clears it
            yield update.text, state, "" if update.result is not None else update.status


def explain_next_token(studio: Studio, prompt, answer, position, top_n, model, answer_state, *values) -> dict:
    """The top candidates for one token of the answer (position 0 = the first token after the prompt)
    and their probability raw, after penalties, temperature, top-k, top-p, min-p and typical-p."""
    with user_errors():
        chosen = studio.params("text", model, **knob_values(EXPLAIN_KNOB_NAMES, values))
        request = ExplainToken(prompt, chosen, model, text_actions.answer_ids(answer, answer_state), position, top_n)
        return text_actions.explain(studio, request)


def explain_when_shown(studio: Studio, current, prompt, *rest):
    """Knob moved: update the chart if one is showing (never an error popup while typing)."""
    if not current or not (prompt or "").strip():
        return gr.skip()
    return explain_next_token(studio, prompt, *rest)


def compare_request(studio: Studio, prompt, mode, count, knob_name, values, models, model, knobs) -> CompareText:
    return CompareText(prompt, studio.params("text", model, **knob_values(KNOB_NAMES, knobs)), model, mode, count,
                       knob_name, values, models)


def compare_text(studio: Studio, sessions: Sessions, request: gr.Request | None, prompt, mode, count, knob_name,
                 values, models, model, *knobs):
    """Stream 2-4 variants of one prompt together, token by token in turn, each labelled with
    its settings (or 2-4 models one after another, labelled by model): the column texts, then
    at the end the comparison's state and numbers."""
    with user_errors():
        chosen = compare_request(studio, prompt, mode, count, knob_name, values, models, model, knobs)
        for frame in paced(text_actions.compare(studio, chosen, sessions.fresh_stop(request))):
            numbers = None
            if frame.finished:
                columns = frame.update.columns
                sessions.keep_recipes(request, [c.result.recipe for c in columns], [c.result.output for c in columns])
                numbers = text_actions.column_numbers(frame.finished)
            yield *frame.texts, frame.finished, numbers


def label_columns(studio: Studio, mode, count, knob_name, values, models, model, *knobs) -> list:
    """Show and label the columns a comparison fills, cleared, before it runs."""
    with user_errors():
        chosen = compare_request(studio, "", mode, count, knob_name, values, models, model, knobs)
        return column_updates(text_actions.compare_labels(studio, chosen), MAX_COLUMNS, clear=True)


def perplexity(studio: Studio, text, model=None) -> float:
    """Perplexity of text under the text model: exp of the mean negative log-likelihood per token."""
    with user_errors():
        return text_actions.perplexity(studio, text, model)


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
                     for pairs, label, tokens, rate in zip(columns, state["labels"], state["columns"], state["rates"])]
    return shown_columns + [gr.update(value=None, visible=False)] * (MAX_COLUMNS - len(shown_columns))


def apply_style(studio: Studio, name, model) -> list:
    with user_errors():
        values = studio.sampling_style(name, model)
    return [values[n] for n in STYLE_KNOBS]


def label_from_recipes(sessions: Sessions, request: gr.Request | None):
    return column_updates([r.label for r in sessions.recipes(request)], MAX_COLUMNS, clear=False)


def show_recipes(sessions: Sessions, request: gr.Request | None):
    kept = sessions.recipes(request)
    return recipe_card(kept), recipe_json(kept)


def use_model(studio: Studio, controls: dict, model_id, knob):
    """A newly picked model: its card, its knobs (the Balanced style around its
    recommendation), and the knobs it can sweep."""
    with user_errors():
        spec = studio.model_spec("text", model_id)
        picker, sweep = sweep_updates(studio, "text", model_id, knob)
        return (model_card(spec), "Balanced", *apply_style(studio, "Balanced", model_id),
                *knob_updates(studio, "text", model_id, controls), picker, sweep)


def sweep_for(studio: Studio, knob, model_id, *knobs) -> str:
    with user_errors():
        return sweep_values(studio.params("text", model_id, **knob_values(KNOB_NAMES, knobs)), knob)


def refresh_models(studio: Studio) -> list:
    """Models tuned in the Tune tab join the catalog while the page is open: both pickers list them."""
    return [gr.update(choices=studio.catalog.choices("text"))] * 2


# ----- the events -------------------------------------------------------------------------------

def wire(ui: TextLayout, studio: Studio, sessions: Sessions) -> None:
    """Connect the Text tab's events. Every event is private: the public endpoints are ui/text_api.py."""
    private = {"api_visibility": "private"}
    knobs, explain_knobs = ui.knobs(), ui.knobs(EXPLAIN_KNOB_NAMES)
    style_outputs = ui.knobs(STYLE_KNOBS)

    # Gradio hands gr.Request to a parameter annotated with it, which functools.partial hides:
    # these adapters keep the annotation.
    def generate(request: gr.Request, *inputs):
        yield from generate_text(studio, sessions, request, *inputs)

    def compare(request: gr.Request, *inputs):
        yield from compare_text(studio, sessions, request, *inputs)

    def recipes(request: gr.Request):
        return show_recipes(sessions, request)

    def labels(request: gr.Request):
        return label_from_recipes(sessions, request)

    explain = functools.partial(explain_next_token, studio)
    explain_inputs = [ui.prompt, ui.answer, ui.position, ui.top_n, ui.model, ui.answer_state, *explain_knobs]
    ui.explain.click(explain, inputs=explain_inputs, outputs=ui.explanation, concurrency_id="text", **private)
    # Generate shows "Running…" and waits while a run is in flight (Stop ends it)
    run = busy_run([ui.generate.click, ui.prompt.submit], generate, [ui.prompt, ui.model, *knobs],
                   [ui.answer, ui.answer_state, ui.answer_status], ui.generate, concurrency_id="text")
    for finished in (run.then, run.failure):
        finished(lambda: "", outputs=ui.answer_status, queue=False, **private)
    run.then(recipes, outputs=[ui.recipe, ui.recipe_raw], **private)
    shown_tokens = run.then(show_tokens, inputs=ui.answer_state, outputs=ui.coloured, **private)
    shown_tokens.then(lambda: 0, outputs=ui.position, **private).then(
        explain, inputs=explain_inputs, outputs=ui.explanation, **private)
    selected = ui.coloured.select(select_token, inputs=ui.answer_state, outputs=[ui.alternatives, ui.position],
                                  **private)
    selected.then(explain, inputs=explain_inputs, outputs=ui.explanation, **private)
    # the attention view: from the explainer's token to its attention, and back (ui/attention_view.py)
    back, (follow, follow_inputs, follow_outputs) = attention_view.wire(
        ui.inside, studio, ui.prompt, ui.answer, ui.answer_state, ui.position, ui.controls["system_prompt"],
        ui.controls["prompt_mode"], ui.model)
    back.success(explain, inputs=explain_inputs, outputs=ui.explanation, **private)
    selected.then(follow, inputs=follow_inputs, outputs=follow_outputs, **private)

    gr.on([c.change for c in [*explain_knobs, ui.top_n, ui.model]], functools.partial(explain_when_shown, studio),
          inputs=[ui.explanation, *explain_inputs], outputs=ui.explanation, trigger_mode="always_last", **private)
    ui.explanation.change(chart_html, inputs=[ui.explanation, ui.prompt, ui.answer_state], outputs=ui.chart, **private)
    ui.style.change(functools.partial(apply_style, studio), inputs=[ui.style, ui.model], outputs=style_outputs,
                    **private)
    # models tuned in the Tune tab join the catalog while the page is open: coming back here lists them
    ui.tab.select(functools.partial(refresh_models, studio), outputs=[ui.model, ui.models], queue=False, **private)
    mode = ui.variants.mode
    mode.change(lambda m: gr.update(visible=m == MODELS), mode, ui.models, queue=False, **private)
    # a newly picked model starts at its own recommended knobs (the Balanced style)
    ui.model.input(functools.partial(use_model, studio, ui.controls), inputs=[ui.model, ui.variants.knob_name],
                   outputs=[ui.card, ui.style, *style_outputs, *knobs, ui.variants.knob_name, ui.variants.values], **private)
    # a restore (History) sets the model without model.input: the side-by-side picker follows it here
    ui.model.change(lambda m, k: sweep_updates(studio, "text", m, k), [ui.model, ui.variants.knob_name],
                    [ui.variants.knob_name, ui.variants.values], queue=False, **private)
    ui.variants.knob_name.input(functools.partial(sweep_for, studio), inputs=[ui.variants.knob_name, ui.model, *knobs],
                                outputs=ui.variants.values, **private)

    compare_inputs = [*ui.variants.inputs(), ui.models, ui.model, *knobs]
    labelled = ui.compare.click(lambda: busy(), outputs=ui.compare, queue=False, **private).then(
        functools.partial(label_columns, studio), inputs=compare_inputs, outputs=ui.columns, **private)
    comparing = labelled.success(compare, inputs=[ui.prompt, *compare_inputs],
                                 outputs=[*ui.columns, ui.compare_state, ui.compare_numbers], concurrency_id="text",
                                 **private)
    for finished in (labelled.failure, comparing.then, comparing.failure):
        finished(lambda: ready("Compare"), outputs=ui.compare, queue=False, **private)
    comparing.then(recipes, outputs=[ui.compare_recipes, ui.compare_recipes_raw], **private)
    comparing.then(labels, outputs=ui.columns, **private)
    comparing.then(show_columns, inputs=ui.compare_state, outputs=ui.column_tokens, **private)

    ui.score.click(functools.partial(perplexity, studio), inputs=[ui.pasted, ui.model], outputs=ui.perplexity_out,
                   concurrency_id="text", **private)
    gridding = text_grid.wire(ui.grid, studio, sessions, ui.prompt, ui.model, ui.controls)
    ui.stop.click(sessions.stop, None, None, cancels=[run, comparing, gridding], **private).then(
        lambda: (ready(), ready("Compare"), ready("Make grid"), "", ""),
        outputs=[ui.generate, ui.compare, ui.grid.make, ui.answer_status, ui.grid.status], queue=False, **private)


def build(studio: Studio, sessions: Sessions) -> dict:
    """The Text tab: layout + wire. Returns what the History tab restores: the prompt, the model
    and every knob control by name."""
    ui = layout(studio)
    wire(ui, studio, sessions)
    return {"prompt": ui.prompt, "model": ui.model, "controls": ui.controls}
