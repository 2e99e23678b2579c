"""The audio operations, one function each: speech or music for a text, loudness-matched
variants side by side, the X/Y grid, a recipe restored from a file, and the chorale model's
MIDI, piano roll, next-note explainer and start from a MIDI file.

Gradio-free. The Audio tab (ui/audio_tab.py, ui/audio_grid.py) and the typed API
(ui/audio_api.py, ui/music_api.py) both call these, so the two front doors do the same thing.
Each operation takes a small request dataclass that checks its inputs that are not knobs
(mode, count, knob_name, values, axes, file format) once, when it is made; the knobs
(`knob_values`: name -> value, None or absent for the model's recommendation) are checked by
params.py when the Studio takes them.

    request = CompareAudio("Hello there.", mode=SWEEP, knob_name="speed", values="0.8, 1.4")
    results = compare(studio, request)  # two Results at one loudness
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigc_studio.actions.checks import axes_input, count_input, knob_name_input, mode_input, model_input, text_input, top_n_input
from aigc_studio import audio_views, grid
from aigc_studio import params as knobs
from aigc_studio.actions.variants import SEEDS, SWEEP, check_sweep, make_variants, variant_labels
from aigc_studio.params import AudioParams, comma_list, whole_number
from aigc_studio.recipe import Recipe, Result
from aigc_studio.studio import Studio, read_recipe

KNOBS = tuple(f.name for f in dataclasses.fields(AudioParams))  # every audio knob, in the dataclass's order
FILE_FORMATS = ("wav", "flac")
MAX_PLAYERS = 4  # variants side by side
MUSIC_MODEL = "bach-chorales"  # the chorale endpoints' model when none is named


# ----- checks of the inputs that are not knobs ------------------------------------------------------

def check_format(file_format: Any) -> str:
    """'wav' or 'flac' (any case; None: wav)."""
    chosen = str(file_format or "wav").lower()
    if chosen not in FILE_FORMATS:
        raise knobs.ParamError("file_format", f"must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
    return chosen


# ----- speech or music --------------------------------------------------------------------------------

@dataclass
class GenerateAudio:
    """Speech or music for one text, kept as a WAV or FLAC file."""

    prompt: str
    model: str | None = None
    knob_values: dict[str, Any] = field(default_factory=dict)
    file_format: str = "wav"

    def __post_init__(self):
        check_output(self)


def check_output(request) -> None:
    """A request's model id and file format, checked in place (generation and side by side)."""
    request.model = model_input(request.model)
    request.file_format = check_format(request.file_format)


def generate(studio: Studio, request: GenerateAudio) -> Result:
    """The audio and its recipe (the seed drawn when it is -1)."""
    return studio.audio(request.prompt, request.model, **request.knob_values)


def restore(studio: Studio, path: str | Path) -> tuple[Recipe, AudioParams, str]:
    """(recipe, its knobs as the model takes them, file format) of a studio WAV/FLAC."""
    saved = read_recipe(path)
    if saved.modality != "audio":
        raise knobs.ParamError("recipe file", f"holds a {saved.modality} recipe, not an audio one")
    chosen = studio.params("audio", saved.model_id, **{k: v for k, v in saved.params.items() if k in KNOBS})
    return saved, chosen, "flac" if str(path).lower().endswith(".flac") else "wav"


# ----- side by side -----------------------------------------------------------------------------------

@dataclass
class CompareAudio:
    """2-4 variants of one text that differ in their seed (`count` of them) or in one knob
    (`knob_name` over the comma-separated `values`)."""

    prompt: str
    mode: str | None = None
    count: int | None = None
    knob_name: str | None = None
    values: str | None = None
    model: str | None = None
    knob_values: dict[str, Any] = field(default_factory=dict)
    file_format: str = "wav"

    def __post_init__(self):
        check_output(self)
        self.mode = mode_input(self.mode)
        self.count = count_input(self.count) if self.mode == SEEDS else 3
        self.knob_name = knob_name_input("knob_name", self.knob_name, AudioParams, "speed") if self.mode == SWEEP else "speed"
        self.values = text_input("values", self.values, "0.8, 1.0, 1.4")


def compare_variants(studio: Studio, request: CompareAudio) -> list[tuple[str, AudioParams]]:
    """(label, knobs) per variant; a knob the model does not read is refused before its values are parsed."""
    base = studio.params("audio", request.model, **request.knob_values)
    check_sweep(studio, "audio", request.model, request.mode, request.knob_name)
    return make_variants(base, request.mode, request.count, request.knob_name, request.values)


def compare_labels(studio: Studio, request: CompareAudio) -> list[str]:
    """The variants' labels, known before generating ('random seed 1' while the seed is to be drawn)."""
    base = studio.params("audio", request.model, **request.knob_values)
    check_sweep(studio, "audio", request.model, request.mode, request.knob_name)
    return variant_labels(base, request.mode, request.count, request.knob_name, request.values)


def compare(studio: Studio, request: CompareAudio, stop: threading.Event | None = None) -> list[Result]:
    """The variants, played at one loudness unless the gain itself is swept; each recipe
    records the gain its audio got (Studio.audio_variants)."""
    gain_swept = request.mode == SWEEP and request.knob_name == "gain_db"
    return studio.audio_variants(request.prompt, compare_variants(studio, request), request.model,
                                 match_loudness=not gain_swept, stop=stop)


# ----- the X/Y grid -----------------------------------------------------------------------------------

@dataclass
class AudioGrid:
    """One or two knobs over their values (comma-separated), one generation per cell."""

    prompt: str
    x_knob: str | None = None
    x_values: str | None = None
    y_knob: str | None = None
    y_values: str | None = None
    model: str | None = None
    knob_values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.model = model_input(self.model)
        self.x_knob, self.y_knob = axes_input(self.x_knob, self.y_knob, "speed")
        self.x_values = text_input("x_values", self.x_values, "0.8, 1.0, 1.4")
        self.y_values = text_input("y_values", self.y_values) if self.y_knob else None


def make_grid(studio: Studio, request: AudioGrid,
              stop: threading.Event | None = None) -> tuple[grid.GridPlan, list[Result]]:
    """(plan, each cell's Result row-major), at one loudness unless gain_db is an axis; the
    seed is fixed unless it is an axis (Studio.audio_grid)."""
    base = studio.params("audio", request.model, **request.knob_values)
    y_values = comma_list(request.y_values) if request.y_knob else None  # grid.plan checks them (1-6)
    return studio.audio_grid(request.prompt, base, request.x_knob, comma_list(request.x_values), request.y_knob,
                             y_values, request.model, stop=stop)


def grid_document(plan: grid.GridPlan, cells: list[Result]) -> dict:
    """An audio grid as plain data: axes, and per cell its label, loudness (LUFS, None when silent) and recipe."""
    width = len(plan.x_labels)
    return {"x_knob": plan.x_knob, "x_labels": plan.x_labels, "y_knob": plan.y_knob, "y_labels": plan.y_labels,
            "cells": [{"row": i // width, "column": i % width, "label": c.label,
                       "loudness_lufs": _finite(audio_views.loudness_lufs(c.output[1], c.output[0])),
                       "recipe": json.loads(c.recipe.to_json())} for i, c in enumerate(cells)]}


def _finite(level: float) -> float | None:
    """LUFS rounded to 0.1, or None for silence (-inf is not JSON)."""
    return round(level, 1) if level > float("-inf") else None


# ----- the chorale model: its notes as well as its audio ------------------------------------------------

def is_chorale_model(studio: Studio, model_id: str | None) -> bool:
    """Whether the model composes notes (the chorale model) rather than audio alone."""
    spec = studio.catalog.specs.get(model_id or "")
    return spec is not None and spec.kind == "chorales"


@dataclass
class MusicMidi:
    """A chorale as a Standard MIDI File carrying its recipe."""

    prompt: str = "Chorale"
    model: str | None = None
    knob_values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.model = model_input(self.model) or MUSIC_MODEL


def music_midi(studio: Studio, request: MusicMidi) -> bytes:
    """The MIDI bytes: the same seed and knobs give the same bytes, the notes /generate_audio plays."""
    midi, _ = studio.music_midi(request.prompt, request.model, **request.knob_values)
    return midi


def chorale_views(studio: Studio, recipe: Recipe, audio_path: str | None) -> tuple:
    """(piano roll picture, MIDI file path or None) of the chorale a recipe made; the MIDI
    file is the one Studio.save wrote beside the audio."""
    piece, _, _ = studio.chorale(recipe.prompt, recipe.model_id, **recipe.params)
    title = f"{recipe.prompt} · {piece.key} · {piece.metre} · seed {recipe.params.get('seed')}"
    roll = audio_views.piano_roll_image(piece.notes(), piece.step_seconds, title,
                                        bar_steps=8 if piece.metre == "4/4" else 6)
    midi = Path(audio_path).with_suffix(".mid") if isinstance(audio_path, str) else None
    return roll, (str(midi) if midi is not None and midi.exists() else None)


@dataclass
class ExplainNote:
    """Why one note slot (`position`: 4 per eighth note, soprano, alto, tenor, bass) of a
    chorale is what it is; the piece's seed must be given (>= 0)."""

    prompt: str = "Chorale"
    position: int | None = None
    top_n: int | None = None
    model: str | None = None
    knob_values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        seed = self.knob_values.get("seed")
        if seed is None or int(seed) < 0:
            raise knobs.ParamError("seed", "must be the piece's seed, a number in [0, 2147483647]")
        self.top_n = top_n_input(self.top_n)
        self.position = whole_number("position", self.position, 0)
        self.model = model_input(self.model) or MUSIC_MODEL


def explain_note(studio: Studio, request: ExplainNote):
    """The candidates for the slot and their probability at each sampling stage (Studio.explain_note)."""
    return studio.explain_note(request.prompt, request.position, request.model, top_n=request.top_n,
                               **request.knob_values)


def note_place(studio: Studio, request: ExplainNote) -> str:
    """'bar 1, beat 1½, alto' for the slot (with a note when the start gave it)."""
    from aigc_studio import music

    piece, _, _ = studio.chorale(request.prompt, request.model, **request.knob_values)
    return music.describe_position(piece, request.position)


@dataclass(frozen=True)
class MidiStart:
    """A start read from a MIDI file: the notes as text for the start knob, the key music21
    hears in them, the metre and the bars they span."""

    start: str
    key: str
    metre: str
    bars: int

    @property
    def continues(self) -> bool:
        """Four voices to continue (rather than a melody to harmonise)."""
        return self.start.count("\n") == 3

    def piece_bars(self, current: Any) -> int:
        """Bars for the piece: at least the start's, and 4 more to continue four voices (at most 32)."""
        wanted = self.bars + 4 if self.continues else self.bars
        return min(32, max(int(current or 0), wanted))


def start_from_midi(data: bytes) -> MidiStart:
    """The start a MIDI file gives (music.start_from_midi); ParamError naming `midi` when it holds no notes."""
    from aigc_studio import music

    return MidiStart(*music.start_from_midi(data))
