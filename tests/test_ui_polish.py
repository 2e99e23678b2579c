"""Issue 14, the page a newcomer meets: each numbered point checked in Debian's Chromium
(Playwright) against the session's shared app.py server (offline preset), plus the
pure pieces without a browser. Screenshots of each tab after a run go to test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from aigc_studio.params import AudioParams, ImageParams, TextParams
from aigc_studio import params as knobs
from aigc_studio.actions import image as image_actions
from aigc_studio.actions import variants
from aigc_studio.ui import knob_controls, recipe_view, token_views
from tests.test_ui import ARTIFACTS, GENERATION, open_studio, open_tab, until_it_stays


@pytest.fixture(scope="module")
def page(app_server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        yield open_studio(playwright, app_server[0])


# an element and its ancestors by class name (or tag), for failure messages
ANCESTRY = """e => { const chain = []; for (let x = e; x; x = x.parentElement)
    chain.push(typeof x.className === 'string' && x.className ? x.className : x.tagName);
    return chain.join(' < '); }"""


# Visible elements whose own text is just "Error" (a badge with no message), outside the toasts,
# as their class chains.
EMPTY_ERROR_BADGES = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.textContent.trim() === 'Error' && ![...e.children].some(c => c.textContent.trim() === 'Error'))
    .filter(e => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden')
    .filter(e => !e.closest('.toast-wrap'))
    .map(""" + ANCESTRY + """)"""


def overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def visible_labels_over(page: Page, container: str) -> list[str]:
    """Texts of the visible labels inside `container` that overlap one of its images."""
    images = [i.bounding_box() for i in page.locator(f"{container} img").all() if i.is_visible()]
    labels = page.locator(f"{container} label, {container} [data-testid=block-label]").all()
    return [label.inner_text() for label in labels
            if label.is_visible() and any(overlaps(label.bounding_box(), box) for box in images)]


# ----- (1) the trajectory strip and the output pane ---------------------------------------------

def test_trajectory_strip_is_tall_with_no_label_over_the_images(page):
    open_tab(page, "Image")
    page.locator("#image-prompt textarea").fill("a green square")
    page.locator("#image-generate").click()
    strip = page.locator("#image-strip img")
    expect(strip).to_be_visible(timeout=GENERATION)
    expect(page.locator("#image-step input[type=number]")).to_have_value("30", timeout=GENERATION)
    natural = strip.evaluate("img => img.naturalHeight")
    shown = strip.bounding_box()["height"]
    rows = (30 + image_actions.STRIP_COLUMNS - 1) // image_actions.STRIP_COLUMNS
    assert natural == rows * (image_actions.STRIP_THUMB + image_actions.STRIP_CAPTION + image_actions.STRIP_GAP) - image_actions.STRIP_GAP
    assert shown * image_actions.STRIP_THUMB / natural >= 64, f"each step is shown {shown * image_actions.STRIP_THUMB / natural:.0f} px tall"
    assert visible_labels_over(page, "#image-strip") == []
    assert visible_labels_over(page, "#image-output") == []
    assert page.locator("#image-output img").bounding_box()["height"] >= 400  # the picture is the page's centre
    page.screenshot(path=ARTIFACTS / "polish-image-tab.png", full_page=True)


# ----- (2) errors stay beside what caused them; (5) one rule for out-of-range numbers ----------

@pytest.mark.parametrize("tab, field, typed, message", [
    ("Image", "steps", "100000", "steps: must be a number in [1, 150], got 100000"),
    ("Image", "guidance", "-5", "guidance: must be a number in [0.0, 20.0], got -5"),
    ("Audio", "speed", "99", "speed: must be a number in [0.25, 4.0], got 99"),
    ("Text", "temperature", "50", "temperature: must be a number in [0.0, 2.0], got 50"),
])
def test_a_number_typed_out_of_range_is_refused_and_the_message_stays(page, tab, field, typed, message):
    prefix = tab.lower()
    open_tab(page, tab)
    page.locator(f"#{prefix}-prompt textarea").fill("a red circle" if tab == "Image" else "Hello there.")
    box = page.locator(f"#{prefix}-{field} input[type=number]")
    box.fill(typed)
    try:
        page.locator(f"#{prefix}-generate").click()
        error = page.locator(f"#{prefix}-generate-error")
        expect(error).to_contain_text(message, timeout=GENERATION)
        assert box.input_value() == typed  # not clamped behind the person's back
        page.wait_for_timeout(10_000)
        expect(error).to_contain_text(message)  # still there: toasts fade, this does not
        expect(error).to_be_visible()
        assert page.locator(f"#{prefix}-{field}.studio-invalid").count() == 1  # the field is outlined
        # one look at the page: a fading toast can leave between listing elements and reading them
        assert page.evaluate(EMPTY_ERROR_BADGES) == []
        if field == "steps":
            page.screenshot(path=ARTIFACTS / "polish-error.png", full_page=True)
    finally:  # the next case starts from a valid form even if this one failed
        box.fill(str(knobs.spec({"Image": ImageParams, "Audio": AudioParams, "Text": TextParams}[tab],
                                        field)["default"]))
        box.blur()


def test_the_error_clears_when_the_button_is_pressed_again(page):
    open_tab(page, "Audio")
    page.locator("#audio-prompt textarea").fill("   ")
    page.locator("#audio-generate").click()
    error = page.locator("#audio-generate-error")
    expect(error).to_contain_text("prompt: must not be empty", timeout=GENERATION)
    page.locator("#audio-prompt textarea").fill("Hello from the studio.")
    page.locator("#audio-generate").click()
    expect(error).to_have_text("", timeout=GENERATION)
    expect(page.locator("#audio-view img")).to_be_visible(timeout=GENERATION)


# ----- (3) + (4) knobs follow the model; sweep pickers ------------------------------------------

def test_offline_audio_shows_and_sweeps_only_the_voices_knobs(page):
    open_tab(page, "Audio")
    expect(page.locator("#audio-music-knobs")).to_be_hidden()
    expect(page.locator("#audio-bark-knobs")).to_be_hidden()
    page.get_by_text("Side by side: 2-4 variants of one text").click()
    how_many = page.get_by_label("How many (seeds)").first
    expect(how_many).to_be_visible()
    expect(page.locator("#audio-sweep-knob")).to_be_hidden()
    sweep = page.locator("#audio-variants-mode").get_by_label("Sweep one knob")
    until_it_stays(page, sweep.check, sweep.is_checked)
    expect(page.locator("#audio-sweep-knob")).to_be_visible()
    expect(how_many).to_be_hidden()
    page.locator("#audio-sweep-knob input").click()
    # the chosen option carries a check mark ("✓") before its name
    options = [o.inner_text().replace("✓", "").strip() for o in page.locator("ul[role=listbox] li").all()]
    assert options == ["speed", "noise scale", "noise w (rhythm)", "sentence silence (s)", "seed", "gain (dB)"]
    page.locator("ul[role=listbox] li", has_text="noise scale").click()
    values = page.locator("#audio-sweep-values textarea")
    expect(values).to_have_value("0.3335, 0.667, 1.334")  # around the voice's own value, not the speed's
    page.screenshot(path=ARTIFACTS / "polish-audio-sweep.png", full_page=True)


def test_image_knobs_follow_the_shapes_model(page):
    open_tab(page, "Image")
    if not page.locator("#image-width").is_visible():  # a closed accordion renders its knobs when opened
        page.locator("#image-advanced").get_by_text("Advanced knobs").click()
    width = page.locator("#image-width input[type=number]")
    assert width.get_attribute("max") == "512"  # a 256 px model, not 1536
    expect(page.locator("#image-scheduler input")).to_have_value("DPM-Solver++")
    info = page.locator("#image-guidance").inner_text()
    assert "SD-Turbo" not in info and "This model recommends 3" in info


# ----- (6) readable recipes ---------------------------------------------------------------------

def test_a_voice_recipe_card_lists_only_the_voices_knobs(page):
    open_tab(page, "Audio")
    page.locator("#audio-prompt textarea").fill("Hello from the studio.")
    page.locator("#audio-generate").click()
    card = page.locator(".studio-recipe").filter(has_text="piper-joe-medium").first
    expect(card).to_contain_text("speed", timeout=GENERATION)
    text = card.inner_text()
    for ignored in ("temperature", "top-k", "guidance", "duration"):
        assert ignored not in text, text
    assert "{" not in text  # a card, not JSON (the JSON is collapsed below it)


def test_no_recipe_lists_a_knob_its_model_ignores(tmp_path):
    from aigc_studio import Studio
    from aigc_studio.config import Settings

    studio = Studio(Settings(preset="offline", output_dir=tmp_path))
    result = studio.audio("Hi.", seed=1)
    assert set(result.recipe.params) == set(studio.knobs_used("audio"))
    assert "temperature" not in result.recipe.params and "duration" not in result.recipe.params


def test_recipe_card_reads_as_text():
    from aigc_studio.studio import Recipe

    card = recipe_view.recipe_card([Recipe("image", "shapes-diffusion", "a red circle",
                                       {"steps": 30, "guidance": 3.0, "seed": 7, "scheduler": "dpm++",
                                        "negative_prompt": ""}, "cpu", "float32", label="guidance=3.0",
                                       elapsed_s=1.234)])
    assert card.startswith("**guidance=3.0** · `shapes-diffusion` · seed **7** · 1.2 s on cpu")
    assert "steps **30**" in card and "scheduler **DPM-Solver++**" in card and "negative prompt" not in card


# ----- (7) the explainer header and the legend; (9) a shorter page, Generate while running --------

def test_explainer_shows_the_prompt_as_written_and_one_answer_has_no_difference_legend(page):
    open_tab(page, "Text")
    prompt = page.locator("#text-prompt")
    assert prompt.bounding_box()["y"] < page.locator("#text-advanced").bounding_box()["y"]  # prompt first
    side = page.get_by_role("button", name="Side by side: 2-4 variants of one prompt, streamed").bounding_box()["y"]
    assert side < page.get_by_text("Why this token?").bounding_box()["y"]  # side by side above the explainer
    page.locator("#text-prompt textarea").fill("What is the capital of France?")
    page.get_by_label("greedy").check()
    page.locator("#text-generate").click()
    expect(page.locator("#text-generate")).to_be_disabled()  # while the run is in flight
    expect(page.locator("#text-generate")).to_have_text("Running…")
    expect(page.locator("#text-answer textarea")).to_have_value(re.compile("Paris"), timeout=GENERATION)
    expect(page.locator("#text-generate")).to_be_enabled(timeout=GENERATION)
    explainer = page.locator("#text-explainer")
    expect(explainer).to_contain_text("What is the capital of France?", timeout=GENERATION)
    assert "<|im_start|>" not in explainer.inner_text() and "im_end" not in explainer.inner_text()
    expect(page.locator("#text-tokens")).not_to_contain_text(token_views.DIVERGES)
    page.screenshot(path=ARTIFACTS / "polish-text-tab.png", full_page=True)


def test_chart_header_quotes_the_prompt_and_the_answer_so_far():
    explanation = {"context": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello", "position": 1,
                   "candidate_ids": [1], "candidates": [" there"], "chosen_id": None,
                   "stages": [{"name": "raw", "setting": "model", "probs": [1.0], "kept": [True], "kept_tokens": 1,
                               "mass_kept": 1.0}]}
    state = {"tokens": [{"text": "Hello"}, {"text": " there"}]}
    html = token_views.chart_html(explanation, "Hi", state)
    assert "<q>Hi</q> → <code>Hello</code>" in html and "im_start" not in html


# ----- (3) sweep values and pickers without a browser -------------------------------------------

def test_sweep_values_sit_around_each_knobs_value():
    assert knob_controls.sweep_values(TextParams(temperature=0.2), "temperature") == "0.1, 0.2, 0.4"
    assert knob_controls.sweep_values(ImageParams(steps=30), "steps") == "15, 30, 60"
    assert knob_controls.sweep_values(ImageParams(), "width") == "128, 256, 512"
    assert knob_controls.sweep_values(TextParams(), "greedy") == "false, true"
    assert knob_controls.sweep_values(AudioParams(), "gain_db") == "-6, 0, 6"
    assert knob_controls.sweep_values(TextParams(), "seed") == "1, 2, 3"


def test_sweep_pickers_offer_only_the_models_knobs_by_their_names():
    assert variants.sweep_names(AudioParams, ("speed", "noise_scale", "seed", "gain_db")) == [
        "speed", "noise_scale", "seed", "gain_db"]
    assert knob_controls.knob_choices_for(["top_k", "gain_db"]) == [("top-k", "top_k"), ("gain (dB)", "gain_db")]
    assert knob_controls.suggested_range("steps", {"low": 1, "high": 150}, 2) == (1, 8)  # a turbo model
    assert knob_controls.suggested_range("width", {"low": 16, "high": 1536}, 256) == (16, 512)
