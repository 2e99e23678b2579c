"""The History tab (issue 25): three results in three tabs survive a page reload, and
restoring the first brings back its prompt and knobs. Debian's Chromium (Playwright)
against the session's shared app.py server (offline preset, embedded models)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect, sync_playwright

from aigc_studio.history import Entry, History
from aigc_studio.recipe import Recipe, read_recipe
from aigc_studio.ui import api
from aigc_studio.ui.history_tab import compare_html, recipe_file, restore_file
from tests.test_ui import ARTIFACTS, GENERATION, open_studio, open_tab


def set_number(page: Page, selector: str, value: str) -> None:
    field = page.locator(selector)
    field.fill(value)
    field.press("Tab")  # the number is taken when the field loses focus
    expect(field).to_have_value(value)


def make_three_results(page: Page) -> None:
    open_tab(page, "Text")
    page.locator("#text-prompt textarea").fill("Name a colour.")
    set_number(page, "#text-max_new_tokens input[type=number]", "6")
    set_number(page, "#text-temperature input[type=number]", "0.5")
    set_number(page, "#text-seed input", "7")
    page.locator("#text-generate").click()
    expect(page.locator(".studio-recipe:visible").first).to_contain_text("seed 7", timeout=GENERATION)
    open_tab(page, "Image")
    page.locator("#image-prompt textarea").fill("a green square")
    set_number(page, "#image-seed input", "11")
    set_number(page, "#image-steps input[type=number]", "5")
    page.locator("#image-generate").click()
    expect(page.locator("#image-output img")).to_be_visible(timeout=GENERATION)
    open_tab(page, "Audio")
    page.locator("#audio-prompt textarea").fill("Hello there.")
    set_number(page, "#audio-seed input", "5")
    page.locator("#audio-generate").click()
    expect(page.locator(".studio-recipe:visible").first).to_contain_text("seed 5", timeout=GENERATION)


def test_three_results_survive_a_reload_and_the_first_is_restored_with_identical_knobs(app_server):
    with sync_playwright() as playwright:
        page = open_studio(playwright, app_server[0])
        make_three_results(page)
        page.reload()
        expect(page.locator("#header")).to_contain_text("preset", timeout=60_000)
        open_tab(page, "History")
        entries = page.locator("#history-list .history-entry")
        expect(entries).to_have_count(3, timeout=GENERATION)  # newest first: audio, image, text
        expect(entries.nth(2)).to_contain_text("Text")
        expect(entries.nth(0).locator("audio")).to_have_count(1)
        expect(entries.nth(1).locator("img")).to_have_count(1)
        page.locator("#history-picked input").click()
        page.get_by_role("option", name=re.compile(r"^#\d+ Text ·")).click()
        page.locator("#history-picked input").press("Escape")  # close the open list over the buttons
        page.locator("#history-restore").click()
        expect(page.locator("#text-prompt textarea")).to_have_value("Name a colour.", timeout=GENERATION)
        expect(page.locator("#text-prompt textarea")).to_be_visible()  # the Text tab is shown
        expect(page.locator("#text-max_new_tokens input[type=number]")).to_have_value("6")
        expect(page.locator("#text-temperature input[type=number]")).to_have_value("0.5")
        expect(page.locator("#text-seed input")).to_have_value("7")
        # Compare the image and the audio; Download with two picked is refused with a message
        expect(page.get_by_role("tab", name="History")).to_have_count(1)  # the tab bar is drawn once
        open_tab(page, "History")
        expect(page.locator("#history-list .history-entry")).to_have_count(3, timeout=GENERATION)
        for kind in ("Image", "Audio"):
            page.locator("#history-picked input").click()
            page.get_by_role("option", name=re.compile(rf"^#\d+ {kind} ·")).click()
        page.locator("#history-picked input").press("Escape")
        page.locator("#history-compare").click()
        expect(page.locator("#history-compared tr.history-differs").first).to_contain_text("model", timeout=GENERATION)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "history-tab.png", full_page=True)
        page.locator("#history-download").click()
        expect(page.get_by_text(re.compile(r"entries: pick exactly one entry to download, got 2")).first).to_be_visible(
            timeout=GENERATION)


def test_compare_highlights_only_the_knobs_that_differ():
    def entry(number, seed):
        recipe = {"modality": "text", "model_id": "m", "prompt": "p", "params": {"seed": seed, "top_p": 0.9}}
        return Entry(id=number, tab="text", model="m", label=f"seed={seed}", recipe=recipe, text="answer")

    shown = compare_html([entry(1, 1), entry(2, 2)])
    assert re.search(r'<tr class="history-differs"><th>seed</th>', shown)
    assert re.search(r"<tr><th>top_p</th>", shown)  # the same in both: not highlighted
    assert "1 of 4 differ" in shown


def test_the_history_endpoint_lists_the_browsers_entries_with_their_recipes(monkeypatch):
    class Request:
        session_hash = "after-reload"

    class Studio:
        history = History()

    Studio.history.link("before-reload", "browser")
    Studio.history.link("after-reload", "browser")
    Studio.history.add("before-reload", Recipe(modality="text", model_id="m", prompt="p", params={"seed": 3},
                                               device="cpu", dtype="float32"), text="Blue.")
    monkeypatch.setattr(api, "_studio", Studio)
    listed = api.history(Request())
    assert [(e["tab"], e["first_line"], e["recipe"]["params"]["seed"]) for e in listed] == [("text", "Blue.", 3)]


def test_an_entry_whose_file_was_pruned_is_restored_and_downloaded_from_its_recipe(tmp_path):
    history = History()
    made = Recipe(modality="image", model_id="shapes-diffusion", prompt="a red circle", params={"seed": 4},
                  device="cpu", dtype="float32")
    entry = history.add("s", made)
    history.attach(made, tmp_path / "pruned.png")  # never written: as if retention removed it
    assert entry.file_state == "pruned"
    seen = []
    hook = {"restore": lambda path, request: seen.append(read_recipe(path)) or ["restored"]}
    assert restore_file(hook, entry, None) == ["restored"]
    assert (seen[0].prompt, seen[0].params) == ("a red circle", {"seed": 4})

    class Studio:
        class settings:
            output_dir = tmp_path

    downloaded = recipe_file(Studio, entry)
    assert downloaded.endswith(".json") and read_recipe(downloaded).params == {"seed": 4}
