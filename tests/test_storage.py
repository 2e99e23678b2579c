"""Bounded disk: pruning by age and size (a fake clock), whole-or-nothing writes,
and the files an image request leaves behind on the real server."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from aigc_studio import recipe as recipes
from aigc_studio import storage
from aigc_studio.config import Settings
from aigc_studio.storage import Budget, Janitor, NotKept, prune, touch
from tests.test_recipe import make_result

HOUR = 3600.0
NOW = 1_900_000_000.0  # a fixed "now" for every test: the clock is injected, never read


def make_file(folder: Path, name: str, size_kb: int, used_hours_ago: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size_kb * 1024)
    touch(path, NOW - used_hours_ago * HOUR)
    return path


def names(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_files_unused_for_longer_than_keep_hours_are_deleted(tmp_path):
    make_file(tmp_path, "day/old.png", 1, used_hours_ago=25)
    make_file(tmp_path, "day/new.png", 1, used_hours_ago=23)
    make_file(tmp_path, "other/old.wav", 1, used_hours_ago=48)
    removed = prune(tmp_path, keep_hours=24, max_mb=100, now=NOW)
    assert {p.name for p in removed} == {"old.png", "old.wav"}
    assert names(tmp_path) == {"day/new.png"}
    assert not (tmp_path / "other").exists()  # emptied folders go too (Gradio makes one per file)


def test_above_the_size_budget_the_least_recently_used_go_first(tmp_path):
    for i, hours in enumerate([5, 1, 3, 2, 4]):  # 100 KB each, 500 KB in all
        make_file(tmp_path, f"f{i}_{hours}h.png", 100, used_hours_ago=hours)
    removed = prune(tmp_path, keep_hours=24, max_mb=250 / 1024, now=NOW)  # room for two
    assert [p.name for p in removed] == ["f0_5h.png", "f4_4h.png", "f2_3h.png"]
    assert names(tmp_path) == {"f1_1h.png", "f3_2h.png"}


def test_a_file_used_again_is_young_again(tmp_path):
    old = make_file(tmp_path, "old.png", 1, used_hours_ago=30)
    touch(old, NOW - 1)  # handed to a user again a second ago
    assert prune(tmp_path, keep_hours=24, max_mb=100, now=NOW) == []
    assert old.exists()


def test_a_result_just_shown_is_never_pruned_even_above_the_budget(tmp_path):
    shown = make_file(tmp_path, "latest.png", 300, used_hours_ago=storage.GRACE_S / HOUR / 2)
    older = make_file(tmp_path, "older.png", 300, used_hours_ago=1)
    removed = prune(tmp_path, keep_hours=24, max_mb=0.1, now=NOW)
    assert removed == [older]
    assert shown.exists()  # over budget, but someone may be about to download it


def test_an_access_counts_as_a_use(tmp_path):
    path = make_file(tmp_path, "served.png", 1, used_hours_ago=30)
    os.utime(path, (NOW - 60, NOW - 30 * HOUR))  # read a minute ago, written 30 hours ago
    assert prune(tmp_path, keep_hours=24, max_mb=100, now=NOW) == []


def test_the_janitor_prunes_each_folder_by_its_own_budget(tmp_path):
    outputs, cache = tmp_path / "outputs", tmp_path / "gradio"
    make_file(outputs, "a.png", 200, used_hours_ago=2)
    make_file(outputs, "b.png", 200, used_hours_ago=1)
    make_file(cache, "h1/a.png", 200, used_hours_ago=2)
    make_file(cache, "h2/b.png", 200, used_hours_ago=1)
    janitor = Janitor([Budget(outputs, keep_hours=24, max_mb=0.3), Budget(cache, keep_hours=1.5, max_mb=100)])
    removed = janitor.run_once(now=NOW)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in removed) == ["gradio/h1/a.png", "outputs/a.png"]


def test_start_janitor_runs_one_per_set_of_folders(tmp_path):
    budgets = [Budget(tmp_path, 24, 100)]
    first = storage.start_janitor(budgets, every_s=3600)
    try:
        assert storage.start_janitor([Budget(tmp_path, 24, 100)], every_s=3600) is first
    finally:
        first.stop()


def test_retention_settings_come_from_the_environment():
    settings = Settings.from_env({"AIGC_KEEP_HOURS": "2.5", "AIGC_MAX_OUTPUT_MB": "100", "AIGC_MAX_CACHE_MB": "50"})
    assert (settings.keep_hours, settings.max_output_mb, settings.max_cache_mb) == (2.5, 100, 50)
    defaults = Settings.from_env({})
    assert defaults.keep_hours > 0 and defaults.max_output_mb > 0 and defaults.max_cache_mb > 0


@pytest.mark.parametrize("variable, value", [("AIGC_KEEP_HOURS", "0"), ("AIGC_MAX_OUTPUT_MB", "-5"),
                                             ("AIGC_MAX_CACHE_MB", "nan"), ("AIGC_KEEP_HOURS", "soon")])
def test_bad_retention_settings_name_the_setting(variable, value):
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: value})


# ----- whole-or-nothing writes (disk full) ---------------------------------------------------------

def failing_writer(part: Path) -> None:
    part.write_bytes(b"half a fi")  # some bytes reach the disk, then it is full
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_nothing_behind_and_says_the_result_was_not_kept(tmp_path):
    kept = recipes.save(make_result("image"), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(NotKept) as caught:
        storage.write_atomically(kept.parent / "next.png", failing_writer)
    assert "disk is full" in str(caught.value) and "not kept" in str(caught.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("modality, audio_format", [("image", "wav"), ("audio", "wav"), ("audio", "flac"), ("text", "wav")])
def test_saving_into_a_full_disk_raises_not_kept_and_keeps_earlier_files_intact(tmp_path, monkeypatch,
                                                                                 modality, audio_format):
    kept = recipes.save(make_result(modality), tmp_path, audio_format)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real_replace = os.replace

    def full_disk(source, target):  # the bytes were written, the rename fails: the last step of a write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", full_disk)
    with pytest.raises(NotKept):
        recipes.save(make_result(modality), tmp_path, audio_format)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert recipes.read_recipe(kept) == make_result(modality).recipe


def test_an_unwritable_output_folder_raises_not_kept(tmp_path):
    blocker = tmp_path / "outputs"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(NotKept, match="not kept"):
        recipes.save(make_result("image"), blocker)


# ----- the real server ----------------------------------------------------------------------------

def new_files(folders: list[Path], before: set[Path]) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file() and p not in before)


def all_files(folders: list[Path]) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*") if p.is_file()}


def test_a_30_step_image_request_writes_at_most_5_files_and_still_streams(tmp_path):
    from gradio_client import Client

    from tests.live_server import running_app

    outputs, cache = tmp_path / "outputs", tmp_path / "gradio"
    with running_app(outputs, GRADIO_TEMP_DIR=str(cache)) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        client.predict(prompt="a red circle", steps=30, seed=1, api_name="/generate_image")  # loads the model
        before = all_files([outputs, cache])
        job = client.submit(prompt="a small blue square", steps=30, seed=2, api_name="/generate_image")
        updates = list(job)
        final = job.result()
        written = new_files([outputs, cache], before)
    assert len(updates) >= 3, "the denoising no longer streams"
    assert len(written) <= 5, [p.relative_to(tmp_path).as_posix() for p in written]
    assert any(p.parent.parent == outputs for p in written)  # the result itself is kept
    assert Path(final).stat().st_size > 0


# ----- damaged weights --------------------------------------------------------------------------------

@pytest.fixture
def weights(tmp_path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(1000, dtype=torch.float32), "b": torch.zeros(10)}, str(path))
    return path


def test_whole_safetensors_pass_the_check(weights):
    storage.check_safetensors(weights)


@pytest.mark.parametrize("keep, problem", [(0.9, "truncated"), (0.02, "truncated"), (0.0005, "no header")])
def test_truncated_safetensors_say_so(weights, keep, problem):
    data = weights.read_bytes()
    weights.write_bytes(data[: max(int(len(data) * keep), 2)])
    with pytest.raises(ValueError, match=f"weights: model.safetensors .*{problem}"):
        storage.check_safetensors(weights)


def test_safetensors_with_a_damaged_header_say_so(weights):
    data = bytearray(weights.read_bytes())
    data[12] = ord("}")  # the JSON header no longer parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        storage.check_safetensors(weights)
    weights.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="limit of"):
        storage.check_safetensors(weights)


def test_a_folder_that_vanishes_while_pruning_walks_is_passed_over(tmp_path, monkeypatch):
    """Two servers share Gradio's cache: one's pruner removes an empty folder the other is walking."""
    old = tmp_path / "kept-going" / "old.png"
    old.parent.mkdir()
    old.write_bytes(b"x" * 100)
    os.utime(old, (1_000, 1_000))
    (tmp_path / "gone").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "gone":  # listed by its parent, removed before it is read
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert prune(tmp_path, keep_hours=1, max_mb=100, now=10_000) == [old]
    assert storage.folder_size(tmp_path) == (0, 0)
