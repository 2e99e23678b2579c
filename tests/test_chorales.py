"""The chorale corpus reader and the four-voice grid tokenizer (aigc_studio/chorales.py)."""

from __future__ import annotations

import music21
import pytest

from aigc_studio import chorales as ch

ON_GRID = "bwv115.6"  # a major chorale whose every note starts and ends on the eighth grid
WITH_PICKUP = "bwv101.7"  # a minor chorale starting with a three-quarter pickup


def corpus_file(name: str):
    return next(path for path in ch.corpus_files() if path.stem == name)


def music21_notes(name: str, shift: int) -> list[list[tuple[int, int, int]]]:
    """Per part, (MIDI + shift, start, length) in eighth-note steps, as music21 reads the file."""
    score = music21.converter.parse(str(corpus_file(name))).stripTies()
    return [[(n.pitch.midi + shift, int(n.offset * 2), int(n.quarterLength * 2))
             for n in part.flatten().notes] for part in score.parts]


def test_the_corpus_is_the_music21_wheels_and_most_files_are_four_voice_chorales():
    files = ch.corpus_files()
    assert len(files) > 400 and all(f.suffix == ".mxl" for f in files)
    assert 340 <= len(ch.read_corpus(files)) <= 380


def test_a_chorale_reads_as_music21_reads_it_and_round_trips_through_tokens():
    chorale = ch.read_chorale(corpus_file(ON_GRID))
    assert (chorale.mode, chorale.metre) == ("major", "4/4")
    assert chorale.notes[3][-1][0] % 12 == 0  # transposed to C major: the final bass note is C
    shift = chorale.notes[0][0][0] - music21_notes(ON_GRID, 0)[0][0][0]
    assert chorale.notes == music21_notes(ON_GRID, shift)
    tokens = ch.encode(chorale)
    assert tokens[:3] == [ch.MAJOR, ch.METRE_4, ch.BOS] and tokens[-1] == ch.END
    assert len(tokens) == 4 + 4 * chorale.length
    assert ch.decode(tokens) == chorale.notes


def test_a_pickup_sets_the_phase_and_minor_goes_to_a_minor():
    chorale = ch.read_chorale(corpus_file(WITH_PICKUP))
    assert (chorale.mode, chorale.phase) == ("minor", 6)  # a quarter-note pickup: bar 1 starts 2 steps in
    assert chorale.notes[3][-1][0] % 12 == 9  # the final bass note is A
    voices, positions = ch.slots(ch.encode(chorale), chorale.phase)
    assert voices[:3] == [4, 4, 0] and positions[2] == 6  # BOS predicts the soprano at step 6 of the bar
    assert positions[2 + 8] == 0  # two steps later: the downbeat


def test_transposition_moves_every_pitch_and_keeps_holds_and_rests():
    chorale = ch.read_chorale(corpus_file(ON_GRID))
    up = ch.decode(ch.encode(chorale, 3))
    assert up == [[(p + 3, s, n) for p, s, n in voice] for voice in chorale.notes]


def test_a_hold_after_a_rest_decodes_as_a_rest():
    tokens = [ch.MAJOR, ch.METRE_4, ch.BOS] + [ch.REST, ch.REST, ch.REST, ch.pitch_token(48),
                                              ch.HOLD, ch.REST, ch.REST, ch.HOLD]
    assert ch.decode(tokens) == [[], [], [], [(48, 0, 2)]]


def test_the_held_out_split_is_seeded_disjoint_and_a_tenth():
    names = [f"bwv{i}" for i in range(100)]
    train, held = ch.split_names(names, seed=0)
    assert len(held) == 10 and not set(train) & set(held) and sorted(train + held) == sorted(names)
    assert ch.split_names(list(reversed(names)), seed=0) == (train, held)  # order of the files does not matter
    assert ch.split_names(names, seed=1)[1] != held


def test_files_that_are_not_four_voice_chorales_are_refused(tmp_path):
    many_parts = next(path for path in ch.corpus_files() if len(ch._score_xml(path).findall("part")) > 4)
    with pytest.raises(ch.NotChorale, match="parts"):
        ch.read_chorale(many_parts)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ch.pitch_token(ch.HIGHEST + 1)
