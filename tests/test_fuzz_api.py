"""Property-based: random, hostile inputs through the real server's Gradio API.

app.py runs as users run it (offline preset, embedded models) and Hypothesis
throws values at /generate_text, /generate_image, /generate_audio, /image_grid and
/compare_image: empty,
huge and control-character prompts, out-of-range, non-numeric and huge knobs,
wrong types, unknown and path-like model ids. Every call must end as a proper
answer or as a user error that names the field; never a traceback, an
unexplained failure or a 5xx, and the server keeps serving. Valid values are kept
tiny (a few tokens, a few steps) so that each example is quick.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import httpx
import pytest
import soundfile
from gradio_client import Client
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from aigc_studio.catalog import EMBEDDED_MODELS, HUB_MODELS
from aigc_studio.config import Settings
from aigc_studio.params import MAX_PROMPT_CHARS, ParamError, check_prompt
from aigc_studio.studio import PARAMS_TYPES, Studio

EXAMPLES = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OMIT = object()  # leave the keyword out: the endpoint's default applies
GENERIC_FAILURE = "upstream Gradio app has raised an exception"  # Gradio's text for an unhandled exception
WAIT = 300  # seconds; a hang detector for the raw-HTTP calls


@pytest.fixture(scope="module")
def server(app_server, app_client):
    """(URL, Client) of the session's shared app.py server (tests/conftest.py)."""
    return app_server[0], app_client


@pytest.fixture(scope="module")
def client(server):
    return server[1]


# ----- strategies -------------------------------------------------------------------------------

# A lone surrogate ("\ud800") is not here: gradio_client cannot encode it and fails before
# sending (a UnicodeEncodeError, not the server's answer); it goes over raw HTTP below.
NASTY_TEXT = [
    "", " ", "\n\t ", "\x00", "\x00\x01\x02\x1b[31mred\x1b[0m", "\u202egnp.exe", "\ufeff\u200b",
    "😀" * 20, "../../etc/passwd", "/tmp/x", "C:\\Windows\\system32", "%s%n%x", "{0}{1}", "<script>alert(1)</script>",
    "' OR 1=1 --", "null", "None", "x" * (MAX_PROMPT_CHARS + 1), "word " * 900,
]
JUNK = st.one_of(
    st.none(), st.booleans(), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "", "abc", "0x1F", "1/2", "½", "٣"]),
)
MODEL_IDS = [s.id for s in HUB_MODELS + EMBEDDED_MODELS]


def prompts(examples: list[str]) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(valid-looking prompts, hostile ones). Random text may still be refused (e.g.
    only control characters): either way the answer must be clean."""
    valid = st.one_of(st.sampled_from(examples), st.text(min_size=1, max_size=40))
    return valid, st.one_of(st.sampled_from(NASTY_TEXT), JUNK)


def knob(valid: st.SearchStrategy, low: float, high: float,
         omit: bool = True) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(valid values, or the keyword left out if omit; numbers outside [low, high] and junk)."""
    outside = st.one_of(
        st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False),
        st.integers(max_value=int(low) - 1), st.integers(min_value=int(high) + 1),
        st.integers(min_value=10**20, max_value=10**400),
    )
    return (st.one_of(valid, st.just(OMIT)) if omit else valid), st.one_of(outside, JUNK)


def models(default: str) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(the default model, or left out; another catalog id, maybe of another modality
    or a Hub model that cannot load offline, an unknown or path-like id, junk)."""
    unknown = st.sampled_from(["../../etc", "/tmp/x", "gpt2", "HuggingFaceTB/SmolLM2-360M-Instruct", "", "."])
    return st.sampled_from([OMIT, default]), st.one_of(st.sampled_from(MODEL_IDS), unknown, JUNK)


def seeds() -> tuple[st.SearchStrategy, st.SearchStrategy]:
    return knob(st.integers(-1, 2**31 - 1), -1, 2**31 - 1)


def unit(low: float, high: float) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    return knob(st.floats(low, high), low, high)


def choices(valid: list[str]) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    return st.sampled_from([OMIT, *valid]), st.one_of(st.sampled_from(["warp", "", "DDIM", "default "]), JUNK)


@st.composite
def requests(draw, fields: dict) -> dict:
    """Valid values for every field, then (two times in three) one or two fields made
    hostile: each field's checks get their turn and some requests run for real."""
    values = {name: draw(valid) for name, (valid, _) in fields.items()}
    broken = draw(st.one_of(st.just([]), st.lists(st.sampled_from(list(fields)), min_size=1, max_size=2, unique=True),
                            st.lists(st.sampled_from(list(fields)), min_size=1, max_size=1)))
    for name in broken:
        values[name] = draw(fields[name][1])
    return values


TEXT_KNOBS = dict(
    prompt=prompts(["Say hi.", "What is 2+2?"]),
    temperature=unit(0.0, 2.0), top_k=knob(st.integers(0, 1000), 0, 1000), top_p=unit(0.01, 1.0),
    # max_new_tokens is never left out: its default (128) would make an example slow
    max_new_tokens=knob(st.integers(1, 4), 1, 1024, omit=False),
    repetition_penalty=unit(1.0, 2.0), seed=seeds(), greedy=(st.sampled_from([OMIT, True, False]), JUNK),
    model=models("smollm2-135m-instruct"),
)
SIZES = st.sampled_from([16, 64, 128, 256])
IMAGE_KNOBS = dict(
    prompt=prompts(["a red circle", "a small yellow triangle please", "blue square"]),
    negative_prompt=(st.one_of(st.just(OMIT), st.text(max_size=20)), st.one_of(st.sampled_from(NASTY_TEXT), JUNK)),
    steps=knob(st.integers(1, 3), 1, 150, omit=False),  # the default (30) would be slow
    guidance=unit(0.0, 20.0),
    width=(SIZES, knob(SIZES, 16, 1536)[1] | st.integers(17, 23)),
    height=(SIZES, knob(SIZES, 16, 1536)[1] | st.integers(17, 23)),
    seed=seeds(),
    scheduler=choices(["default", "ddim", "euler_a", "dpm++", "lcm"]),
    model=models("shapes-diffusion"),
)
AUDIO_KNOBS = dict(
    prompt=prompts(["Hello there.", "One, two. Three!"]),
    speed=unit(0.25, 4.0), seed=seeds(), noise_scale=unit(0.0, 1.5), noise_w=unit(0.0, 1.5),
    sentence_silence=unit(0.0, 2.0), duration=unit(0.5, 30.0),
    model=models("piper-joe-medium"),
)


IMAGE_AXES = ["steps", "guidance", "seed", "scheduler", "width", "height"]
AXIS_VALUES = ["1, 2", "2", "0, 3, 7", "1,2,3,4,5,6", "ddim, euler", "16, 64", "-1, 5", "red, blue"]
FEW_STEPS = knob(st.integers(1, 2), 1, 150, omit=False)
GRID_KNOBS = dict(
    IMAGE_KNOBS, steps=FEW_STEPS,
    x_knob=(st.sampled_from(IMAGE_AXES), st.one_of(st.sampled_from(["batch_size", "warp", "model", "negative_prompt", ""]), JUNK)),
    x_values=(st.sampled_from(AXIS_VALUES), st.one_of(st.sampled_from(NASTY_TEXT + ["1,2,3,4,5,6,7", "9999, 1"]), JUNK)),
    y_knob=(st.sampled_from([OMIT, "none", *IMAGE_AXES]), st.one_of(st.sampled_from(["batch_size", "warp"]), JUNK)),
    y_values=(st.sampled_from([OMIT, *AXIS_VALUES]), st.one_of(st.sampled_from(NASTY_TEXT), JUNK)),
)
COMPARE_IMAGE_KNOBS = dict(
    IMAGE_KNOBS, steps=FEW_STEPS,
    mode=choices(["Different seeds", "Sweep one knob"]), count=knob(st.integers(2, 4), 2, 4),
    knob_name=(st.sampled_from([OMIT, *IMAGE_AXES]), st.one_of(st.sampled_from(["warp", "model", ""]), JUNK)),
    values=(st.sampled_from([OMIT, *AXIS_VALUES]), st.one_of(st.sampled_from(NASTY_TEXT), JUNK)),
)
# messages about the grid as a whole name both of its size fields
GRID_FIELDS = [*GRID_KNOBS, "width/height"]


def call(client: Client, api_name: str, values: dict):
    """predict() with the drawn values (OMIT ones left out): (answer, None) or (None, error)."""
    kwargs = {name: value for name, value in values.items() if value is not OMIT}
    try:
        answer = client.predict(api_name=api_name, **kwargs)
    except Exception as error:  # judged by the caller
        event(f"refused: {str(error).split(':')[0][:40]}")  # --hypothesis-show-statistics lists these
        return None, error
    event("answered")
    return answer, None


def assert_a_user_error(error: Exception, fields: list[str]) -> None:
    """A message for a person: it names one of the fields, no traceback, no generic failure."""
    assert isinstance(error, AppError), f"not a user error (a 5xx or a broken connection?): {error!r}"
    message = str(error)
    assert "Traceback" not in message and 'File "' not in message, message
    assert GENERIC_FAILURE not in message and "Generation failed" not in message, message
    assert len(message) <= 400, f"a {len(message)}-character message"
    assert any(message.startswith(f"{field}:") for field in fields), f"names no field of {fields}: {message}"


def still_serving(client: Client) -> None:
    assert client.predict(prompt="Say yes.", max_new_tokens=2, seed=0, api_name="/generate_text")


# ----- the properties ---------------------------------------------------------------------------

@EXAMPLES
@given(values=requests(TEXT_KNOBS))
def test_generate_text_answers_or_names_the_bad_field(client, values):
    answer, error = call(client, "/generate_text", values)
    if error is None:
        assert isinstance(answer, str)
    else:
        assert_a_user_error(error, list(TEXT_KNOBS))


@EXAMPLES
@given(values=requests(IMAGE_KNOBS))
def test_generate_image_answers_or_names_the_bad_field(client, values):
    answer, error = call(client, "/generate_image", values)
    if error is None:
        with Image.open(answer) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 16
    else:
        assert_a_user_error(error, list(IMAGE_KNOBS))


@EXAMPLES
@given(values=requests(AUDIO_KNOBS))
def test_generate_audio_answers_or_names_the_bad_field(client, values):
    answer, error = call(client, "/generate_audio", values)
    if error is None:
        info = soundfile.info(answer)
        assert info.samplerate > 0 and info.frames > 0
    else:
        assert_a_user_error(error, list(AUDIO_KNOBS))


@EXAMPLES
@given(values=requests(GRID_KNOBS))
def test_image_grid_answers_or_names_the_bad_field(client, values):
    answer, error = call(client, "/image_grid", values)
    if error is None:
        grid_path, cells = answer
        with Image.open(grid_path) as picture:
            assert picture.format == "PNG"
        assert 1 <= len(cells) <= 36
    else:
        assert_a_user_error(error, GRID_FIELDS)


@EXAMPLES
@given(values=requests(COMPARE_IMAGE_KNOBS))
def test_compare_image_answers_or_names_the_bad_field(client, values):
    answer, error = call(client, "/compare_image", values)
    if error is None:
        assert 2 <= len(answer) <= 4
    else:
        assert_a_user_error(error, list(COMPARE_IMAGE_KNOBS))


def test_the_server_still_serves_after_the_fuzzing(client):
    still_serving(client)


# ----- NaN and infinity: JSON that gradio_client cannot send, but any HTTP client can -------------

def raw_predict(url: str, client: Client, api_name: str, values: dict) -> dict:
    """Call an endpoint over plain HTTP with a JSON body that may hold NaN/Infinity
    literals; returns Gradio's final message for the event."""
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api_name]
    data = [values.get(p["parameter_name"], p["parameter_default"]) for p in endpoint["parameters"]]
    config = httpx.get(url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name.lstrip("/"))
    session = uuid.uuid4().hex
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                       "trigger_id": None})  # allow_nan: NaN and Infinity go out as bare literals
    joined = httpx.post(url + "gradio_api/queue/join", content=body, headers={"Content-Type": "application/json"})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=WAIT) as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[len("data:"):])
                if message.get("msg") == "process_completed":
                    return message
    pytest.fail("the event never completed")


# Every (endpoint, field) gets NaN, +inf and -inf; each must be refused naming the field.
NON_FINITE_CASES = [
    ("/generate_text", "temperature", dict(prompt="hi", max_new_tokens=2)),
    ("/generate_text", "max_new_tokens", dict(prompt="hi")),
    ("/generate_text", "seed", dict(prompt="hi", max_new_tokens=2)),
    ("/generate_image", "guidance", dict(prompt="a red circle", steps=2)),
    ("/generate_image", "width", dict(prompt="a red circle", steps=2)),
    ("/generate_audio", "speed", dict(prompt="hi")),
]


def test_nan_and_infinity_over_raw_http_are_refused_naming_the_field(server):
    url, client = server
    wrong = []
    for api_name, field, extra in NON_FINITE_CASES:
        for bad in (float("nan"), float("inf"), float("-inf")):
            message = raw_predict(url, client, api_name, {**extra, field: bad})
            error = str((message.get("output") or {}).get("error"))
            if message["success"] is not False or not error.startswith(f"{field}:") or "Traceback" in error:
                wrong.append(f"{api_name} {field}={bad}: {message}")
    assert wrong == []
    still_serving(client)


LONE_SURROGATE_CASES = [
    ("/generate_text", dict(max_new_tokens=2)),
    ("/compare_text", dict(max_new_tokens=2)),
    ("/generate_image", dict(steps=1, width=16, height=16)),
    ("/compare_image", dict(steps=1, width=16, height=16)),
    ("/image_grid", dict(x_knob="steps", x_values="1, 2", y_knob="none", width=16, height=16)),
    ("/generate_audio", {}),
]


def test_a_lone_surrogate_prompt_over_raw_http_is_refused_naming_the_field(server):
    """JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 text holds: every endpoint
    taking a prompt refuses it, naming `prompt`, and keeps serving."""
    url, client = server
    wrong = []
    for api_name, extra in LONE_SURROGATE_CASES:
        message = raw_predict(url, client, api_name, {"prompt": "\ud800", **extra})
        error = str((message.get("output") or {}).get("error"))
        if message["success"] is not False or not error.startswith("prompt:") or "Traceback" in error:
            wrong.append(f"{api_name}: {message}")
    assert wrong == []
    still_serving(client)


# ----- the Python API: the same checks without a server --------------------------------------------

@pytest.fixture(scope="module")
def studio_for_params(tmp_path_factory):
    """An offline Studio (nothing is loaded: only knobs are checked)."""
    folder = tmp_path_factory.mktemp("params-studio")
    return Studio(Settings(preset="offline", cache_dir=folder / "cache", output_dir=folder / "out"))


ANY_VALUE = st.one_of(JUNK, st.floats(), st.integers(min_value=-10**30, max_value=10**30), st.text(max_size=10))


@settings(max_examples=200, deadline=None, database=None)
@given(modality=st.sampled_from(["text", "image", "audio"]), data=st.data())
def test_the_python_api_accepts_valid_knobs_and_names_the_bad_one(studio_for_params, modality, data):
    names = [f.name for f in dataclasses.fields(PARAMS_TYPES[modality])]
    values = data.draw(st.dictionaries(st.sampled_from(names), ANY_VALUE, max_size=3))
    try:
        chosen = studio_for_params.params(modality, **values)
    except ParamError as error:
        assert error.field in values and str(error).startswith(f"{error.field}: "), str(error)
        return
    for name in values:  # accepted: every value given is now a clean, in-range one
        meta = next(f for f in dataclasses.fields(chosen) if f.name == name).metadata
        value = getattr(chosen, name)
        if meta["low"] is not None:
            assert meta["low"] <= value <= meta["high"] and value == value  # not NaN
        if meta["choices"]:
            assert value in meta["choices"]


@settings(max_examples=200, deadline=None, database=None)
@given(prompt=st.one_of(st.text(), st.sampled_from([*NASTY_TEXT, "\ud800"]), JUNK))  # in process: a lone surrogate too
def test_prompts_come_out_printable_and_bounded_or_are_refused(prompt):
    try:
        cleaned = check_prompt(prompt)
    except ParamError as error:
        assert error.field == "prompt"
        return
    assert cleaned and len(cleaned) <= MAX_PROMPT_CHARS
    assert all(c.isprintable() or c in "\n\t" for c in cleaned)
