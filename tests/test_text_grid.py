"""The Text tab's X/Y grid (ui/text_grid.py) and the /text_grid and /audio_grid endpoints
(ui/text_api.py): the labelled table, the marked first differences, the export, the
status line, and the pickers following the model."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from aigc_studio.params import TextParams
from aigc_studio.actions.text import SWEPT_VALUES, grid_axes
from aigc_studio.ui import knob_controls, text_grid, text_tab
from tests.conftest import TEXT_ID, VITS_ID

PROMPT = "write a short poem about spring rain"


def column(texts: list[str], ids: list[int]) -> SimpleNamespace:
    tokens = [SimpleNamespace(text=t, id=i) for t, i in zip(texts, ids)]
    return SimpleNamespace(text="".join(texts), tokens=tokens, tokens_per_s=12.0, mean_logprob=-1.5, result=None)


def test_table_labels_rows_and_columns_and_marks_where_each_cell_leaves_the_others():
    from aigc_studio import grid

    plan = grid.plan(TextParams(seed=1), "top_k", [1, 2], "temperature", [0.5])
    cells = [column(["The", " sea", " <is>"], [1, 2, 3]), column(["The", " sky"], [1, 4])]
    shown = text_grid.table_html(plan, cells, final=True)
    for label in ("top_k=1", "top_k=2", "temperature=0.5"):
        assert f">{label}</th>" in shown
    assert shown.count("<mark") == 2 and "> sea</mark>" in shown and "> sky</mark>" in shown
    assert " &lt;is&gt;" in shown  # answers are escaped
    assert shown.count("differs at token 1") == 2 and "12.0 tok/s" in shown and "mean log-prob -1.50" in shown
    streaming = text_grid.table_html(plan, cells)
    assert "<mark" not in streaming and "tok/s" not in streaming


@pytest.fixture(scope="module")
def tab(studio):
    """(studio, its sessions) over the tiny models, the API registered over it."""
    from aigc_studio.ui import build_demo
    from aigc_studio.ui.session import Sessions

    s = studio()
    build_demo(s)
    return s, Sessions(s.history)


def knob_values(**values) -> list:
    return [values.get(name) for name in text_tab.KNOB_NAMES]


def test_the_grid_streams_with_its_status_apart_then_exports_every_cell(tab):
    s, sessions = tab
    updates = list(text_grid.make_grid(s, sessions, None, PROMPT, "temperature", "0.3, 1.5", "top_k", "5, 50",
                                       TEXT_ID, *knob_values(max_new_tokens=6, seed=3)))
    status, first_table, _ = updates[0]  # this studio's first text run loads the model
    assert status.startswith("Loading") and "Loading" not in first_table
    status, table, paths = updates[-1]
    assert status == "" and "tok/s" in table
    for label in ("temperature=0.3", "temperature=1.5", "top_k=5", "top_k=50"):
        assert label in table
    document = json.loads(Path(next(p for p in paths if p.endswith(".json"))).read_text())
    assert len(document["cells"]) == 4 and {c["recipe"]["params"]["seed"] for c in document["cells"]} == {3}
    csv_text = Path(next(p for p in paths if p.endswith(".csv"))).read_text()
    assert csv_text.splitlines()[0].startswith("row,column,label,text")

    from aigc_studio.ui import audio_api, text_api

    grid_doc, _, _ = text_api.text_grid(PROMPT, "temperature", "0.3, 1.5", "top_k", "5, 50", max_new_tokens=6,
                                        seed=3, model=TEXT_ID)
    assert [c["text"] for c in grid_doc["cells"]] == [c["text"] for c in document["cells"]]


def test_the_answer_box_never_holds_the_loading_status(studio):
    from aigc_studio.ui.session import Sessions

    s = studio()  # nothing loaded yet
    updates = list(text_tab.generate_text(s, Sessions(s.history), None, PROMPT, TEXT_ID,
                                          *knob_values(max_new_tokens=4, seed=1)))
    assert updates[0][2].startswith("Loading") and updates[0][0] == ""
    assert not any(text.startswith("Loading") for text, _, _ in updates)
    assert updates[-1][2] == "" and updates[-1][0] == s.text(PROMPT, TEXT_ID, max_new_tokens=4, seed=1).output


def test_pickers_follow_the_model_and_refusals_name_the_knobs(tab):
    s, _ = tab
    x, y = knob_controls.grid_picker_updates(s, "text", TEXT_ID, "top_k", "bogus")
    assert x["value"] == "top_k" and y["value"] == knob_controls.NO_AXIS
    assert [name for _, name in x["choices"]] == grid_axes(s, TEXT_ID)

    from aigc_studio.ui import audio_api, text_api

    with pytest.raises(Exception) as error:
        audio_api.audio_grid("hello there", "guidance", "1, 3", model=VITS_ID)
    assert "x_knob" in str(error.value) and "does not use guidance" in str(error.value)
    with pytest.raises(Exception, match="x_values"):
        text_api.text_grid(PROMPT, "temperature", "", model=TEXT_ID)


def test_the_audio_grid_endpoint_gives_loudness_and_a_zip(tab):
    from aigc_studio.ui import audio_api, text_api

    document, archive = audio_api.audio_grid("hello there", "speed", "0.8, 1.6", seed=2, model=VITS_ID)
    assert [c["label"] for c in document["cells"]] == ["speed=0.8", "speed=1.6"]
    levels = [c["loudness_lufs"] for c in document["cells"]]
    assert None not in levels and abs(levels[0] - levels[1]) < 1.0
    with zipfile.ZipFile(archive["path"]) as z:
        assert sorted(n for n in z.namelist() if n.endswith(".wav")) == ["r1c1-speed=0.8.wav", "r1c2-speed=1.6.wav"]
        assert json.loads(z.read("grid.json"))["x_labels"] == ["speed=0.8", "speed=1.6"]


def test_after_a_restore_every_picker_lists_the_new_models_knobs(studio):
    """A restore (recipe file, History) sets a tab's model without model.input: its
    model.change handlers give the side-by-side and grid pickers the new model's knobs."""
    from aigc_studio.ui import build_demo
    from tests.conftest import MUSICGEN_ID, SHAPES_ID

    s = studio()
    demo = build_demo(s)
    for modality, other in (("image", SHAPES_ID), ("audio", MUSICGEN_ID), ("text", TEXT_ID)):
        checked = 0
        for f in demo.fns.values():
            sources = [demo.blocks[block_id] for block_id, event in f.targets if event == "change"]
            model = next((b for b in sources if getattr(b, "label", None) == "model"
                          and other in [v for _, v in b.choices]), None)
            if model is None:
                continue
            updates = f.fn(*[other if block is model else block.value for block in f.inputs])
            for update in updates if isinstance(updates, (list, tuple)) else [updates]:
                if isinstance(update, dict) and "choices" in update:
                    names = {value for _, value in update["choices"]} - {"none", "model"}
                    assert names and names <= set(s.knobs_used(modality, other)), (modality, names)
                    checked += 1
        assert checked >= 3, modality  # side by side, grid X and grid Y


def test_the_text_grid_in_a_browser(app_server):
    """The page: the grid (closed inside Side by side) fills a labelled table, its cells'
    figures, and the export files."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_ui import ARTIFACTS, GENERATION, open_studio, open_tab, until_it_stays

    with sync_playwright() as playwright:
        page = open_studio(playwright, app_server[0])
        open_tab(page, "Text")
        page.locator("#text-prompt textarea").fill("Name a fruit.")
        length = page.locator("#text-max_new_tokens input[type=number]")
        length.fill("6")
        length.press("Enter")
        expect(page.locator("#text-grid-button")).to_be_hidden()  # closed at first load
        page.get_by_text("Side by side").first.click()
        page.get_by_text("X/Y grid: one or two knobs").click()
        x_values = page.locator("#text-grid-x-values textarea")
        expect(x_values).to_have_value(SWEPT_VALUES)
        until_it_stays(page, lambda: x_values.fill("0.2, 1.5"), lambda: x_values.input_value() == "0.2, 1.5")
        page.locator("#text-grid-button").click()
        table = page.locator("#text-grid-table")
        for label in ("temperature=0.2", "temperature=1.5", "tok/s", "mean log-prob"):
            expect(table).to_contain_text(label, timeout=GENERATION)
        expect(page.locator("#text-grid-files")).to_contain_text(".csv", timeout=GENERATION)
        expect(page.locator("#text-grid-status")).to_have_text("")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "text-grid.png", full_page=True)
