"""aigc_studio/history.py: per-browser histories, newest first, bounded, thread-safe, and an
entry whose file was pruned says so."""

from __future__ import annotations

import threading

import pytest

from aigc_studio.history import History, differing_knobs, knob_label
from aigc_studio.recipe import Recipe


def recipe(modality="image", seed=0, **params) -> Recipe:
    return Recipe(modality=modality, model_id=f"{modality}-model", prompt="a red circle",
                  params={"seed": seed, **params}, device="cpu", dtype="float32")


def test_entries_are_newest_first_and_follow_the_browser_across_sessions():
    history = History()
    history.link("session-1", "browser-a")
    history.add("session-1", recipe("text", seed=1), text="\n  First line of the answer\nsecond")
    history.add("session-1", recipe("image", seed=2))
    history.link("session-2", "browser-a")  # the page was reloaded: a new session hash, same browser
    history.add("session-2", recipe("audio", seed=3))
    entries = history.entries("session-2")
    assert [e.tab for e in entries] == ["audio", "image", "text"]
    assert [e.recipe["params"]["seed"] for e in entries] == [3, 2, 1]
    assert entries[2].first_line == "First line of the answer"
    assert history.entries("session-1") == entries
    assert history.entries("someone-else") == []


def test_history_is_bounded_per_browser():
    history = History(max_entries=5)
    for seed in range(12):
        history.add("s", recipe(seed=seed))
    assert [e.recipe["params"]["seed"] for e in history.entries("s")] == [11, 10, 9, 8, 7]


def test_a_file_is_attached_whether_it_is_written_before_or_after_the_result_is_recorded(tmp_path):
    history = History()
    before, after = recipe(seed=1), recipe(seed=2)
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"y")
    history.attach(before, tmp_path / "a.png")
    history.add("s", before)
    history.add("s", after)
    history.attach(after, tmp_path / "b.png")
    history.attach(recipe(seed=9), tmp_path / "c.png")  # an API result nobody recorded: no entry
    newest, oldest = history.entries("s")
    assert (newest.path, oldest.path) == (str(tmp_path / "b.png"), str(tmp_path / "a.png"))
    assert newest.file_state == "kept" and len(history.entries("s")) == 2


def test_an_entry_whose_file_was_pruned_says_so(tmp_path):
    history = History()
    made = recipe()
    path = tmp_path / "gone.png"
    path.write_bytes(b"x")
    history.add("s", made)
    history.attach(made, path)
    path.unlink()  # what storage.prune does to old files
    entry = history.entries("s")[0]
    assert entry.file_state == "pruned"
    described = entry.describe()
    assert described["file_state"] == "pruned" and described["recipe"]["params"]["seed"] == 0
    assert history.add("s", recipe("text"), text="hi").file_state == "none"


def test_bad_picks_get_a_message_naming_the_field():
    history = History()
    entry = history.add("s", recipe())
    assert history.get("s", entry.id) is entry
    with pytest.raises(ValueError, match=r"entry: #999 is not in this browser's history"):
        history.get("s", 999)
    with pytest.raises(ValueError, match="entry: must be the number"):
        history.get("s", "abc")
    with pytest.raises(ValueError, match="compare: pick two or more history entries, got 1"):
        history.pick("s", [entry.id])
    other = history.add("s", recipe(seed=5))
    assert [e.id for e in history.pick("s", [other.id, entry.id])] == [other.id, entry.id]


def test_the_knobs_that_differ_and_the_short_label():
    first, second = recipe(seed=1, steps=20), recipe(seed=2, steps=20)
    second.model_id = "other"
    dicts = [History().add("s", r).recipe for r in (first, second)]
    assert differing_knobs(dicts) == {"seed", "model"}
    assert knob_label({"label": "temperature=1.2", "params": {"temperature": 1.2, "seed": 0}}) == "temperature=1.2 · seed=0"
    assert knob_label({"params": {"seed": 4, "steps": 20}}) == "seed=4 · steps=20"


def test_adding_from_many_threads_loses_nothing():
    history = History(max_entries=1000)

    def add_some(worker):
        for seed in range(50):
            history.add("s", recipe(seed=worker * 100 + seed))

    threads = [threading.Thread(target=add_some, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = history.entries("s")
    assert len(entries) == 200 and len({e.id for e in entries}) == 200
