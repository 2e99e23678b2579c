"""Loudness, gain, loudness matching and the waveform / spectrogram pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

from aigc_studio import audio_views
from aigc_studio.recipe import Recipe, Result

RATE = 8000


def tone(frequency: float, amplitude: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def audio_result(samples: np.ndarray, gain_db: float = 0.0, label: str = "") -> Result:
    recipe = Recipe("audio", "test", "a tone", {"seed": 1, "gain_db": gain_db}, "cpu", "float32", label=label)
    return Result((RATE, samples), recipe)


# ----- loudness and gain ------------------------------------------------------------------

@pytest.mark.parametrize("amplitude", [1.0, 0.5, 0.01])
def test_loudness_of_a_sine_is_its_rms_level(amplitude):
    expected = 20 * math.log10(amplitude / math.sqrt(2))
    assert audio_views.loudness_db(tone(440, amplitude), RATE) == pytest.approx(expected, abs=0.05)


def test_pauses_do_not_make_speech_quieter():
    spoken = tone(300, 0.3)
    with_pauses = np.concatenate([spoken, np.zeros(2 * RATE, np.float32), spoken, np.zeros(RATE, np.float32)])
    drop = audio_views.loudness_db(spoken, RATE) - audio_views.loudness_db(with_pauses, RATE)
    plain_rms_drop = 10 * math.log10(np.mean(spoken.astype(float) ** 2) / np.mean(with_pauses.astype(float) ** 2))
    assert plain_rms_drop == pytest.approx(10 * math.log10(5 / 2), abs=0.01)  # 2 s of sound in 5 s
    # Only the blocks that straddle a pause's edges still count a little of it.
    assert 0 <= drop < 0.3 * plain_rms_drop


def test_silence_and_empty_audio_have_no_loudness():
    assert audio_views.loudness_db(np.zeros(RATE, np.float32), RATE) == -math.inf
    assert audio_views.loudness_db(np.zeros(0, np.float32), RATE) == -math.inf


def test_short_clips_are_measured_as_one_block():
    assert audio_views.loudness_db(tone(1000, 0.5, seconds=0.1), RATE) == pytest.approx(-9.03, abs=0.1)


def test_apply_gain_scales_and_clips():
    samples = tone(440, 0.5)
    np.testing.assert_allclose(audio_views.apply_gain(samples, -6.0206), samples * 0.5, atol=1e-6)
    assert np.array_equal(audio_views.apply_gain(samples, 0.0), samples)
    loud = audio_views.apply_gain(samples, 20.0)
    assert loud.dtype == np.float32 and np.abs(loud).max() == 1.0


def test_matching_gains_bring_variants_to_one_loudness_without_clipping():
    outputs = [(RATE, tone(200, 0.05)), (RATE, tone(500, 0.3)), (RATE, tone(900, 0.8))]
    gains = audio_views.matching_gains(outputs)
    matched = [audio_views.apply_gain(samples, gain) for (_, samples), gain in zip(outputs, gains)]
    levels = [audio_views.loudness_db(m, RATE) for m in matched]
    assert max(levels) - min(levels) < 0.05
    assert all(np.abs(m).max() <= audio_views.PEAK_CEILING + 1e-3 for m in matched)
    assert gains[1] == pytest.approx(0.0, abs=0.01)  # the median level is the target when nothing would clip


def test_a_peaky_variant_lowers_the_common_level_instead_of_clipping():
    clicks = np.zeros(RATE, np.float32)
    clicks[::800] = 0.9  # loud peaks, low average level
    outputs = [(RATE, clicks), (RATE, tone(300, 0.02)), (RATE, tone(300, 0.5))]
    gains = audio_views.matching_gains(outputs)
    matched = [audio_views.apply_gain(samples, gain) for (_, samples), gain in zip(outputs, gains)]
    assert np.abs(matched[0]).max() <= audio_views.PEAK_CEILING + 1e-3
    levels = [audio_views.loudness_db(m, RATE) for m in matched]
    assert max(levels) - min(levels) < 0.05


def test_silent_variants_are_left_alone():
    outputs = [(RATE, np.zeros(RATE, np.float32)), (RATE, tone(300, 0.1)), (RATE, tone(300, 0.4))]
    gains = audio_views.matching_gains(outputs)
    assert gains[0] == 0.0 and gains[1] > 0 > gains[2]
    assert audio_views.matching_gains([(RATE, tone(300, 0.1))]) == [0.0]


def test_match_loudness_records_the_total_gain_in_each_recipe():
    results = [audio_result(tone(300, 0.1), gain_db=-3.0, label="a"), audio_result(tone(300, 0.4), label="b")]
    matched = audio_views.match_loudness(results)
    for before, after in zip(results, matched):
        added = after.recipe.params["gain_db"] - before.recipe.params["gain_db"]
        np.testing.assert_allclose(after.output[1], audio_views.apply_gain(before.output[1], added), atol=1e-7)
        assert after.recipe.label == before.recipe.label and after.recipe.params["seed"] == 1
    assert before.recipe.params["gain_db"] == 0.0  # the inputs are not changed
    levels = [audio_views.loudness_db(r.output[1], RATE) for r in matched]
    assert abs(levels[0] - levels[1]) < 0.05


# ----- pictures ---------------------------------------------------------------------------

def test_spectrogram_peaks_at_the_tone_frequency():
    db = audio_views.spectrogram_db(tone(1000, 0.5), RATE)
    bins = db.shape[0]
    bin_hz = (RATE / 2) / (bins - 1)
    assert abs(np.argmax(db.mean(axis=1)) * bin_hz - 1000) <= bin_hz
    assert db.shape[1] > 10  # many frames over one second


def test_spectrogram_image_puts_low_frequencies_at_the_bottom():
    low = np.asarray(audio_views.spectrogram_image(tone(200, 0.5), RATE).convert("L"), dtype=float)
    high = np.asarray(audio_views.spectrogram_image(tone(3500, 0.5), RATE).convert("L"), dtype=float)
    assert low.shape == (audio_views.SPECTRUM_HEIGHT, audio_views.VIEW_WIDTH)
    assert np.argmax(low.mean(axis=1)) > 0.8 * low.shape[0]
    assert np.argmax(high.mean(axis=1)) < 0.2 * high.shape[0]


def test_waveform_of_silence_is_only_the_middle_line():
    picture = np.asarray(audio_views.waveform_image(np.zeros(RATE, np.float32)))
    wave_colour = np.all(picture == (67, 56, 202), axis=-1)
    assert wave_colour.sum(axis=0).max() <= 1  # at most one pixel per column, on the middle row


def test_full_scale_waveform_fills_the_height():
    square = np.sign(tone(50, 1.0)).astype(np.float32)
    picture = np.asarray(audio_views.waveform_image(square))
    wave_colour = np.all(picture == (67, 56, 202), axis=-1)
    assert wave_colour[0].any() and wave_colour[-1].any()


def test_view_of_a_file_stacks_waveform_and_spectrogram(tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, tone(440, 0.5), RATE)
    picture = audio_views.file_view(path, "seed=1 · gain +0.0 dB")
    expected_height = 2 * audio_views.CAPTION_HEIGHT + audio_views.WAVE_HEIGHT + audio_views.SPECTRUM_HEIGHT
    assert picture.size == (audio_views.VIEW_WIDTH, expected_height) and picture.mode == "RGB"
    spectrum = np.asarray(picture)[audio_views.CAPTION_HEIGHT + audio_views.WAVE_HEIGHT:][:audio_views.SPECTRUM_HEIGHT]
    assert spectrum.std() > 10  # not blank
