"""Audio tab: text -> speech (Piper, MMS-TTS, Bark) or music (the studio's own chorale model
offline, MusicGen with the hub preset), every knob, loudness-matched variants side by side with
waveform and spectrogram, WAV or FLAC files carrying their recipe, and recipes restored from
those files. A chorale also shows its piano roll, its MIDI file and the next-note explainer
(the Text tab's chart, over notes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr

from aigc_studio.audio_views import piano_roll_image
from aigc_studio.params import AudioParams
from aigc_studio.studio import Studio, file_view, read_recipe
from aigc_studio.ui import audio_grid
from aigc_studio.actions.variants import check_sweep, make_variants, variant_labels
from aigc_studio.ui.components import KnobDropdown, model_dropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import (
    column_updates, control, knob_updates, sweep_updates, sweep_values, variant_controls,
)
from aigc_studio.ui.page import busy, error_box, page_assets, ready
from aigc_studio.ui.recipe_view import model_card, recipe_card, recipe_json, recipe_view
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.files import keep_or_cache

SPEECH_KNOBS = ("speed", "seed", "noise_scale", "noise_w", "sentence_silence")
MUSIC_KNOBS = ("temperature", "top_k", "top_p", "guidance", "duration")
BARK_KNOBS = ("semantic_temperature", "coarse_temperature", "fine_temperature")
CHORALE_KNOBS = ("bars", "tempo", "key", "metre", "timbre", "start")
# The API order: the knobs shipped first, then `model`, then the knobs added later (the
# chorale knobs after file_format).
FIRST_KNOBS, LATER_KNOBS = SPEECH_KNOBS + MUSIC_KNOBS, BARK_KNOBS + ("gain_db",)
KNOBS = FIRST_KNOBS + LATER_KNOBS + CHORALE_KNOBS
FILE_FORMATS = ("wav", "flac")
MAX_PLAYERS = 4
OFFLINE_NOTE = (
    "**Offline, music is the studio's own chorale model:** pick `bach-chorales` in the model list for four-voice "
    "chorales (its text is the piece's title). `musicgen-small` (music from a description), `bark-small` and "
    "`mms-tts-eng` download from the Hugging Face Hub on first use. To use them, restart on a machine with network "
    "with `AIGC_PRESET=hub make run` (or `python -m aigc_studio --preset hub serve`) and pick the model in the list."
)


# Groups of knobs under the basic ones (speed, seed); a group shows when the model reads one of its knobs.
GROUPS = {"Voice": ("noise_scale", "noise_w", "sentence_silence"), "Bark": BARK_KNOBS, "Music": MUSIC_KNOBS,
          "Chorale": CHORALE_KNOBS}


def kept_or_shown(studio: Studio, result, file_format: str):
    """The kept file's path; when the output folder cannot be written (a full disk), the
    audio itself, played but not kept, with a warning that says so."""
    return keep_or_cache(lambda: str(studio.save(result, file_format)), lambda: result.output)


def is_chorale_model(studio: Studio, model_id: str | None) -> bool:
    """Whether the model composes notes (the chorale model) rather than audio alone."""
    spec = studio.catalog.specs.get(model_id or "")
    return spec is not None and spec.kind == "chorales"


def music_views(studio: Studio, recipe, audio_path) -> tuple:
    """(piano roll picture, MIDI file path or None) of the chorale a recipe made."""
    piece, _, _ = studio.chorale(recipe.prompt, recipe.model_id, **recipe.params)
    title = f"{recipe.prompt} · {piece.key} · {piece.metre} · seed {recipe.params.get('seed')}"
    roll = piano_roll_image(piece.notes(), piece.step_seconds, title, bar_steps=8 if piece.metre == "4/4" else 6)
    midi = Path(audio_path).with_suffix(".mid") if isinstance(audio_path, str) else None
    return roll, (str(midi) if midi is not None and midi.exists() else None)


def explainer_html(studio: Studio, recipe, position, top_n) -> str:
    """The Text tab's explainer chart for one note slot of the chorale a recipe made, with the
    knobs that drew it, under a heading that says where the slot is."""
    from aigc_studio import music
    from aigc_studio.params import whole_number
    from aigc_studio.ui.text_tab import chart_html

    slot = whole_number("position", position, 0)
    explanation = studio.explain_note(recipe.prompt, slot, recipe.model_id, top_n=whole_number("top_n", top_n, 8),
                                      **recipe.params)
    piece, _, _ = studio.chorale(recipe.prompt, recipe.model_id, **recipe.params)
    where = music.describe_position(piece, slot)
    return f'<p class="audio-note-slot"><b>Note slot {slot}: {where}</b></p>' + chart_html(dataclasses.asdict(explanation))


def build(studio: Studio, sessions: Sessions) -> None:
    spec = studio.model_spec("audio")
    used = studio.knobs_used("audio")
    chorale = spec.kind == "chorales"
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
                controls = {name: control(AudioParams, name, spec.defaults.get(name), elem_id=f"audio-{name}",
                                          visible=name in used) for name in ("speed", "seed")}
                groups = {}
                for title, names in GROUPS.items():
                    with gr.Accordion(f"{title} knobs", open=title in ("Voice", "Chorale"), visible=any(n in used for n in names),
                                      elem_id=f"audio-{title.lower()}-knobs") as groups[title]:
                        controls.update({name: control(AudioParams, name, spec.defaults.get(name),
                                                       elem_id=f"audio-{name}", visible=name in used,
                                                       **({"lines": 4, "max_lines": 8} if name == "start" else {}))
                                         for name in names})
                        if title == "Chorale":
                            start_midi = gr.File(label="Start from a MIDI file: a melody to harmonise, or four "
                                                       "voices to continue (fills start, key, metre and bars)",
                                                 file_types=[".mid", ".midi"], elem_id="audio-start-midi")
                with gr.Accordion("Output", open=False):
                    controls["gain_db"] = control(AudioParams, "gain_db", elem_id="audio-gain_db")
                    file_format = KnobDropdown(list(FILE_FORMATS), value="wav", label="file format",
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
            mode, count, knob_name, values = variant_controls(AudioParams, used, "audio")
            if "speed" in used:
                knob_name.value, values.value = "speed", "0.8, 1.0, 1.4"
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
            grid_parts = audio_grid.build(studio, used)

    def values_of(knob_values) -> dict:
        return dict(zip(KNOBS, knob_values))

    def generate_audio(prompt, speed, seed, noise_scale=None, noise_w=None, sentence_silence=None, temperature=None,
                       top_k=None, top_p=None, guidance=None, duration=None, model=None, semantic_temperature=None,
                       coarse_temperature=None, fine_temperature=None, gain_db=None, file_format="wav",
                       bars=None, tempo=None, key=None, metre=None, timbre=None, start=None, request: gr.Request = None):
        """Speech (or music) for prompt; returns the path of a WAV or FLAC carrying its recipe."""
        values = dict(speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w, sentence_silence=sentence_silence,
                      temperature=temperature, top_k=top_k, top_p=top_p, guidance=guidance, duration=duration,
                      semantic_temperature=semantic_temperature, coarse_temperature=coarse_temperature,
                      fine_temperature=fine_temperature, gain_db=gain_db, bars=bars, tempo=tempo, key=key, metre=metre,
                      timbre=timbre, start=start)
        with user_errors():
            chosen_format = check_format(file_format)
            result = studio.audio(prompt, model, **values)
            path = kept_or_shown(studio, result, chosen_format)
            sessions.keep_recipes(request, [result.recipe])
            sessions.keep(request, "audio_files", [p for p in [path] if isinstance(p, str)])
            return path

    def compare_audio(prompt, mode, count, knob_name, values, speed, seed, noise_scale, noise_w, sentence_silence,
                      temperature, top_k, top_p, guidance, duration, model=None, semantic_temperature=None,
                      coarse_temperature=None, fine_temperature=None, gain_db=None, file_format="wav", bars=None,
                      tempo=None, key=None, metre=None, timbre=None, start=None, request: gr.Request = None):
        """2-4 labelled variants as players, played at one loudness (unless the gain
        itself is swept); each file's recipe records the gain it got."""
        with user_errors():
            chosen_format = check_format(file_format)
            base = studio.params("audio", model, speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                                 sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                                 guidance=guidance, duration=duration, semantic_temperature=semantic_temperature,
                                 coarse_temperature=coarse_temperature, fine_temperature=fine_temperature,
                                 gain_db=gain_db, bars=bars, tempo=tempo, key=key, metre=metre, timbre=timbre,
                                 start=start)
            check_sweep(studio, "audio", model, mode, knob_name)  # before parsing values meant for a knob it ignores
            variants = make_variants(base, mode, count, knob_name, values)
            results = studio.audio_variants(prompt, variants, model)
            paths = [kept_or_shown(studio, r, chosen_format) for r in results]
            sessions.keep_recipes(request, [r.recipe for r in results])
            sessions.keep(request, "audio_files", [p for p in paths if isinstance(p, str)])
            return paths + [None] * (MAX_PLAYERS - len(paths))

    def label_players(mode, count, knob_name, values, model, *knob_values):
        with user_errors():
            base = studio.params("audio", model, **values_of(knob_values))
            check_sweep(studio, "audio", model, mode, knob_name)
            labels = variant_labels(base, mode, count, knob_name, values)
        shown = [gr.update(value=None, visible=True)] * len(labels)
        return column_updates(labels, MAX_PLAYERS, clear=True) + shown + [gr.update(value=None, visible=False)] * (
            MAX_PLAYERS - len(labels))

    def label_from_recipes(request: gr.Request):
        return column_updates([player_label(r) for r in sessions.recipes(request)], MAX_PLAYERS, clear=False)

    def show_recipes(request: gr.Request):
        kept = sessions.recipes(request)
        return recipe_card(kept), recipe_json(kept)

    def show_view(request: gr.Request):
        files, kept = sessions.kept(request, "audio_files", []), sessions.recipes(request)
        return file_view(files[0], player_label(kept[0])) if files and kept else None

    def show_music(request: gr.Request):
        """The piano roll, the MIDI file and the first note's explanation of a chorale just made."""
        files, kept = sessions.kept(request, "audio_files", []), sessions.recipes(request)
        if not kept or not is_chorale_model(studio, kept[0].model_id):
            return None, None, ""
        with user_errors():
            roll_picture, midi_path = music_views(studio, kept[0], files[0] if files else None)
            return roll_picture, midi_path, explainer_html(studio, kept[0], 0, 8)

    def explain_note(position, top_n, request: gr.Request):
        """The next-note chart for one slot of the last chorale generated in this tab."""
        kept = sessions.recipes(request)
        with user_errors():
            if not kept or not is_chorale_model(studio, kept[0].model_id):
                raise ValueError("position: generate a chorale (model bach-chorales) first; the explainer shows its notes")
            return explainer_html(studio, kept[0], position, top_n)

    def show_views(request: gr.Request):
        files, kept = sessions.kept(request, "audio_files", []), sessions.recipes(request)
        pictures = [file_view(path, player_label(r)) for path, r in zip(files, kept)]
        return [gr.update(value=p, visible=True) for p in pictures] + [gr.update(value=None, visible=False)] * (
            MAX_PLAYERS - len(pictures))

    def restore_recipe(file):
        """Prompt, model, every knob and the file format from a studio WAV/FLAC's recipe."""
        if file is None:
            return [gr.update()] * (len(KNOBS) + 3)
        with user_errors():
            saved = read_recipe(file)
            if saved.modality != "audio":
                raise ValueError(f"recipe file: holds a {saved.modality} recipe, not an audio one")
            chosen = studio.params("audio", saved.model_id, **{k: v for k, v in saved.params.items() if k in KNOBS})
        gr.Info(f"Restored the recipe of a {saved.model_id} recording (seed {chosen.seed}).")
        restored_format = "flac" if str(file).lower().endswith(".flac") else "wav"
        return [saved.prompt, saved.model_id, *[getattr(chosen, name) for name in KNOBS], restored_format]

    def start_from_midi(file, bars):
        """start, key, metre and bars from an uploaded MIDI file (bars: the start's, and 4 more to continue four voices)."""
        from aigc_studio import music

        if file is None:
            return [gr.update()] * 4
        with user_errors():
            start, key, metre, start_bars = music.start_from_midi(Path(file).read_bytes())
        continued = start.count("\n") == 3  # four voices: some bars more to continue them
        wanted = min(32, max(int(bars or 0), start_bars + 4 if continued else start_bars))
        voices = "four voices to continue" if continued else "a melody to harmonise"
        gr.Info(f"Start: {voices}, {start_bars} bars, heard in {key} ({metre}); the piece is {wanted} bars.")
        return start, key, metre, wanted

    def use_model(model_id, knob):
        """The model's card, its knobs (shown when it reads them, at its recommended
        values), its knob groups and the knobs side by side can sweep."""
        with user_errors():
            chosen_spec = studio.model_spec("audio", model_id)
            names = studio.knobs_used("audio", model_id)
            picker, sweep = sweep_updates(studio, "audio", model_id, knob)
        music = is_chorale_model(studio, model_id)
        return [model_card(chosen_spec), *knob_updates(studio, "audio", model_id, controls),
                *[gr.update(visible=any(n in names for n in group)) for group in GROUPS.values()], picker, sweep,
                gr.update(visible=music), gr.update(visible=music)]

    def sweep_for(knob, model_id, *knob_values):
        with user_errors():
            return sweep_values(studio.params("audio", model_id, **values_of(knob_values)), knob)

    first_inputs = [controls[name] for name in FIRST_KNOBS]
    later_inputs = [controls[name] for name in LATER_KNOBS] + [file_format] + [controls[n] for n in CHORALE_KNOBS]
    knob_inputs = [controls[name] for name in KNOBS]
    run = gr.on([generate.click, prompt.submit], lambda: busy(), outputs=generate, queue=False,
                api_visibility="private").then(
        generate_audio, inputs=[prompt, *first_inputs, model, *later_inputs], outputs=audio,
        api_visibility="private", concurrency_id="audio")  # public: ui/api.py
    run.then(lambda: ready(), outputs=generate, queue=False, api_visibility="private")
    run.failure(lambda: ready(), outputs=generate, queue=False, api_visibility="private")
    run.then(show_recipes, outputs=[recipe, recipe_raw], api_visibility="private")
    run.then(show_view, outputs=view, api_visibility="private")
    run.then(show_music, outputs=[roll, midi, chart], api_visibility="private")
    explain.click(explain_note, inputs=[position, top_n], outputs=chart, api_visibility="private",
                  concurrency_id="audio")  # public: ui/music_api.py
    labelled = compare.click(lambda: busy(), outputs=compare, queue=False, api_visibility="private").then(
        label_players, inputs=[mode, count, knob_name, values, model, *knob_inputs], outputs=players + views,
        api_visibility="private")
    labelled.failure(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing = labelled.success(compare_audio,
                                 inputs=[prompt, mode, count, knob_name, values, *first_inputs, model, *later_inputs],
                                 outputs=players, api_visibility="private",
                                 concurrency_id="audio")
    comparing.then(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.failure(lambda: ready("Compare"), outputs=compare, queue=False, api_visibility="private")
    comparing.then(show_recipes, outputs=[compare_recipes, compare_recipes_raw], api_visibility="private")
    comparing.then(label_from_recipes, outputs=players, api_visibility="private",
                                 concurrency_id="audio")
    comparing.then(show_views, outputs=views, api_visibility="private")
    upload.upload(restore_recipe, upload, [prompt, model, *knob_inputs, file_format], api_name="restore_audio_recipe")
    start_midi.upload(start_from_midi, [start_midi, controls["bars"]],
                      [controls["start"], controls["key"], controls["metre"], controls["bars"]],
                      api_visibility="private")  # public: ui/music_api.py
    hook = {"restore": lambda file, request: restore_recipe(file),  # History tab
            "outputs": [prompt, model, *knob_inputs, file_format]}
    model.input(use_model, [model, knob_name], [card, *controls.values(), *groups.values(), knob_name, values,
                                                music_view, explainer_box], api_visibility="private")
    # a restore (recipe file, History) sets the model without model.input: the sweep picker follows it here
    model.change(lambda m, k: sweep_updates(studio, "audio", m, k), [model, knob_name], [knob_name, values],
                 api_visibility="private", queue=False)
    knob_name.input(sweep_for, [knob_name, model, *knob_inputs], values, api_visibility="private")
    audio_grid.wire(studio, sessions, grid_parts, prompt, model, {name: controls[name] for name in KNOBS})
    return hook


def check_format(file_format) -> str:
    """'wav' or 'flac' (any case); anything else is refused naming the field."""
    chosen = str(file_format or "wav").lower()
    if chosen not in FILE_FORMATS:
        raise ValueError(f"file_format: must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
    return chosen


def player_label(recipe) -> str:
    """A variant's label with the gain it was played at, e.g. 'speed=1.4 · gain +2.1 dB'."""
    gain = float(recipe.params.get("gain_db", 0.0))
    label = recipe.label or f"seed={recipe.params.get('seed')}"
    return f"{label} · gain {gain:+.1f} dB"
