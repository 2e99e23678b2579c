"""Regenerate the README's screenshots from the real app: starts app.py (offline
preset) on a free port, runs one generation per tab in Debian's Chromium and writes

    assets/screenshot.png          the Image tab after a run (the README's first picture)
    assets/screenshot-text.png     the Text tab: a streamed answer, coloured tokens, the explainer
    assets/screenshot-image.png    the Image tab: the picture and its denoising trajectory
    assets/screenshot-audio.png    the Audio tab: the voice, its waveform and spectrogram

Run: .venv/bin/python bench/screenshots.py   (a few minutes on a busy 2-core machine)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.live_server import ROOT, running_app  # noqa: E402
from tests.test_ui import GENERATION, open_studio, open_tab  # noqa: E402

ASSETS = ROOT / "assets"
VIEWPORT_CROP = {"x": 0, "y": 0, "width": 1400, "height": 1000}


def main() -> None:
    with tempfile.TemporaryDirectory() as output, running_app(Path(output)) as url, sync_playwright() as playwright:
        page = open_studio(playwright, url)

        open_tab(page, "Image")
        page.locator("#image-prompt textarea").fill("a big yellow triangle")
        page.locator("#image-seed input").fill("3")
        page.locator("#image-generate").click()
        expect(page.locator("#image-strip img")).to_be_visible(timeout=GENERATION)
        page.wait_for_timeout(1000)
        # the picture and, below it, its trajectory strip: taller than the window
        strip = page.locator("#image-strip").bounding_box()
        tall = {**VIEWPORT_CROP, "height": int(strip["y"] + strip["height"] + 80)}
        page.screenshot(path=ASSETS / "screenshot.png", clip=tall, full_page=True)
        page.screenshot(path=ASSETS / "screenshot-image.png", clip=tall, full_page=True, scale="css")

        open_tab(page, "Text")
        page.locator("#text-prompt textarea").fill("Write a haiku about rain.")
        page.get_by_label("greedy").check()
        page.locator("#text-generate").click()
        expect(page.locator("#text-generate")).to_be_enabled(timeout=GENERATION)
        expect(page.locator("#text-explainer")).to_contain_text("haiku", timeout=GENERATION)
        page.screenshot(path=ASSETS / "screenshot-text.png", clip=VIEWPORT_CROP)

        open_tab(page, "Audio")
        page.locator("#audio-prompt textarea").fill("Welcome to the studio. Turn a knob and listen.")
        page.locator("#audio-generate").click()
        expect(page.locator("#audio-view img")).to_be_visible(timeout=GENERATION)
        page.screenshot(path=ASSETS / "screenshot-audio.png", clip=VIEWPORT_CROP)
    for name in ("screenshot.png", "screenshot-text.png", "screenshot-image.png", "screenshot-audio.png"):
        print(ASSETS / name)


if __name__ == "__main__":
    main()
