"""The UI's knob components (aigc_studio/ui/components.py), without a server."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio.context import LocalContext

from aigc_studio.ui.components import KnobDropdown, KnobNumber, KnobRadio, KnobSlider, SweepDropdown


def rebuilt_in_an_event(component, **update):
    """What Gradio does when an event updates a component's props: a new object of the
    same class from its constructor arguments, made inside the event (where Gradio runs
    only the class's outermost __init__); later events of the session use that object."""
    token = LocalContext.in_event_listener.set(True)
    try:
        return type(component)(**{**component.constructor_args, **update, "render": False})
    finally:
        LocalContext.in_event_listener.reset(token)


def refusal(component, payload) -> str:
    with pytest.raises(gr.Error) as error:
        component.preprocess(payload)
    return error.value.message


def test_a_slider_keeps_its_knob_name_and_range_when_a_model_change_narrows_it():
    width = KnobSlider(16, 1536, value=256, step=8, label="width", knob_name="width", knob_range=(16, 1536),
                       render=False)
    narrowed = rebuilt_in_an_event(width, maximum=512)  # the shapes model: its slider ends at 512
    assert narrowed.maximum == 512
    assert narrowed.preprocess(1024) == 1024  # the knob's own range still holds for typed values
    assert refusal(narrowed, 5000).startswith("width: must be a number in [16, 1536], got 5000")


@pytest.mark.parametrize("component, bad, message", [
    (KnobDropdown(["euler", "ddim"], value="euler", knob_name="scheduler", render=False), "warp",
     "scheduler: Value: warp is not in the list of choices: ['euler', 'ddim']"),
    (KnobRadio(["a", "b"], value="a", knob_name="mode", render=False), "c",
     "mode: Value: 'c' (type: <class 'str'>) is not in the list of choices: ['a', 'b']"),
    (KnobNumber(1, minimum=-1, maximum=9, precision=0, knob_name="seed", render=False), "abc",
     "seed: must be a whole number in [-1, 9], got 'abc'"),
    (SweepDropdown(["temperature"], value="temperature", knob_name="knob_name", render=False), "volume",
     "knob_name: must be one of"),
])
def test_other_knobs_keep_their_names_after_an_update(component, bad, message):
    rebuilt = rebuilt_in_an_event(component, visible=True)
    assert refusal(rebuilt, bad).startswith(message)
    assert rebuilt.preprocess(component.value) == component.value


def test_the_browser_gets_the_gradio_component_props_only():
    slider = KnobSlider(0, 10, value=5, step=1, label="w", knob_name="width", knob_range=(0, 100), render=False)
    config = slider.get_config()
    assert (config["minimum"], config["maximum"], config["label"]) == (0, 10, "w")
    assert "knob_name" not in config and "knob_range" not in config
