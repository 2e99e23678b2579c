"""The shapes world: prompt parsing, procedural renders, the checker, and the ShapesPipeline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from aigc_studio import shapes
from aigc_studio.engines.shapes_pipeline import ShapesPipeline
from aigc_studio.shapes import COLOUR_NAMES, NULL_CONDITION, NUM_CONDITIONS, SHAPES, Condition, UnknownPromptError

COMBINATIONS = list(itertools.product(COLOUR_NAMES, SHAPES))
RENDERS_PER_COMBINATION = 50  # 12 combinations -> 600 renders


# ----- prompt parsing ------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, colour, shape", [
    ("red circle", "red", "circle"),
    ("A RED Circle", "red", "circle"),
    ("draw a small yellow triangle please", "yellow", "triangle"),
    ("Green, square!", "green", "square"),
    ("blue-triangle", "blue", "triangle"),
    ("a square that is blue", "blue", "square"),
    ("  BLUE\tsquare\n", "blue", "square"),
])
def test_parse_prompt_is_case_insensitive_and_ignores_extra_words(prompt, colour, shape):
    assert shapes.parse_prompt(prompt) == Condition(colour, shape)


@pytest.mark.parametrize("prompt, shape", [
    ("two red circles", "circle"), ("green squares", "square"), ("yellow triangles", "triangle"),
    ("a red round thing", "circle"), ("a blue disc", "circle"), ("a blue disk", "circle"), ("a green dot", "circle"),
    ("a red ball", "circle"), ("a yellow box", "square"), ("a blue rectangle", "square"), ("a red block", "square"),
    ("a green pyramid", "triangle"),
])
def test_parse_prompt_knows_synonyms_and_plurals(prompt, shape):
    condition = shapes.parse_prompt(prompt)
    assert condition.shape == shape
    assert condition.colour in COLOUR_NAMES


def test_parse_prompt_knows_plurals_of_synonyms():
    """'a red ball' is a red circle, so 'red balls' should be too, not 'red, any shape'."""
    expected = {"three red balls": "circle", "some green dots": "circle", "blue discs": "circle",
                "yellow boxes": "square", "red blocks": "square", "green rectangles": "square",
                "blue pyramids": "triangle"}
    parsed = {prompt: shapes.parse_prompt(prompt).shape for prompt in expected}
    wrong = {prompt: shape for prompt, shape in parsed.items() if shape != expected[prompt]}
    assert not wrong, f"plural synonyms not recognised (prompt -> parsed shape): {wrong}"


def test_the_first_colour_and_the_first_shape_win():
    assert shapes.parse_prompt("a red and blue square or circle") == Condition("red", "square")


@pytest.mark.parametrize("prompt, expected", [
    ("something red", Condition("red", None)),
    ("a triangle", Condition(None, "triangle")),
    ("redundant squares", Condition(None, "square")),  # 'red' inside another word does not count
    ("a bluebird on a box", Condition(None, "square")),
])
def test_colour_or_shape_alone(prompt, expected):
    assert shapes.parse_prompt(prompt) == expected


@pytest.mark.parametrize("prompt", ["a purple hexagon", "a photo of a cat", "", "   ", "12345", "redundant"])
def test_unknown_prompt_raises_with_the_vocabulary(prompt):
    with pytest.raises(UnknownPromptError) as caught:
        shapes.parse_prompt(prompt)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith("prompt:")
    for word in (*COLOUR_NAMES, *SHAPES):
        assert word in message


def test_a_long_unknown_prompt_keeps_the_vocabulary_within_a_short_message():
    message = str(pytest.raises(UnknownPromptError, shapes.parse_prompt, "a purple hexagon " * 200).value)
    assert len(message) < 400  # the UI's message limit
    for word in (*COLOUR_NAMES, *SHAPES):
        assert word in message


def test_empty_prompt_allowed_gives_the_null_condition():
    assert shapes.parse_prompt("", allow_empty=True) == NULL_CONDITION
    assert shapes.parse_prompt("a cat", allow_empty=True) == NULL_CONDITION


def test_condition_labels_are_distinct_embedding_rows():
    conditions = [Condition(c, s) for c in (*COLOUR_NAMES, None) for s in (*SHAPES, None)]
    labels = [condition.label for condition in conditions]
    assert sorted(labels) == list(range(NUM_CONDITIONS))
    assert NULL_CONDITION.label == NUM_CONDITIONS - 1
    assert Condition("red", "circle").text == "red circle"
    assert NULL_CONDITION.text == "(unconditional)"


# ----- renders and the checker ------------------------------------------------------------------

def test_renders_are_seeded_and_native_size():
    first = shapes.render("red", "circle", np.random.default_rng(3))
    again = shapes.render("red", "circle", np.random.default_rng(3))
    other = shapes.render("red", "circle", np.random.default_rng(4))
    assert first.size == (shapes.NATIVE_SIZE, shapes.NATIVE_SIZE) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert shapes.render("blue", "square", np.random.default_rng(0), size=32).size == (32, 32)


def test_checker_is_accurate_on_fresh_renders():
    rng = np.random.default_rng(20240611)
    correct = {}
    for colour, shape in COMBINATIONS:
        truth = Condition(colour, shape)
        correct[truth.text] = sum(shapes.check(shapes.render(colour, shape, rng)) == truth
                                  for _ in range(RENDERS_PER_COMBINATION))
    total = len(COMBINATIONS) * RENDERS_PER_COMBINATION
    assert total >= 600
    accuracy = sum(correct.values()) / total
    assert accuracy >= 0.97, f"accuracy {accuracy:.3f}; correct per combination: {correct}"
    worst = min(correct, key=correct.get)
    assert correct[worst] / RENDERS_PER_COMBINATION >= 0.9, f"{worst}: {correct[worst]}/{RENDERS_PER_COMBINATION}"


@pytest.mark.parametrize("size", [32, 256])
def test_checker_reads_upscaled_images_like_native_ones(size):
    rng = np.random.default_rng(7)
    for colour, shape in COMBINATIONS:
        native = shapes.render(colour, shape, rng)
        big = native.resize((size, size), Image.Resampling.NEAREST)
        assert shapes.check(big) == shapes.check(native) == Condition(colour, shape)


def test_checker_sees_nothing_on_a_blank_canvas():
    assert shapes.check(Image.new("RGB", (16, 16), shapes.BACKGROUND)) == NULL_CONDITION
    assert shapes.check(Image.new("RGB", (64, 64), (250, 250, 250))) == NULL_CONDITION


def test_checker_accepts_other_image_modes():
    native = shapes.render("green", "triangle", np.random.default_rng(1))
    assert shapes.check(native.convert("RGBA")) == Condition("green", "triangle")


# ----- the ShapesPipeline, over a tiny random UNet ------------------------------------------------

@pytest.fixture(scope="module")
def pipe(tiny_shapes_path):
    unet = UNet2DModel.from_pretrained(tiny_shapes_path / "unet", use_safetensors=True)
    pipeline = ShapesPipeline(unet=unet, scheduler=DDPMScheduler.from_pretrained(tiny_shapes_path / "scheduler"))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipe, prompt="a red circle", seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", 3)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_pipeline_draws_native_size_images_per_prompt(pipe):
    images = pipe(["a red circle", "blue squares"], num_inference_steps=2, num_images_per_prompt=2,
                  generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 4
    assert all(im.size == (shapes.NATIVE_SIZE, shapes.NATIVE_SIZE) and im.mode == "RGB" for im in images)


def test_pipeline_is_seeded(pipe):
    first = np.asarray(run(pipe, seed=1)[0])
    assert np.array_equal(np.asarray(run(pipe, seed=1)[0]), first)
    assert not np.array_equal(np.asarray(run(pipe, seed=2)[0]), first)


def test_pipeline_condition_and_guidance_reach_the_unet(pipe):
    red = np.asarray(run(pipe, "a red circle", guidance_scale=1.0)[0])
    blue = np.asarray(run(pipe, "a blue square", guidance_scale=1.0)[0])
    assert not np.array_equal(red, blue)
    # Without guidance the negative prompt is not used; with guidance it is.
    assert np.array_equal(red, np.asarray(run(pipe, "a red circle", guidance_scale=1.0, negative_prompt="blue")[0]))
    # Guidance 0 is the unconditional model: neither the prompt nor the negative prompt counts.
    unconditional = np.asarray(run(pipe, "a red circle", guidance_scale=0.0)[0])
    assert np.array_equal(unconditional, np.asarray(run(pipe, "a blue square", guidance_scale=0.0)[0]))
    assert np.array_equal(unconditional, np.asarray(run(pipe, "a red circle", guidance_scale=0.0, negative_prompt="blue")[0]))
    guided = np.asarray(run(pipe, "a red circle", guidance_scale=4.0)[0])
    steered = np.asarray(run(pipe, "a red circle", guidance_scale=4.0, negative_prompt="blue")[0])
    assert not np.array_equal(guided, steered)


def test_pipeline_refuses_unknown_prompts_and_other_sizes(pipe):
    with pytest.raises(UnknownPromptError):
        run(pipe, "a purple hexagon")
    with pytest.raises(ValueError, match="width/height"):
        run(pipe, height=32, width=32)
    assert len(run(pipe, height=shapes.NATIVE_SIZE, width=shapes.NATIVE_SIZE)) == 1


def test_pipeline_output_types_and_callback(pipe):
    steps = []

    def on_step(pipeline, step, timestep, tensors):
        steps.append(step)
        assert tensors["latents"].shape == (1, 3, shapes.NATIVE_SIZE, shapes.NATIVE_SIZE)
        return tensors

    array = run(pipe, output_type="np", callback_on_step_end=on_step, num_inference_steps=4)
    assert steps == [0, 1, 2, 3]
    assert array.shape == (1, shapes.NATIVE_SIZE, shapes.NATIVE_SIZE, 3)
    assert array.min() >= 0.0 and array.max() <= 1.0
    tensor = run(pipe, output_type="pt")
    assert tuple(tensor.shape) == (1, 3, shapes.NATIVE_SIZE, shapes.NATIVE_SIZE)
