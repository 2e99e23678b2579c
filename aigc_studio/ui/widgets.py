"""Widgets shared by the tabs: knob controls built from params.py, the
side-by-side controls, and the translation of backend errors into gr.Error."""

from __future__ import annotations

import logging
import math
import queue
import threading
import traceback
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import gradio as gr

from aigc_studio import logs
from aigc_studio import params as knobs
from aigc_studio.catalog import ModelSpec, UnknownModelError
from aigc_studio.models import OUT_OF_MEMORY, free_memory
from aigc_studio.shapes import UnknownPromptError
from aigc_studio.studio import ModelMemoryError

log = logging.getLogger(__name__)

SEEDS, SWEEP = "Different seeds", "Sweep one knob"
MAX_MESSAGE_CHARS = 400  # an error message quotes the bad value; a megabyte of it helps nobody


def shown(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class KnobSlider(gr.Slider):
    """A slider whose range errors name the knob (Gradio's own say only "Value 0 is
    less than minimum value 0.25"), and that refuses non-numbers with a message."""

    knob_name = "value"  # set after construction: Gradio reads props from Slider's own signature

    @classmethod
    def get_block_name(cls) -> str:
        return "slider"  # the browser renders it as a plain slider

    def preprocess(self, payload):
        try:
            number = float(payload)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            number = float("nan")
        if not self.minimum <= number <= self.maximum:  # NaN fails too
            raise user_error(f"{self.knob_name}: must be a number in [{self.minimum}, {self.maximum}], "
                             f"got {shown(payload)}")
        return super().preprocess(number)


class _NamesItsKnob:
    """Mixin: Gradio's own input checks ("Value: warp is not in the list of
    choices") get the knob's name in front, so API users know which field."""

    knob_name = "value"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except gr.Error as error:
            raise user_error(f"{self.knob_name}: {error.message}") from None


class KnobDropdown(_NamesItsKnob, gr.Dropdown):
    @classmethod
    def get_block_name(cls) -> str:
        return "dropdown"


class KnobRadio(_NamesItsKnob, gr.Radio):
    @classmethod
    def get_block_name(cls) -> str:
        return "radio"


class KnobNumber(_NamesItsKnob, gr.Number):
    @classmethod
    def get_block_name(cls) -> str:
        return "number"

    def preprocess(self, payload):
        # Gradio's Number compares the payload with its bounds as is: text or NaN
        # would fail deep inside with a TypeError, so check for a finite number first.
        if payload is not None:
            try:
                number = float(payload)
            except (TypeError, ValueError, OverflowError):
                number = float("nan")
            if isinstance(payload, bool) or not math.isfinite(number):
                raise user_error(f"{self.knob_name}: must be a whole number in [{self.minimum}, {self.maximum}], "
                                 f"got {shown(payload)}")
            payload = number
        return super().preprocess(payload)


def model_dropdown(choices: list[str], value: str | None, **kwargs) -> KnobDropdown:
    """The model picker: an id outside the catalog (a path, a Hub repo) is refused
    before any handler runs, with a message naming the `model` field."""
    kwargs.setdefault("info", "Which model generates: loaded on first use, then kept while memory allows.")
    dropdown = KnobDropdown(choices, value=value, label="model", **kwargs)
    dropdown.knob_name = "model"
    return dropdown


def control(params_type: type, name: str, value=None, **kwargs) -> gr.components.Component:
    """A slider, checkbox, dropdown or number for one knob, with its range and tooltip."""
    meta = knobs.spec(params_type, name)
    default = meta["default"] if value is None else value
    label = kwargs.pop("label", name.replace("_", " "))
    info = meta["help"]
    if isinstance(meta["default"], bool):
        return gr.Checkbox(value=default, label=label, info=info, **kwargs)
    if meta["choices"]:
        dropdown = KnobDropdown(list(meta["choices"]), value=default, label=label, info=info, **kwargs)
        dropdown.knob_name = name
        return dropdown
    if isinstance(meta["default"], str):
        return gr.Textbox(value=default, label=label, info=info, **kwargs)
    if name == "seed":
        number = KnobNumber(value=default, label=label, info=info, precision=0,
                            minimum=meta["low"], maximum=meta["high"], **kwargs)
        number.knob_name = name
        return number
    step = 1 if isinstance(meta["default"], int) else 0.01
    if name in ("width", "height"):
        step = 8
    slider = KnobSlider(meta["low"], meta["high"], value=default, step=step, label=label, info=info, **kwargs)
    slider.knob_name = name
    return slider


def variant_controls(params_type: type, extra_modes: tuple[str, ...] = (),
                     info: str = "What differs between the columns.") -> tuple[gr.Radio, gr.Slider, gr.Dropdown, gr.Textbox]:
    """Controls for 2-4 variants side by side: seeds, or one knob swept over values (plus extra_modes)."""
    with gr.Row():
        mode = KnobRadio([SEEDS, SWEEP, *extra_modes], value=SEEDS, label="Variants", info=info)
        count = KnobSlider(2, 4, value=3, step=1, label="How many (seeds)")
        sweepable = knobs.sweepable(params_type)
        knob_name = KnobDropdown(sweepable, value=sweepable[0], label="Knob to sweep")
        values = gr.Textbox(value="0.3, 0.8, 1.4", label="Values (2-4, comma-separated)")
    # API users see these names in error messages: they are the endpoints' keywords.
    mode.knob_name, count.knob_name, knob_name.knob_name = "mode", "count", "knob_name"
    return mode, count, knob_name, values


def make_variants(base, mode: str, count: int, knob_name: str, values: str) -> list[tuple[str, object]]:
    if mode == SWEEP:
        return knobs.variants(base, knob_name, knobs.parse_values(values, type(base), knob_name))
    return knobs.seed_variants(base, int(count))


def variant_labels(base, mode: str, count: int, knob_name: str, values: str) -> list[str]:
    """Column labels known before generating; a random seed is only known after."""
    if mode == SEEDS and base.seed < 0:
        return [f"random seed {i + 1}" for i in range(int(count))]
    return [label for label, _ in make_variants(base, mode, count, knob_name, values)]


def column_updates(labels: list[str], slots: int, clear: bool) -> list:
    """Show one labelled column per variant and hide the rest; clear empties them
    before a compare runs."""
    values = {"value": None} if clear else {}
    shown = [gr.update(label=label, visible=True, **values) for label in labels]
    return shown + [gr.update(visible=False, **values)] * (slots - len(labels))


def model_card(spec: ModelSpec) -> str:
    size = f" · {spec.size_mb} MB" if spec.size_mb else ""
    return f"**{spec.id}** ({spec.source}) · license: {spec.license}{size} — {spec.description}"


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
    except OUT_OF_MEMORY as error:  # the Studio's ModelMemoryError says what ran out; a raw one is freed here
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


class Sessions:
    """Per-browser-session state the UI keeps beside a generation: the stop event
    of the running request and the recipes of the last results (bounded)."""

    MAX_SESSIONS = 1000

    def __init__(self):
        self._stops: dict[str, threading.Event] = {}
        self._kept: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: gr.Request | None) -> str:
        return (request.session_hash if request is not None else None) or "api"

    def fresh_stop(self, request: gr.Request | None, tab: str = "text") -> threading.Event:
        """A new stop event for this session's generation in `tab`."""
        with self._lock:
            event = self._stops[f"{self.key(request)}/{tab}"] = threading.Event()
            return event

    def stop(self, request: gr.Request | None, tab: str = "text") -> None:
        with self._lock:
            event = self._stops.get(f"{self.key(request)}/{tab}")
        if event is not None:
            event.set()

    def keep(self, request: gr.Request | None, name: str, value) -> None:
        """Remember value under name for this session (the oldest sessions are forgotten)."""
        with self._lock:
            self._kept.setdefault(self.key(request), {})[name] = value
            self._kept.move_to_end(self.key(request))
            while len(self._kept) > self.MAX_SESSIONS:
                self._kept.popitem(last=False)

    def kept(self, request: gr.Request | None, name: str, default=None):
        with self._lock:
            return self._kept.get(self.key(request), {}).get(name, default)

    def keep_recipes(self, request: gr.Request | None, recipes: list) -> None:
        self.keep(request, "recipes", recipes)

    def recipes(self, request: gr.Request | None) -> list:
        return self.kept(request, "recipes", [])


def run_in_worker(work: Callable[[Callable[[Any], None]], Any],
                  stop: threading.Event | None = None) -> Iterator[tuple[str, Any]]:
    """Run work(emit) in a thread and yield ("update", item) for every emit, then
    ("result", its return value). Lets a Gradio generator stream progress
    (e.g. denoising previews) from a blocking backend call. Errors re-raise here.
    A consumer that goes away early (a cancelled request) sets `stop`, so the work
    can end at its next check instead of running on for nobody."""
    events: queue.Queue = queue.Queue()

    def target() -> None:
        try:
            events.put(("result", work(lambda item: events.put(("update", item)))))
        except BaseException as error:  # handed to the caller's thread
            events.put(("error", error))

    threading.Thread(target=target, daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = events.get()
            finished = kind != "update"
            if kind == "error":
                raise value
            yield kind, value
            if kind == "result":
                return
    finally:
        if not finished and stop is not None:
            stop.set()
