"""Public API of the chorale model: its piece as a MIDI file, the next-note explainer and a
start read from a MIDI file. Registered by ui/api.py with the other endpoints, so they are also
MCP tools. /generate_audio with model="bach-chorales" returns the same piece as audio."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.actions import audio as actions
from aigc_studio.params import AudioParams
from aigc_studio.ui.api import File, _file, studio, uploaded_bytes
from aigc_studio.ui.audio_api import audio_knobs
from aigc_studio.ui.endpoint import Arg, endpoint, knob_args
from aigc_studio.ui.errors import user_errors

TITLE = Arg("prompt", str, "the piece's title (written into the file).", "Chorale")
MODEL = Arg("model", str | None, f"a chorale model id of the catalog (default {actions.MUSIC_MODEL}).")


def midi_file(midi: bytes) -> Path:
    """The MIDI bytes as a file in Gradio's cache, named by their hash (the same piece, the same file)."""
    folder = Path(gr.utils.get_upload_folder()) / "midi"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"chorale-{hashlib.sha256(midi).hexdigest()[:16]}.mid"
    if not path.exists():
        path.write_bytes(midi)
    return path


def _generate_music_midi(prompt: str, model: str | None, **knob_values) -> File:
    with user_errors():
        return _file(midi_file(actions.music_midi(studio(), actions.MusicMidi(prompt, model, knob_values))))


# The return types are left open ({}), as these endpoints have always declared them.
generate_music_midi = endpoint(
    "generate_music_midi", "A four-voice chorale composed by the studio's own chorale model, as a Standard MIDI "
                           "File carrying its recipe. The same seed and knobs give the same bytes, and the same "
                           "notes that /generate_audio with model=\"bach-chorales\" plays.",
    [TITLE, *audio_knobs(["seed", "temperature", "top_k", "top_p", "bars", "tempo", "key", "metre", "timbre"]),
     MODEL, *audio_knobs(["start"])],
    "The MIDI file (format 1: a conductor track with the recipe, then soprano, alto, tenor, bass).",
    _generate_music_midi, Any)


def _explain_music_note(prompt: str, position: int | None, top_n: int | None, model: str | None,
                        **knob_values) -> dict:
    with user_errors():
        request = actions.ExplainNote(prompt, position, top_n, model, knob_values)
        return dataclasses.asdict(actions.explain_note(studio(), request))


explain_music_note = endpoint(
    "explain_music_note", "Why one note of a composed chorale is what it is: the likeliest candidates for that grid "
                          "slot and their probability at each sampling stage (raw after the range masks, then "
                          "temperature, top-k, top-p), exactly as the Text tab's next-token explainer shows tokens.",
    [TITLE, Arg("position", int | None, "0-based slot: 4 per eighth note in the order soprano, alto, tenor, bass "
                                        "(default 0)."),
     *knob_args(AudioParams, ["seed"], docs={"seed": "0 to 2147483647: the piece's seed (required)."}),
     *audio_knobs(["temperature", "top_k", "top_p", "bars", "key", "metre"]),
     Arg("top_n", int | None, "1-50 candidates listed (default 10)."), MODEL, *audio_knobs(["start"])],
    '{"context", "position", "candidate_ids", "candidates", "chosen_id", "stages": [{"name", "setting", "probs", '
    '"kept", "kept_tokens", "mass_kept"}]}.', _explain_music_note, Any)


def start_from_midi(midi: File) -> dict:
    """Read a MIDI file as a start for the chorale model: four parts are first bars to continue
    (the highest part is the soprano), anything else gives its top line as a melody to
    harmonise. Notes snap to eighth notes and move by octaves into each voice's range.

    Args:
        midi: a Standard MIDI File (.mid), uploaded (gradio_client.handle_file).
    Returns:
        {"start": the notes as text for the start knob, "key": the key music21 hears in them,
        "metre": "4/4" or "3/4", "bars": bars the start spans (at most 32)}.
    """
    with user_errors():
        path = midi.get("path") if isinstance(midi, dict) else midi
        if not isinstance(path, str):
            raise knobs.ParamError("midi", "must be an uploaded MIDI file (gradio_client.handle_file)")
        return dataclasses.asdict(actions.start_from_midi(uploaded_bytes(path, "midi")))


ENDPOINTS = {generate_music_midi: "audio", explain_music_note: "audio", start_from_midi: "audio"}
