"""The Image tab's API on a real server: streamed denoising previews, X/Y grids,
recipes that reproduce identical pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from aigc_studio import shapes
from aigc_studio.recipe import RECIPE_KEY, read_recipe
from tests.live_server import running_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("image-server")) as url:
        yield Client(url, verbose=False)


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_generation_streams_a_few_previews_then_the_png(client):
    job = client.submit(prompt="a yellow triangle", steps=6, seed=8, scheduler="ddim", api_name="/generate_image")
    outputs = list(job)
    assert len(outputs) == 3 + 1  # three evenly spaced previews (each one file in Gradio's cache), then the PNG
    final = job.result()
    assert read_recipe(final).params["steps"] == 6
    # the last preview is the model's prediction of the final image
    assert np.abs(pixels(outputs[-2]).astype(int) - pixels(final).astype(int)).mean() < 40


def test_the_recipe_in_a_png_reproduces_identical_pixels(client):
    first = client.predict(prompt="a green circle", steps=12, seed=-1, scheduler="euler_a", api_name="/generate_image")
    recipe = read_recipe(first)
    again = client.predict(prompt=recipe.prompt, api_name="/generate_image",
                           **{k: v for k, v in recipe.params.items()})
    assert recipe.params["seed"] >= 0
    assert np.array_equal(pixels(first), pixels(again))


def test_grid_cells_match_their_labels(client):
    grid_path, cells = client.predict(prompt="a blue square", x_knob="guidance", x_values="0, 5", y_knob="seed",
                                      y_values="1, 2", steps=10, api_name="/image_grid")
    assert [c["caption"] for c in cells] == ["guidance=0.0, seed=1", "guidance=5.0, seed=1",
                                             "guidance=0.0, seed=2", "guidance=5.0, seed=2"]
    for cell in cells:
        recipe = read_recipe(cell["image"])
        assert cell["caption"] == f"guidance={recipe.params['guidance']}, seed={recipe.params['seed']}"
    with Image.open(grid_path) as grid_image:
        assert len(json.loads(grid_image.text[RECIPE_KEY + "-grid"])) == 4
        assert grid_image.width >= 2 * 256 and grid_image.height >= 2 * 256


def test_grid_with_guidance_five_follows_the_prompt(client):
    _, cells = client.predict(prompt="a blue square", x_knob="seed", x_values="1, 2, 3, 4", y_knob="none",
                              y_values="", guidance=5, steps=20, api_name="/image_grid")
    assert sum(shapes.check(Image.open(c["image"])) == shapes.Condition("blue", "square") for c in cells) >= 3


@pytest.mark.parametrize("kwargs, field", [
    (dict(steps=0), "steps"),
    (dict(guidance=-1), "guidance"),
    (dict(width=4000), "width"),
    (dict(height=100), "height"),
    (dict(scheduler="warp"), "scheduler"),
])
def test_bad_knobs_name_the_field(client, kwargs, field):
    with pytest.raises(AppError) as error:
        client.predict(prompt="a red circle", api_name="/generate_image", **kwargs)
    assert str(error.value).startswith(f"{field}: ")
    assert "Traceback" not in str(error.value)


def test_batch_size_makes_consecutive_seeds_and_returns_the_first(client):
    first = client.predict(prompt="a red square", steps=5, seed=40, batch_size=3, api_name="/generate_image")
    alone = client.predict(prompt="a red square", steps=5, seed=40, api_name="/generate_image")
    assert read_recipe(first).params["seed"] == 40
    # batched convolutions round differently: at most 1/255, never a different picture
    assert np.abs(pixels(first).astype(int) - pixels(alone).astype(int)).max() <= 1
    again = client.predict(prompt="a red square", steps=5, seed=40, batch_size=3, api_name="/generate_image")
    assert np.array_equal(pixels(first), pixels(again))  # the same recipe, batch size included: identical


def test_every_handler_that_asks_for_the_session_gets_it(studio):
    """Gradio passes gr.Request (and gr.Progress) only to positional parameters before any
    *args: one declared after *knob_values stays None, and the Image tab then kept every
    browser's trajectory, recipes and Stop under one shared "api" session."""
    import inspect
    import warnings

    import gradio as gr
    from gradio.helpers import special_args

    from aigc_studio.ui import build_demo

    demo = build_demo(studio())
    asking = [block_fn.fn for block_fn in demo.fns.values() if block_fn.fn is not None
              and any(p.annotation in (gr.Request, "gr.Request", "gr.Request | None")
                      for p in inspect.signature(block_fn.fn).parameters.values())]
    assert len(asking) >= 10  # every tab's generations and the views that follow them
    marker = object()
    for fn in asking:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unexpected argument": no input values are given here
            inputs, *_ = special_args(fn, inputs=[], request=marker)
        assert marker in inputs, f"{fn.__qualname__} never gets the request"


def test_different_models_shows_one_labelled_column_per_model(app_server):
    """Issue 17 in the browser: the Side by side mode "Different models" runs the three
    embedded models (diffusion, VAE, GAN) at one seed, one labelled image each."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_ui import GENERATION, open_studio, open_tab

    with sync_playwright() as playwright:
        page = open_studio(playwright, app_server[0])
        open_tab(page, "Image")
        page.locator("#image-prompt textarea").fill("a red circle")
        page.get_by_role("button", name="Side by side: 2-4 variants of one prompt").click()
        expect(page.locator("#image-models")).to_be_hidden()
        page.locator("#image-variants-mode").get_by_label("Different models", exact=True).check()
        models = page.locator("#image-models")
        expect(models).to_be_visible()
        for model_id in ("shapes-diffusion", "shapes-vae", "shapes-gan"):
            expect(models).to_contain_text(model_id)  # the catalog's embedded image models, chosen by default
        page.locator("#image-compare").click()
        gallery = page.locator("#image-gallery")
        for model_id in ("shapes-diffusion", "shapes-vae", "shapes-gan"):
            expect(gallery).to_contain_text(f"model={model_id}", timeout=GENERATION)
        expect(gallery.locator("img")).to_have_count(3)
