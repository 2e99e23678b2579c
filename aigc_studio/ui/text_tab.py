"""Text tab: prompt -> streamed answer, every sampling knob, variants side by side."""

from __future__ import annotations

import gradio as gr

from aigc_studio.params import TextParams
from aigc_studio.studio import Studio
from aigc_studio.ui.widgets import (
    Sessions, column_updates, control, make_variants, model_card, user_errors, variant_controls, variant_labels,
)

MAX_COLUMNS = 4
KNOB_NAMES = ("temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty", "seed", "greedy")


def build(studio: Studio, sessions: Sessions) -> None:
    spec = studio.model_spec("text")
    with gr.Tab("Text", id="text"):
        gr.Markdown(model_card(spec))
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="text-prompt", placeholder="Ask anything, e.g. Write a haiku about rain.")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="text-generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="text-stop")
                answer = gr.Textbox(label="Answer", lines=10, buttons=["copy"], elem_id="text-answer")
                recipe = gr.JSON(label="Recipe (model, knobs, seed, versions)", open=False)
            with gr.Column(scale=2):
                temperature = control(TextParams, "temperature")
                top_k = control(TextParams, "top_k")
                top_p = control(TextParams, "top_p")
                max_new_tokens = control(TextParams, "max_new_tokens")
                repetition_penalty = control(TextParams, "repetition_penalty")
                seed = control(TextParams, "seed")
                greedy = control(TextParams, "greedy")
                model = gr.Dropdown(studio.catalog.choices("text"), value=spec.id, label="model")
        with gr.Accordion("Side by side: 2-4 variants of one prompt", open=False):
            mode, count, knob_name, values = variant_controls(TextParams)
            compare = gr.Button("Compare", elem_id="text-compare")
            with gr.Row():
                columns = [gr.Textbox(label=f"Variant {i + 1}", lines=10, elem_id=f"text-variant-{i}") for i in range(MAX_COLUMNS)]
            compare_recipes = gr.JSON(label="Recipes", open=False)

    knob_inputs = [temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed, greedy]

    def generate_text(prompt, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed, greedy,
                      model=None, request: gr.Request = None):
        """Stream an answer to prompt from the text model (default: the preset's)."""
        with user_errors():
            chosen = studio.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p,
                                   max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                   seed=seed, greedy=greedy)
            for update in studio.text_stream(prompt, chosen, model, stop=sessions.fresh_stop(request)):
                if update.result is not None:
                    sessions.keep_recipes(request, [update.result.recipe])
                yield update.text or update.status

    def compare_text(prompt, mode, count, knob_name, values, temperature, top_k, top_p, max_new_tokens,
                     repetition_penalty, seed, greedy, model=None, request: gr.Request = None):
        """Stream 2-4 variants of one prompt, column by column, each labelled with its settings."""
        with user_errors():
            base = studio.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p,
                                 max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                 seed=seed, greedy=greedy)
            variants = make_variants(base, mode, count, knob_name, values)
            texts = [""] * MAX_COLUMNS
            stop = sessions.fresh_stop(request)
            kept = []
            for i, (label, variant) in enumerate(variants):
                for update in studio.text_stream(prompt, variant, model, stop=stop, label=label):
                    texts[i] = update.text or update.status
                    if update.result is not None:
                        kept.append(update.result.recipe)
                    yield texts
                if stop.is_set():
                    break
            sessions.keep_recipes(request, kept)

    def label_columns(mode, count, knob_name, values, *knob_values):
        with user_errors():
            base = studio.params("text", None, **dict(zip(KNOB_NAMES, knob_values)))
            return column_updates(variant_labels(base, mode, count, knob_name, values), MAX_COLUMNS, clear=True)

    def label_from_recipes(request: gr.Request):
        return column_updates([r.label for r in sessions.recipes(request)], MAX_COLUMNS, clear=False)

    def show_recipes(request: gr.Request):
        return [r.__dict__ for r in sessions.recipes(request)]

    run = gr.on([generate.click, prompt.submit], generate_text, inputs=[prompt, *knob_inputs, model],
                outputs=answer, api_name="generate_text")
    run.then(show_recipes, outputs=recipe, api_visibility="private")
    labelled = compare.click(label_columns, inputs=[mode, count, knob_name, values, *knob_inputs], outputs=columns,
                             api_visibility="private")
    comparing = labelled.success(compare_text, inputs=[prompt, mode, count, knob_name, values, *knob_inputs, model],
                              outputs=columns, api_name="compare_text")
    comparing.then(show_recipes, outputs=compare_recipes, api_visibility="private")
    comparing.then(label_from_recipes, outputs=columns, api_visibility="private")
    stop.click(sessions.stop, None, None, cancels=[run, comparing], api_visibility="private")
