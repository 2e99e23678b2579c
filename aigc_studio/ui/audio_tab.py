"""Audio tab: text -> speech (Piper, MMS-TTS, Bark) or music (the studio's own chorale model
offline, MusicGen with the hub preset), every knob, loudness-matched variants side by side with
waveform and spectrogram, WAV or FLAC files carrying their recipe, and recipes restored from
those files. A chorale also shows its piano roll, its MIDI file and the next-note explainer
(the Text tab's chart, over notes).

In three parts: layout(studio) builds the components (AudioLayout), the module-level handlers
call actions/audio.py (the operations /generate_audio, /compare_audio and the music endpoints
run too), and wire() connects them. Handlers that take knobs take them last, in
actions.KNOBS order (the AudioParams fields), so a new knob needs no handler edit."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import gradio as gr

from aigc_studio.actions import audio as actions
from aigc_studio.params import AudioParams
from aigc_studio.studio import Studio, file_view
from aigc_studio.ui import audio_grid
from aigc_studio.ui.components import KnobDropdown, model_dropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.files import keep_or_cache
from aigc_studio.ui.knob_controls import (
    VariantControls, column_updates, knob_controls, knob_updates, sweep_updates, sweep_values, variant_controls,
)
from aigc_studio.ui.page import busy, busy_run, error_box, page_assets, ready
from aigc_studio.ui.recipe_view import model_card, recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions, bind
from aigc_studio.ui.token_views import chart_html

KNOBS = actions.KNOBS  # the knob controls' order in every handler's inputs and in a restore's outputs
MAX_PLAYERS = actions.MAX_PLAYERS
OFFLINE_NOTE = (
    "**Offline, music is the studio's own chorale model:** pick `bach-chorales` in the model list for four-voice "
    "chorales (its text is the piece's title). `musicgen-small` (music from a description), `bark-small` and "
    "`mms-tts-eng` download from the Hugging Face Hub on first use. To use them, restart on a machine with network "
    "with `AIGC_PRESET=hub make run` (or `python -m aigc_studio --preset hub serve`) and pick the model in the list."
)

# Groups of knobs under the basic ones (speed, seed); a group shows when the model reads one of its knobs.
GROUPS = {"Voice": ("noise_scale", "noise_w", "sentence_silence"),
          "Bark": ("semantic_temperature", "coarse_temperature", "fine_temperature"),
          "Music": ("temperature", "top_k", "top_p", "guidance", "duration"),
          "Chorale": ("bars", "tempo", "key", "metre", "timbre", "start")}


@dataclasses.dataclass
class AudioLayout:
    """The Audio tab's components (layout() builds them, wire() connects them)."""

    card: gr.Markdown
    prompt: gr.Textbox
    generate: gr.Button
    audio: gr.Audio
    view: gr.Image
    recipe: gr.Markdown
    recipe_raw: gr.JSON
    music_view: gr.Column
    roll: gr.Image
    midi: gr.File
    model: KnobDropdown
    controls: dict  # knob name -> control, every AudioParams field
    groups: dict  # group title -> its accordion
    start_midi: gr.File
    file_format: KnobDropdown
    upload: gr.File
    explainer_box: gr.Accordion
    position: gr.Number
    top_n: gr.Slider
    explain: gr.Button
    chart: gr.HTML
    variants: VariantControls  # side by side: mode, count, knob to sweep, values
    compare: gr.Button
    players: list
    views: list
    compare_recipes: gr.Markdown
    compare_recipes_raw: gr.JSON
    grid: audio_grid.GridLayout

    def knob_inputs(self) -> list:
        return [self.controls[name] for name in KNOBS]


def layout(studio: Studio) -> AudioLayout:
    spec = studio.model_spec("audio")
    used = studio.knobs_used("audio")
    chorale = spec.kind == "chorales"
    shown = dict(recommended=spec.defaults, used=used, prefix="audio")
    with gr.Tab("Audio", id="audio"):
        page_assets()
        card = gr.Markdown(model_card(spec))
        if studio.preset == "offline":
            gr.Markdown(OFFLINE_NOTE, elem_id="audio-offline-note")
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Text", lines=3, elem_id="audio-prompt",
                                    placeholder="What the voice should say (or, for MusicGen, the music to make).")
                generate = gr.Button("Generate", variant="primary", elem_id="audio-generate")
                error_box("audio-generate")
                # format=None: files pass through as written (FLAC stays FLAC, the recipe stays in it).
                audio = gr.Audio(label="Audio", type="filepath", format=None, elem_id="audio-output")
                view = gr.Image(label="Waveform and spectrogram", type="pil", interactive=False, show_label=False,
                                elem_id="audio-view")
                recipe, recipe_raw = recipe_view("Recipe (embedded in the WAV/FLAC)")
                with gr.Column(visible=chorale, elem_id="audio-music") as music_view:
                    roll = gr.Image(label="Piano roll", type="pil", interactive=False, elem_id="audio-piano-roll")
                    midi = gr.File(label="MIDI file (carries the recipe)", interactive=False, elem_id="audio-midi")
            with gr.Column(scale=2):
                model = model_dropdown(studio.catalog.choices("audio"), spec.id, elem_id="audio-model")
                controls = knob_controls(AudioParams, ("speed", "seed"), **shown)
                groups = {}
                for title, names in GROUPS.items():
                    with gr.Accordion(f"{title} knobs", open=title in ("Voice", "Chorale"),
                                      visible=any(n in used for n in names),
                                      elem_id=f"audio-{title.lower()}-knobs") as groups[title]:
                        controls.update(knob_controls(AudioParams, [n for n in names if n != "start"], **shown))
                        if title == "Chorale":
                            controls.update(knob_controls(AudioParams, ["start"], **shown, lines=4, max_lines=8))
                            start_midi = gr.File(label="Start from a MIDI file: a melody to harmonise, or four "
                                                       "voices to continue (fills start, key, metre and bars)",
                                                 file_types=[".mid", ".midi"], elem_id="audio-start-midi")
                with gr.Accordion("Output", open=False):
                    controls.update(knob_controls(AudioParams, ["gain_db"], prefix="audio"))
                    file_format = KnobDropdown(list(actions.FILE_FORMATS), value="wav", label="file format",
                                               info="FLAC is lossless and smaller; both carry the recipe.",
                                               knob_name="file_format")
                upload = gr.File(label="Load a studio WAV/FLAC to restore its recipe", file_types=[".wav", ".flac"],
                                 elem_id="audio-upload")
        with gr.Accordion("Why this note? The next-note distribution at each sampling stage", open=True,
                          visible=chorale, elem_id="audio-explainer-box") as explainer_box:
            gr.Markdown("The chorale model is a language model over notes: each note slot is drawn exactly as a text "
                        "token is, through the same sampling stages (the range and voice-leading masks act before them). The chart is "
                        "the Text tab's, for the last piece generated here, with the knobs that drew it.")
            with gr.Row():
                position = gr.Number(value=0, precision=0, minimum=0, label="note slot", elem_id="audio-note-position",
                                     info="4 per eighth note, in the order soprano, alto, tenor, bass: 0 = the "
                                          "soprano's first eighth, 5 = the alto's second.")
                top_n = gr.Slider(1, 20, value=8, step=1, label="candidates shown")
                explain = gr.Button("Explain", elem_id="audio-explain")
            error_box("audio-explain")
            chart = gr.HTML(elem_id="audio-explainer")
        with gr.Accordion("Side by side: 2-4 variants of one text, loudness-matched", open=False):
            gr.Markdown("Each variant plays at the same loudness (integrated LUFS, ITU-R BS.1770-4), so louder never "
                        "sounds better by itself; the gain used is in each label and recipe (`gain_db`).")
            variants = variant_controls(AudioParams, used, "audio")
            if "speed" in used:
                variants.knob_name.value, variants.values.value = "speed", "0.8, 1.0, 1.4"
            compare = gr.Button("Compare", elem_id="audio-compare")
            error_box("audio-compare")
            players, views = [], []
            with gr.Row():
                for i in range(MAX_PLAYERS):
                    with gr.Column(min_width=240):
                        players.append(gr.Audio(label=f"Variant {i + 1}", type="filepath", format=None,
                                                elem_id=f"audio-variant-{i + 1}"))
                        views.append(gr.Image(label=f"Variant {i + 1}", type="pil", interactive=False, show_label=False,
                                              elem_id=f"audio-variant-view-{i + 1}"))
            compare_recipes, compare_recipes_raw = recipe_view("Recipes")
            # the X/Y grid (ui/audio_grid.py), nested here closed: the page at first load is no taller
            grid_parts = audio_grid.layout(used)
    return AudioLayout(card, prompt, generate, audio, view, recipe, recipe_raw, music_view, roll, midi, model, controls,
                       groups, start_midi, file_format, upload, explainer_box, position, top_n, explain, chart, variants,
                       compare, players, views, compare_recipes, compare_recipes_raw,
                       grid_parts)


# ----- helpers -------------------------------------------------------------------------------------------

def kept_or_shown(studio: Studio, result, file_format: str):
    """The kept file's path; when the output folder cannot be written (a full disk), the
    audio itself, played but not kept, with a warning that says so."""
    return keep_or_cache(lambda: str(studio.save(result, file_format)), lambda: result.output)


def keep(sessions: Sessions, request, results: list, shown: list) -> None:
    """This session's last results: their recipes (and History entries) and their kept files."""
    sessions.keep_recipes(request, [r.recipe for r in results])
    sessions.keep(request, "audio_files", [p for p in shown if isinstance(p, str)])


def player_label(recipe) -> str:
    """A variant's label with the gain it was played at, e.g. 'speed=1.4 · gain +2.1 dB'."""
    gain = float(recipe.params.get("gain_db", 0.0))
    label = recipe.label or f"seed={recipe.params.get('seed')}"
    return f"{label} · gain {gain:+.1f} dB"


def explainer_html(studio: Studio, recipe, position, top_n) -> str:
    """The Text tab's explainer chart for one note slot of the chorale a recipe made, with the
    knobs that drew it, under a heading that says where the slot is."""
    asked = actions.ExplainNote(recipe.prompt, position, top_n, recipe.model_id, recipe.params)
    explanation = actions.explain_note(studio, asked)
    return (f'<p class="audio-note-slot"><b>Note slot {asked.position}: {actions.note_place(studio, asked)}</b></p>'
            + chart_html(dataclasses.asdict(explanation)))




# ----- handlers ------------------------------------------------------------------------------------------

def generate_audio(studio: Studio, sessions: Sessions, request: gr.Request | None, prompt, model, file_format,
                   *knob_values):
    """Speech (or music) for prompt; the path of a WAV or FLAC carrying its recipe."""
    with user_errors():
        asked = actions.GenerateAudio(prompt, model, dict(zip(KNOBS, knob_values)), file_format)
        result = actions.generate(studio, asked)
        path = kept_or_shown(studio, result, asked.file_format)
        keep(sessions, request, [result], [path])
        return path


def compare_audio(studio: Studio, sessions: Sessions, request: gr.Request | None, prompt, mode, count, knob_name,
                  values, model, file_format, *knob_values) -> list:
    """2-4 labelled variants as players, played at one loudness (unless the gain itself is
    swept); each file's recipe records the gain it got."""
    with user_errors():
        asked = actions.CompareAudio(prompt, mode, count, knob_name, values, model, dict(zip(KNOBS, knob_values)),
                                     file_format)
        results = actions.compare(studio, asked)
        paths = [kept_or_shown(studio, r, asked.file_format) for r in results]
        keep(sessions, request, results, paths)
        return paths + [None] * (MAX_PLAYERS - len(paths))


def label_players(studio: Studio, prompt, mode, count, knob_name, values, model, file_format, *knob_values) -> list:
    """The players labelled and emptied, and the views shown empty, before a compare runs
    (the inputs are compare_audio's)."""
    with user_errors():
        asked = actions.CompareAudio(prompt, mode, count, knob_name, values, model, dict(zip(KNOBS, knob_values)),
                                     file_format)
        labels = actions.compare_labels(studio, asked)
    shown = [gr.update(value=None, visible=True)] * len(labels)
    return column_updates(labels, MAX_PLAYERS, clear=True) + shown + [gr.update(value=None, visible=False)] * (
        MAX_PLAYERS - len(labels))


def label_from_recipes(sessions: Sessions, request: gr.Request) -> list:
    return column_updates([player_label(r) for r in sessions.recipes(request)], MAX_PLAYERS, clear=False)


def show_recipes(sessions: Sessions, request: gr.Request) -> tuple:
    kept = sessions.recipes(request)
    return recipe_card(kept), recipe_json(kept)


def show_view(sessions: Sessions, request: gr.Request):
    files, kept = sessions.kept(request, "audio_files", []), sessions.recipes(request)
    return file_view(files[0], player_label(kept[0])) if files and kept else None


def show_views(sessions: Sessions, request: gr.Request) -> list:
    files, kept = sessions.kept(request, "audio_files", []), sessions.recipes(request)
    pictures = [file_view(path, player_label(r)) for path, r in zip(files, kept)]
    return [gr.update(value=p, visible=True) for p in pictures] + [gr.update(value=None, visible=False)] * (
        MAX_PLAYERS - len(pictures))


def show_music(studio: Studio, sessions: Sessions, request: gr.Request) -> tuple:
    """The piano roll, the MIDI file and the first note's explanation of a chorale just made."""
    files, kept = sessions.kept(request, "audio_files", []), sessions.recipes(request)
    if not kept or not actions.is_chorale_model(studio, kept[0].model_id):
        return None, None, ""
    with user_errors():
        roll_picture, midi_path = actions.chorale_views(studio, kept[0], files[0] if files else None)
        return roll_picture, midi_path, explainer_html(studio, kept[0], 0, 8)


def explain_note(studio: Studio, sessions: Sessions, request: gr.Request, position, top_n) -> str:
    """The next-note chart for one slot of the last chorale generated in this tab."""
    kept = sessions.recipes(request)
    with user_errors():
        if not kept or not actions.is_chorale_model(studio, kept[0].model_id):
            raise ValueError("position: generate a chorale (model bach-chorales) first; the explainer shows its notes")
        return explainer_html(studio, kept[0], position, top_n)


def restore_recipe(studio: Studio, file) -> list:
    """Prompt, model, every knob and the file format from a studio WAV/FLAC's recipe."""
    if file is None:
        return [gr.update()] * (len(KNOBS) + 3)
    with user_errors():
        saved, chosen, file_format = actions.restore(studio, file)
    gr.Info(f"Restored the recipe of a {saved.model_id} recording (seed {chosen.seed}).")
    return [saved.prompt, saved.model_id, *[getattr(chosen, name) for name in KNOBS], file_format]


def start_from_midi(file, bars) -> tuple:
    """start, key, metre and bars from an uploaded MIDI file (bars: the start's, and 4 more to continue four voices)."""
    if file is None:
        return (gr.update(),) * 4
    with user_errors():
        start = actions.start_from_midi(Path(file).read_bytes())
    wanted = start.piece_bars(bars)
    voices = "four voices to continue" if start.continues else "a melody to harmonise"
    gr.Info(f"Start: {voices}, {start.bars} bars, heard in {start.key} ({start.metre}); the piece is {wanted} bars.")
    return start.start, start.key, start.metre, wanted


def use_model(studio: Studio, controls: dict, model_id, knob) -> list:
    """The model's card, its knobs (shown when it reads them, at its recommended
    values), its knob groups and the knobs side by side can sweep."""
    with user_errors():
        chosen_spec = studio.model_spec("audio", model_id)
        names = studio.knobs_used("audio", model_id)
        picker, sweep = sweep_updates(studio, "audio", model_id, knob)
    music = actions.is_chorale_model(studio, model_id)
    return [model_card(chosen_spec), *knob_updates(studio, "audio", model_id, controls),
            *[gr.update(visible=any(n in names for n in group)) for group in GROUPS.values()], picker, sweep,
            gr.update(visible=music), gr.update(visible=music)]


def sweep_for(studio: Studio, knob, model_id, *knob_values) -> str:
    with user_errors():
        return sweep_values(studio.params("audio", model_id, **dict(zip(KNOBS, knob_values))), knob)


# ----- events ---------------------------------------------------------------------------------------------

def wire(ui: AudioLayout, studio: Studio, sessions: Sessions) -> dict:
    """The tab's events; returns the History tab's hook (restore a file, and the components it fills)."""
    knob_inputs = ui.knob_inputs()
    private = dict(api_visibility="private")
    run = busy_run([ui.generate.click, ui.prompt.submit], bind(generate_audio, studio, sessions),
                   [ui.prompt, ui.model, ui.file_format, *knob_inputs], ui.audio, ui.generate,
                   concurrency_id="audio")  # public: ui/audio_api.py
    run.then(bind(show_recipes, sessions), outputs=[ui.recipe, ui.recipe_raw], **private)
    run.then(bind(show_view, sessions), outputs=ui.view, **private)
    run.then(bind(show_music, studio, sessions), outputs=[ui.roll, ui.midi, ui.chart], **private)
    ui.explain.click(bind(explain_note, studio, sessions), inputs=[ui.position, ui.top_n], outputs=ui.chart,
                     concurrency_id="audio", **private)  # public: ui/music_api.py

    compare_inputs = [ui.prompt, *ui.variants.inputs(), ui.model, ui.file_format, *knob_inputs]
    labelled = ui.compare.click(lambda: busy(), outputs=ui.compare, queue=False, **private).then(
        functools.partial(label_players, studio), inputs=compare_inputs, outputs=ui.players + ui.views, **private)
    labelled.failure(lambda: ready("Compare"), outputs=ui.compare, queue=False, **private)
    comparing = labelled.success(bind(compare_audio, studio, sessions), inputs=compare_inputs,
                                 outputs=ui.players, concurrency_id="audio", **private)
    for finished in (comparing.then, comparing.failure):
        finished(lambda: ready("Compare"), outputs=ui.compare, queue=False, **private)
    comparing.then(bind(show_recipes, sessions), outputs=[ui.compare_recipes, ui.compare_recipes_raw],
                   **private)
    comparing.then(bind(label_from_recipes, sessions), outputs=ui.players, concurrency_id="audio",
                   **private)
    comparing.then(bind(show_views, sessions), outputs=ui.views, **private)

    restored = [ui.prompt, ui.model, *knob_inputs, ui.file_format]
    ui.upload.upload(functools.partial(restore_recipe, studio), ui.upload, restored, api_name="restore_audio_recipe")
    chorale = [ui.controls[name] for name in ("start", "key", "metre", "bars")]
    ui.start_midi.upload(start_from_midi, [ui.start_midi, ui.controls["bars"]], chorale,
                         **private)  # public: ui/music_api.py
    sweep = ui.variants
    ui.model.input(functools.partial(use_model, studio, ui.controls), [ui.model, sweep.knob_name],
                   [ui.card, *ui.controls.values(), *ui.groups.values(), sweep.knob_name, sweep.values, ui.music_view,
                    ui.explainer_box], **private)
    # a restore (recipe file, History) sets the model without model.input: the sweep picker follows it here
    ui.model.change(lambda m, k: sweep_updates(studio, "audio", m, k), [ui.model, sweep.knob_name],
                    [sweep.knob_name, sweep.values], queue=False, **private)
    sweep.knob_name.input(functools.partial(sweep_for, studio), [sweep.knob_name, ui.model, *knob_inputs], sweep.values,
                          **private)
    audio_grid.wire(ui.grid, studio, sessions, ui.prompt, ui.model, knob_inputs)
    return {"restore": lambda file, request: restore_recipe(studio, file), "outputs": restored}  # the History tab


def build(studio: Studio, sessions: Sessions) -> dict:
    """The Audio tab: layout and events; returns the History tab's hook."""
    return wire(layout(studio), studio, sessions)
