"""Streaming to the page (aigc_studio/ui/streaming.py), without a server."""

from __future__ import annotations

from aigc_studio.ui import streaming


def test_paced_shows_the_first_update_the_newest_each_interval_and_always_the_last(monkeypatch):
    def clock(*times):
        ticks = iter(times)
        monkeypatch.setattr(streaming.time, "monotonic", lambda: next(ticks))

    clock(0.0, 0.03, 0.06, 0.12, 0.15, 0.5)  # when each update arrives, in seconds
    assert list(streaming.paced(iter("abcdef"), interval=0.1)) == ["a", "d", "f"]
    clock(0.0, 0.01, 0.02)
    assert list(streaming.paced(iter("abc"), interval=0.1)) == ["a", "c"]  # the last, even inside the interval
    clock(0.0, 0.2, 0.4)
    assert list(streaming.paced(iter("abc"), interval=0.1)) == ["a", "b", "c"]  # a slow stream passes whole
