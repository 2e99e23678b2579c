"""Every result of a browser's session, newest first: the History tab and `/history`.

A browser is named by a random id it keeps (the UI stores it in gr.BrowserState), and
each page load links its session hash to that id, so a page reload (a new session hash)
still finds the same history. Entries hold the recipe as a dict, the output file's path
(images, audio) or the answer (text), and are bounded per browser; files follow the output
folder's retention policy (storage.prune), so an entry whose file was pruned says so.
This module never imports gradio; it is thread-safe (one lock).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAX_ENTRIES = 100  # per browser: the oldest entries are forgotten
MAX_BROWSERS = 200  # browsers remembered at once (least recently used are forgotten): ~100 KB to 1 MB each
MAX_TEXT_CHARS = 4000  # of a text answer kept in an entry
LABEL_KNOBS = ("seed", "temperature", "top_p", "steps", "guidance", "speed", "scheduler", "method")
TABS = {"text": "Text", "image": "Image", "audio": "Audio", "tune": "Tune"}


@dataclass
class Entry:
    """One result: which tab made it, with which model and knobs, and where it is."""

    id: int  # unique in this process, increasing
    tab: str  # text | image | audio (the recipe's modality)
    model: str
    label: str  # a short label of the knobs, e.g. "seed=3 · temperature=0.7"
    recipe: dict  # the whole recipe (Recipe.to_json as a dict)
    path: str | None = None  # the output file (images, audio); None for text or while unsaved
    text: str | None = None  # a text answer (at most MAX_TEXT_CHARS)
    created: float = field(default_factory=time.time)  # seconds since the epoch

    @property
    def first_line(self) -> str:
        """The text's first non-empty line (at most 120 characters), or ''."""
        line = next((x.strip() for x in (self.text or "").splitlines() if x.strip()), "")
        return line[:117] + "..." if len(line) > 120 else line

    @property
    def file_state(self) -> str:
        """'kept' (the file is there), 'pruned' (it was, and retention removed it) or 'none'."""
        if self.path is None:
            return "none"
        return "kept" if Path(self.path).is_file() else "pruned"

    def describe(self) -> dict:
        """The entry as plain JSON-able data (what `/history` returns)."""
        data = asdict(self)
        data.update(first_line=self.first_line, file_state=self.file_state,
                    created_iso=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.created)))
        return data


def knob_label(recipe: dict) -> str:
    """A short label of a recipe's knobs: its own variant label when it has one, plus
    the seed and the main knobs it sets, e.g. 'temperature=1.2 · seed=0 · top_p=0.9'."""
    params = recipe.get("params") or {}
    parts = [recipe["label"]] if recipe.get("label") else []
    parts += [f"{name}={_short(params[name])}" for name in LABEL_KNOBS
              if name in params and not (parts and parts[0].startswith(f"{name}="))]
    return " · ".join(parts[:4])


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def as_dict(recipe: Any) -> dict:
    """A recipe (a recipe.Recipe, its JSON text or a dict) as a dict."""
    if isinstance(recipe, dict):
        return recipe
    if isinstance(recipe, str):
        return json.loads(recipe)
    return json.loads(recipe.to_json())


def differing_knobs(recipes: list[dict]) -> set[str]:
    """The names (model, prompt and each knob) whose values are not the same in all recipes."""
    def values(recipe: dict) -> dict:
        return {"model": recipe.get("model_id"), "prompt": recipe.get("prompt"), **(recipe.get("params") or {})}

    rows = [values(r) for r in recipes]
    names = set().union(*rows) if rows else set()
    return {n for n in names if len({json.dumps(r.get(n), sort_keys=True, default=str) for r in rows}) > 1}


class History:
    """Per-browser histories, newest first, each at most max_entries long.

    add() is called when a tab records its results (before or after their files are
    written); attach() when a file is written for a recipe object, so the two meet in
    either order (matched by the recipe object's identity)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_browsers: int = MAX_BROWSERS):
        self.max_entries = max_entries
        self.max_browsers = max_browsers
        self._browsers: OrderedDict[str, list[Entry]] = OrderedDict()
        self._sessions: OrderedDict[str, str] = OrderedDict()  # session hash -> browser id
        # recipe object id -> (recipe, entry or None, path or None); holding the recipe keeps its id unique
        self._pending: OrderedDict[int, list] = OrderedDict()
        self._next_id = 1
        self._lock = threading.Lock()

    def link(self, session: str, browser: str) -> None:
        """Results of `session` (a page load's session hash) go into `browser`'s history."""
        if not session or not browser:
            return
        with self._lock:
            self._sessions[session] = browser
            self._sessions.move_to_end(session)
            while len(self._sessions) > self.max_browsers * 4:
                self._sessions.popitem(last=False)

    def browser_of(self, session: str | None) -> str:
        """The browser a session belongs to (the session itself when it was never linked)."""
        with self._lock:
            return self._sessions.get(session or "", session or "api")

    def add(self, session: str | None, recipe: Any, text: str | None = None) -> Entry:
        """Record one result of `session`: its recipe (a Recipe, or a dict) and, for text,
        the answer. Returns the new entry (newest first in its browser's history)."""
        data = as_dict(recipe)
        browser = self.browser_of(session)
        with self._lock:
            entry = Entry(id=self._next_id, tab=data.get("modality", "text"), model=str(data.get("model_id", "")),
                          label=knob_label(data), recipe=data,
                          text=None if text is None else str(text)[:MAX_TEXT_CHARS])
            self._next_id += 1
            if not isinstance(recipe, (dict, str)):
                pending = self._pending.get(id(recipe))
                if pending is not None and pending[0] is recipe and pending[2] is not None:
                    entry.path = pending[2]
                    del self._pending[id(recipe)]
                else:
                    self._remember(recipe, entry, None)
            entries = self._browsers.setdefault(browser, [])
            entries.insert(0, entry)
            del entries[self.max_entries:]
            self._browsers.move_to_end(browser)
            while len(self._browsers) > self.max_browsers:
                self._browsers.popitem(last=False)
            return entry

    def attach(self, recipe: Any, path: str | Path) -> None:
        """A file was written for `recipe` (the same object a tab records): its entry shows it."""
        with self._lock:
            pending = self._pending.get(id(recipe))
            if pending is not None and pending[0] is recipe and pending[1] is not None:
                if pending[1].path is None:
                    pending[1].path = str(path)
                del self._pending[id(recipe)]
            else:
                self._remember(recipe, None, str(path))

    def _remember(self, recipe, entry, path) -> None:
        self._pending[id(recipe)] = [recipe, entry, path]
        while len(self._pending) > self.max_entries * 4:
            self._pending.popitem(last=False)

    def entries(self, session: str | None) -> list[Entry]:
        """The history of the browser `session` belongs to, newest first (a copy)."""
        browser = self.browser_of(session)
        with self._lock:
            return list(self._browsers.get(browser, []))

    def get(self, session: str | None, entry_id: Any) -> Entry:
        """One entry of the session's history; ValueError naming the field when it is not there."""
        try:
            wanted = int(entry_id)
        except (TypeError, ValueError):
            raise ValueError(f"entry: must be the number of a history entry, got {entry_id!r}") from None
        for entry in self.entries(session):
            if entry.id == wanted:
                return entry
        raise ValueError(f"entry: #{wanted} is not in this browser's history (it keeps the last "
                         f"{self.max_entries} results)")

    def pick(self, session: str | None, entry_ids: list) -> list[Entry]:
        """Two or more entries to compare, in the order given; ValueError when fewer than two."""
        chosen = [self.get(session, i) for i in dict.fromkeys(entry_ids or [])]
        if len(chosen) < 2:
            raise ValueError(f"compare: pick two or more history entries, got {len(chosen)}")
        return chosen
