"""Backend errors as messages for people: a bad knob or an unknown model becomes a gr.Error
naming the field (one log line, no traceback); out of memory frees what it can; anything
else is logged with its traceback and reported without one. Log line and message share a
request id."""

from __future__ import annotations

import logging
import traceback
from contextlib import contextmanager
from typing import Iterator

import gradio as gr

from aigc_studio import logs
from aigc_studio import params as knobs
from aigc_studio.studio import (
    ModelMemoryError, UnknownModelError, UnknownPromptError, free_memory, out_of_memory_errors,
)

log = logging.getLogger(__name__)


MAX_MESSAGE_CHARS = 400  # an error message quotes the bad value; a megabyte of it helps nobody


def user_error(message: str) -> gr.Error:
    """A person's mistake (a bad knob, an unknown model): logged as one line with a
    request id, no traceback; returns the gr.Error to raise, which repeats the id."""
    request = logs.new_request_id()
    log.info("user error (request %s): %s", request, logs.one_line(message[:MAX_MESSAGE_CHARS]))
    return _shown_error(message, request)


def _shown_error(message: str, request: str) -> gr.Error:
    # The id goes last: messages start with the field, and API users match on that.
    suffix = f" (request {request})"
    # print_exception=False: Gradio would print a traceback of the gr.Error itself.
    return gr.Error(message[: MAX_MESSAGE_CHARS - len(suffix)] + suffix, print_exception=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the backend's input errors into gr.Error (a message in the UI and the
    API) and log each as one line. Anything else is logged with its traceback and
    reported without one. Log line and message share a request id."""
    try:
        yield
    except gr.Error:
        raise
    except (knobs.ParamError, UnknownModelError, UnknownPromptError, ValueError, FileNotFoundError) as error:
        raise user_error(str(error)) from None
    except out_of_memory_errors() as error:  # the Studio's ModelMemoryError says what ran out; a raw one is freed here
        message = str(error) if isinstance(error, ModelMemoryError) else (
            "Out of memory: try a smaller size, fewer steps or a smaller model. The studio is still running.")
        traceback.clear_frames(error.__traceback__)
        free_memory()
        request = logs.new_request_id()
        log.warning("out of memory (request %s): %s", request, logs.one_line(message))
        raise _shown_error(message, request) from None
    except Exception as error:  # keep serving: one bad request never kills the demo
        request = logs.new_request_id()
        log.exception("generation failed (request %s)", request)
        raise _shown_error(f"Generation failed ({type(error).__name__}); the studio is still running, "
                           f"please try again.", request) from None
