"""Per-browser-session state beside a generation: its stop events and its last results."""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict

import gradio as gr

class Sessions:
    """Per-browser-session state the UI keeps beside a generation: the stop event
    of the running request and the recipes of the last results (bounded)."""

    MAX_SESSIONS = 1000

    def __init__(self, history=None):
        self.history = history  # an aigc_studio.history.History: every kept result also goes there
        self._stops: dict[str, threading.Event] = {}
        self._kept: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: gr.Request | None) -> str:
        return (request.session_hash if request is not None else None) or "api"

    def fresh_stop(self, request: gr.Request | None, tab: str = "text") -> threading.Event:
        """A new stop event for this session's generation in `tab`."""
        with self._lock:
            event = self._stops[f"{self.key(request)}/{tab}"] = threading.Event()
            return event

    def stop(self, request: gr.Request | None, tab: str = "text") -> None:
        with self._lock:
            event = self._stops.get(f"{self.key(request)}/{tab}")
        if event is not None:
            event.set()

    def keep(self, request: gr.Request | None, name: str, value) -> None:
        """Remember value under name for this session (the oldest sessions are forgotten)."""
        with self._lock:
            self._kept.setdefault(self.key(request), {})[name] = value
            self._kept.move_to_end(self.key(request))
            while len(self._kept) > self.MAX_SESSIONS:
                self._kept.popitem(last=False)

    def kept(self, request: gr.Request | None, name: str, default=None):
        with self._lock:
            return self._kept.get(self.key(request), {}).get(name, default)

    def keep_recipes(self, request: gr.Request | None, recipes: list, texts: list | None = None) -> None:
        """Remember the recipes of the last results; each also goes into the browser's
        history (with its answer, for text: `texts` in the same order)."""
        self.keep(request, "recipes", recipes)
        if self.history is not None:
            for index, recipe in enumerate(recipes):
                self.history.add(self.key(request), recipe, texts[index] if texts and index < len(texts) else None)

    def recipes(self, request: gr.Request | None) -> list:
        return self.kept(request, "recipes", [])


def bind(fn, *args):
    """fn with its first arguments given, as Gradio must see a handler: the rest of its
    signature, its type hints (Gradio passes gr.Request to a parameter annotated with it) and
    its kind (an async generator streams). functools.partial hides the type hints, and the
    handler would then get no request, so no session."""
    if inspect.isasyncgenfunction(fn):
        async def bound(*rest, **kwargs):
            async for item in fn(*args, *rest, **kwargs):
                yield item
    elif inspect.isgeneratorfunction(fn):
        def bound(*rest, **kwargs):
            yield from fn(*args, *rest, **kwargs)
    elif inspect.iscoroutinefunction(fn):
        async def bound(*rest, **kwargs):
            return await fn(*args, *rest, **kwargs)
    else:
        def bound(*rest, **kwargs):
            return fn(*args, *rest, **kwargs)
    functools.update_wrapper(bound, fn)
    bound.__signature__ = inspect.signature(functools.partial(fn, *args))
    return bound
