"""Knob validation: every bad value gets a message naming the field and its range."""

from __future__ import annotations

import dataclasses
import math

import pytest

from aigc_studio import params as knobs
from aigc_studio.params import MAX_PROMPT_CHARS, MAX_SEED, AudioParams, ImageParams, ParamError, TextParams

PARAM_TYPES = (TextParams, ImageParams, AudioParams)


def ranged_fields() -> list[tuple]:
    """(params type, field name, low, high, is int) for every knob with a numeric range."""
    return [(params_type, f.name, f.metadata["low"], f.metadata["high"], f.type == "int")
            for params_type in PARAM_TYPES for f in dataclasses.fields(params_type) if f.metadata["low"] is not None]


RANGED = ranged_fields()


def assert_names_range(error: ParamError, name: str, low, high) -> None:
    message = str(error)
    assert error.field == name
    assert message.startswith(f"{name}:"), message
    assert str(low) in message and str(high) in message, message


def through_make(params_type, name: str, value):
    return knobs.make(params_type, **{name: value})


def through_validate(params_type, name: str, value):
    """Past make()'s coercion: the value as a dataclass field, checked by validate()."""
    return knobs.validate(dataclasses.replace(params_type(), **{name: value}))


# ----- defaults and ranges ---------------------------------------------------------------

@pytest.mark.parametrize("params_type", PARAM_TYPES)
def test_defaults_are_valid_and_within_their_ranges(params_type):
    default = params_type()
    assert knobs.validate(default) == default
    for f in dataclasses.fields(params_type):
        meta = f.metadata
        assert meta["help"], f"{f.name} has no help text for the UI"
        if meta["low"] is not None:
            assert meta["low"] <= getattr(default, f.name) <= meta["high"], f.name
        if meta["choices"]:
            assert getattr(default, f.name) in meta["choices"], f.name


def test_every_ranged_knob_accepts_its_bounds_and_coerces_them_to_its_type():
    assert len(RANGED) >= 20  # the table sees every ranged knob of the three modalities
    for params_type, name, low, high, is_int in RANGED:
        for value in (low, high):
            if params_type is ImageParams and name in ("width", "height"):
                value = value - value % 8
            checked = knobs.make(params_type, **{name: value})
            assert getattr(checked, name) == value, (params_type.__name__, name, value)
            assert type(getattr(checked, name)) is (int if is_int else float), (params_type.__name__, name)


# One rule per row: every ranged knob of every modality gets each bad value, and each
# refusal must be a ParamError naming the knob and its range. Failures are listed together.
BAD_NUMBERS = [
    pytest.param(through_make, lambda low, high: [low - 1, high + 1, high * 10 + 7], id="out-of-range"),
    pytest.param(through_validate, lambda low, high: [math.nan, math.inf, -math.inf, "nan", "inf"], id="not-finite"),
    pytest.param(through_validate, lambda low, high: ["hot", "", "1,5", [1], {"x": 1}, object(), None],
                 id="not-a-number"),
    pytest.param(through_validate, lambda low, high: [True, False], id="bool-is-not-a-number"),
]


@pytest.mark.parametrize("check, bad_values", BAD_NUMBERS)
def test_every_ranged_knob_refuses_bad_numbers_naming_itself_and_its_range(check, bad_values):
    wrong = []
    for params_type, name, low, high, _ in RANGED:
        for bad in bad_values(low, high):
            where = f"{params_type.__name__}.{name}={bad!r}"
            try:
                check(params_type, name, bad)
            except ParamError as error:
                message = str(error)
                if not (error.field == name and message.startswith(f"{name}:")
                        and str(low) in message and str(high) in message):
                    wrong.append(f"{where}: {message}")
            except Exception as error:  # noqa: BLE001 - listed as a failure below
                wrong.append(f"{where}: not a ParamError: {error!r}")
            else:
                wrong.append(f"{where}: accepted")
    assert wrong == []


def test_numeric_strings_are_coerced():
    checked = knobs.make(TextParams, temperature="1.25", top_k="40", max_new_tokens="1e2", seed="7")
    assert (checked.temperature, checked.top_k, checked.max_new_tokens, checked.seed) == (1.25, 40, 100, 7)
    assert isinstance(checked.top_k, int) and isinstance(checked.temperature, float)


@pytest.mark.parametrize("name, value", [("top_k", 2.5), ("steps", "10.5"), ("seed", 3.000001), ("max_new_tokens", 0.5)])
def test_whole_number_knobs_refuse_fractions(name, value):
    params_type = ImageParams if name == "steps" else TextParams
    meta = knobs.spec(params_type, name)
    with pytest.raises(ParamError) as caught:
        knobs.make(params_type, **{name: value})
    assert "whole number" in str(caught.value) or "number in" in str(caught.value)
    assert_names_range(caught.value, name, meta["low"], meta["high"])


def test_whole_floats_are_accepted_for_int_knobs():
    checked = knobs.make(ImageParams, steps=20.0, width=64.0)
    assert checked.steps == 20 and type(checked.steps) is int
    assert checked.width == 64 and type(checked.width) is int


# ----- booleans ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (1, True), (0, False),
                                             ("true", True), ("False", False), ("1", True), ("0", False)])
def test_bool_knob_accepts_true_false_forms(value, expected):
    assert knobs.make(TextParams, greedy=value).greedy is expected


@pytest.mark.parametrize("value", [2, -1, "yes", "maybe", 0.5, [], "on"])
def test_bool_knob_refuses_other_values(value):
    with pytest.raises(ParamError) as caught:
        knobs.make(TextParams, greedy=value)
    assert caught.value.field == "greedy"
    assert "true or false" in str(caught.value)


# ----- unknown knobs -------------------------------------------------------------------------

@pytest.mark.parametrize("params_type", PARAM_TYPES)
def test_unknown_knob_is_refused_with_the_known_ones(params_type):
    with pytest.raises(ParamError) as caught:
        knobs.make(params_type, tempreature=1.0)
    assert caught.value.field == "tempreature"
    message = str(caught.value)
    assert "unknown knob" in message
    for f in dataclasses.fields(params_type):
        assert f.name in message


def test_spec_of_unknown_knob_is_refused():
    with pytest.raises(ParamError, match="unknown knob"):
        knobs.spec(TextParams, "steps")
    meta = knobs.spec(ImageParams, "steps")
    assert (meta["low"], meta["high"], meta["default"]) == (1, 150, ImageParams().steps)


def test_make_treats_none_as_default():
    assert knobs.make(TextParams, temperature=None, top_k=None) == TextParams()


# ----- image sizes and choices -----------------------------------------------------------------

def test_image_sizes_must_be_a_multiple_of_8():
    for name in ("width", "height"):
        for value in (17, 20, 33, 100, 1530):
            with pytest.raises(ParamError) as caught:
                knobs.make(ImageParams, **{name: value})
            assert caught.value.field == name
            assert "multiple of 8" in str(caught.value)
            assert_names_range(caught.value, name, 16, 1536)


@pytest.mark.parametrize("value", [16, 24, 512, 1536])
def test_image_sizes_that_are_multiples_of_8_pass(value):
    checked = knobs.make(ImageParams, width=value, height=value)
    assert (checked.width, checked.height) == (value, value)


def test_scheduler_must_be_a_known_choice():
    choices = knobs.spec(ImageParams, "scheduler")["choices"]
    for name in choices:
        assert knobs.make(ImageParams, scheduler=name).scheduler == name
    for bad in ("DDIM", "lms", "", "euler-a"):
        with pytest.raises(ParamError) as caught:
            knobs.make(ImageParams, scheduler=bad)
        assert caught.value.field == "scheduler"
        assert all(name in str(caught.value) for name in choices)
    with pytest.raises(ParamError, match="scheduler: must be text"):
        knobs.make(ImageParams, scheduler=3)


def test_negative_prompt_is_cleaned_and_bounded():
    assert knobs.make(ImageParams, negative_prompt="  blurry\x00\x1b, dark \n").negative_prompt == "blurry, dark"
    assert knobs.make(ImageParams, negative_prompt="").negative_prompt == ""
    with pytest.raises(ParamError) as caught:
        knobs.make(ImageParams, negative_prompt="x" * (MAX_PROMPT_CHARS + 1))
    assert caught.value.field == "negative_prompt"
    assert str(MAX_PROMPT_CHARS) in str(caught.value)
    with pytest.raises(ParamError, match="negative_prompt: must be text"):
        knobs.make(ImageParams, negative_prompt=5)


# ----- prompts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["", "   ", "\n\t ", "\x00\x01\x7f", None])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(ParamError) as caught:
        knobs.check_prompt(prompt)
    assert caught.value.field == "prompt"
    assert "empty" in str(caught.value)


def test_prompt_length_limit_names_the_limit_and_the_length():
    assert knobs.check_prompt("a" * MAX_PROMPT_CHARS) == "a" * MAX_PROMPT_CHARS
    with pytest.raises(ParamError) as caught:
        knobs.check_prompt("a" * (MAX_PROMPT_CHARS + 1))
    assert caught.value.field == "prompt"
    assert str(MAX_PROMPT_CHARS) in str(caught.value) and str(MAX_PROMPT_CHARS + 1) in str(caught.value)


def test_control_characters_are_stripped_but_newlines_and_tabs_kept():
    assert knobs.check_prompt("  red\x00 circle\x1b[0m\x07 ") == "red circle[0m"
    assert knobs.check_prompt("line one\nline\ttwo") == "line one\nline\ttwo"
    assert knobs.check_prompt("caf\u00e9 \u2615 \u4f60\u597d") == "caf\u00e9 \u2615 \u4f60\u597d"
    # Control characters do not count toward the length limit.
    assert len(knobs.check_prompt("a" * MAX_PROMPT_CHARS + "\x00" * 10)) == MAX_PROMPT_CHARS


@pytest.mark.parametrize("prompt", [123, b"bytes", ["a"], 1.5])
def test_non_text_prompt_is_refused(prompt):
    with pytest.raises(ParamError, match="prompt: must be text"):
        knobs.check_prompt(prompt)


def test_prompt_error_uses_the_given_name():
    with pytest.raises(ParamError) as caught:
        knobs.check_prompt("", name="question")
    assert caught.value.field == "question"


# ----- seeds and variants ----------------------------------------------------------------------------

def test_resolve_seed_draws_a_concrete_seed_only_for_minus_one():
    fixed = TextParams(seed=42)
    assert knobs.resolve_seed(fixed) is fixed
    drawn = {knobs.resolve_seed(TextParams(seed=-1)).seed for _ in range(20)}
    assert all(0 <= s <= MAX_SEED for s in drawn)
    assert len(drawn) > 1
    assert knobs.resolve_seed(TextParams(seed=-1, temperature=1.3)).temperature == 1.3


def test_variants_label_each_value_and_change_only_that_knob():
    base = knobs.make(TextParams, seed=3, top_k=20)
    out = knobs.variants(base, "temperature", [0.2, 1, "1.5"])
    assert [label for label, _ in out] == ["temperature=0.2", "temperature=1.0", "temperature=1.5"]
    for (_, varied), value in zip(out, (0.2, 1.0, 1.5)):
        assert varied.temperature == value
        assert dataclasses.replace(varied, temperature=base.temperature) == base


@pytest.mark.parametrize("params_type, knob_name, values", [
    (TextParams, "temperature", [0.3, 1.2]), (ImageParams, "guidance", [1, 3, 7]), (AudioParams, "speed", [0.8, 1.2])])
def test_variants_of_an_unset_seed_share_one_drawn_seed(params_type, knob_name, values):
    out = knobs.variants(params_type(seed=-1), knob_name, values)
    seeds = {p.seed for _, p in out}
    assert len(seeds) == 1 and 0 <= seeds.pop() <= MAX_SEED


def test_variants_validate_every_value():
    with pytest.raises(ParamError) as caught:
        knobs.variants(TextParams(), "temperature", [0.5, 9.0])
    assert_names_range(caught.value, "temperature", 0.0, 2.0)
    with pytest.raises(ParamError, match="steps"):
        knobs.variants(ImageParams(), "steps", [10, 0])


@pytest.mark.parametrize("count", [0, 1, 5])
def test_variants_want_two_to_four_values(count):
    with pytest.raises(ParamError) as caught:
        knobs.variants(TextParams(), "top_k", list(range(1, count + 1)))
    assert caught.value.field == "values"
    assert "2 to 4" in str(caught.value)


def test_variants_of_unknown_knob_are_refused():
    with pytest.raises(ParamError, match="unknown knob"):
        knobs.variants(TextParams(), "steps", [1, 2])


def test_seed_variants_are_consecutive_and_labelled():
    out = knobs.seed_variants(ImageParams(seed=100, steps=7), 3)
    assert [label for label, _ in out] == ["seed=100", "seed=101", "seed=102"]
    assert [p.seed for _, p in out] == [100, 101, 102]
    assert all(p.steps == 7 for _, p in out)


def test_seed_variants_resolve_minus_one_once():
    out = knobs.seed_variants(AudioParams(seed=-1), 4)
    seeds = [p.seed for _, p in out]
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert seeds == [(seeds[0] + i) % (MAX_SEED + 1) for i in range(4)]
    assert [label for label, _ in out] == [f"seed={s}" for s in seeds]


def test_seed_variants_wrap_around_the_largest_seed():
    out = knobs.seed_variants(TextParams(seed=MAX_SEED), 2)
    assert [p.seed for _, p in out] == [MAX_SEED, 0]


@pytest.mark.parametrize("count", [0, 1, 5])
def test_seed_variants_want_two_to_four(count):
    with pytest.raises(ParamError) as caught:
        knobs.seed_variants(TextParams(seed=1), count)
    assert caught.value.field == "count"


# ----- sweeps ---------------------------------------------------------------------------------------------

def test_parse_values_splits_and_feeds_variants():
    values = knobs.parse_values(" 0.3, 0.8 ,1.5 ", TextParams, "temperature")
    assert values == ["0.3", "0.8", "1.5"]
    out = knobs.variants(TextParams(), "temperature", values)
    assert [label for label, _ in out] == ["temperature=0.3", "temperature=0.8", "temperature=1.5"]


@pytest.mark.parametrize("text", ["", "0.5", "0.5,", "1,2,3,4,5", None])
def test_parse_values_wants_two_to_four(text):
    with pytest.raises(ParamError) as caught:
        knobs.parse_values(text, TextParams, "temperature")
    assert caught.value.field == "values" and "2 to 4" in str(caught.value)


def test_parse_values_refuses_unknown_knobs_and_bad_values_name_the_knob():
    with pytest.raises(ParamError, match="unknown knob"):
        knobs.parse_values("1, 2", TextParams, "steps")
    values = knobs.parse_values("10, 500", ImageParams, "steps")
    with pytest.raises(ParamError) as caught:
        knobs.variants(ImageParams(), "steps", values)
    assert_names_range(caught.value, "steps", 1, 150)


def test_sweepable_knobs():
    assert "negative_prompt" not in knobs.sweepable(ImageParams)
    assert {"steps", "guidance", "seed", "scheduler", "width"} <= set(knobs.sweepable(ImageParams))
    # free-text knobs are not swept
    assert set(knobs.sweepable(TextParams)) == {f.name for f in dataclasses.fields(TextParams)} - {"stop_sequences", "system_prompt"}
    for params_type in PARAM_TYPES:
        for name in knobs.sweepable(params_type):
            knobs.spec(params_type, name)
