"""The text operations (aigc_studio/actions/text.py): their requests check the inputs that are
not knobs once, for the tabs and the API alike; and a knob added to TextParams reaches the
page's controls, the typed API and the recipe without another edit."""

from __future__ import annotations

import dataclasses
import inspect
import json
import time

import pytest

from aigc_studio import params as knobs
from aigc_studio.actions import text as text_actions
from aigc_studio.actions.text import CompareText, ExplainToken, TextGrid
from aigc_studio.actions.variants import SEEDS, SWEEP
from aigc_studio.params import ParamError, TextParams
from aigc_studio.recipe import Recipe
from tests.conftest import TEXT_ID

# TextParams with one knob more, as a contributor would add it to params.py
ExtendedTextParams = dataclasses.make_dataclass(
    "ExtendedTextParams",
    [("presence_penalty", "float", knobs.knob(0.0, 0.0, 2.0, "Lowers the score of every token already used."))],
    bases=(TextParams,))


def test_a_new_knob_reaches_the_controls_the_typed_api_and_the_recipe(studio):
    import gradio as gr

    from aigc_studio.ui import text_api
    from aigc_studio.ui.components import KnobSlider
    from aigc_studio.ui.endpoint import endpoint
    from aigc_studio.ui.knob_controls import knob_controls

    with gr.Blocks():
        controls = knob_controls(ExtendedTextParams, prefix="text")
    assert list(controls) == text_actions.knob_names(ExtendedTextParams)
    slider = controls["presence_penalty"]
    assert isinstance(slider, KnobSlider) and slider.elem_id == "text-presence_penalty"
    assert (slider.minimum, slider.maximum, slider.value) == (0.0, 2.0, 0.0)

    # the real endpoints are built by text_endpoint_args from TextParams: the same call over the
    # extended dataclass gives the new knob after every other knob, typed, optional and documented
    real = [p.name for p in inspect.signature(text_api.generate_text).parameters.values()]
    assert real == [arg.name for arg in text_api.text_endpoint_args(TextParams)]
    args = text_api.text_endpoint_args(ExtendedTextParams)
    generate = endpoint("generate_text", "Generate text.", args, "The answer.", lambda **values: values)
    parameter = inspect.signature(generate).parameters["presence_penalty"]
    assert list(inspect.signature(generate).parameters)[-1] == "presence_penalty"
    assert parameter.default is None and parameter.annotation == float | None
    assert "presence_penalty: 0-2. Lowers the score" in generate.__doc__
    assert generate("hi", presence_penalty=0.5)["presence_penalty"] == 0.5
    compare = [a.name for a in text_api.text_endpoint_args(ExtendedTextParams, after=(text_api.MODELS_ARG,))]
    assert compare[-2:] == ["presence_penalty", "models"]
    explain = [a.name for a in text_api.explain_endpoint_args(ExtendedTextParams)]
    assert explain[-3:] == ["presence_penalty", "top_n", "model"]

    # its value is checked like any knob's, and a model that reads it records it in its recipes
    with pytest.raises(ParamError, match=r"^presence_penalty: must be a number in \[0.0, 2.0\]"):
        knobs.make(ExtendedTextParams, presence_penalty=3)
    chosen = knobs.make(ExtendedTextParams, presence_penalty=0.5, seed=4)
    s = studio()
    reads_it = dataclasses.replace(s.model_spec("text", TEXT_ID), id=f"{TEXT_ID}-extended",
                                   knobs=tuple(text_actions.knob_names(ExtendedTextParams)))
    s.catalog.add(reads_it)
    recipe = s.runtime.recipe(reads_it, "hi", chosen, "", time.perf_counter())
    assert Recipe.from_json(recipe.to_json()).params["presence_penalty"] == 0.5
    assert recipe.params["seed"] == 4


def test_the_explainer_reads_its_knobs_in_the_endpoints_order_then_any_new_one():
    assert tuple(text_actions.explain_knobs(TextParams)) == text_actions.EXPLAIN_ORDER
    assert text_actions.explain_knobs(ExtendedTextParams)[-1] == "presence_penalty"
    assert not set(text_actions.NOT_EXPLAINED) & set(text_actions.explain_knobs(ExtendedTextParams))


def test_a_comparison_request_fills_in_defaults_and_refuses_bad_inputs_naming_them():
    request = CompareText("hi", TextParams())
    assert (request.mode, request.count, request.knob_name, request.values) == \
        (SEEDS, 3, "temperature", text_actions.SWEPT_VALUES)
    swept = CompareText("hi", TextParams(), mode=SWEEP, knob_name="top_k", values="5, 50", count=9)
    assert (swept.knob_name, swept.values, swept.count) == ("top_k", "5, 50", 3)  # count is for seeds only
    for values, field, words in [(dict(mode="Everything"), "mode", "must be one of Different seeds"),
                                 (dict(count=5), "count", "must be a number in [2, 4]"),
                                 (dict(count="two"), "count", "must be a whole number"),
                                 (dict(mode=SWEEP, knob_name="system_prompt"), "knob_name", "must be one of"),
                                 (dict(values=3), "values", "must be text, got int")]:
        with pytest.raises(ParamError, match=f"^{field}: ") as error:
            CompareText("hi", TextParams(), **values)
        assert words in str(error.value)


def test_a_grid_request_parses_its_axes():
    request = TextGrid("hi", TextParams(), x_values="0.3, 1.5", y_knob="none", y_values="1, 2")
    assert (request.x_knob, request.xs, request.y_knob, request.ys) == ("temperature", ["0.3", "1.5"], None, None)
    both = TextGrid("hi", TextParams(), x_knob="top_k", x_values=" 5,50 ,", y_knob="seed", y_values="1, 2")
    assert (both.xs, both.y_knob, both.ys) == (["5", "50"], "seed", ["1", "2"])
    assert TextGrid("hi", TextParams()).xs == ["0.3", "0.8", "1.4"]
    with pytest.raises(ParamError, match="^x_knob: must be a knob name"):
        TextGrid("hi", TextParams(), x_knob=3)
    with pytest.raises(ParamError, match="^y_values: must be text"):
        TextGrid("hi", TextParams(), y_knob="seed", y_values=[1, 2])


def test_an_explain_request_reads_positions_and_the_answer():
    request = ExplainToken("hi", TextParams(), answer=None, position="-1", top_n=None)
    assert (request.answer, request.position, request.top_n) == ("", -1, 10)
    assert ExplainToken("hi", TextParams(), answer=[4, 5]).answer == [4, 5]  # generated ids stay ids
    with pytest.raises(ParamError, match=r"^top_n: must be a number in \[1, 50\]"):
        ExplainToken("hi", TextParams(), top_n=51)
    with pytest.raises(ParamError, match="^answer: must be text"):
        ExplainToken("hi", TextParams(), answer=5)


@pytest.mark.parametrize("value, expected", [(None, 5), ("", 5), (3, 3), (3.0, 3), ("-1", -1)])
def test_whole_number_reads_api_values(value, expected):
    assert knobs.whole_number("position", value, 5) == expected


@pytest.mark.parametrize("value", [2.5, "two", float("nan")])
def test_whole_number_refuses_the_rest_naming_the_field(value):
    with pytest.raises(ParamError, match="^position:"):
        ExplainToken("hi", TextParams(), position=value)


def test_a_whole_number_beyond_float_range_meets_the_range_check():
    # float(10**400) overflows; the number is whole, so the caller's range check refuses it by name
    assert knobs.whole_number("position", 10**400, 5) == 10**400
    with pytest.raises(ParamError, match=r"^count: must be a number in \[2, 4\]"):
        CompareText("hi", TextParams(), count=10**400)
    with pytest.raises(ParamError, match=r"^top_n: must be a number in \[1, 50\]"):
        ExplainToken("hi", TextParams(), top_n=10**400)


def test_variants_styles_share_the_base_and_set_their_knobs():
    base = knobs.make(TextParams, seed=11, max_new_tokens=9, stop_sequences="###")
    variants = text_actions.text_variants(base, text_actions.STYLES, 2, "temperature", "")
    assert [label for label, _ in variants] == list(knobs.SAMPLING_STYLES)
    for (name, params) in variants:
        assert (params.seed, params.max_new_tokens, params.stop_sequences) == (11, 9, "###")
        assert params.temperature == knobs.sampling_style(name)["temperature"]
    swept = text_actions.text_variants(base, SWEEP, 2, "min_p", "0, 0.1")
    assert [p.min_p for _, p in swept] == [0.0, 0.1] and {p.seed for _, p in swept} == {11}


def test_the_answer_on_show_is_explained_by_its_ids_and_columns_by_their_numbers():
    state = {"text": "a b", "tokens": [{"id": 7, "logprob": -1.0}, {"id": 8, "logprob": -2.0}]}
    assert text_actions.answer_ids("a b", state) == [7, 8]
    assert text_actions.answer_ids("edited", state) == "edited" and text_actions.answer_ids(None, None) == ""
    numbers = text_actions.column_numbers({"labels": ["seed=1"], "diverge_at": None, "columns": [state["tokens"]],
                                           "rates": [12.345]})
    assert json.loads(json.dumps(numbers)) == {"first_difference": None, "columns": [
        {"label": "seed=1", "tokens": 2, "tokens_per_s": 12.35, "mean_logprob": -1.5}]}
