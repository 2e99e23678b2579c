"""Looking at and comparing audio: loudness, gain, waveform and spectrogram pictures.

Plain numpy and PIL (no gradio, no matplotlib): the Audio tab shows these pictures
beside its players, and side by side plays variants at matched loudness so a
louder variant does not sound "better" just for being louder.

Samples are mono float32 in [-1, 1]; rates are in Hz; levels are dB relative to
full scale (dBFS, RMS: a full-scale sine is -3 dBFS).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import soundfile
from PIL import Image, ImageDraw, ImageFont

from aigc_studio import params as knobs
from aigc_studio.recipe import Result

# Loudness gating as in ITU-R BS.1770 (without its K-weighting filter): 400 ms
# blocks every 100 ms; blocks below -70 dBFS, then those 10 dB under the mean of
# the rest, are left out, so pauses between sentences do not count as "quiet".
BLOCK_S, HOP_S = 0.4, 0.1
ABSOLUTE_GATE_DB, RELATIVE_GATE_DB = -70.0, -10.0
PEAK_CEILING = 0.98  # matched variants stay below this peak, so matching never clips

VIEW_WIDTH, WAVE_HEIGHT, SPECTRUM_HEIGHT, CAPTION_HEIGHT = 480, 90, 150, 16
SPECTRUM_RANGE_DB = 80.0  # the spectrogram shows the loudest 80 dB
# A dark-to-light palette (close to matplotlib's magma): position in [0, 1] -> RGB.
PALETTE = np.array([(0.0, 0, 0, 4), (0.25, 59, 15, 112), (0.5, 140, 41, 129), (0.75, 222, 73, 104),
                    (1.0, 252, 253, 191)])


# ----- loudness and gain ------------------------------------------------------------------

def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """samples times 10^(gain_db / 20), clipped to [-1, 1] (float32)."""
    samples = np.asarray(samples, dtype=np.float32)
    if gain_db == 0:
        return samples
    return np.clip(samples * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


def loudness_db(samples: np.ndarray, rate: int) -> float:
    """Gated RMS level in dBFS (-inf for silence): the mean power of the 400 ms
    blocks that pass the absolute (-70 dBFS) and relative (-10 dB) gates."""
    power = np.asarray(samples, dtype=np.float64) ** 2
    if power.size == 0:
        return -math.inf
    block = max(1, int(BLOCK_S * rate))
    if power.size <= block:
        blocks = np.array([power.mean()])
    else:
        sums = np.concatenate([[0.0], np.cumsum(power)])
        starts = np.arange(0, power.size - block + 1, max(1, int(HOP_S * rate)))
        blocks = (sums[starts + block] - sums[starts]) / block
    blocks = blocks[blocks > 10 ** (ABSOLUTE_GATE_DB / 10)]
    if blocks.size == 0:
        return -math.inf
    relative_gate = blocks.mean() * 10 ** (RELATIVE_GATE_DB / 10)
    return float(10 * np.log10(blocks[blocks >= relative_gate].mean()))


def matching_gains(outputs: list[tuple[int, np.ndarray]]) -> list[float]:
    """Gains in dB (0.01 dB steps) that bring every output to one loudness.

    The common level is the median loudness, lowered when a variant would
    otherwise peak above PEAK_CEILING: matching never clips. Silent outputs keep
    gain 0 (there is nothing to match).
    """
    levels = [loudness_db(samples, rate) for rate, samples in outputs]
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


def _colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB through PALETTE."""
    rgb = [np.interp(values, PALETTE[:, 0], PALETTE[:, channel]) for channel in (1, 2, 3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def spectrogram_image(samples: np.ndarray, rate: int, width: int = VIEW_WIDTH, height: int = SPECTRUM_HEIGHT) -> Image.Image:
    """The spectrogram as a picture: time left to right, 0 Hz at the bottom,
    brighter = louder, the loudest SPECTRUM_RANGE_DB dB shown."""
    db = spectrogram_db(samples, rate)
    top = db.max()
    scaled = np.clip((db - (top - SPECTRUM_RANGE_DB)) / SPECTRUM_RANGE_DB, 0.0, 1.0)
    picture = Image.fromarray(_colour(scaled[::-1]), "RGB")
    return picture.resize((width, height), Image.Resampling.BILINEAR)


def waveform_image(samples: np.ndarray, width: int = VIEW_WIDTH, height: int = WAVE_HEIGHT) -> Image.Image:
    """The waveform as a picture: for each pixel column, a line from the lowest
    to the highest sample in its stretch of time; full scale is the full height."""
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    middle = (height - 1) / 2
    draw.line([(0, middle), (width - 1, middle)], fill=(200, 200, 200))
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if x.size == 0:
        return picture
    columns = np.array_split(x, min(width, x.size))
    for column, stretch in enumerate(columns):
        top, bottom = middle - float(stretch.max()) * middle, middle - float(stretch.min()) * middle
        draw.line([(column, top), (column, bottom)], fill=(67, 56, 202))
    return picture


def view_image(samples: np.ndarray, rate: int, title: str = "") -> Image.Image:
    """Title, waveform and spectrogram stacked on one time axis, with the duration
    and frequency range written in the captions."""
    font = ImageFont.load_default()
    wave, spectrum = waveform_image(samples), spectrogram_image(samples, rate)
    picture = Image.new("RGB", (VIEW_WIDTH, 2 * CAPTION_HEIGHT + WAVE_HEIGHT + SPECTRUM_HEIGHT), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((4, 2), title, fill="black", font=font)
    picture.paste(wave, (0, CAPTION_HEIGHT))
    picture.paste(spectrum, (0, CAPTION_HEIGHT + WAVE_HEIGHT))
    bottom = CAPTION_HEIGHT + WAVE_HEIGHT + SPECTRUM_HEIGHT + 2
    seconds = len(samples) / rate
    draw.text((4, bottom), "0 s", fill="black", font=font)
    draw.text((VIEW_WIDTH // 2 - 60, bottom), f"spectrogram 0-{rate / 2000:g} kHz", fill="black", font=font)
    draw.text((VIEW_WIDTH - 60, bottom), f"{seconds:.2f} s", fill="black", font=font)
    return picture


def file_view(path, title: str = "") -> Image.Image:
    """view_image of an audio file on disk (channels averaged to mono)."""
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return view_image(samples.mean(axis=1), rate, title)
