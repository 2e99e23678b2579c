"""The additive synthesiser and the MIDI writer (aigc_studio/music_render.py)."""

from __future__ import annotations

import music21
import numpy as np
import pytest

from aigc_studio import music_render as mr

NOTES = [[(72, 0, 4), (74, 4, 4)], [(67, 0, 8)], [(64, 0, 2), (62, 2, 6)], [(48, 0, 8)]]  # C major, 4/4


def test_synthesis_is_deterministic_stereo_and_below_full_scale():
    a = mr.synthesise(NOTES, 0.25, "strings")
    assert a.dtype == np.float32 and a.shape[1] == 2
    assert np.array_equal(a, mr.synthesise(NOTES, 0.25, "strings"))
    assert 0.5 < np.abs(a).max() <= 0.8 + 1e-6
    assert len(a) == pytest.approx((8 * 0.25 + mr.TIMBRES["strings"][4]) * mr.RATE, abs=2)


def test_each_voice_has_its_place_in_the_stereo_field():
    soprano = mr.synthesise([[(72, 0, 4)], [], [], []], 0.25)
    bass = mr.synthesise([[], [], [], [(48, 0, 4)]], 0.25)
    assert np.abs(soprano[:, 0]).sum() > np.abs(soprano[:, 1]).sum()  # soprano left
    assert np.abs(bass[:, 1]).sum() > np.abs(bass[:, 0]).sum()  # bass right


def test_a_note_sounds_at_its_pitch():
    samples = mr.synthesise([[(69, 0, 8)], [], [], []], 0.25, "flute").mean(axis=1)
    spectrum = np.abs(np.fft.rfft(samples[: mr.RATE]))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)  # 1 s of samples: bins are 1 Hz apart


def test_timbres_differ_and_an_unknown_one_is_refused():
    assert not np.array_equal(mr.synthesise(NOTES, 0.25, "organ"), mr.synthesise(NOTES, 0.25, "choir"))
    with pytest.raises(ValueError, match="timbre: must be one of organ"):
        mr.synthesise(NOTES, 0.25, "kazoo")


def test_midi_reads_back_in_music21_with_the_notes_tempo_and_recipe(tmp_path):
    data = mr.midi_bytes(NOTES, 90.0, "4/4", "C major", {"seed": 3}, title="Test")
    path = tmp_path / "x.mid"
    path.write_bytes(data)
    score = music21.converter.parse(str(path))
    parsed = [[(n.pitch.midi, round(n.offset * 2), round(n.quarterLength * 2)) for n in part.flatten().notes]
              for part in score.parts]
    assert parsed == NOTES
    assert score.metronomeMarkBoundaries()[0][2].number == pytest.approx(90.0)
    assert mr.read_midi_recipe(data) == {"seed": 3}
    assert data == mr.midi_bytes(NOTES, 90.0, "4/4", "C major", {"seed": 3}, title="Test")


def test_a_file_that_is_not_midi_is_refused():
    with pytest.raises(ValueError, match="midi: not a MIDI file"):
        mr.read_midi_recipe(b"RIFF....WAVEfmt ")
    assert mr.read_midi_recipe(mr.midi_bytes(NOTES, 90.0, "3/4", "D minor")) is None  # no recipe written
