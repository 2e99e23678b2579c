"""The audio endpoints of the public API: speech or music, side by side, and the X/Y grid.
Registered by ui/api.py's register(); the chorale model's own endpoints are in ui/music_api.py.
Each is generated from AudioParams (ui/endpoint.py) around one action of actions/audio.py, the
one the Audio tab calls too."""

import threading
from typing import Literal

from aigc_studio.actions import audio as actions
from aigc_studio.params import AudioParams
from aigc_studio.ui.api import File, VariantMode, _file, studio
from aigc_studio.ui.endpoint import REQUIRED, Arg, endpoint, knob_args, split_knobs
from aigc_studio.ui.errors import user_errors

# The endpoints' order: the speech and music knobs shipped first, then `model`, then Bark's knobs
# and the gain, then `file_format`, then every knob added since (the chorale's first).
SHIPPED, LATER = split_knobs(AudioParams, 10)
MIXING, CHORALE = LATER[:4], LATER[4:]
KEY_AS_TEXT = {"key": str | None}  # the endpoints have always typed the key as text ("D minor")


def audio_knobs(names) -> list[Arg]:
    return knob_args(AudioParams, names, annotations=KEY_AS_TEXT)


PROMPT = Arg("prompt", str, "what the voice says (or, for MusicGen, the music to make; for bach-chorales, the "
                            "piece's title).", REQUIRED)
MODEL = Arg("model", str | None, "an audio model id of the catalog (None: the preset's default).")
FILE_FORMAT = Arg("file_format", Literal["wav", "flac"], '"wav" or "flac" (lossless, smaller); both carry the recipe.',
                  "wav")


def _generate_audio(prompt: str, model: str | None, file_format: str, **knob_values) -> File:
    with user_errors():
        s = studio()
        request = actions.GenerateAudio(prompt, model, knob_values, file_format)
        return _file(s.save(actions.generate(s, request), request.file_format))


generate_audio = endpoint(
    "generate_audio", "Speech (Piper, MMS-TTS, Bark) or music (MusicGen; bach-chorales, the studio's own chorale "
                      "model) for a text, as a WAV or FLAC file carrying its recipe (bach-chorales: stereo, with its "
                      "MIDI saved beside it; /generate_music_midi returns the MIDI). A knob left out (None) takes "
                      "the model's recommended value.",
    [PROMPT, *audio_knobs(SHIPPED), MODEL, *audio_knobs(MIXING), FILE_FORMAT, *audio_knobs(CHORALE)],
    "The audio file.", _generate_audio, File)


def _compare_audio(prompt: str, mode: str | None, count: int | None, knob_name: str | None, values: str | None,
                   model: str | None, file_format: str, **knob_values) -> tuple:
    with user_errors():
        s = studio()
        request = actions.CompareAudio(prompt, mode, count, knob_name, values, model, knob_values, file_format)
        files = [_file(s.save(result, request.file_format)) for result in actions.compare(s, request)]
        return tuple(files + [None] * (actions.MAX_PLAYERS - len(files)))


compare_audio = endpoint(
    "compare_audio", "2-4 labelled audio variants of one text, played at one loudness (unless gain_db itself is "
                     "swept); each file's recipe records the gain it got.",
    [PROMPT, Arg("mode", VariantMode | None, '"Different seeds" or "Sweep one knob".'),
     Arg("count", int | None, "2-4 variants for \"Different seeds\" (default 3)."),
     Arg("knob_name", str | None, 'the audio knob to sweep (one the model reads), e.g. "speed".'),
     Arg("values", str | None, '2-4 comma-separated values, e.g. "0.8, 1.0, 1.4".'),
     *audio_knobs(SHIPPED), MODEL, *audio_knobs(MIXING), FILE_FORMAT, *audio_knobs(CHORALE)],
    "Four audio files (unused slots are null).", _compare_audio,
    tuple[File | None, File | None, File | None, File | None])


def _audio_grid(prompt: str, x_knob: str | None, x_values: str | None, y_knob: str | None, y_values: str | None,
                model: str | None, **knob_values) -> tuple[dict, File]:
    with user_errors():
        s = studio()
        request = actions.AudioGrid(prompt, x_knob, x_values, y_knob, y_values, model, knob_values)
        plan, cells = actions.make_grid(s, request, stop=threading.Event())
        _, archive = s.save_audio_grid(plan, cells)
        return actions.grid_document(plan, cells), _file(archive)


audio_grid = endpoint(
    "audio_grid", "An X/Y grid of audio: one or two knobs the model reads over their values, one generation per "
                  "cell, played at one loudness (unless gain_db is an axis), the seed fixed unless it is an axis "
                  "(at most 16 cells); the other knobs apply to every cell.",
    [PROMPT, Arg("x_knob", str | None, 'the audio knob across columns (default "speed"); one the model reads.'),
     Arg("x_values", str | None, '1-6 comma-separated values (default "0.8, 1.0, 1.4").'),
     Arg("y_knob", str | None, 'the knob down rows, or "none"/None for one row.'),
     Arg("y_values", str | None, "1-6 comma-separated values for y_knob."),
     *audio_knobs(SHIPPED), MODEL, *audio_knobs(LATER)],
    'The grid {"x_knob", "x_labels", "y_knob", "y_labels", "cells": [{"row", "column", "label", "loudness_lufs" '
    '(null when silent), "recipe"}]} and a zip of every cell\'s WAV (each carrying its recipe) with grid.json.',
    _audio_grid, tuple[dict, File])


ENDPOINTS = {generate_audio: "audio", compare_audio: "audio", audio_grid: "audio"}
