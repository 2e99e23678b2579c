"""Composing with the chorale model (aigc_studio/music.py) through the Studio: the text
engine's sampler and explainer over notes, MIDI beside the audio, and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile
import torch

from aigc_studio import chorales as ch
from aigc_studio import music
from aigc_studio import music_render
from aigc_studio.catalog import local_spec
from aigc_studio.chorale_model import ChoraleConfig, ChoraleTransformer, allowed, save
from aigc_studio.engines.text import Column
from aigc_studio.params import AudioParams, ParamError, make

MODEL = "tiny-chorales"


@pytest.fixture(scope="module")
def chorale_studio(studio, tmp_path_factory):
    """A Studio whose catalog adds a tiny random chorale model (random weights: the tests
    check the machinery, bench/music_quality.py the music)."""
    folder = tmp_path_factory.mktemp("tiny-chorales")
    torch.manual_seed(0)
    save(ChoraleTransformer(ChoraleConfig(width=32, layers=1, heads=2, window=8)), folder)
    made = studio()
    made.catalog.add(local_spec(MODEL, "audio", "chorales", folder, defaults={"bars": 2, "top_p": 0.95, "top_k": 0}))
    return made


def test_a_piece_has_the_bars_asked_for_and_every_note_obeys_the_masks(chorale_studio):
    piece, chosen, _ = chorale_studio.chorale("Test", MODEL, seed=4, bars=3, key="E minor", metre="3/4")
    assert piece.steps == 3 * 6 and chosen.seed == 4
    body = ch.grid_tokens(piece.tokens)
    for index, token in enumerate(body):  # a random model proposes anything: the masks decide
        previous = body[index - 4] if index >= 4 else None
        assert allowed(index % 4, previous, piece.transpose)[token]
    for voice, notes in zip(ch.VOICES, piece.notes()):
        low, high = ch.RANGES[voice]
        assert all(low <= pitch <= high for pitch, _, _ in notes)
    assert parallel_motions(body) == 0  # a random model would write many: the voice-leading mask forbids them


def parallel_motions(body: list[int]) -> int:
    """Parallel fifths and octaves between any two voices from one step to the next."""
    steps = [body[i:i + 4] for i in range(0, len(body), 4)]
    sounding, count = [], 0
    for step in steps:
        sounding.append([ch.token_pitch(t) if t != ch.HOLD else (sounding[-1][v] if sounding else None)
                         for v, t in enumerate(step)])
    for before, after in zip(sounding, sounding[1:]):
        for upper in range(4):
            for lower in range(upper + 1, 4):
                a, b, c, d = before[upper], before[lower], after[upper], after[lower]
                if None in (a, b, c, d) or a == c or b == d or (c > a) != (d > b):
                    continue
                count += (a - b) % 12 == (c - d) % 12 and (a - b) % 12 in (0, 7)
    return count


def test_the_same_seed_and_knobs_give_the_same_midi_bytes_and_another_seed_does_not(chorale_studio):
    first, _ = chorale_studio.music_midi("Test", MODEL, seed=7, key="D major")
    again, _ = chorale_studio.music_midi("Test", MODEL, seed=7, key="D major")
    other, _ = chorale_studio.music_midi("Test", MODEL, seed=8, key="D major")
    assert first == again and first != other
    recipe = music_render.read_midi_recipe(first)
    assert recipe["model_id"] == MODEL and recipe["params"]["seed"] == 7 and recipe["params"]["key"] == "D major"


def test_a_fresh_model_composes_the_same_notes(chorale_studio):
    loaded = music.load_model(chorale_studio.catalog.get(MODEL, "audio").location)
    params = make(AudioParams, seed=11, bars=2)
    assert music.compose(loaded, params).tokens == music.compose(music.load_model(loaded.folder), params).tokens


def test_the_audio_is_stereo_and_its_midi_is_saved_beside_it(chorale_studio):
    result = chorale_studio.audio("Test", MODEL, seed=2, timbre="flute")
    rate, samples = result.output
    assert samples.ndim == 2 and samples.shape[1] == 2 and np.abs(samples).max() <= 1.0
    assert not np.allclose(samples[:, 0], samples[:, 1])  # the voices are panned
    path = chorale_studio.save(result)
    assert soundfile.info(str(path)).channels == 2
    midi = path.with_suffix(".mid").read_bytes()
    assert midi == chorale_studio.music_midi("Test", MODEL, seed=2, timbre="flute")[0]
    assert set(result.recipe.params) >= {"bars", "tempo", "key", "metre", "timbre", "temperature", "top_k", "top_p"}


def test_the_explainer_stages_are_the_samplers_distribution(chorale_studio):
    knobs = dict(seed=5, temperature=0.7, top_k=6, top_p=0.9)
    piece, chosen, spec = chorale_studio.chorale("Test", MODEL, **knobs)
    loaded = music.load_model(spec.location)
    for position in (0, 5, 13):
        explanation = chorale_studio.explain_note("Test", position, MODEL, **knobs)
        assert [s.name for s in explanation.stages][:5] == ["raw", "penalties", "temperature", "top-k", "top-p"]
        context = piece.tokens[:3 + position]
        column = Column(music.sampling_params(chosen), torch.tensor([context]), loaded.text_model(piece.transpose))
        candidates, probs = column.distribution(music.next_logits(loaded.model, context, piece.transpose))
        drawn = dict(zip(candidates.tolist(), probs.tolist()))
        final = explanation.stages[-1]
        for token, probability in zip(explanation.candidate_ids, final.probs):
            assert probability == pytest.approx(drawn.get(token, 0.0), abs=1e-6)
        assert explanation.chosen_id == ch.grid_tokens(piece.tokens)[position]
        assert final.kept[explanation.candidate_ids.index(explanation.chosen_id)]  # it could be drawn
        assert final.kept_tokens <= 6


def test_explainer_names_notes_in_the_chosen_key(chorale_studio):
    explanation = chorale_studio.explain_note("Test", 4, MODEL, seed=1, key="F# major")
    names = [n for n in explanation.candidates if n not in ("rest", "hold")]
    low, high = ch.RANGES["soprano"]
    assert names and all(n[:-1] in ch.NOTE_NAMES for n in names)
    midi = [ch.NOTE_NAMES.index(n[:-1]) + 12 * (int(n[-1]) + 1) for n in names]
    assert all(low <= m <= high for m in midi)


@pytest.mark.parametrize("values, field", [
    (dict(bars=0), "bars"), (dict(bars=10000), "bars"), (dict(tempo=0), "tempo"), (dict(key="H major"), "key"),
    (dict(metre="5/4"), "metre"), (dict(timbre="kazoo"), "timbre"),
])
def test_bad_knobs_are_refused_naming_the_field_and_range(chorale_studio, values, field):
    with pytest.raises(ParamError) as error:
        chorale_studio.audio("Test", MODEL, **values)
    assert error.value.field == field
    message = str(error.value)
    assert message.startswith(f"{field}: ")
    if field in ("bars", "tempo"):
        low, high = {"bars": ("1", "32"), "tempo": ("30.0", "240.0")}[field]
        assert f"[{low}, {high}]" in message


def test_notes_are_refused_for_a_model_that_makes_audio(chorale_studio):
    with pytest.raises(ParamError, match="model: .* makes audio, not notes"):
        chorale_studio.music_midi("Test", None)


def test_explainer_position_out_of_range_is_refused(chorale_studio):
    with pytest.raises(ParamError, match=r"position: must be a whole number in \[0, 31\]"):
        chorale_studio.explain_note("Test", 32, MODEL, seed=1, bars=1)


def test_keys_transpose_by_at_most_a_tritone():
    assert music.transposition("C major") == 0 and music.transposition("A minor") == 0
    assert music.transposition("D minor") == 5 and music.transposition("G major") == -5
    assert {music.transposition(k) for k in music.KEYS} == set(range(-6, 6))
    assert music.describe_position(dataclasses.replace(
        music.Piece([], "C major", "4/4", 0, 80.0, "organ", 1)), 4 * 3 + 1) == "bar 1, beat 2½, alto"


def test_a_temperature_sweep_side_by_side_is_loudness_matched(chorale_studio):
    from aigc_studio.audio_views import loudness_lufs
    from aigc_studio.params import variants

    base = chorale_studio.params("audio", MODEL, seed=3, bars=1)
    results = chorale_studio.audio_variants("Test", variants(base, "temperature", [0.5, 1.0, 1.5]), MODEL)
    assert [r.recipe.label for r in results] == ["temperature=0.5", "temperature=1.0", "temperature=1.5"]
    levels = [loudness_lufs(r.output[1], r.output[0]) for r in results]
    assert max(levels) - min(levels) < 0.5
    assert [r.recipe.params["temperature"] for r in results] == [0.5, 1.0, 1.5]
    assert all(r.recipe.params["seed"] == 3 for r in results)


def test_a_piece_opens_on_its_keys_tonic_chord(chorale_studio):
    for key, triad, tonic in (("E major", {4, 8, 11}, 4), ("F minor", {5, 8, 0}, 5)):
        piece, _, _ = chorale_studio.chorale("Test", MODEL, seed=2, bars=1, key=key)
        first = [voice[0][0] for voice in piece.notes()]  # a random model: only the mask makes this hold
        assert all(v[0][1] == 0 for v in piece.notes())
        assert {p % 12 for p in first} <= triad and first[3] % 12 == tonic


MELODY = "G4 - A4 - B4 - C5 - | D5 - - - r r D5 -"


def test_a_melody_is_kept_note_for_note_and_the_model_writes_the_other_voices(chorale_studio):
    piece, chosen, _ = chorale_studio.chorale("Test", MODEL, seed=6, bars=3, key="G major", start=MELODY)
    body = ch.grid_tokens(piece.tokens)
    soprano = [ch.token_name(t) for t in body[0:64:4]]
    assert " ".join(soprano) == "C5 hold D5 hold E5 hold F5 hold G5 hold hold hold rest rest G5 hold"  # model space: G major - 5
    assert piece.given == frozenset(range(0, 64, 4)) and chosen.start == MELODY
    assert "given by the start" in music.describe_position(piece, 8) and "given" not in music.describe_position(piece, 9)
    for index, token in enumerate(body):  # the other voices still obey the masks
        if index not in piece.given:
            assert allowed(index % 4, body[index - 4] if index >= 4 else None, piece.transpose)[token]
    free = chorale_studio.chorale("Test", MODEL, seed=6, bars=3, key="G major")[0]
    assert ch.grid_tokens(free.tokens)[0:64:4] != body[0:64:4]


def test_four_lines_are_first_bars_the_model_continues(chorale_studio):
    start = "C5 - - - D5 - E5 -\nG4 - - - G4 - G4 -\nE4 - - - B3 - C4 -\nC3 - - - G2 - C3 -"
    piece, _, _ = chorale_studio.chorale("Test", MODEL, seed=2, bars=2, key="C major", start=start)
    body = ch.grid_tokens(piece.tokens)
    assert len(piece.given) == 32 and piece.given == frozenset(range(32))
    assert ch.token_name(body[0]) == "C5" and ch.token_name(body[3]) == "C3" and body[4] == ch.HOLD
    assert len(body) == 64  # the second bar is the model's


def test_a_midi_file_reads_back_as_a_start():
    notes = [[(67, 0, 2), (69, 2, 2), (71, 4, 4)], [], [], []]  # one line: a melody
    data = music_render.midi_bytes(notes, 90.0, "4/4", "G major", None, "organ", "tune")
    start, key, metre, bars = music.start_from_midi(data)
    assert start == "G4 - A4 - B4 - - -" and metre == "4/4" and bars == 1 and key.endswith(("major", "minor"))


@pytest.mark.parametrize("start, words", [
    ("H5 - -", "'H5' is not a note"), ("C5\nC4", "got 2 lines"), ("- C5", "no note sounds"),
    ("C7", "outside the soprano's range A3..A5"), ("C5 " * 33, "do not fit in 4 bars"),
    ("C5 -\nA4\nE4 -\nC3 -", "equally long"),
])
def test_a_bad_start_is_refused_naming_the_field(chorale_studio, start, words):
    with pytest.raises(ParamError) as error:
        chorale_studio.chorale("Test", MODEL, bars=4, start=start)
    assert error.value.field == "start" and words in str(error.value)


def test_bytes_that_are_not_midi_are_refused_naming_the_field():
    with pytest.raises(ParamError) as error:
        music.start_from_midi(b"RIFF....WAVEfmt ")
    assert error.value.field == "midi"
