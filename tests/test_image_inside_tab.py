"""The Image tab's start picture and prompt maps (ui/image_inside_tab.py, actions/image.py): choosing the
picture (unit), the endpoints on the session's server, and a browser that scribbles on the
sketch pad and runs image to image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aigc_studio import shapes
from aigc_studio.params import ParamError
from aigc_studio.recipe import read_recipe
from aigc_studio.actions.image import NOTHING, SKETCH, UPLOAD, start_picture, trajectory_strip


def blob() -> Image.Image:
    drawing = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    drawing.paste((220, 40, 40, 255), (16, 16, 48, 48))
    return drawing


def test_the_start_picture_is_the_chosen_one():
    upload = Image.new("RGB", (32, 32), "blue")
    assert start_picture(NOTHING, upload, {"composite": blob()}) is None
    assert start_picture(UPLOAD, upload, {"composite": blob()}) is upload
    assert start_picture(SKETCH, upload, {"composite": blob()}).getpixel((20, 20)) == (220, 40, 40, 255)


@pytest.mark.parametrize("source, upload, sketch, message", [
    (UPLOAD, None, None, "start picture: upload a picture first"),
    (SKETCH, None, {"composite": Image.new("RGBA", (64, 64), (0, 0, 0, 0))}, "sketch: draw something first"),
    (SKETCH, None, {"composite": None}, "sketch: draw something first"),
])
def test_an_empty_start_is_refused_naming_the_field(source, upload, sketch, message):
    with pytest.raises(ParamError) as error:
        start_picture(source, upload, sketch)
    assert str(error.value).startswith(message)


def test_the_strip_captions_the_noised_start_before_the_steps():
    pictures = [Image.new("RGB", (16, 16), c) for c in ("white", "red", "blue")]
    with_start, plain = trajectory_strip(pictures, "noised"), trajectory_strip(pictures)
    assert with_start.size == plain.size
    assert not np.array_equal(np.asarray(with_start), np.asarray(plain))  # the captions differ


# ----- the endpoints on the session's server ------------------------------------------------------

def test_the_endpoints_answer_over_http(app_client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "start.png"
    shapes.render("red", "square", np.random.default_rng(3), 64).save(path)
    result = app_client.predict(prompt="a red circle", image=handle_file(str(path)), strength=0.4, steps=10, seed=5,
                                api_name="/image_to_image")
    recipe = read_recipe(result)
    assert recipe.params["strength"] == 0.4 and recipe.params["init_image_size"] == [64, 64]
    frames = app_client.predict(image=handle_file(str(path)), steps=4, api_name="/noise_image")
    assert len(frames) == 4 and frames[0]["signal"] > frames[-1]["signal"]
    mapped = app_client.predict(prompt="a blue triangle", seed=3, steps=8, api_name="/prompt_map")
    assert [w["word"] for w in mapped["words"]] == ["blue", "triangle"] and mapped["method"] == "condition contrast"


# ----- a browser --------------------------------------------------------------------------------

def test_a_scribble_on_the_sketch_pad_is_refined(app_server):
    from playwright.sync_api import expect, sync_playwright

    from tests.test_ui import ARTIFACTS, GENERATION, open_studio

    with sync_playwright() as playwright:
        page = open_studio(playwright, app_server[0])
        page.get_by_role("tab", name="Image").click()
        page.locator("#image-start-box").get_by_text("Start from a picture").click()
        page.locator("#image-sketch").get_by_role("button", name="Brush").click()  # the pad starts with no tool
        canvas = page.locator("#image-sketch canvas").first
        expect(canvas).to_be_visible(timeout=30_000)
        box = canvas.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 30, cy - 20)
        page.mouse.down()
        for dx, dy in ((30, -20), (30, 20), (-30, 20), (-30, -20), (0, 0), (15, 5), (-15, 5)):
            page.mouse.move(cx + dx, cy + dy, steps=5)
        page.mouse.up()
        expect(page.locator("#image-start-source input[type=radio]:checked")).to_have_value(SKETCH, timeout=10_000)
        page.locator("#image-prompt textarea").fill("a red circle")
        page.locator("#image-generate").click()
        expect(page.locator("#image-output img")).to_be_visible(timeout=GENERATION)
        expect(page.locator("#image-strip img")).to_be_visible(timeout=GENERATION)
        expect(page.locator(".studio-recipe", has_text="strength").first).to_be_visible(timeout=GENERATION)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "image-to-image.png", full_page=True)
