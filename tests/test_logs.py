"""The server's log: a user error is one line naming the field and the value with a
request id that the user's message repeats; an unexpected error keeps its traceback;
start-up and a first image say nothing a user cannot act on."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from aigc_studio import logs
from aigc_studio.params import ParamError
from aigc_studio.ui.errors import MAX_MESSAGE_CHARS, user_errors
from tests.live_server import running_app

REQUEST = re.compile(r"\(request ([0-9a-f]{6})\)$")
FAULT = "injected-fault"  # a prompt with this word makes the image engine raise (see FAULTY_ENGINE)

# Loaded by the server's Python at start (PYTHONPATH): the real app.py, whose image
# engine raises an error no handler expects when a prompt carries FAULT.
FAULTY_ENGINE = f"""
import os, sys
sys.path.insert(0, os.getcwd())
from aigc_studio.engines import image

real_generate = image.generate

def generate(pipe, prompts, *args, **kwargs):
    if any({FAULT!r} in prompt for prompt in prompts):
        raise RuntimeError("the injected fault")
    return real_generate(pipe, prompts, *args, **kwargs)

image.generate = generate
"""


class ServerLog:
    """The server's log file, read from a mark on."""

    def __init__(self, path: Path):
        self.path = path
        self.mark = 0

    def text(self) -> str:
        return self.path.read_text()

    def since_mark(self, expect: str = "", polls: int = 40) -> str:
        """What was written since the last mark (waiting a little for `expect` to show up:
        the request's answer can reach the client before its log line reaches the file)."""
        for _ in range(polls):  # polls, not a timing assertion
            new = self.text()[self.mark:]
            if expect in new:
                break
            time.sleep(0.25)
        return new

    def set_mark(self) -> None:
        self.mark = len(self.text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(Client, ServerLog, the log as it was when the server first answered)."""
    folder = tmp_path_factory.mktemp("logs-server")
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(FAULTY_ENGINE)
    with running_app(folder / "out", PYTHONPATH=str(folder / "site")) as url:
        log = ServerLog(folder / "out" / "server.log")
        at_start = log.text()
        yield Client(url, verbose=False, download_files=str(folder / "downloads")), log, at_start


def request_id(error: AppError) -> str:
    match = REQUEST.search(str(error))
    assert match, f"no request id at the end of the message: {error}"
    return match.group(1)


def test_start_up_and_a_first_image_log_no_warnings(server):
    client, log, at_start = server
    assert "warn" not in at_start.lower() and "Traceback" not in at_start, at_start
    # the first image (the first test of this server) imports diffusers, which imports
    # transformers' image processors: without torchvision they fall back to PIL, and say so
    client.predict(prompt="a blue square", steps=2, seed=2, api_name="/generate_image")
    whole = log.text()
    assert "warn" not in whole.lower() and "torchvision" not in whole, whole


@pytest.mark.parametrize("api_name, kwargs, field, value", [
    ("/generate_text", dict(prompt="hi", temperature=50), "temperature", "50"),  # refused by the slider
    ("/generate_text", dict(prompt="   "), "prompt", "prompt: must not be empty"),  # by params.py
    ("/generate_image", dict(prompt="a purple hexagon", steps=2), "prompt", "'a purple hexagon'"),  # by the model
    ("/generate_image", dict(prompt="a red circle", model="../etc"), "model", "../etc"),  # by the dropdown
])
def test_a_user_error_is_one_log_line_with_field_value_and_request_id(server, api_name, kwargs, field, value):
    client, log, _ = server
    log.set_mark()
    with pytest.raises(AppError) as error:
        client.predict(api_name=api_name, **kwargs)
    assert str(error.value).startswith(f"{field}:")
    request = request_id(error.value)
    new = log.since_mark(expect=request)
    lines = [line for line in new.splitlines() if request in line]
    assert len(lines) == 1, new
    assert f"{field}:" in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in new and 'File "' not in new, new


def test_a_user_error_cannot_forge_a_log_line(server):
    client, log, _ = server
    log.set_mark()
    with pytest.raises(AppError) as error:
        # Gradio's own choice check quotes the value as it came, line break included
        client.predict(prompt="a red circle", model="nope\nFORGED ERROR line", api_name="/generate_image")
    request = request_id(error.value)
    new = log.since_mark(expect=request)
    assert not any(line.startswith("FORGED") for line in new.splitlines()), new
    assert "FORGED" in next(line for line in new.splitlines() if request in line)


def test_an_unexpected_error_keeps_its_traceback_under_the_request_id(server):
    client, log, _ = server
    log.set_mark()
    with pytest.raises(AppError) as error:
        client.predict(prompt=f"a red circle {FAULT}", steps=2, api_name="/generate_image")
    message = str(error.value)
    assert message.startswith("Generation failed (RuntimeError)") and "Traceback" not in message
    request = request_id(error.value)
    new = log.since_mark(expect="RuntimeError: the injected fault")
    assert f"generation failed (request {request})" in new, new
    assert "Traceback (most recent call last)" in new and "RuntimeError: the injected fault" in new, new
    # the server keeps serving
    assert client.predict(prompt="a red circle", steps=2, seed=1, api_name="/generate_image")


# ----- in-process: the pieces ------------------------------------------------------------

def test_user_errors_logs_one_record_whose_id_the_message_repeats(caplog):
    caplog.set_level(logging.INFO, logger="aigc_studio")
    with pytest.raises(gr.Error) as shown, user_errors():
        raise ParamError("steps", "must be in [1, 150], got 999")
    message = shown.value.message
    assert message.startswith("steps: must be in [1, 150], got 999 (request ")
    request = REQUEST.search(message).group(1)
    records = [r for r in caplog.records if request in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is None
    assert "steps: must be in [1, 150], got 999" in records[0].getMessage()
    assert shown.value.print_exception is False  # Gradio would print a traceback of it


def test_user_errors_keeps_the_traceback_of_an_unexpected_error(caplog):
    caplog.set_level(logging.INFO, logger="aigc_studio")
    with pytest.raises(gr.Error) as shown, user_errors():
        {}["missing"]
    request = REQUEST.search(shown.value.message).group(1)
    assert shown.value.message.startswith("Generation failed (KeyError)")
    [record] = [r for r in caplog.records if request in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_long_message_keeps_its_request_id_within_the_limit():
    with pytest.raises(gr.Error) as shown, user_errors():
        raise ValueError("prompt: " + "x" * 5000)
    assert len(shown.value.message) <= MAX_MESSAGE_CHARS and REQUEST.search(shown.value.message)


def test_one_line_escapes_line_breaks():
    assert logs.one_line("a\nb\r\nc\\n") == "a\\nb\\r\\nc\\\\n"


def test_configure_drops_only_the_listed_library_messages(caplog):
    logs.configure()
    logs.configure()  # twice: still one filter
    name = "transformers.utils.import_utils"
    library = logging.getLogger(name)
    assert sum(isinstance(f, logs.DropPhrases) for f in library.filters) == 1
    with caplog.at_level(logging.WARNING, logger=name):
        library.warning("`CLIPImageProcessor` requires torchvision (not installed); falling back")
        library.warning("something a user can act on")
    assert [r.getMessage() for r in caplog.records if r.name == name] == ["something a user can act on"]
