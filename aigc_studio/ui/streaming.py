"""Streaming from blocking backend calls to the page: paced updates, and work run in a
thread whose progress an async handler yields (so Stop cancels it at once)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator

# A streamed answer reaches the page at most this often (10 updates a second). A fast
# model makes 40+ tokens a second, 4 columns of them side by side: a slow browser then
# draws behind the model, and a click (Stop) waits behind the drawing.
STREAM_INTERVAL_S = 0.1


def paced(updates: Iterator, interval: float = STREAM_INTERVAL_S) -> Iterator:
    """The updates of a stream, at most one every `interval` seconds: the first at once,
    then the newest one each time the interval has passed, and always the last. Each
    update holds everything so far (the whole answer), so a skipped one loses nothing."""
    shown_at, waiting = -math.inf, None
    for update in updates:
        now = time.monotonic()
        if now - shown_at >= interval:
            yield update
            shown_at, waiting = now, None
        else:
            waiting = update
    if waiting is not None:
        yield waiting


async def run_in_worker(work: Callable[[Callable[[Any], None]], Any],
                        stop: threading.Event | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Run work(emit) in a thread and yield ("update", item) for every emit, then
    ("result", its return value). Lets a Gradio handler stream progress (e.g.
    denoising previews) from a blocking backend call. Errors re-raise here.

    An async generator on purpose: Gradio cancels a request (Stop, a cancelled API
    job, a vanished client) by cancelling its task, which reaches the await here at
    once and sets `stop`, so the work ends at its next step. A plain generator would
    sit blocked in a thread until its next item (a preview 50 steps away) and could
    not be closed before then."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def put(event: tuple[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    def target() -> None:
        try:
            put(("result", work(lambda item: put(("update", item)))))
        except BaseException as error:  # handed to the caller's task
            put(("error", error))

    threading.Thread(target=target, daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = await events.get()
            finished = kind != "update"
            if kind == "error":
                raise value
            yield kind, value
            if kind == "result":
                return
    finally:
        if not finished and stop is not None:
            stop.set()
