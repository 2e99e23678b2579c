"""Files on disk: written whole or not at all, and pruned so a long-running Space
never fills its disk.

Two folders grow while the studio serves: the output folder (results kept with
their recipes) and Gradio's cache (a copy of every file shown or served). Both are
pruned by age and by total size, oldest *use* first: a file's last use is the later
of its modification and access times, and `touch` renews it when a file is handed
to a user again. A file used within the last GRACE_S seconds is never pruned, so a
result a user is about to download stays whatever the budgets say.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

GRACE_S = 15 * 60  # a result shown this recently is still on someone's screen
PRUNE_EVERY_S = 10 * 60  # the janitor's period
PART_PREFIX = ".part-"  # files being written; never served, pruned like the rest once stale


class NotKept(OSError):
    """A result could not be written to the output folder (disk full, read-only,
    quota). Nothing half-written is left behind; the result itself is still valid."""


@dataclass(frozen=True)
class Budget:
    """How long files live in one folder and how much of the disk it may use."""

    folder: Path
    keep_hours: float
    max_mb: float


def last_use(path: Path) -> float:
    """When the file was last written or read, in seconds since the epoch."""
    stat = path.stat()
    return max(stat.st_mtime, stat.st_atime)


def touch(path: str | Path, now: float | None = None) -> None:
    """Mark a file as just used (e.g. handed to a user again), so pruning spares it."""
    now = time.time() if now is None else now
    try:
        os.utime(path, (now, now))
    except OSError:  # gone or read-only: nothing to protect
        pass


def prune(folder: str | Path, keep_hours: float, max_mb: float, now: float | None = None,
          grace_s: float = GRACE_S) -> list[Path]:
    """Delete files under folder unused for keep_hours, then the least recently used
    until the rest fit in max_mb (megabytes of 2**20 bytes). Files used within
    grace_s seconds of now are kept even above the budget. Empty sub-folders go too.
    Returns the deleted files."""
    folder = Path(folder)
    now = time.time() if now is None else now
    files = []
    for path in _files(folder):
        try:
            if path.is_file() and not path.is_symlink():
                files.append((last_use(path), path.stat().st_size, path))
        except OSError:  # deleted meanwhile by another pruner or by Gradio
            continue
    files.sort()  # least recently used first
    total = sum(size for _, size, _ in files)
    budget = max_mb * 2**20
    removed = []
    for used, size, path in files:
        too_old = now - used > keep_hours * 3600
        if not too_old and (total <= budget or now - used <= grace_s):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not prune %s: %s", path, error)
            continue
        total -= size
        removed.append(path)
    _remove_empty_folders(folder)
    return removed


def _files(folder: Path) -> Iterator[Path]:
    """Every file under folder. A sub-folder removed meanwhile (by another server's pruner, or by
    Gradio in its shared cache) is skipped: os.walk passes over what it can no longer list, where
    Path.rglob raises FileNotFoundError half-way."""
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def _remove_empty_folders(folder: Path) -> None:
    for root, subs, _ in os.walk(folder, topdown=False):  # the deepest first
        for sub in subs:
            try:
                (Path(root) / sub).rmdir()  # only succeeds when empty
            except OSError:
                pass


def folder_size(folder: str | Path) -> tuple[int, int]:
    """(files, bytes) under folder."""
    sizes = []
    for path in _files(Path(folder)):
        try:
            sizes.append(path.stat().st_size)
        except OSError:  # deleted meanwhile
            continue
    return len(sizes), sum(sizes)


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary path) beside path, then rename it into place: a reader
    never sees half a file, and a failed write (disk full) leaves nothing behind.
    Raises NotKept naming the folder and the reason."""
    part = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=PART_PREFIX, suffix=path.suffix)
        os.close(handle)
        part = Path(name)
        write(part)
        os.replace(part, path)
        return path
    except OSError as error:
        if part is not None:
            part.unlink(missing_ok=True)
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno == errno.ENOSPC:
            reason = "the disk is full"
        raise NotKept(error.errno, f"could not write {path.name} into {path.parent} ({reason}): "
                                   f"the result is shown but not kept") from None


class Janitor:
    """Prunes each Budget's folder every `every_s` seconds on a daemon thread."""

    def __init__(self, budgets: list[Budget], every_s: float = PRUNE_EVERY_S):
        self.budgets = budgets
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> list[Path]:
        """Prune every folder now; returns the deleted files."""
        removed = []
        for budget in self.budgets:
            if budget.folder.is_dir():
                removed += prune(budget.folder, budget.keep_hours, budget.max_mb, now)
        if removed:
            log.info("pruned %d old files", len(removed))
        return removed

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a pruning hiccup must never end the server's cleaning
                log.exception("pruning failed")
            self._stop.wait(self.every_s)

    def start(self) -> "Janitor":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="aigc-janitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


_janitors: dict[tuple, Janitor] = {}
_janitors_lock = threading.Lock()


def start_janitor(budgets: list[Budget], every_s: float = PRUNE_EVERY_S) -> Janitor:
    """One running Janitor per set of budgets in this process (building the UI twice
    does not start a second one)."""
    key = tuple(sorted((str(b.folder.resolve()), b.keep_hours, b.max_mb) for b in budgets))
    with _janitors_lock:
        if key not in _janitors:
            _janitors[key] = Janitor(budgets, every_s).start()
        return _janitors[key]


MAX_SAFETENSORS_HEADER = 100_000_000  # bytes; the format's own reference reader refuses larger headers


def check_safetensors(path: str | Path) -> None:
    """Refuse a .safetensors file that is truncated or damaged (ValueError naming the
    file and what is wrong), reading only its header: an interrupted download or
    conversion leaves a file whose tensors end past the end of the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"weights: {path.name} is truncated ({size} bytes, no header)")
        length = int.from_bytes(prefix, "little")
        if length > MAX_SAFETENSORS_HEADER:
            raise ValueError(f"weights: {path.name} is damaged (a {length:,}-byte header, "
                             f"above the limit of {MAX_SAFETENSORS_HEADER:,})")
        header = f.read(length)
    if len(header) < length:
        raise ValueError(f"weights: {path.name} is truncated (its header needs {length:,} bytes, "
                         f"{len(header):,} are there)")
    try:
        tensors = json.loads(header)
        end = max((int(t["data_offsets"][1]) for name, t in tensors.items() if name != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise ValueError(f"weights: {path.name} is damaged (unreadable header: {error})") from None
    if 8 + length + end > size:
        raise ValueError(f"weights: {path.name} is truncated ({size:,} bytes of {8 + length + end:,}): "
                         f"delete it so it is downloaded or converted again")
