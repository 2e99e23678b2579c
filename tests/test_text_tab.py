"""Text tab: what the coloured answer, the explainer chart and the variants show, and
(in a real browser) that knobs, sampling styles and token clicks drive the explainer."""

from __future__ import annotations

import dataclasses
import re

import pytest
from playwright.sync_api import expect, sync_playwright

from aigc_studio.actions import text as text_actions
from aigc_studio.params import ParamError, TextParams
from aigc_studio.ui import text_tab, token_views
from tests.test_ui import ARTIFACTS, GENERATION, open_studio


def token(text: str, p: float, special: bool = False) -> dict:
    return {"id": 0, "text": text, "p": p, "logprob": -1.0, "special": special, "alternatives": [[text, p], ["x y", 0.01]]}


def test_tokens_are_coloured_by_probability_and_the_first_difference_stands_out():
    tokens = [token("The", 0.95), token(" sea", 0.6), token(" is", 0.2), token(" loud", 0.01), token("", 0.8, special=True)]
    assert token_views.highlighted(tokens) == [("The", "p ≥ 0.9"), (" sea", "p 0.5–0.9"), (" is", "p 0.1–0.5"),
                                            (" loud", "p < 0.1"), ("⟨end⟩", "p 0.5–0.9")]
    assert [c for _, c in token_views.highlighted(tokens, diverge_at=2)][2] == token_views.DIVERGES
    assert set(token_views.COLOR_MAP) == {label for _, label in token_views.PROBABILITY_BINS} | {token_views.DIVERGES, token_views.UNKNOWN}


def test_alternatives_and_column_label_show_the_numbers():
    tokens = [token(" sea", 0.6), token(" is", 0.2)]
    markdown = token_views.alternatives_markdown(tokens, 0)
    assert "`␣sea`" in markdown and "60.0%" in markdown and "`x␣y`" in markdown and "1.0%" in markdown
    assert token_views.column_label("temperature=0.3", tokens, 12.345) == \
        "temperature=0.3 · 2 tokens · 12.3 tok/s · mean log-prob -1.00"


def test_chart_marks_cut_tokens_the_chosen_one_and_the_mass_kept():
    stage = lambda name, setting, probs, kept, mass: {"name": name, "setting": setting, "probs": probs, "kept": kept,
                                                      "kept_tokens": sum(kept), "mass_kept": mass}
    explanation = {"context": "<b>Hi</b>", "position": 3, "candidate_ids": [7, 8], "candidates": [" Paris", "\n"],
                   "chosen_id": 8, "stages": [stage("raw", "model", [0.7, 0.2], [True, True], 1.0),
                                              stage("top-k", "1", [1.0, 0.0], [True, False], 0.7),
                                              stage("min-p", "off", [1.0, 0.0], [True, False], 1.0)]}
    html = token_views.chart_html(explanation)
    assert "&lt;b&gt;Hi&lt;/b&gt;" in html and "<b>Hi" not in html  # token text is escaped
    assert "␣Paris" in html and "⏎</code> ★" in html  # the generated token is starred
    assert html.count("line-through") == 2  # "\n" is cut by top-k and stays cut
    assert "mass kept 70.0%" in html and "answer token 3" in html
    assert token_views.chart_html(None) == ""


def test_browser_explainer_follows_styles_and_selected_tokens(app_server):
    with sync_playwright() as playwright:  # the session's shared server: its settings are the defaults
        page = open_studio(playwright, app_server[0])
        page.locator("#text-prompt textarea").fill("What is the capital of France?")
        page.locator("#text-explain").click()
        temperature = page.locator("#text-explainer th").nth(3)
        expect(temperature).to_contain_text("0.2", timeout=GENERATION)  # SmolLM2's recommended temperature
        page.get_by_text("Creative", exact=True).click()  # a style moves several knobs; the chart follows
        expect(temperature).to_contain_text("0.6", timeout=GENERATION)  # Creative around 0.2: max(2t, t + 0.4)
        expect(page.locator("#text-explainer th").nth(4)).to_contain_text("off")  # Creative turns top-k off
        page.get_by_label("greedy").check()
        page.locator("#text-generate").click()
        expect(page.locator("#text-answer textarea")).to_have_value(re.compile("Paris"), timeout=GENERATION)
        tokens = page.locator("#text-tokens span.token")
        expect(tokens.nth(3)).to_be_visible(timeout=GENERATION)
        tokens.nth(3).click()
        expect(page.locator("#text-alternatives")).to_contain_text("Token 3", timeout=GENERATION)
        expect(page.locator("#text-explainer")).to_contain_text("answer token 3", timeout=GENERATION)
        expect(page.locator("#text-explainer")).to_contain_text("★")  # the token generated there


def test_tokens_without_a_probability_get_their_own_colour():
    """A remote server may send no probabilities: its tokens carry NaN, shown as unknown."""
    assert token_views.probability_label(float("nan")) == token_views.UNKNOWN
    assert token_views.probability_label(0.95) == "p ≥ 0.9" and token_views.probability_label(0.0) == "p < 0.1"
    assert token_views.UNKNOWN in token_views.COLOR_MAP


def test_the_legend_lists_unknown_and_difference_only_when_a_token_has_them():
    bins = [label for _, label in token_views.PROBABILITY_BINS]
    sure = token_views.highlighted([token("The", 0.95), token(" sea", 0.05)])
    assert list(token_views.legend_colors(sure)) == bins  # every bin, always: a stable legend
    remote = token_views.highlighted([token("The", 0.95), token(" sea", float("nan"))])
    assert list(token_views.legend_colors(remote)) == [*bins, token_views.UNKNOWN]
    columns = token_views.highlighted([token("The", 0.95), token(" sea", 0.6)], diverge_at=1)
    assert list(token_views.legend_colors(columns)) == [*bins, token_views.DIVERGES]


def test_different_models_run_base_and_tuned_with_one_prompt_and_seed(studio):
    """The "Different models" mode: by default the chosen model and its tuned versions, each
    column streamed in turn, labelled by model, equal to a lone generation; the tab's
    handler and the public /compare_text give the same columns; selecting the Text tab
    lists models tuned meanwhile."""
    from aigc_studio.actions.variants import SEEDS
    from aigc_studio.ui import build_demo, text_api
    from aigc_studio.ui.session import Sessions

    from aigc_studio.params import TuneParams, make
    from tests.conftest import TEXT_ID
    from tests.test_tune import SMALL, corpus_text

    s = studio()
    with pytest.raises(ParamError, match=f"models: pick 2 to 4 text models, or tune {TEXT_ID} first"):
        text_actions.models_to_compare(s, TEXT_ID, None)
    tuned = s.fine_tune(corpus_text(), TEXT_ID, make(TuneParams, **{**SMALL, "steps": 2}), name="mine").adapter
    assert text_actions.tuned_family(s, tuned) == [TEXT_ID, tuned]  # a tuned model brings its base along
    assert text_actions.models_to_compare(s, None, f"{tuned}, {TEXT_ID}") == [tuned, TEXT_ID]
    with pytest.raises(ValueError, match="'nope' is not in the catalog"):
        text_actions.models_to_compare(s, TEXT_ID, [TEXT_ID, "nope"])

    base = TextParams(seed=9, max_new_tokens=5, prompt_mode="completion")
    labels, stream = text_actions.compare_stream(s, text_actions.CompareText("the quick brown", base, TEXT_ID,
                                                                             text_tab.MODELS))
    updates = list(stream)
    assert labels == [TEXT_ID, tuned]
    assert any(u.columns[0].tokens and not u.columns[1].tokens for u in updates)  # the first streams before the second
    final = updates[-1].columns
    for column, model_id in zip(final, labels):
        assert column.result.recipe.model_id == model_id and column.result.recipe.label == model_id
        assert column.result.recipe.params["seed"] == 9
        assert column.text == s.text("the quick brown", model=model_id, seed=9, max_new_tokens=5,
                                     prompt_mode="completion").output

    demo = build_demo(s)  # registers the API over s
    knob_values = [{"max_new_tokens": 5, "seed": 9, "prompt_mode": "completion"}.get(n) for n in text_tab.KNOB_NAMES]
    *texts, state, numbers = list(text_tab.compare_text(s, Sessions(s.history), None, "the quick brown",
                                                        text_tab.MODELS, 3, "temperature", "", [], TEXT_ID,
                                                        *knob_values))[-1]
    assert texts[:2] == [c.text for c in final] and texts[2:] == ["", ""]
    assert [c["label"] for c in numbers["columns"]] == labels and state["labels"] == labels
    *api_texts, api_numbers = list(text_api.compare_text("the quick brown", "Different models", max_new_tokens=5, seed=9,
                                                    prompt_mode="completion", models=[TEXT_ID, tuned]))[-1]
    figures = lambda n: [(c["label"], c["tokens"], c["mean_logprob"]) for c in n["columns"]]  # not the tok/s
    assert api_texts == texts and figures(api_numbers) == figures(numbers)
    assert api_numbers["first_difference"] == numbers["first_difference"]
    assert list(text_api.compare_text("the quick brown", SEEDS, count=2, seed=1, max_new_tokens=2))[-1][-1]["columns"]
    # coming back to the Text tab lists the models tuned meanwhile, in both model pickers
    refresh = next(f for f in demo.fns.values()
                   if any(t[1] == "select" and getattr(demo.blocks[t[0]], "id", None) == "text" for t in f.targets))
    s.catalog.add(dataclasses.replace(s.model_spec("text", tuned), id=f"{TEXT_ID}+later"))
    assert all(f"{TEXT_ID}+later" in picker["choices"] for picker in refresh.fn())


# ----- the attention view (ui/attention_view.py) ----------------------------------------------

def attention_view_dict() -> dict:
    """A hand-made view: 4 tokens (a template token, two prompt words, an answer word),
    2 layers x 2 heads, the query at token 3."""
    tokens = [{"index": i, "id": i, "text": text, "kind": kind}
              for i, (text, kind) in enumerate([("<s>", "template"), (" sea", "prompt"), ("\n", "prompt"),
                                                 (" blue", "answer")])]
    weights = [[[0.5, 0.3, 0.15, 0.05], [0.0, 0.0, 0.0, 1.0]], [[0.25] * 4, [0.7, 0.1, 0.1, 0.1]]]
    lens = [{"layer": layer, "ids": [1, 2], "tokens": [" a", "<b>"], "probs": [0.6, 0.1]} for layer in (0, 1)]
    return {"tokens": tokens, "position": 3, "layers": 2, "heads": 2, "layer": 0, "head": None,
            "weights": weights, "lens": lens, "prompt_tokens": 3, "explain_position": 1}


def test_head_view_shades_what_the_selected_token_attends_to():
    from aigc_studio.ui import attention_view as av

    view = attention_view_dict()
    assert av.head_view_pairs(view, 0, 0) == [("⟨<s>⟩", "≥ 30%"), ("␣sea", "≥ 30%"), ("⏎", "10–30%"),
                                              ("␣blue", av.SELECTED)]
    assert av.head_row(view, 0, None) == pytest.approx([0.25, 0.15, 0.075, 0.525])  # the average of the heads
    assert [c for _, c in av.head_view_pairs(view, 0, None)][:3] == ["10–30%", "10–30%", "3–10%"]
    summary = av.summary_markdown(view, 1, 1)
    assert "Token 3: `␣blue`" in summary and "head 1" in summary and "`⟨<s>⟩` (0) 70.0%" in summary
    assert "answer token 1" in summary


def test_lens_table_marks_the_models_output_and_escapes_tokens():
    from aigc_studio.ui import attention_view as av

    table = av.lens_html(attention_view_dict())
    assert table.count("<tr") == 3 and "1 · the model's output" in table
    assert "&lt;b&gt;" in table and "<b>" not in table and "60.0%" in table


def test_matrix_picture_frames_the_selected_row_and_positions_map_to_the_explainer():
    from aigc_studio.ui import attention_view as av

    picture = av.matrix_picture([[1.0, 0.0], [0.5, 0.5]], position=1, size=100)
    assert picture.size == (100, 100) and picture.getpixel((20, 20)) == (67, 56, 202)
    assert picture.getpixel((75, 25)) == (255, 255, 255) and picture.getpixel((50, 99)) == (220, 38, 38)
    # answer token k was chosen at the token before it; -1: the last token
    assert av.query_for_answer_token(10, 0, 15) == 9 and av.query_for_answer_token(10, 3, 15) == 12
    assert av.query_for_answer_token(10, -1, 15) == 14
    assert av.head_choice(av.AVERAGE) is None and av.head_choice("head 3") == 3


def test_browser_attention_view_follows_a_selected_token(app_server):
    with sync_playwright() as playwright:  # the session's shared server
        page = open_studio(playwright, app_server[0])
        page.locator("#text-prompt textarea").fill("What is the capital of France?")
        page.locator("#text-answer textarea").fill("The capital of France is Paris.")
        page.locator("#text-inside").get_by_text("Inside the model").click()
        page.locator("#text-attention-show").click()
        tokens = page.locator("#text-attention-tokens span.token")
        expect(tokens.nth(40)).to_be_visible(timeout=GENERATION)
        summary = page.locator("#text-attention-summary")
        # the explainer's position 0 (the first answer token) was chosen at the prompt's last token
        expect(summary).to_contain_text("Token 36", timeout=GENERATION)
        expect(summary).to_contain_text("answer token 0")
        expect(page.locator("#text-lens")).to_contain_text("the model's output")
        tokens.nth(29).click()  # " France" in the prompt
        expect(summary).to_contain_text("Token 29", timeout=GENERATION)
        expect(summary).to_contain_text("France")
        tokens.nth(41).click()  # " is" in the answer: its next token is " Paris"
        expect(summary).to_contain_text("answer token 5", timeout=GENERATION)
        expect(page.locator("#text-lens")).to_contain_text("Paris")
        page.locator("#text-attention-explain").click()  # back to the explainer, at that token
        expect(page.locator("#text-explainer")).to_contain_text("answer token 5", timeout=GENERATION)
        expect(page.locator("#text-explainer")).to_contain_text("Paris")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "text-attention-view.png"), full_page=True)


def test_attention_section_goes_from_the_explained_token_to_its_attention_and_back(studio):
    """The tab's handlers on the tiny model: Show attention opens at the token that chose the
    explainer's answer token, selecting an answer token moves the view, a new answer does not,
    and the way back gives the explainer's position."""
    import gradio as gr

    from aigc_studio.ui import attention_view as av
    from tests.conftest import TEXT_ID

    s = studio()
    knobs_ = (None, "completion", TEXT_ID)  # system_prompt, prompt_mode, model
    state, pairs, summary, matrix, lens, layer, head, overview = av.show(
        s, "the quick brown", "fox jumps over", None, 2, None, av.AVERAGE, *knobs_, None)
    view = state["view"]
    assert view["prompt_tokens"] == 3 and view["position"] == 4  # answer token 2 was chosen at token 4
    assert [c for _, c in pairs][4] == av.SELECTED and "answer token 2" in summary
    assert layer["maximum"] == 1 and head["choices"][0] == av.AVERAGE and len(head["choices"]) == 5
    assert matrix.size == (360, 360) and overview.size == (22 + 2 * 39, 22 + 4 * 39) and "the model's output" in lens
    moved = av.follow(s, state, "the quick brown", "fox jumps over", None, 0, 0, "head 1", *knobs_)
    assert moved[0]["view"]["position"] == 2 and moved[0]["view"]["head"] == 1
    elsewhere = av.follow(s, state, "the quick brown", "a new answer", None, 0, 0, "head 1", *knobs_)
    assert elsewhere == (gr.skip(),) * 8  # the view shows another answer: it stays
    assert av.explain_position(state) == 2 and av.explain_position(moved[0]) == 0
