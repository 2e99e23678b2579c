"""The audio endpoints of the public API: speech or music, side by side, and the X/Y grid.
Registered by ui/api.py's register(); the chorale model's own endpoints are in ui/music_api.py."""

import json
import threading
from typing import Literal

from aigc_studio import audio_views, grid
from aigc_studio.actions.variants import SEEDS, SWEEP, make_variants
from aigc_studio.ui.api import File, VariantMode, _count, _file, _knob_name, _mode, _model, _text, axes, studio
from aigc_studio.ui.audio_tab import MAX_PLAYERS, check_format
from aigc_studio.ui.errors import user_error, user_errors
from aigc_studio.ui.text_grid import axis_values


# ----- audio ----------------------------------------------------------------------------------

def generate_audio(prompt: str, speed: float | None = None, seed: int | None = None,
                   noise_scale: float | None = None, noise_w: float | None = None,
                   sentence_silence: float | None = None, temperature: float | None = None,
                   top_k: int | None = None, top_p: float | None = None, guidance: float | None = None,
                   duration: float | None = None, model: str | None = None,
                   semantic_temperature: float | None = None, coarse_temperature: float | None = None,
                   fine_temperature: float | None = None, gain_db: float | None = None,
                   file_format: Literal["wav", "flac"] = "wav", bars: int | None = None,
                   tempo: float | None = None, key: str | None = None, metre: Literal["4/4", "3/4"] | None = None,
                   timbre: Literal["organ", "strings", "flute", "choir"] | None = None, start: str | None = None) -> File:
    """Speech (Piper, MMS-TTS, Bark) or music (MusicGen; bach-chorales, the studio's own chorale
    model) for a text, as a WAV or FLAC file carrying its recipe (bach-chorales: stereo, with its
    MIDI saved beside it; /generate_music_midi returns the MIDI).

    Args:
        prompt: what the voice says (or, for MusicGen, the music to make).
        speed: 0.25-4 speaking rate (speech).
        seed: -1 to 2147483647; -1 draws one (the recipe records it).
        noise_scale: 0-1.5 variation in timbre and intonation (speech).
        noise_w: 0-1.5 variation in phoneme durations (speech).
        sentence_silence: 0-2 seconds of silence between sentences (speech).
        temperature: 0.05-2 (music).
        top_k: 0-2048 (music).
        top_p: 0.01-1 (music).
        guidance: 1-10 classifier-free guidance (music).
        duration: 0.5-30 seconds of music.
        model: an audio model id of the catalog.
        semantic_temperature: 0.05-1.5 (Bark).
        coarse_temperature: 0.05-1.5 (Bark).
        fine_temperature: 0.05-1.5 (Bark).
        gain_db: -40 to 40 dB applied to the finished audio.
        file_format: "wav" or "flac" (lossless, smaller); both carry the recipe.
        bars: 1-32 bars (bach-chorales).
        tempo: 30-240 quarter notes per minute (bach-chorales).
        key: e.g. "D minor", "Bb major": C, C#, D, Eb, E, F, F#, G, Ab, A, Bb or B, major or minor (bach-chorales).
        metre: "4/4" or "3/4" (bach-chorales).
        timbre: the synthesiser's instrument (bach-chorales).
        start: notes to begin from (bach-chorales): one line = a soprano melody to harmonise, four lines (S, A, T, B) = first bars to continue; one item per eighth note: C5, F#4, Bb3, '-' holds, 'r' rests, '|' optional bar lines. /start_from_midi reads it from a MIDI file.
    Returns:
        The audio file.
    """
    with user_errors():
        s = studio()
        chosen_format = check_format(file_format)
        result = s.audio(prompt, _model(model), speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                         sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                         guidance=guidance, duration=duration, semantic_temperature=semantic_temperature,
                         coarse_temperature=coarse_temperature, fine_temperature=fine_temperature, gain_db=gain_db,
                         bars=bars, tempo=tempo, key=key, metre=metre, timbre=timbre,
                         start=start)
        return _file(s.save(result, chosen_format))


def compare_audio(prompt: str, mode: VariantMode | None = None, count: int | None = None,
                  knob_name: str | None = None, values: str | None = None, speed: float | None = None,
                  seed: int | None = None, noise_scale: float | None = None, noise_w: float | None = None,
                  sentence_silence: float | None = None, temperature: float | None = None,
                  top_k: int | None = None, top_p: float | None = None, guidance: float | None = None,
                  duration: float | None = None, model: str | None = None,
                  semantic_temperature: float | None = None, coarse_temperature: float | None = None,
                  fine_temperature: float | None = None, gain_db: float | None = None,
                  file_format: Literal["wav", "flac"] = "wav", bars: int | None = None,
                  tempo: float | None = None, key: str | None = None, metre: Literal["4/4", "3/4"] | None = None,
                  timbre: Literal["organ", "strings", "flute", "choir"] | None = None, start: str | None = None,
                  ) -> tuple[File | None, File | None, File | None, File | None]:
    """2-4 labelled audio variants of one text, played at one loudness (unless gain_db itself is swept);
    each file's recipe records the gain it got.

    Args:
        prompt: what the voice says (or the music to make).
        mode: "Different seeds" or "Sweep one knob".
        count: 2-4 variants for "Different seeds" (default 3).
        knob_name: the audio knob to sweep (one the model reads), e.g. "speed".
        values: 2-4 comma-separated values, e.g. "0.8, 1.0, 1.4".
        speed: 0.25-4 (speech); the other knobs are as in generate_audio.
        seed: -1 to 2147483647.
        noise_scale: 0-1.5.
        noise_w: 0-1.5.
        sentence_silence: 0-2 seconds.
        temperature: 0.05-2 (music).
        top_k: 0-2048 (music).
        top_p: 0.01-1 (music).
        guidance: 1-10 (music).
        duration: 0.5-30 seconds (music).
        model: an audio model id of the catalog.
        semantic_temperature: 0.05-1.5 (Bark).
        coarse_temperature: 0.05-1.5 (Bark).
        fine_temperature: 0.05-1.5 (Bark).
        gain_db: -40 to 40 dB.
        file_format: "wav" or "flac".
        bars: 1-32 (bach-chorales); tempo, key, metre and timbre as in generate_audio.
        tempo: 30-240 BPM (bach-chorales).
        key: e.g. "D minor" (bach-chorales).
        metre: "4/4" or "3/4" (bach-chorales).
        timbre: the synthesiser's instrument (bach-chorales).
        start: notes to begin from (bach-chorales): one line = a soprano melody to harmonise, four lines (S, A, T, B) = first bars to continue; one item per eighth note: C5, F#4, Bb3, '-' holds, 'r' rests, '|' optional bar lines. /start_from_midi reads it from a MIDI file.
    Returns:
        Four audio files (unused slots are null).
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen_format = check_format(file_format)
        base = s.params("audio", model, speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                        sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                        guidance=guidance, duration=duration, semantic_temperature=semantic_temperature,
                        coarse_temperature=coarse_temperature, fine_temperature=fine_temperature, gain_db=gain_db,
                        bars=bars, tempo=tempo, key=key, metre=metre, timbre=timbre,
                         start=start)
        mode = _mode(mode)
        count = _count(count) if mode == SEEDS else 3
        if mode == SWEEP:
            knob_name = _knob_name("knob_name", knob_name, type(base), "speed")
            used = s.audio_knobs(model)
            if knob_name not in used:  # before parsing values meant for a knob it ignores
                raise user_error(f"knob_name: {s.model_spec('audio', model).id} does not use {knob_name}; "
                                 f"sweep one of {', '.join(used)}")
        variants = make_variants(base, mode, count, knob_name or "speed", _text("values", values, "0.8, 1.0, 1.4"))
        results = [s.audio(prompt, model, label=label, params=p) for label, p in variants]
        if not (mode == SWEEP and knob_name == "gain_db"):
            results = audio_views.match_loudness(results)
        files = [_file(s.save(r, chosen_format)) for r in results]
        return tuple(files + [None] * (MAX_PLAYERS - len(files)))


def audio_grid(prompt: str, x_knob: str | None = None, x_values: str | None = None, y_knob: str | None = None,
               y_values: str | None = None, speed: float | None = None, seed: int | None = None,
               noise_scale: float | None = None, noise_w: float | None = None,
               sentence_silence: float | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, guidance: float | None = None,
               duration: float | None = None, model: str | None = None,
               semantic_temperature: float | None = None, coarse_temperature: float | None = None,
               fine_temperature: float | None = None, gain_db: float | None = None, bars: int | None = None,
               tempo: float | None = None, key: str | None = None, metre: Literal["4/4", "3/4"] | None = None,
               timbre: Literal["organ", "strings", "flute", "choir"] | None = None,
               start: str | None = None) -> tuple[dict, File]:
    """An X/Y grid of audio: one or two knobs the model reads over their values, one generation per
    cell, played at one loudness (unless gain_db is an axis), the seed fixed unless it is an axis
    (at most 16 cells).

    Args:
        prompt: what the voice says (or the music to make, or a chorale's title).
        x_knob: the audio knob across columns (default "speed"); one the model reads.
        x_values: 1-6 comma-separated values (default "0.8, 1.0, 1.4").
        y_knob: the knob down rows, or "none"/None for one row.
        y_values: 1-6 comma-separated values for y_knob.
        speed: 0.25-4 (speech); the other knobs are as in generate_audio and apply to every cell.
        seed: -1 to 2147483647; -1 draws one seed for the whole grid.
        noise_scale: 0-1.5.
        noise_w: 0-1.5.
        sentence_silence: 0-2 seconds.
        temperature: 0.05-2 (music).
        top_k: 0-2048 (music).
        top_p: 0.01-1 (music).
        guidance: 1-10 (music).
        duration: 0.5-30 seconds (music).
        model: an audio model id of the catalog.
        semantic_temperature: 0.05-1.5 (Bark).
        coarse_temperature: 0.05-1.5 (Bark).
        fine_temperature: 0.05-1.5 (Bark).
        gain_db: -40 to 40 dB.
        bars: 1-32 (bach-chorales).
        tempo: 30-240 BPM (bach-chorales).
        key: e.g. "D minor" (bach-chorales).
        metre: "4/4" or "3/4" (bach-chorales).
        timbre: the synthesiser's instrument (bach-chorales).
        start: notes to begin from (bach-chorales): one line = a soprano melody to harmonise, four lines (S, A, T, B) = first bars to continue; one item per eighth note: C5, F#4, Bb3, '-' holds, 'r' rests, '|' optional bar lines. /start_from_midi reads it from a MIDI file.
    Returns:
        The grid {"x_knob", "x_labels", "y_knob", "y_labels", "cells": [{"row", "column", "label",
        "loudness_lufs" (null when silent), "recipe"}]} and a zip of every cell's WAV
        (each carrying its recipe) with grid.json.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        base = s.params("audio", model, speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                        sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                        guidance=guidance, duration=duration, semantic_temperature=semantic_temperature,
                        coarse_temperature=coarse_temperature, fine_temperature=fine_temperature, gain_db=gain_db,
                        bars=bars, tempo=tempo, key=key, metre=metre, timbre=timbre,
                        start=start)
        x_knob, y_knob = axes(x_knob, y_knob, "speed")
        xs = axis_values(_text("x_values", x_values, "0.8, 1.0, 1.4"))
        ys = axis_values(_text("y_values", y_values)) if y_knob else None
        plan, cells = s.audio_grid(prompt, base, x_knob, xs, y_knob, ys, model, stop=threading.Event())
        _, archive = s.save_audio_grid(plan, cells)
        return audio_document(plan, cells), _file(archive)


def audio_document(plan: grid.GridPlan, cells: list) -> dict:
    """An audio grid as plain data: axes, and per cell its label, loudness and recipe."""
    width = len(plan.x_labels)
    return {"x_knob": plan.x_knob, "x_labels": plan.x_labels, "y_knob": plan.y_knob, "y_labels": plan.y_labels,
            "cells": [{"row": i // width, "column": i % width, "label": c.label,
                       "loudness_lufs": _finite(audio_views.loudness_lufs(c.output[1], c.output[0])),
                       "recipe": json.loads(c.recipe.to_json())} for i, c in enumerate(cells)]}


def _finite(level: float) -> float | None:
    """LUFS rounded to 0.1, or None for silence (-inf is not JSON)."""
    return round(level, 1) if level > float("-inf") else None


ENDPOINTS = {generate_audio: "audio", compare_audio: "audio", audio_grid: "audio"}
