"""Audio tab: text -> speech (or music on the hub preset), knobs, variants side by side."""

from __future__ import annotations

import gradio as gr

from aigc_studio.params import AudioParams
from aigc_studio.studio import Studio
from aigc_studio.ui.widgets import (
    Sessions, column_updates, control, make_variants, model_card, user_errors, variant_controls, variant_labels,
)

SPEECH_KNOBS = ("speed", "seed", "noise_scale", "noise_w", "sentence_silence")
MUSIC_KNOBS = ("temperature", "top_k", "top_p", "guidance", "duration")
MAX_PLAYERS = 4


def build(studio: Studio, sessions: Sessions) -> None:
    spec = studio.model_spec("audio")
    with gr.Tab("Audio", id="audio"):
        gr.Markdown(model_card(spec))
        if studio.preset == "offline":
            gr.Markdown("Music (MusicGen) needs the hub preset: start with `AIGC_PRESET=hub make run` on a machine with network.")
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Text", lines=3, elem_id="audio-prompt", placeholder="Type what the voice should say.")
                generate = gr.Button("Generate", variant="primary", elem_id="audio-generate")
                audio = gr.Audio(label="Audio", type="filepath", format="wav", elem_id="audio-output")
                recipe = gr.JSON(label="Recipe (embedded in the WAV)", open=False)
            with gr.Column(scale=2):
                controls = {name: control(AudioParams, name) for name in SPEECH_KNOBS}
                with gr.Accordion("Music knobs (MusicGen)", open=False):
                    controls.update({name: control(AudioParams, name) for name in MUSIC_KNOBS})
                model = gr.Dropdown(studio.catalog.choices("audio"), value=spec.id, label="model")
        with gr.Accordion("Side by side: 2-4 variants of one text", open=False):
            mode, count, knob_name, values = variant_controls(AudioParams)
            knob_name.value, values.value = "speed", "0.8, 1.0, 1.4"
            compare = gr.Button("Compare", elem_id="audio-compare")
            with gr.Row():
                players = [gr.Audio(label=f"Variant {i + 1}", type="filepath", format="wav") for i in range(MAX_PLAYERS)]
            compare_recipes = gr.JSON(label="Recipes", open=False)

    knob_names = SPEECH_KNOBS + MUSIC_KNOBS

    def generate_audio(prompt, speed, seed, noise_scale=None, noise_w=None, sentence_silence=None, temperature=None,
                       top_k=None, top_p=None, guidance=None, duration=None, model=None, request: gr.Request = None):
        """Speech (or music) for prompt; returns the path of a WAV carrying its recipe."""
        values = dict(speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w, sentence_silence=sentence_silence,
                      temperature=temperature, top_k=top_k, top_p=top_p, guidance=guidance, duration=duration)
        with user_errors():
            result = studio.audio(prompt, model, **values)
            sessions.keep_recipes(request, [result.recipe])
            return str(studio.save(result))

    def compare_audio(prompt, mode, count, knob_name, values, speed, seed, noise_scale, noise_w, sentence_silence,
                      temperature, top_k, top_p, guidance, duration, model=None, request: gr.Request = None):
        """2-4 labelled variants as WAV players."""
        with user_errors():
            base = studio.params("audio", model, speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                                 sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                                 guidance=guidance, duration=duration)
            variants = make_variants(base, mode, count, knob_name, values)
            results = [studio.audio(prompt, model, label=label, params=p) for label, p in variants]
            sessions.keep_recipes(request, [r.recipe for r in results])
            paths = [str(studio.save(r)) for r in results]
            return paths + [None] * (MAX_PLAYERS - len(paths))

    def label_players(mode, count, knob_name, values, *knob_values):
        with user_errors():
            base = studio.params("audio", None, **dict(zip(knob_names, knob_values)))
            return column_updates(variant_labels(base, mode, count, knob_name, values), MAX_PLAYERS, clear=True)

    def label_from_recipes(request: gr.Request):
        return column_updates([r.label for r in sessions.recipes(request)], MAX_PLAYERS, clear=False)

    def show_recipes(request: gr.Request):
        return [r.__dict__ for r in sessions.recipes(request)]

    knob_inputs = [controls[name] for name in knob_names]
    run = gr.on([generate.click, prompt.submit], generate_audio, inputs=[prompt, *knob_inputs, model],
                outputs=audio, api_name="generate_audio")
    run.then(show_recipes, outputs=recipe, api_visibility="private")
    labelled = compare.click(label_players, inputs=[mode, count, knob_name, values, *knob_inputs], outputs=players,
                             api_visibility="private")
    comparing = labelled.success(compare_audio, inputs=[prompt, mode, count, knob_name, values, *knob_inputs, model],
                              outputs=players, api_name="compare_audio")
    comparing.then(show_recipes, outputs=compare_recipes, api_visibility="private")
    comparing.then(label_from_recipes, outputs=players, api_visibility="private")
