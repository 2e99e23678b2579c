"""Training the chorale model (aigc_studio/chorale_train.py): seeded and reproducible."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from aigc_studio import chorale_train
from aigc_studio import chorales as ch
from aigc_studio.chorale_model import ChoraleConfig

TINY = dict(width=16, layers=1, heads=2, window=8)


def test_a_short_run_is_reproducible_and_logs_its_held_out_split(tmp_path):
    first = chorale_train.train(tmp_path / "a", epochs=2, config=ChoraleConfig(**TINY), limit=12)
    second = chorale_train.train(tmp_path / "b", epochs=2, config=ChoraleConfig(**TINY), limit=12)
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert [e["held_out_loss"] for e in first["epochs"]] == [e["held_out_loss"] for e in second["epochs"]]
    log = json.loads((tmp_path / "a" / chorale_train.TRAINING_LOG).read_text())
    names = [p.name for p in ch.read_corpus(ch.corpus_files()[:12])]
    assert log["held_out_chorales"] == ch.split_names(names, 0)[1] and log["held_out_chorales"]
    assert log["best_held_out_loss"] == min(e["held_out_loss"] for e in log["epochs"])
    assert first["epochs"][1]["train_loss"] < first["epochs"][0]["train_loss"]  # it learns


def test_windows_cover_the_piece_and_never_predict_the_prefix():
    chorale = ch.read_corpus(ch.corpus_files()[:3])[0]
    items = chorale_train.windows(chorale, 0, 16, 5)
    body = [t for sequence, _, _ in items for t in sequence if t not in (ch.MAJOR, ch.MINOR, ch.METRE_4, ch.METRE_3)]
    assert body == ch.encode(chorale)[2:]  # BOS, every step once, END
    for sequence, targets, phase in items:
        assert len(targets) == len(sequence) and targets[-1] == chorale_train.IGNORE
        assert targets[0] == chorale_train.IGNORE  # the metre is given, not predicted
        assert 0 <= phase < chorale.bar
