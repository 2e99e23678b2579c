"""The image operations (aigc_studio/actions/image.py) that the Image tab and the typed API
share: each request checks its non-knob inputs once, with the messages API users match on;
the operations run on the session's tiny studio. And the tab's wiring: handlers bound so
Gradio still passes them the session, the History hook in restore's order."""

from __future__ import annotations

import inspect

import pytest
from PIL import Image

from aigc_studio.actions import image as actions
from aigc_studio.actions.variants import SEEDS, SWEEP
from aigc_studio.params import ParamError


def refusal(make, *args, **kwargs) -> str:
    with pytest.raises(ParamError) as error:
        make(*args, **kwargs)
    return str(error.value)


# ----- the requests' checks ---------------------------------------------------------------------

def test_compare_defaults_and_refusals_name_the_field():
    job = actions.CompareImage("a red circle", {}, mode=None, count=None, knob_name=None, values=None)
    assert (job.mode, job.count, job.values, job.models) == (SEEDS, 3, "1, 3, 7", None)
    assert actions.CompareImage("p", {}, mode=SWEEP, knob_name=None).knob_name == "guidance"
    assert actions.CompareImage("p", {}, count=4.0).count == 4  # a slider's whole float
    assert refusal(actions.CompareImage, "p", {}, mode="warp").startswith(
        "mode: must be one of Different seeds, Sweep one knob, Different models, got 'warp'")
    assert refusal(actions.CompareImage, "p", {}, count=5) == "count: must be a number in [2, 4], got 5"
    assert refusal(actions.CompareImage, "p", {}, mode=SWEEP, knob_name="negative_prompt").startswith(
        "knob_name: must be one of steps, guidance")
    assert refusal(actions.CompareImage, "p", {}, values=3).startswith("values: must be text, got int")
    assert refusal(actions.CompareImage, "p", {}, mode=actions.MODELS,
                   init_image=Image.new("RGB", (8, 8))).startswith("start picture: side by side by model")


def test_compare_takes_models_as_a_list_or_comma_separated_text():
    assert actions.CompareImage("p", {}, models=" a, b ,, c").models == ["a", "b", "c"]
    assert actions.CompareImage("p", {}, models=["a", " b"]).models == ["a", "b"]
    assert refusal(actions.CompareImage, "p", {}, models=3).startswith("models: must be text")


def test_grid_axes_and_values_are_checked_and_parsed():
    job = actions.ImageGrid("p", {})
    assert (job.x_knob, job.xs, job.y_knob, job.ys) == ("steps", ["4", "8", "16", "32"], "guidance", ["1", "3", "7"])
    one_row = actions.ImageGrid("p", {}, x_knob="model", x_values="shapes-vae, shapes-gan", y_knob="none")
    assert (one_row.xs, one_row.y_knob, one_row.ys) == (["shapes-vae", "shapes-gan"], None, None)
    assert refusal(actions.ImageGrid, "p", {}, x_knob="batch_size").startswith("x_knob: must be one of steps")
    assert refusal(actions.ImageGrid, "p", {}, y_knob="").startswith("y_knob: must be one of none, steps")
    assert refusal(actions.ImageGrid, "p", {}, x_values=" , ", x_knob="model").startswith("x_values: give 1 to 6")
    assert refusal(actions.ImageGrid, "p", {}, y_values=["1"]).startswith("y_values: must be text")


def test_walk_takes_whole_floats_and_defaults():
    job = actions.LatentWalk("p", {}, seed_a=None, seed_b=9.0, frames=None)
    assert (job.seed_a, job.seed_b, job.frames) == (3, 9, 8) and isinstance(job.seed_b, int)
    assert actions.LatentWalk("p", {}, frames=2.5).frames == 2.5  # the studio refuses it, naming frames


def test_the_start_picture_and_knobs_split_from_a_handlers_inputs():
    values = tuple(range(len(actions.ALL_KNOBS)))
    knobs, picture = actions.knobs_and_start(values)
    assert list(knobs) == list(actions.ALL_KNOBS) and picture is None
    upload = Image.new("RGB", (16, 16), "red")
    assert actions.knobs_and_start((*values, actions.UPLOAD, upload, None))[1] is upload
    assert actions.knobs_and_start((*values, actions.NOTHING, upload, None))[1] is None


def test_a_data_url_is_decoded_or_refused():
    assert actions.data_url_bytes("data:image/png;base64,aGk=") == b"hi"
    assert refusal(actions.data_url_bytes, "data:image/png;base64,!!").startswith("image: the data URL is not valid")
    assert refusal(actions.open_picture, b"not a picture", "start").startswith("start: must be a PNG, JPEG or WebP")


def test_preview_steps_are_few_and_end_at_the_last():
    assert actions.preview_steps(30) == {9, 19, 29}
    assert actions.preview_steps(2) == {0, 1}


# ----- the operations on the session's studio -----------------------------------------------------

def test_generate_streams_at_most_three_previews_and_every_step(studio):
    shown, steps = [], []
    job = actions.GenerateImage("a red circle", {"steps": 6, "seed": 1, "width": 32, "height": 32})
    results = actions.generate(studio(), job, shown.append, on_picture=lambda step, p: steps.append(step))
    assert len(results) == 1 and len(shown) == 3 and len(steps) >= 6


def test_compare_sweeps_a_knob_the_model_reads(studio):
    job = actions.CompareImage("a red circle", {"steps": 2, "seed": 1, "width": 32, "height": 32}, mode=SWEEP,
                               knob_name="guidance", values="1, 5")
    assert [r.label for r in actions.compare(studio(), job)] == ["guidance=1.0", "guidance=5.0"]
    unread = actions.CompareImage("a red circle", {"steps": 2}, mode=SWEEP, knob_name="truncation", values="0.5, 1")
    with pytest.raises(ParamError, match="^knob_name: .* does not use truncation"):
        actions.compare(studio(), unread)


# ----- the tab's wiring ---------------------------------------------------------------------------

def test_a_bound_handler_still_gets_the_request_and_streams():
    import warnings

    from gradio.helpers import special_args

    from aigc_studio.ui import image_tab

    bound = image_tab.bind(image_tab.generate_image, "studio", "sessions")
    assert inspect.isasyncgenfunction(bound) and list(inspect.signature(bound).parameters)[:2] == ["request", "progress"]
    marker = object()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs, *_ = special_args(bound, inputs=["a prompt"], request=marker)
    assert inputs[0] is marker


def test_the_history_hook_lists_its_outputs_in_restores_order(studio, tmp_path):
    import gradio as gr

    from aigc_studio.ui import image_tab
    from aigc_studio.ui.session import Sessions

    s = studio()
    with gr.Blocks():
        parts = image_tab.layout(s)
        hook = image_tab.wire(parts, s, Sessions(s.history))
    saved = s.save(s.image("a red circle", steps=2, seed=5, width=32, height=32))
    restored = hook["restore"](str(saved), None)
    assert len(restored) == len(hook["outputs"])
    by_component = dict(zip(map(id, hook["outputs"]), restored))
    assert by_component[id(parts.prompt)] == "a red circle"
    assert by_component[id(parts.controls["seed"])]["value"] == 5
    assert by_component[id(parts.start["source"])] == actions.NOTHING
