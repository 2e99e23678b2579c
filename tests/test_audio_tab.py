"""The Audio tab in a real browser: a chorale from the studio's own music model (issue 24)."""

from __future__ import annotations

from playwright.sync_api import expect, sync_playwright

from tests.test_ui import ARTIFACTS, GENERATION, open_studio, open_tab


def test_a_chorale_plays_with_its_piano_roll_midi_and_next_note_explainer(app_server):
    with sync_playwright() as playwright:
        page = open_studio(playwright, app_server[0])
        open_tab(page, "Audio")
        expect(page.locator("#audio-piano-roll")).to_be_hidden()  # the speech voice has no notes
        page.locator("#audio-model input").click()
        page.get_by_role("option", name="bach-chorales").click()
        expect(page.locator("#audio-key")).to_be_visible()  # its knobs show
        expect(page.locator("#audio-speed")).to_be_hidden()
        page.locator("#audio-prompt textarea").fill("Evening chorale")
        page.locator("#audio-generate").click()
        expect(page.locator("#audio-piano-roll img")).to_be_visible(timeout=GENERATION)
        expect(page.locator("#audio-output audio, #audio-output .waveform-container, "
                            "#audio-output button[aria-label*='Play' i]").first).to_be_attached(timeout=GENERATION)
        expect(page.locator("#audio-midi")).to_contain_text(".mid", timeout=GENERATION)
        chart = page.locator("#audio-explainer")
        expect(chart).to_contain_text("Note slot 0: bar 1, beat 1, soprano", timeout=GENERATION)
        expect(chart).to_contain_text("top-p")
        page.locator("#audio-note-position input").fill("5")
        page.locator("#audio-explain").click()
        expect(chart).to_contain_text("Note slot 5: bar 1, beat 1½, alto", timeout=GENERATION)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "audio-chorale.png", full_page=True)


def test_a_midi_melody_becomes_the_start_and_the_chorale_keeps_it(app_server, tmp_path):
    from aigc_studio import music_render

    melody = tmp_path / "melody.mid"
    melody.write_bytes(music_render.midi_bytes([[(67, 0, 2), (69, 2, 2), (71, 4, 4)], [], [], []], 90.0, "4/4",
                                               "G major", None, "organ", "tune"))
    with sync_playwright() as playwright:
        page = open_studio(playwright, app_server[0])
        open_tab(page, "Audio")
        page.locator("#audio-model input").click()
        page.get_by_role("option", name="bach-chorales").click()
        page.locator("#audio-start-midi input[type=file]").set_input_files(str(melody))
        expect(page.locator("#audio-start textarea")).to_have_value("G4 - A4 - B4 - - -", timeout=GENERATION)
        page.locator("#audio-prompt textarea").fill("Harmonised")
        page.locator("#audio-generate").click()
        chart = page.locator("#audio-explainer")
        expect(chart).to_contain_text("soprano (given by the start", timeout=GENERATION)
        expect(page.locator("#audio-piano-roll img")).to_be_visible(timeout=GENERATION)
