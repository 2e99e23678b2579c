"""The audio operations every front door calls (aigc_studio/actions/audio.py): the requests
check their inputs that are not knobs once, side by side and the grid match loudness unless
the gain is what varies, and the chorale model's MIDI, explainer and MIDI start."""

from __future__ import annotations

import pytest
import torch

from aigc_studio import audio_views
from aigc_studio.actions import audio as actions
from aigc_studio.actions.variants import SEEDS, SWEEP
from aigc_studio.catalog import local_spec
from aigc_studio.chorale_model import ChoraleConfig, ChoraleTransformer, save
from aigc_studio.params import AudioParams, ParamError
from tests.conftest import VITS_ID

CHORALE = "tiny-chorales"


@pytest.fixture(scope="module")
def s(studio, tmp_path_factory):
    """A Studio over the tiny voice, with a tiny random chorale model added."""
    folder = tmp_path_factory.mktemp("tiny-chorales")
    torch.manual_seed(0)
    save(ChoraleTransformer(ChoraleConfig(width=32, layers=1, heads=2, window=8)), folder)
    made = studio()
    made.catalog.add(local_spec(CHORALE, "audio", "chorales", folder, defaults={"bars": 1}))
    return made


def levels(results) -> list[float]:
    return [audio_views.loudness_lufs(r.output[1], r.output[0]) for r in results]


def test_knobs_are_every_audio_field_in_order():
    assert actions.KNOBS == tuple(AudioParams.__dataclass_fields__)


@pytest.mark.parametrize("make, field", [
    (lambda: actions.GenerateAudio("hi", file_format="mp3"), "file_format"),
    (lambda: actions.GenerateAudio("hi", model=3), "model"),
    (lambda: actions.CompareAudio("hi", mode="Both"), "mode"),
    (lambda: actions.CompareAudio("hi", count=5), "count"),
    (lambda: actions.CompareAudio("hi", count=2.5), "count"),
    (lambda: actions.CompareAudio("hi", mode=SWEEP, knob_name="bogus"), "knob_name"),
    (lambda: actions.CompareAudio("hi", values=3), "values"),
    (lambda: actions.AudioGrid("hi", x_knob=""), "x_knob"),
    (lambda: actions.AudioGrid("hi", y_knob=4), "y_knob"),
    (lambda: actions.AudioGrid("hi", y_knob="speed", y_values=1.0), "y_values"),
    (lambda: actions.ExplainNote(knob_values={"seed": -1}), "seed"),
    (lambda: actions.ExplainNote(top_n=60, knob_values={"seed": 1}), "top_n"),
    (lambda: actions.ExplainNote(position=1.5, knob_values={"seed": 1}), "position"),
])
def test_a_bad_request_is_refused_naming_its_field(make, field):
    with pytest.raises(ParamError) as error:
        make()
    assert error.value.field == field


def test_requests_fill_their_defaults():
    compare = actions.CompareAudio("hi", file_format="FLAC")
    assert (compare.mode, compare.count, compare.knob_name, compare.file_format) == (SEEDS, 3, "speed", "flac")
    sweep = actions.CompareAudio("hi", mode=SWEEP, count=9, knob_name="noise_scale")  # count is for seeds only
    assert (sweep.count, sweep.knob_name, sweep.values) == (3, "noise_scale", "0.8, 1.0, 1.4")
    grid = actions.AudioGrid("hi", y_knob="none", y_values="1, 2")
    assert (grid.x_knob, grid.x_values, grid.y_knob, grid.y_values) == ("speed", "0.8, 1.0, 1.4", None, None)
    assert actions.MusicMidi().model == actions.MUSIC_MODEL


def test_compare_matches_loudness_unless_the_gain_is_swept(s):
    seeds = actions.compare(s, actions.CompareAudio("hello there", SEEDS, 2, model=VITS_ID, knob_values={"seed": 3}))
    assert len(seeds) == 2 and max(levels(seeds)) - min(levels(seeds)) < 1.0
    gains = actions.compare(s, actions.CompareAudio("hello there", SWEEP, knob_name="gain_db", values="-12, 0",
                                                    model=VITS_ID, knob_values={"seed": 3}))
    assert [r.recipe.params["gain_db"] for r in gains] == [-12.0, 0.0]
    assert levels(gains)[1] - levels(gains)[0] > 6  # the gain is heard, not matched away


def test_compare_labels_are_known_before_generating_and_unread_knobs_are_refused(s):
    asked = actions.CompareAudio("hi", SWEEP, knob_name="speed", values="0.8, 1.4", model=VITS_ID)
    assert actions.compare_labels(s, asked) == ["speed=0.8", "speed=1.4"]
    assert actions.compare_labels(s, actions.CompareAudio("hi", SEEDS, 2, model=VITS_ID)) == [
        "random seed 1", "random seed 2"]
    with pytest.raises(ParamError, match="does not use guidance"):
        actions.compare_labels(s, actions.CompareAudio("hi", SWEEP, knob_name="guidance", values="1, 3",
                                                       model=VITS_ID))


def test_the_grid_document_gives_each_cell_its_loudness_and_recipe(s):
    plan, cells = actions.make_grid(s, actions.AudioGrid("hello there", "speed", "0.8, 1.6", model=VITS_ID,
                                                         knob_values={"seed": 2}))
    document = actions.grid_document(plan, cells)
    assert [(c["row"], c["column"], c["label"]) for c in document["cells"]] == [(0, 0, "speed=0.8"),
                                                                               (0, 1, "speed=1.6")]
    assert all(c["loudness_lufs"] is not None and c["recipe"]["params"]["seed"] == 2 for c in document["cells"])


def test_restore_gives_the_recipe_its_knobs_and_format(s):
    result = actions.generate(s, actions.GenerateAudio("Restore me.", VITS_ID, {"speed": 1.3, "seed": 5}))
    path = s.save(result, "flac")
    saved, chosen, file_format = actions.restore(s, path)
    assert (saved.prompt, chosen.speed, chosen.seed, file_format) == ("Restore me.", 1.3, 5, "flac")


def test_the_chorale_explainer_midi_and_views_agree(s):
    knob_values = {"seed": 4, "bars": 1}
    explained = actions.ExplainNote("Test", position=5, top_n=3, model=CHORALE, knob_values=knob_values)
    explanation = actions.explain_note(s, explained)
    assert explanation.position == 5 and 3 <= len(explanation.candidate_ids) <= 4  # and the chosen note
    assert explanation.chosen_id in explanation.candidate_ids
    assert actions.note_place(s, explained).startswith("bar 1, beat 1½, alto")
    midi = actions.music_midi(s, actions.MusicMidi("Test", CHORALE, knob_values))
    assert midi.startswith(b"MThd") and midi == actions.music_midi(s, actions.MusicMidi("Test", CHORALE, knob_values))
    result = actions.generate(s, actions.GenerateAudio("Test", CHORALE, knob_values))
    roll, midi_path = actions.chorale_views(s, result.recipe, str(s.save(result)))
    assert roll.size[0] > 0 and midi_path.endswith(".mid")
    assert actions.is_chorale_model(s, CHORALE) and not actions.is_chorale_model(s, VITS_ID)


def test_a_midi_start_asks_for_enough_bars():
    melody = actions.MidiStart("G4 - A4 -", "G major", "4/4", 2)
    voices = actions.MidiStart("G4\nD4\nB3\nG3", "G major", "4/4", 2)
    assert not melody.continues and voices.continues
    assert (melody.piece_bars(1), melody.piece_bars(8), voices.piece_bars(1), voices.piece_bars(None)) == (2, 8, 6, 6)
    assert actions.MidiStart("", "C major", "4/4", 30).piece_bars(40) == 32
