"""The Audio tab's X/Y grid (ui/audio_grid.py): labelled players at one loudness, the
table of the cells' loudness, the zip of every cell, and knobs the voice ignores refused."""

from __future__ import annotations

import zipfile

import functools

import gradio as gr
import pytest
import soundfile

from aigc_studio import audio_views
from aigc_studio.actions.audio import KNOBS
from aigc_studio.ui import audio_grid
from aigc_studio.ui.session import Sessions
from tests.conftest import VITS_ID


@pytest.fixture(scope="module")
def make_audio_grid(studio):
    """The grid's handler over a studio, as the tab's event calls it (the request first, no session)."""
    s = studio()
    return functools.partial(audio_grid.make_audio_grid, s, Sessions(s.history))


def knob_values(**values) -> list:
    return [values.get(name) for name in KNOBS]


def test_the_grid_labels_every_cell_with_its_knobs_and_loudness_and_zips_them(make_audio_grid):
    table, *players, archive = make_audio_grid(None, "hello there, the rain is here", "speed", "0.8, 1.5",
                                               "noise_scale", "0.0, 1.0", VITS_ID, *knob_values(seed=3))
    for label in ("speed=0.8", "speed=1.5", "noise_scale=0.0", "noise_scale=1.0"):
        assert f">{label}</th>" in table
    shown = [p for p in players if p["visible"]]
    assert len(shown) == 4 and len(players) == 16
    assert [p["label"].split(" · ")[0] for p in shown] == ["speed=0.8, noise_scale=0.0", "speed=1.5, noise_scale=0.0",
                                                         "speed=0.8, noise_scale=1.0", "speed=1.5, noise_scale=1.0"]
    assert all("LUFS" in p["label"] for p in shown) and table.count("LUFS") == 4
    levels = [audio_views.loudness_lufs(*soundfile.read(p["value"], dtype="float32")) for p in shown]
    assert max(levels) - min(levels) < 1.0, levels  # loudness-matched, like side by side
    with zipfile.ZipFile(archive) as z:
        assert len([n for n in z.namelist() if n.endswith(".wav")]) == 4 and "grid.json" in z.namelist()


def test_a_knob_the_voice_does_not_read_is_refused_naming_the_ones_it_does(make_audio_grid):
    with pytest.raises(gr.Error) as error:
        make_audio_grid(None, "hello", "guidance", "1, 3", "none", "", VITS_ID, *knob_values())
    assert "does not use guidance" in str(error.value) and "speed" in str(error.value)
