"""The chorale transformer and its hard masks (aigc_studio/chorale_model.py)."""

from __future__ import annotations

import torch

from aigc_studio import chorales as ch
from aigc_studio.chorale_model import (ChoraleConfig, ChoraleTransformer, allowed, inputs, load, mask_logits,
                                       parallel_pitches, save)


def test_the_shipped_size_is_about_a_million_parameters():
    assert 800_000 <= ChoraleTransformer(ChoraleConfig()).parameter_count() <= 1_300_000


def test_save_and_load_give_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = ChoraleTransformer(ChoraleConfig(width=32, layers=1, heads=2, window=8)).eval()
    save(model, tmp_path)
    sequence = [ch.MINOR, ch.METRE_3, ch.BOS, ch.pitch_token(69), ch.pitch_token(64)]
    with torch.no_grad():
        assert torch.equal(model(*inputs(sequence, 0)), load(tmp_path)(*inputs(sequence, 0)))


def test_masks_keep_each_voice_in_its_range_in_sounding_pitch():
    for voice, name in enumerate(ch.VOICES):
        low, high = ch.RANGES[name]
        for transpose in (-6, 0, 5):
            mask = allowed(voice, ch.pitch_token(60), transpose)
            pitches = [ch.token_pitch(t) + transpose for t in range(ch.PITCH0, ch.VOCAB) if mask[t]]
            assert min(pitches) == low and max(pitches) == high
            assert mask[ch.REST] and not mask[ch.END] and not mask[ch.BOS] and not mask[ch.PAD]


def test_hold_only_while_the_voice_sounds():
    assert allowed(0, ch.pitch_token(72))[ch.HOLD]
    assert allowed(0, ch.HOLD)[ch.HOLD]
    assert not allowed(0, ch.REST)[ch.HOLD]
    assert not allowed(0, None)[ch.HOLD]  # the first step: nothing sounds yet


def test_masked_logits_never_pick_a_forbidden_token():
    logits = torch.zeros(ch.VOCAB)
    logits[ch.HOLD] = logits[ch.pitch_token(30)] = 100.0  # the model "wants" a hold after a rest and a low E
    masked = mask_logits(logits, 0, ch.REST)
    assert masked[ch.HOLD] == float("-inf") and masked[ch.pitch_token(30)] == float("-inf")
    assert int(torch.argmax(masked)) != ch.HOLD


def _step(*pitches_or_tokens) -> list[int]:
    return [ch.pitch_token(t) if t > ch.PITCH0 + 12 else t for t in pitches_or_tokens]


def test_a_voice_may_not_follow_a_voice_above_it_into_parallel_fifths_or_octaves():
    # G4 over C4 (a fifth); the soprano steps up to A4: the alto may not step up to D4 (or any
    # D above C4), may go down to D3 (contrary motion), hold, or take another pitch.
    body = _step(67, 60, 48, 36) + _step(69)
    forbidden = parallel_pitches(body)
    assert {62, 74} <= forbidden and 50 not in forbidden and 64 not in forbidden and 60 not in forbidden
    # Octaves: bass C3 under tenor C4, the tenor moves down to B3: the bass may not go to B2.
    body = _step(67, 64, 60, 48) + _step(67, 64, 59)
    assert 47 in parallel_pitches(body) and 43 not in parallel_pitches(body)
    # Voices above that hold form no parallel: C5 G4 C4 over C3 all hold, the bass is free.
    body = _step(72, 67, 60, 48) + [ch.HOLD] * 3
    assert parallel_pitches(body) == set()


def test_the_parallel_mask_reaches_the_logits():
    body = _step(67, 60, 48, 36) + _step(69)
    logits = torch.zeros(ch.VOCAB)
    logits[ch.pitch_token(62)] = 100.0  # the model "wants" the parallel fifth
    masked = mask_logits(logits, 1, body[1], forbidden=parallel_pitches(body))
    assert masked[ch.pitch_token(62)] == float("-inf") and int(torch.argmax(masked)) != ch.pitch_token(62)
