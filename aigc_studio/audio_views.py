"""Looking at and comparing audio: loudness, gain, waveform and spectrogram pictures.

Loudness is integrated loudness in LUFS (ITU-R BS.1770-4: K-weighting, 400 ms
blocks, absolute and relative gates) measured by pyloudnorm, the unit creators and
platforms use (e.g. -16 LUFS for podcasts). The pictures are drawn by matplotlib
(Agg, imported on first use: start-up never imports it), with time and frequency axes.
The Audio tab shows them beside its players, and side by side plays variants at
matched loudness so a louder variant does not sound "better" just for being louder.

Samples are float32 in [-1, 1], mono or stereo (shape (n, 2): the chorale model); rates are in Hz.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import soundfile
from PIL import Image

from aigc_studio import params as knobs
from aigc_studio.chorales import VOICES, pitch_name
from aigc_studio.recipe import Result

BLOCK_S = 0.4  # BS.1770's gating block: a shorter clip is measured as if repeated to fill one
PEAK_CEILING = 0.98  # matched variants stay below this peak, so matching never clips

VIEW_WIDTH, VIEW_HEIGHT, DPI = 640, 300, 100  # the picture, in pixels
SPECTRUM_RANGE_DB = 80.0  # the spectrogram shows the loudest 80 dB


# ----- loudness and gain ------------------------------------------------------------------

def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """samples times 10^(gain_db / 20), clipped to [-1, 1] (float32)."""
    samples = np.asarray(samples, dtype=np.float32)
    if gain_db == 0:
        return samples
    return np.clip(samples * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


def loudness_lufs(samples: np.ndarray, rate: int) -> float:
    """Integrated loudness in LUFS (-inf for silence or no samples), by pyloudnorm."""
    import pyloudnorm

    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0 or not np.any(x):
        return -math.inf
    block = int(math.ceil(BLOCK_S * rate)) + 1
    if x.shape[0] < block:  # repeated: the level of a short clip, not of it padded with silence
        x = np.resize(x, (block, *x.shape[1:]))
    with np.errstate(divide="ignore"):
        level = float(pyloudnorm.Meter(rate).integrated_loudness(x))
    return level if math.isfinite(level) else -math.inf


loudness_db = loudness_lufs  # the earlier name


def lufs_label(level: float) -> str:
    """'−16 LUFS' (a true minus sign), or 'silent'."""
    return f"{level:.0f} LUFS".replace("-", "\u2212") if math.isfinite(level) else "silent"


def matching_gains(outputs: list[tuple[int, np.ndarray]]) -> list[float]:
    """Gains in dB (0.01 dB steps) that bring every output to one loudness.

    The common level is the median loudness, lowered when a variant would
    otherwise peak above PEAK_CEILING: matching never clips. Silent outputs keep
    gain 0 (there is nothing to match).
    """
    levels = [loudness_lufs(samples, rate) for rate, samples in outputs]
    audible = [i for i, level in enumerate(levels) if math.isfinite(level)]
    if len(audible) < 2:
        return [0.0] * len(outputs)
    target = float(np.median([levels[i] for i in audible]))
    for i in audible:
        peak = float(np.abs(outputs[i][1]).max())
        target = min(target, levels[i] + 20 * math.log10(PEAK_CEILING / peak))
    return [round(target - levels[i], 2) if i in audible else 0.0 for i in range(len(outputs))]


def match_loudness(results: list[Result]) -> list[Result]:
    """Audio results played at one loudness: each output gets its matching gain,
    and its recipe's gain_db knob records the total gain, so the recipe still
    reproduces the file. Gains stay within the knob's range."""
    meta = knobs.spec(knobs.AudioParams, "gain_db")
    matched = []
    for result, delta in zip(results, matching_gains([r.output for r in results])):
        before = float(result.recipe.params.get("gain_db", 0.0))
        after = round(min(max(before + delta, meta["low"]), meta["high"]), 2)
        rate, samples = result.output
        recipe = dataclasses.replace(result.recipe, params={**result.recipe.params, "gain_db": after})
        matched.append(Result((rate, apply_gain(samples, after - before)), recipe))
    return matched


# ----- pictures ---------------------------------------------------------------------------

def spectrogram_db(samples: np.ndarray, rate: int, window_s: float = 0.025) -> np.ndarray:
    """Short-time Fourier magnitudes in dB, shape (frequency bins, frames).

    Hann window of ~window_s seconds (a power of two in samples), hop of a
    quarter window; bins run from 0 Hz to rate / 2.
    """
    n_fft = max(64, 2 ** math.ceil(math.log2(window_s * rate)))
    x = np.asarray(samples, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 4]
    magnitudes = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).T
    return 20 * np.log10(magnitudes + 1e-10)


def figure_picture(figure) -> Image.Image:
    """A matplotlib Figure drawn by the Agg canvas as an RGB picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return Image.open(buffer).convert("RGB")


def view_image(samples: np.ndarray, rate: int, title: str = "") -> Image.Image:
    """The waveform above the spectrogram on one time axis (seconds), the spectrogram
    in kHz with the loudest SPECTRUM_RANGE_DB dB in magma, the title (with the
    loudness in LUFS) on top. A VIEW_WIDTH x VIEW_HEIGHT RGB picture."""
    from matplotlib.figure import Figure

    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if x.ndim == 2:
        x = x.mean(axis=1)  # stereo: the mid signal
    seconds = max(x.size / rate, 1e-3)
    figure = Figure(figsize=(VIEW_WIDTH / DPI, VIEW_HEIGHT / DPI), dpi=DPI, layout="constrained")
    wave, spectrum = figure.subplots(2, 1, sharex=True, height_ratios=(1, 2))
    level = lufs_label(loudness_lufs(x, rate))
    wave.set_title(f"{title} · {level}" if title else level, fontsize=9, loc="left")
    if x.size:
        step = max(1, x.size // 2000)  # min/max envelope per stretch: every peak stays visible
        stretches = x[: x.size // step * step].reshape(-1, step)
        times = np.arange(stretches.shape[0]) * step / rate
        wave.fill_between(times, stretches.min(axis=1), stretches.max(axis=1), color="#4338ca", linewidth=0.5)
    wave.set_ylim(-1, 1)
    wave.set_yticks([-1, 0, 1])
    wave.tick_params(labelsize=7)
    wave.grid(alpha=0.3)
    db = spectrogram_db(x, rate)
    top = float(db.max())
    spectrum.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=top - SPECTRUM_RANGE_DB, vmax=top,
                    extent=(0, seconds, 0, rate / 2000))
    spectrum.set_xlim(0, seconds)
    spectrum.set_xlabel("time (s)", fontsize=8)
    spectrum.set_ylabel("kHz", fontsize=8)
    spectrum.tick_params(labelsize=7)
    return figure_picture(figure)


def file_view(path, title: str = "") -> Image.Image:
    """view_image of an audio file on disk (channels averaged to mono)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return view_image(samples.mean(axis=1), rate, title)


# ----- the piano roll (the chorale model's notes) -----------------------------------------

VOICE_COLOURS = ("#dc2626", "#2563eb", "#16a34a", "#9333ea")  # soprano, alto, tenor, bass


def piano_roll_image(notes: list[list[tuple[int, int, int]]], step_seconds: float, title: str = "",
                     bar_steps: int | None = None) -> Image.Image:
    """Per-voice notes (MIDI pitch, start step, length in steps) as a piano roll: time in
    seconds across, pitch up (C of each octave named), one colour per voice with a legend,
    bar lines every bar_steps steps. A VIEW_WIDTH x VIEW_HEIGHT RGB picture."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(VIEW_WIDTH / DPI, VIEW_HEIGHT / DPI), dpi=DPI, layout="constrained")
    axes = figure.subplots()
    pitches = [p for voice in notes for p, _, _ in voice] or [60]
    end = max((s + n for voice in notes for _, s, n in voice), default=1) * step_seconds
    for voice, (voice_notes, colour) in enumerate(zip(notes, VOICE_COLOURS)):
        bars = [(start * step_seconds, length * step_seconds) for _, start, length in voice_notes]
        for (pitch, _, _), bar in zip(voice_notes, bars):
            axes.broken_barh([bar], (pitch - 0.4, 0.8), facecolors=colour, edgecolors="white", linewidth=0.4)
        axes.plot([], [], color=colour, linewidth=6, label=VOICES[voice])  # legend entry
    if bar_steps:
        for k in range(0, int(end / step_seconds) + 1, bar_steps):
            axes.axvline(k * step_seconds, color="#9ca3af", linewidth=0.5, zorder=0)
    low, high = min(pitches) - 2, max(pitches) + 2
    axes.set_ylim(low, high)
    axes.set_xlim(0, max(end, 1e-3))
    ticks = [p for p in range(low, high + 1) if p % 12 == 0]
    axes.set_yticks(ticks, [pitch_name(p) for p in ticks])
    axes.set_xlabel("time (s)", fontsize=8)
    axes.set_ylabel("pitch", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(axis="y", alpha=0.3)
    figure.legend(fontsize=7, loc="outside right upper", frameon=False)
    if title:
        figure.suptitle(title, fontsize=9, x=0.02, ha="left")
    return figure_picture(figure)
