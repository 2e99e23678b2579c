"""Public API of the text and audio X/Y grids (issue 25): /text_grid and /audio_grid.
Registered by ui/api.py's register() beside the other endpoints (same concurrency groups)."""

from __future__ import annotations

import json
import threading
from typing import Literal

from aigc_studio import audio_views, grid
from aigc_studio.params import ParamError
from aigc_studio.ui.api import File, _file, _model, _text, studio
from aigc_studio.ui.text_grid import axis_values
from aigc_studio.ui.errors import user_errors


def _axes(x_knob, y_knob, default_x: str) -> tuple[str, str | None]:
    """(x knob, y knob or None): names only; the studio refuses those the model does not read."""
    x_knob = default_x if x_knob is None else x_knob
    if not isinstance(x_knob, str) or not x_knob:
        raise ParamError("x_knob", f"must be a knob name, got {x_knob!r}")
    if y_knob is not None and not isinstance(y_knob, str):
        raise ParamError("y_knob", f"must be a knob name or none, got {y_knob!r}")
    return x_knob, (None if y_knob in (None, "", "none") else y_knob)


def text_grid(prompt: str, x_knob: str | None = None, x_values: str | None = None, y_knob: str | None = None,
              y_values: str | None = None, temperature: float | None = None, top_k: int | None = None,
              top_p: float | None = None, max_new_tokens: int | None = None,
              repetition_penalty: float | None = None, seed: int | None = None, greedy: bool | None = None,
              model: str | None = None, min_p: float | None = None, typical_p: float | None = None,
              no_repeat_ngram_size: int | None = None, stop_sequences: str | None = None,
              system_prompt: str | None = None,
              prompt_mode: Literal["chat", "completion"] | None = None) -> tuple[dict, File, File]:
    """An X/Y grid of text answers: one or two knobs over their values, every cell one column of a
    single batched generation, the seed fixed unless it is an axis (at most 16 cells).

    Args:
        prompt: what every cell answers.
        x_knob: the text knob across columns (default "temperature"); one the model reads.
        x_values: 1-6 comma-separated values (default "0.3, 0.8, 1.4").
        y_knob: the knob down rows, or "none"/None for one row.
        y_values: 1-6 comma-separated values for y_knob.
        temperature: 0-2; the other knobs are as in generate_text and apply to every cell.
        top_k: 0-1000.
        top_p: 0.01-1.
        max_new_tokens: 1-1024 tokens per cell.
        repetition_penalty: 1-2.
        seed: -1 to 2147483647; -1 draws one seed for the whole grid.
        greedy: always take the likeliest token.
        model: a text model id of the catalog.
        min_p: 0-1.
        typical_p: 0.01-1.
        no_repeat_ngram_size: 0-10.
        stop_sequences: up to 4 comma-separated texts.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
    Returns:
        The grid {"x_knob", "x_labels", "y_knob", "y_labels", "cells": [{"row", "column", "label", "text",
        "tokens", "tokens_per_s", "mean_logprob" (nats/token), "first_difference" (the index of the
        cell's first token that differs from another cell's, or null), "recipe"}]}, then the same as a
        JSON file and a CSV file (one line per cell, its recipe as JSON).
    """
    with user_errors():
        s = studio()
        model = _model(model)
        base = s.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p,
                        max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, seed=seed,
                        greedy=greedy, min_p=min_p, typical_p=typical_p, no_repeat_ngram_size=no_repeat_ngram_size,
                        stop_sequences=stop_sequences, system_prompt=system_prompt, prompt_mode=prompt_mode)
        x_knob, y_knob = _axes(x_knob, y_knob, "temperature")
        xs = axis_values(_text("x_values", x_values, "0.3, 0.8, 1.4"))
        ys = axis_values(_text("y_values", y_values)) if y_knob else None
        stop = threading.Event()
        try:
            plan, cells = s.text_grid(prompt, base, x_knob, xs, y_knob, ys, model, stop=stop)
        finally:
            stop.set()
        json_path, csv_path = s.save_text_grid(plan, cells)
        return json.loads(json_path.read_text()), _file(json_path), _file(csv_path)


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
        x_knob, y_knob = _axes(x_knob, y_knob, "speed")
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


ENDPOINTS = {text_grid: "text", audio_grid: "audio"}
