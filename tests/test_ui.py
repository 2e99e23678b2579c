"""A real browser: Playwright drives Debian's Chromium against app.py on loopback
(the session's shared server).

Screenshots of each tab land in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Playwright, expect, sync_playwright

from tests.live_server import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # installed by `make test`; never a downloaded browser
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
GENERATION = 240_000  # ms Playwright waits for a generation on a busy 2-core machine (a bound, not a speed claim)


def open_studio(playwright: Playwright, url: str) -> Page:
    """A page of Debian's Chromium on the studio at url, once its header shows
    (closed with the playwright context)."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    expect(page.locator("#header")).to_contain_text("preset", timeout=60_000)
    return page


@pytest.fixture(scope="module")
def page(app_server):
    """A Chromium page on the session's shared app.py server (tests/conftest.py)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        yield open_studio(playwright, app_server[0])


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def until_it_stays(page: Page, act, holds) -> None:
    """act() until holds() is still true half a second later. Gradio sets the fields of an
    accordion it has just opened to their values once more within ~0.2 s (seen with a
    textbox: what was typed went, and on CI a grid ran its defaults); a person is slower."""
    for _ in range(20):
        act()
        page.wait_for_timeout(500)
        if holds():
            return
    raise AssertionError("the field never kept what was set")


def test_header_names_preset_and_device(page):
    header = page.locator("#header")
    expect(header).to_contain_text("offline")
    expect(header).to_contain_text("cpu")


def test_text_tab_streams_an_answer(page):
    open_tab(page, "Text")
    page.locator("#text-prompt textarea").fill("What is the capital of France?")
    page.get_by_label("greedy").check()  # greedy decoding: the answer is the model's likeliest
    page.locator("#text-generate").click()
    expect(page.locator("#text-answer textarea")).to_have_value(re.compile("Paris"), timeout=GENERATION)
    page.screenshot(path=ARTIFACTS / "text-tab.png", full_page=True)


def test_text_side_by_side_fills_labelled_columns(page):
    open_tab(page, "Text")
    page.locator("#text-prompt textarea").fill("Write a haiku about rain.")
    page.get_by_label("greedy").uncheck()  # seeds only matter when sampling
    page.get_by_text("Side by side").first.click()
    page.locator("#text-compare").click()
    for i in range(3):  # default: 3 different seeds
        expect(page.locator(f"#text-variant-{i} textarea")).not_to_have_value("", timeout=GENERATION)
    expect(page.locator("#text-variant-2")).to_contain_text("seed=", timeout=GENERATION)
    page.screenshot(path=ARTIFACTS / "text-compare.png", full_page=True)


def test_image_tab_draws_an_image(page):
    open_tab(page, "Image")
    page.locator("#image-prompt textarea").fill("a big red circle")
    page.locator("#image-generate").click()
    expect(page.locator("#image-output img")).to_be_visible(timeout=GENERATION)
    page.screenshot(path=ARTIFACTS / "image-tab.png", full_page=True)


def test_image_tab_shows_the_vocabulary_for_an_unknown_prompt(page):
    open_tab(page, "Image")
    page.locator("#image-prompt textarea").fill("a purple hexagon")
    page.locator("#image-generate").click()
    expect(page.locator("#image-generate-error")).to_contain_text("colours: red, green, blue, yellow", timeout=GENERATION)


def test_audio_tab_speaks(page):
    open_tab(page, "Audio")
    page.locator("#audio-prompt textarea").fill("Hello from the studio.")
    page.locator("#audio-generate").click()
    expect(page.locator("#audio-output audio, #audio-output .waveform-container, #audio-output button[aria-label*='Play' i]").first
           ).to_be_attached(timeout=GENERATION)
    page.screenshot(path=ARTIFACTS / "audio-tab.png", full_page=True)


def test_audio_side_by_side_shows_labelled_players_and_their_pictures(page):
    open_tab(page, "Audio")
    expect(page.locator("#audio-offline-note")).to_contain_text("AIGC_PRESET=hub")
    page.locator("#audio-prompt textarea").fill("Hello from the studio.")
    page.get_by_text("Side by side: 2-4 variants of one text").click()
    sweep = page.locator("#audio-variants-mode").get_by_label("Sweep one knob")
    until_it_stays(page, sweep.check, sweep.is_checked)
    page.locator("#audio-compare").click()  # the tab's sweep: speed 0.8, 1.0, 1.4
    for i, speed in enumerate(("0.8", "1.0", "1.4"), start=1):
        expect(page.locator(f"#audio-variant-view-{i} img")).to_be_visible(timeout=GENERATION)
        expect(page.locator(f"#audio-variant-{i}")).to_contain_text(f"speed={speed} · gain", timeout=GENERATION)
    expect(page.locator("#audio-variant-view-4 img")).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "audio-compare.png", full_page=True)


def test_image_trajectory_strip_appears_after_generation(page):
    open_tab(page, "Image")
    page.locator("#image-prompt textarea").fill("a green square")
    page.locator("#image-generate").click()
    expect(page.locator("#image-strip img")).to_be_visible(timeout=GENERATION)
    steps = page.locator("#image-step input[type=number]")
    expect(steps).to_have_value("30", timeout=GENERATION)  # one preview per step: the slider ends at the last


def test_uploading_a_studio_png_restores_its_recipe(page, tmp_path):
    from aigc_studio import Studio
    from aigc_studio.config import Settings

    studio = Studio(Settings(preset="offline", output_dir=tmp_path))
    png = studio.save(studio.image("a blue circle", negative_prompt="red", steps=7, guidance=4.5, seed=1234,
                                   scheduler="euler", batch_size=2))
    open_tab(page, "Image")
    page.locator("#image-upload input[type=file]").set_input_files(str(png))
    expect(page.locator("#image-prompt textarea")).to_have_value("a blue circle", timeout=60_000)
    if not page.locator("#image-negative_prompt").is_visible():
        page.get_by_text("Advanced knobs").nth(1).click()  # the Image tab's (the Text tab has one too)
    expect(page.locator("#image-negative_prompt textarea")).to_have_value("red")
    expect(page.locator("#image-seed input")).to_have_value("1234")
    expect(page.locator("#image-steps input[type=number]")).to_have_value("7")
    expect(page.locator("#image-guidance input[type=number]")).to_have_value("4.5")
    expect(page.locator("#image-scheduler input")).to_have_value("Euler")  # the scheduler's name for people
    expect(page.locator("#image-batch_size input[type=number]")).to_have_value("2")


def test_text_tab_shows_the_error_for_a_too_long_prompt(page):
    open_tab(page, "Text")
    page.locator("#text-prompt textarea").fill("x" * 4001)
    page.locator("#text-generate").click()
    expect(page.locator("#text-generate-error")).to_contain_text("prompt: must be at most 4000 characters, got 4001",
                                                                 timeout=GENERATION)
    page.screenshot(path=ARTIFACTS / "text-error.png", full_page=True)


def test_audio_tab_shows_the_error_for_an_empty_text(page):
    open_tab(page, "Audio")
    page.locator("#audio-prompt textarea").fill("   ")
    page.locator("#audio-generate").click()
    expect(page.get_by_text("prompt: must not be empty").last).to_be_visible(timeout=GENERATION)


def test_stop_ends_a_text_generation_and_generate_works_again(page):
    open_tab(page, "Text")
    page.get_by_label("greedy").uncheck()
    page.locator("#text-prompt textarea").fill("Write a long story about a dragon who learns to sing.")
    # the longest answer allowed (1024 tokens, ~750 words): Stop, not the length limit, must end it
    longest = page.locator("#text-max_new_tokens input[type=number]")
    longest.fill("1024")
    longest.blur()
    answer = page.locator("#text-answer textarea")
    earlier = answer.input_value()  # an earlier test's answer: Stop must wait for this story's words
    page.locator("#text-generate").click()
    # the story has begun: two words of it, not a status line ("Loading ...", "Note: ...")
    story = re.compile(r"^(?!Loading|Converting|Note:)\S+\s+\S")
    for _ in range(GENERATION // 100):
        now = answer.input_value()
        if now != earlier and story.match(now):
            break
        page.wait_for_timeout(100)
    expect(answer).to_have_value(story)
    assert answer.input_value() != earlier
    page.locator("#text-stop").click()
    stopped = answer.input_value()
    for _ in range(120):  # poll until the last token in flight has landed: two reads a second apart agree
        page.wait_for_timeout(1000)
        now = answer.input_value()
        if now == stopped:
            break
        stopped = now
    page.wait_for_timeout(3000)
    assert answer.input_value() == stopped, "the answer kept growing after Stop"
    # all 1024 tokens would be ~750 words; the loop makes ~90 tokens/s on a quiet machine, so a Stop
    # that a busy headless browser delivers a few seconds late still lands well before the limit
    assert 0 < len(stopped.split()) < 600, stopped
    page.screenshot(path=ARTIFACTS / "text-stopped.png", full_page=True)
    longest.fill("128")
    longest.blur()

    page.get_by_label("greedy").check()
    page.locator("#text-prompt textarea").fill("What is the capital of France?")
    page.locator("#text-generate").click()
    expect(answer).to_have_value(re.compile("Paris"), timeout=GENERATION)
