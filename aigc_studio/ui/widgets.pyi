"""Widgets shared by the tabs: knob controls built from params.py, the
side-by-side controls, and the translation of backend errors into gr.Error."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.catalog import ModelSpec, UnknownModelError
from aigc_studio.shapes import UnknownPromptError

log = logging.getLogger(__name__)

SEEDS, SWEEP = "Different seeds", "Sweep one knob"

from gradio.events import Dependency

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
            raise gr.Error(f"{self.knob_name}: must be a number in [{self.minimum}, {self.maximum}], "
                           f"got {shown(payload)}")
        return super().preprocess(number)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def control(params_type: type, name: str, value=None, **kwargs) -> gr.components.Component:
    """A slider, checkbox, dropdown or number for one knob, with its range and tooltip."""
    meta = knobs.spec(params_type, name)
    default = meta["default"] if value is None else value
    label = kwargs.pop("label", name.replace("_", " "))
    info = meta["help"]
    if isinstance(meta["default"], bool):
        return gr.Checkbox(value=default, label=label, info=info, **kwargs)
    if meta["choices"]:
        return gr.Dropdown(list(meta["choices"]), value=default, label=label, info=info, **kwargs)
    if isinstance(meta["default"], str):
        return gr.Textbox(value=default, label=label, info=info, **kwargs)
    if name == "seed":
        return gr.Number(value=default, label=label, info=info, precision=0,
                         minimum=meta["low"], maximum=meta["high"], **kwargs)
    step = 1 if isinstance(meta["default"], int) else 0.01
    if name in ("width", "height"):
        step = 8
    return KnobSlider(meta["low"], meta["high"], value=default, step=step, label=label, info=info, knob_name=name, **kwargs)


def variant_controls(params_type: type) -> tuple[gr.Radio, gr.Slider, gr.Dropdown, gr.Textbox]:
    """Controls for 2-4 variants side by side: seeds, or one knob swept over values."""
    with gr.Row():
        mode = gr.Radio([SEEDS, SWEEP], value=SEEDS, label="Variants", info="What differs between the columns.")
        count = gr.Slider(2, 4, value=3, step=1, label="How many (seeds)")
        knob_name = gr.Dropdown(knobs.sweepable(params_type), value=knobs.sweepable(params_type)[0], label="Knob to sweep")
        values = gr.Textbox(value="0.3, 0.8, 1.4", label="Values (2-4, comma-separated)")
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


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the backend's input errors into gr.Error (a message in the UI and the
    API); anything else is logged and reported without a traceback."""
    try:
        yield
    except gr.Error:
        raise
    except (knobs.ParamError, UnknownModelError, UnknownPromptError, ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error)) from None
    except MemoryError:
        raise gr.Error("Out of memory: try a smaller size, fewer steps or a smaller model.") from None
    except Exception as error:  # keep serving: one bad request never kills the demo
        log.exception("generation failed")
        raise gr.Error(f"Generation failed ({type(error).__name__}); the studio is still running, please try again.") from None


class Sessions:
    """Per-browser-session state the UI keeps beside a generation: the stop event
    of the running request and the recipes of the last results (bounded)."""

    MAX_SESSIONS = 1000

    def __init__(self):
        self._stops: dict[str, threading.Event] = {}
        self._recipes: OrderedDict[str, list] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: gr.Request | None) -> str:
        return (request.session_hash if request is not None else None) or "api"

    def fresh_stop(self, request: gr.Request | None) -> threading.Event:
        with self._lock:
            event = self._stops[self.key(request)] = threading.Event()
            return event

    def stop(self, request: gr.Request | None) -> None:
        with self._lock:
            event = self._stops.get(self.key(request))
        if event is not None:
            event.set()

    def keep_recipes(self, request: gr.Request | None, recipes: list) -> None:
        with self._lock:
            self._recipes[self.key(request)] = recipes
            self._recipes.move_to_end(self.key(request))
            while len(self._recipes) > self.MAX_SESSIONS:
                self._recipes.popitem(last=False)

    def recipes(self, request: gr.Request | None) -> list:
        with self._lock:
            return self._recipes.get(self.key(request), [])
class KnobDropdown(_NamesItsKnob, gr.Dropdown):
    @classmethod
    def get_block_name(cls) -> str:
        return "dropdown"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    
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
                raise gr.Error(f"{self.knob_name}: must be a whole number in [{self.minimum}, {self.maximum}], "
                               f"got {shown(payload)}")
            payload = number
        return super().preprocess(payload)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    
class KnobRadio(_NamesItsKnob, gr.Radio):
    @classmethod
    def get_block_name(cls) -> str:
        return "radio"
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    