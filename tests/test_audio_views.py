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
def test_loudness_of_a_997_hz_sine_is_its_level_in_lufs(amplitude):
    # BS.1770: a full-scale 997 Hz sine reads -3.01 LUFS (K-weighting is ~0 dB there)
    expected = 20 * math.log10(amplitude) - 3.01
    assert audio_views.loudness_lufs(tone(997, amplitude, rate=48000), 48000) == pytest.approx(expected, abs=0.1)


def test_k_weighting_counts_high_frequencies_louder_than_low_ones():
    # equal RMS, but BS.1770's K-weighting boosts ~4 dB above 2 kHz and cuts below 100 Hz
    low, high = (audio_views.loudness_lufs(tone(f, 0.3, rate=48000), 48000) for f in (60, 4000))
    assert high - low > 3


def test_pauses_do_not_make_speech_quieter():
    spoken = tone(300, 0.3)
    with_pauses = np.concatenate([spoken, np.zeros(2 * RATE, np.float32), spoken, np.zeros(RATE, np.float32)])
    drop = audio_views.loudness_lufs(spoken, RATE) - audio_views.loudness_lufs(with_pauses, RATE)
    plain_rms_drop = 10 * math.log10(np.mean(spoken.astype(float) ** 2) / np.mean(with_pauses.astype(float) ** 2))
    assert plain_rms_drop == pytest.approx(10 * math.log10(5 / 2), abs=0.01)  # 2 s of sound in 5 s
    # Only the blocks that straddle a pause's edges still count a little of it.
    assert 0 <= drop < 0.3 * plain_rms_drop


def test_silence_and_empty_audio_have_no_loudness():
    assert audio_views.loudness_lufs(np.zeros(RATE, np.float32), RATE) == -math.inf
    assert audio_views.loudness_lufs(np.zeros(0, np.float32), RATE) == -math.inf
    assert audio_views.lufs_label(-math.inf) == "silent"


def test_short_clips_are_measured_like_longer_ones():
    short, long = (audio_views.loudness_lufs(tone(1000, 0.5, seconds=s), RATE) for s in (0.1, 2.0))
    assert short == pytest.approx(long, abs=0.3)


def test_lufs_labels_use_a_minus_sign():
    assert audio_views.lufs_label(-16.2) == "\u221216 LUFS"


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
    levels = [audio_views.loudness_lufs(m, RATE) for m in matched]
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
    levels = [audio_views.loudness_lufs(m, RATE) for m in matched]
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
    levels = [audio_views.loudness_lufs(r.output[1], RATE) for r in matched]
    assert abs(levels[0] - levels[1]) < 0.05


# ----- pictures ---------------------------------------------------------------------------

def test_spectrogram_peaks_at_the_tone_frequency():
    db = audio_views.spectrogram_db(tone(1000, 0.5), RATE)
    bins = db.shape[0]
    bin_hz = (RATE / 2) / (bins - 1)
    assert abs(np.argmax(db.mean(axis=1)) * bin_hz - 1000) <= bin_hz
    assert db.shape[1] > 10  # many frames over one second


def _warmest_row(picture) -> int:
    rgb = np.asarray(picture, dtype=float)
    return int(np.argmax((rgb[..., 0] - rgb[..., 2]).mean(axis=1)))  # magma's bright band is orange; white is not


def test_view_puts_low_frequencies_at_the_bottom_of_the_spectrogram():
    # magma's bright orange marks the tone's band: near the bottom for 200 Hz, near the top for 3.5 kHz
    low, high = (_warmest_row(audio_views.view_image(tone(f, 0.5), RATE)) for f in (200, 3500))
    assert low > high + 80


def test_view_of_a_file_has_a_title_with_its_loudness_and_is_not_blank(tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, tone(440, 0.5), RATE)
    picture = audio_views.file_view(path, "seed=1 · gain +0.0 dB")
    assert picture.size == (audio_views.VIEW_WIDTH, audio_views.VIEW_HEIGHT) and picture.mode == "RGB"
    assert np.asarray(picture).std() > 30  # axes, a waveform and a dark spectrogram, not a blank canvas


def test_importing_audio_views_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, aigc_studio.audio_views; print('matplotlib' in sys.modules, 'pyloudnorm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False", "False"]
