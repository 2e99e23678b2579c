"""Gradio components that name their knob: a slider, dropdown, radio or number whose range
and choice errors start with the knob's name (as the API's do), and the model picker.

Gradio rebuilds a component from its constructor arguments whenever an event updates it,
so everything these keep is a constructor argument (see own_init)."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.ui.errors import user_error

def shown(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def own_init(parent: type, component, *args, **kwargs) -> None:
    """Run `parent`'s own __init__ body on component.

    Gradio rebuilds a component from its constructor arguments whenever an event updates
    it (a model change updates a knob's range) and keeps the new object for the session;
    inside an event it runs only the outermost __init__ of the class. So a knob's name
    and range are constructor arguments (attributes set later would be lost), and the
    Knob* classes call their Gradio parent's body directly (it sets choices, bounds...)."""
    parent.__init__.__wrapped__(component, *args, **kwargs)


class KnobSlider(gr.Slider):
    """A slider whose range errors name the knob (Gradio's own say only "Value 0 is
    less than minimum value 0.25"), and that refuses non-numbers with a message.
    knob_range: the knob's own range; the slider may show a model's narrower one."""

    def __init__(self, minimum: float = 0, maximum: float = 100, value=None, *, knob_name: str = "value",
                 knob_range: tuple | None = None, **kwargs):
        self.knob_name, self.knob_range = knob_name, knob_range
        own_init(gr.Slider, self, minimum, maximum, value=value, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "slider"  # the browser renders it as a plain slider

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Slider)  # the browser gets a Slider's props

    def preprocess(self, payload):
        low, high = self.knob_range or (self.minimum, self.maximum)
        try:
            number = float(payload)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            number = float("nan")
        if not low <= number <= high:  # NaN fails too
            raise user_error(f"{self.knob_name}: must be a number in [{low}, {high}], got {shown(payload)}")
        return number  # Gradio's own Slider.preprocess would check the shown range


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
    def __init__(self, choices=None, *, knob_name: str = "value", **kwargs):
        self.knob_name = knob_name
        own_init(gr.Dropdown, self, choices, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "dropdown"

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Dropdown)


class KnobRadio(_NamesItsKnob, gr.Radio):
    def __init__(self, choices=None, *, knob_name: str = "value", **kwargs):
        self.knob_name = knob_name
        own_init(gr.Radio, self, choices, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "radio"

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Radio)


class KnobNumber(_NamesItsKnob, gr.Number):
    def __init__(self, value=None, *, knob_name: str = "value", **kwargs):
        self.knob_name = knob_name
        own_init(gr.Number, self, value, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "number"

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Number)

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
    dropdown = KnobDropdown(choices, value=value, label="model", knob_name="model", **kwargs)
    return dropdown


class SweepDropdown(KnobDropdown):
    """The "knob to sweep" picker: shows the chosen model's knobs by their names for
    people, accepts any sweepable knob of the modality (the handler checks the model)."""

    # Gradio rebuilds a component from its constructor arguments when an event updates it
    # (here: the model changed), which drops attributes set after construction; so the
    # check uses every modality's sweepable knobs, and the handler checks the model's own.
    sweepable: tuple = ("none", *dict.fromkeys(name for kind in (knobs.TextParams, knobs.ImageParams, knobs.AudioParams)
                                                for name in knobs.sweepable(kind)))  # "none": a grid's absent Y axis
    knob_name = "knob_name"

    def __init__(self, choices=None, *, knob_name: str = "knob_name", sweepable: tuple | None = None, **kwargs):
        """sweepable: the names this picker accepts beyond the class's (e.g. a grid's
        "model" axis); a constructor argument, so a rebuilt picker keeps them."""
        self.knob_name = knob_name
        if sweepable is not None:
            self.sweepable = tuple(sweepable)
        own_init(gr.Dropdown, self, choices, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "dropdown"

    def preprocess(self, payload):
        allowed = dict.fromkeys((*self.sweepable, *SweepDropdown.sweepable))  # the instance's, when it still has them
        if payload not in allowed:
            raise user_error(f"{self.knob_name}: must be one of {', '.join(allowed)}, got {shown(payload)}")
        return payload
