"""Public API of the chorale model (issue 24): its piece as a MIDI file and the next-note
explainer. Registered by ui/api.py with the other endpoints, so they are also MCP tools.
/generate_audio with model="bach-chorales" returns the same piece as audio."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Literal

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.ui.api import File, _file, _model, studio, uploaded_bytes
from aigc_studio.params import whole_number
from aigc_studio.ui.errors import user_errors

Metre = Literal["4/4", "3/4"]
Timbre = Literal["organ", "strings", "flute", "choir"]
MUSIC_MODEL = "bach-chorales"


def _music_values(seed, temperature, top_k, top_p, bars, tempo, key, metre, timbre, start) -> dict:
    return dict(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, bars=bars, tempo=tempo, key=key,
                metre=metre, timbre=timbre, start=start)


def midi_file(midi: bytes) -> Path:
    """The MIDI bytes as a file in Gradio's cache, named by their hash (the same piece, the same file)."""
    folder = Path(gr.utils.get_upload_folder()) / "midi"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"chorale-{hashlib.sha256(midi).hexdigest()[:16]}.mid"
    if not path.exists():
        path.write_bytes(midi)
    return path


def generate_music_midi(prompt: str = "Chorale", seed: int | None = None, temperature: float | None = None,
                        top_k: int | None = None, top_p: float | None = None, bars: int | None = None,
                        tempo: float | None = None, key: str | None = None, metre: Metre | None = None,
                        timbre: Timbre | None = None, model: str | None = None, start: str | None = None) -> File:
    """A four-voice chorale composed by the studio's own chorale model, as a Standard MIDI File
    carrying its recipe. The same seed and knobs give the same bytes, and the same notes that
    /generate_audio with model="bach-chorales" plays.

    Args:
        prompt: the piece's title (written into the file).
        seed: -1 to 2147483647; -1 draws one (the recipe records it).
        temperature: 0.05-2: < 1 keeps to the likeliest notes, > 1 wanders.
        top_k: 0-2048 likeliest notes kept at each step (0 = off).
        top_p: 0.01-1 nucleus over the notes.
        bars: 1-32 bars.
        tempo: 30-240 quarter notes per minute.
        key: e.g. "D minor", "Bb major": C, C#, D, Eb, E, F, F#, G, Ab, A, Bb or B, major or minor.
        metre: "4/4" or "3/4".
        timbre: the General MIDI instrument the voices are set to (organ, strings, flute, choir).
        model: a chorale model id of the catalog (default bach-chorales).
        start: notes to begin from: one line = a soprano melody to harmonise, four lines (S, A, T, B) = first
            bars to continue; one item per eighth note: C5, F#4, Bb3, '-' holds, 'r' rests, '|' optional bar
            lines. /start_from_midi reads it from a MIDI file.
    Returns:
        The MIDI file (format 1: a conductor track with the recipe, then soprano, alto, tenor, bass).
    """
    with user_errors():
        midi, _ = studio().music_midi(prompt, _model(model) or MUSIC_MODEL,
                                      **_music_values(seed, temperature, top_k, top_p, bars, tempo, key, metre, timbre,
                                                     start))
        return _file(midi_file(midi))


def explain_music_note(prompt: str = "Chorale", position: int | None = None, seed: int | None = None,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       bars: int | None = None, key: str | None = None, metre: Metre | None = None,
                       top_n: int | None = None, model: str | None = None, start: str | None = None) -> dict:
    """Why one note of a composed chorale is what it is: the likeliest candidates for that grid
    slot and their probability at each sampling stage (raw after the range masks, then
    temperature, top-k, top-p), exactly as the Text tab's next-token explainer shows tokens.

    Args:
        prompt: the piece's title.
        position: 0-based slot: 4 per eighth note in the order soprano, alto, tenor, bass (default 0).
        seed: 0-2147483647: the piece's seed.
        temperature: 0.05-2.
        top_k: 0-2048 (0 = off).
        top_p: 0.01-1.
        bars: 1-32.
        key: e.g. "D minor".
        metre: "4/4" or "3/4".
        top_n: 1-50 candidates listed (default 10).
        model: a chorale model id of the catalog (default bach-chorales).
        start: the piece's start, as in generate_music_midi.
    Returns:
        {"context", "position", "candidate_ids", "candidates", "chosen_id",
        "stages": [{"name", "setting", "probs", "kept", "kept_tokens", "mass_kept"}]}.
    """
    with user_errors():
        if seed is None or int(seed) < 0:
            raise knobs.ParamError("seed", "must be the piece's seed, a number in [0, 2147483647]")
        top_n = whole_number("top_n", top_n, 10)
        if not 1 <= top_n <= 50:
            raise knobs.ParamError("top_n", f"must be a number in [1, 50], got {top_n}")
        result = studio().explain_note(prompt, whole_number("position", position, 0), _model(model) or MUSIC_MODEL,
                                       top_n=top_n, **_music_values(seed, temperature, top_k, top_p, bars, None, key,
                                                                     metre, None, start))
        return dataclasses.asdict(result)


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
    from aigc_studio import music

    with user_errors():
        path = midi.get("path") if isinstance(midi, dict) else midi
        if not isinstance(path, str):
            raise knobs.ParamError("midi", "must be an uploaded MIDI file (gradio_client.handle_file)")
        start, key, metre, bars = music.start_from_midi(uploaded_bytes(path, "midi"))
        return {"start": start, "key": key, "metre": metre, "bars": bars}


ENDPOINTS = {generate_music_midi: "audio", explain_music_note: "audio", start_from_midi: "audio"}
