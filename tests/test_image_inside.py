"""Inside the image models (issue 23) on the tiny models: image to image (SDEdit) on the shapes
pipeline and through diffusers' image-to-image pipeline sharing the loaded components, the
forward process, prompt maps (condition contrast, cross-attention capture), input checks,
recipes, and the API functions."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_studio import shapes
from aigc_studio.catalog import local_spec
from aigc_studio.engines import image as image_engine
from aigc_studio.engines import image_inside
from aigc_studio.params import ImageParams, ParamError, make
from tests.conftest import IMAGE_ID, SHAPES_ID, TINY_IMAGE_SIZE

SIZE = TINY_IMAGE_SIZE
KNOBS = ImageParams(steps=4, guidance=3.0, width=SIZE, height=SIZE, seed=1)


def load(path, kind="diffusers"):
    return image_engine.load(local_spec("x", "image", kind, path), "cpu", torch.float32)


def picture(colour="red", shape="square", size=64, seed=0) -> Image.Image:
    return shapes.render(colour, shape, np.random.default_rng(seed), size)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ----- params and input pictures ---------------------------------------------------------

@pytest.mark.parametrize("value", [-0.1, 1.5, "much"])
def test_strength_outside_0_1_is_refused_naming_the_field(value):
    with pytest.raises(ParamError, match=r"^strength: must be a number in \[0.0, 1.0\]"):
        make(ImageParams, strength=value)


@pytest.mark.parametrize("bad, message", [
    ("not a picture", "image: must be a picture"),
    (Image.new("RGB", (4, 64)), "image: each side must be 8-4096 pixels, got 4x64"),
    (np.zeros((16, 16, 3), np.float32), "image: must be an RGB(A) picture of 8-bit pixels"),
])
def test_a_wrong_picture_is_refused_naming_the_field(bad, message):
    with pytest.raises(ParamError) as error:
        image_inside.check_input(bad)
    assert str(error.value).startswith(message)


def test_transparency_is_white_and_the_fingerprint_is_of_the_pixels():
    scribble = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    scribble.paste((220, 40, 40, 255), (8, 8, 24, 24))
    flat = image_inside.check_input(scribble)
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == shapes.BACKGROUND and flat.getpixel((16, 16)) == (220, 40, 40)
    again = io.BytesIO()
    flat.save(again, format="WEBP", lossless=True)  # another file format, the same pixels
    assert image_inside.fingerprint(Image.open(again)) == image_inside.fingerprint(flat)
    changed = flat.copy()
    changed.putpixel((0, 0), (254, 255, 255))  # one pixel, one unit
    assert image_inside.fingerprint(changed) != image_inside.fingerprint(flat)


# ----- image to image on the shapes pipeline ---------------------------------------------

@pytest.fixture(scope="module")
def shapes_pipe(tiny_shapes_path):
    return load(tiny_shapes_path, "shapes")


def test_strength_0_returns_the_input_and_1_equals_text_to_image(shapes_pipe):
    start = picture(size=16)
    knobs = dataclasses.replace(KNOBS, width=16, height=16)
    same = image_engine.generate(shapes_pipe, ["a blue circle"], dataclasses.replace(knobs, strength=0.0), [3],
                                 init_image=start)[0]
    assert np.array_equal(pixels(same), pixels(start))
    full = image_engine.generate(shapes_pipe, ["a blue circle"], dataclasses.replace(knobs, strength=1.0), [3],
                                 init_image=start)[0]
    plain = image_engine.generate(shapes_pipe, ["a blue circle"], knobs, [3])[0]
    assert np.array_equal(pixels(full), pixels(plain))


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm++", "euler", "euler_a"])
def test_the_trajectory_starts_with_the_noised_picture_and_runs_the_last_steps(shapes_pipe, scheduler):
    knobs = dataclasses.replace(KNOBS, steps=10, strength=0.5, scheduler=scheduler, width=16, height=16)
    previews, totals = [], []
    out = image_engine.generate(shapes_pipe, ["a red circle"], knobs, [5], init_image=picture(size=16),
                                on_step=lambda step, total: totals.append(total),
                                on_preview=lambda step, p: previews.append((step, p)))[0]
    assert [step for step, _ in previews] == [-1, 0, 1, 2, 3, 4]  # int(10 * 0.5) steps after the start
    assert set(totals) == {5}
    assert out.size == (16, 16)
    noised = previews[0][1]
    # the start is the picture plus noise: nearer the picture than a fresh text-to-image start is
    assert not np.array_equal(pixels(noised), pixels(picture(size=16)))


def test_image_to_image_is_reproducible_from_its_seed_and_depends_on_the_picture(shapes_pipe):
    knobs = dataclasses.replace(KNOBS, steps=6, strength=0.6, width=16, height=16)
    a, b = (image_engine.generate(shapes_pipe, ["a red circle"], knobs, [7], init_image=picture(size=16))[0]
            for _ in range(2))
    other = image_engine.generate(shapes_pipe, ["a red circle"], knobs, [7],
                                  init_image=picture("blue", "triangle", 16, 4))[0]
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(other))


# ----- image to image on a diffusers pipeline ---------------------------------------------

def test_sd_image_to_image_shares_the_loaded_components(tiny_sd_path):
    pipe = load(tiny_sd_path)
    img2img = image_engine.image_to_image_pipeline(pipe)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.unet is pipe.unet and img2img.vae is pipe.vae and img2img.text_encoder is pipe.text_encoder
    previews = []
    knobs = dataclasses.replace(KNOBS, steps=6, strength=0.5, scheduler="ddim")  # PNDM would add an iteration
    out = image_engine.generate(pipe, ["a red cat"], knobs, [2], init_image=picture(size=48),
                                on_preview=lambda step, p: previews.append(step))[0]
    assert out.size == (SIZE, SIZE)
    assert previews[0] == -1 and len(previews) == 1 + 3  # the noised start, then int(6 * 0.5) steps
    again = image_engine.generate(pipe, ["a red cat"], knobs, [2], init_image=picture(size=48))[0]
    assert np.array_equal(pixels(out), pixels(again))


def test_the_vae_and_gan_say_they_have_no_image_to_image(studio):
    s = studio()
    spec = s.model_spec("image", IMAGE_ID)
    vae = dataclasses.replace(spec, id="shapes-vae", kind="vae")
    with pytest.raises(ParamError, match="^model: shapes-vae is a VAE: .* has no image to image"):
        s._start_picture(vae, picture(), [KNOBS])


# ----- the forward process ---------------------------------------------------------------------

@pytest.mark.parametrize("model", [SHAPES_ID, IMAGE_ID])
def test_forward_frames_get_noisier_with_signal_and_noise_weights(studio, model):
    s = studio()
    frames = s.noise_image(picture(size=48), steps=5, scheduler="ddim", model=model)
    assert len(frames) == 5
    timesteps = [f.timestep for f in frames]
    assert timesteps == sorted(timesteps) and len(set(timesteps)) == 5
    assert all(abs(f.signal ** 2 + f.noise ** 2 - 1) < 1e-4 for f in frames)
    assert [f.signal for f in frames] == sorted((f.signal for f in frames), reverse=True)
    assert all(f.picture.size == (SIZE, SIZE) for f in frames)


def test_the_shapes_forward_frame_is_the_closed_form(shapes_pipe):
    from diffusers import DDPMScheduler

    start = picture(size=16)
    frame = image_inside.noise_frames(shapes_pipe, start, 1, "ddim", 9, (16, 16))[0]
    forward = DDPMScheduler.from_config(shapes_pipe.default_scheduler_config)
    a = forward.alphas_cumprod[frame.timestep]
    noise = torch.randn((1, 3, 16, 16), generator=torch.Generator().manual_seed(9))
    expected = a.sqrt() * image_engine.to_tensor(start, 16) + (1 - a).sqrt() * noise
    expected_pixels = ((expected[0].clamp(-1, 1).permute(1, 2, 0) + 1) * 127.5).round().numpy()
    assert np.abs(pixels(frame.picture) - expected_pixels).max() <= 1


def test_forward_frames_refuse_bad_steps(studio):
    with pytest.raises(ParamError, match=r"^steps: must be a whole number in \[1, 50\]"):
        studio().noise_image(picture(), steps=0, model=SHAPES_ID)


# ----- prompt maps ---------------------------------------------------------------------------

def test_shapes_maps_one_per_word_the_model_reads(studio):
    s = studio()
    result, words, method = s.prompt_map("a big Red ball please", model=SHAPES_ID, seed=4)
    assert method == "condition contrast"
    assert [(w.word, w.reads_as) for w in words] == [("Red", "red"), ("ball", "circle")]
    for word in words:
        assert word.heat.shape == (16, 16) and word.heat.max() == pytest.approx(1.0) and word.heat.min() >= 0
    assert "strength" not in result.recipe.params and result.recipe.params["seed"] == 4


def test_condition_contrast_is_the_eps_difference_summed(shapes_pipe):
    knobs = dataclasses.replace(KNOBS, steps=2, guidance=1.0, width=16, height=16)
    colourless = shapes.Condition(None, "circle").label
    image_engine.generate(shapes_pipe, ["a red circle"], knobs, [1], pipeline_kwargs={"contrast_labels": [colourless]})
    summed = shapes_pipe.contrast_maps[0]
    # the same sum by hand, along the same trajectory (guidance 1: the trajectory is the conditional one)
    recorded = []
    image_engine.generate(shapes_pipe, ["a red circle"], knobs, [1],
                          on_preview=None, pipeline_kwargs={"contrast_labels": [colourless]},
                          on_step=lambda *a: recorded.append(shapes_pipe.contrast_maps.clone()))
    assert torch.allclose(recorded[-1][0], summed)
    assert torch.all(recorded[-1][0] >= recorded[0][0])  # a sum of absolute values only grows


def test_sd_maps_capture_cross_attention_and_restore_the_processors(studio):
    s = studio()
    with s._use(s.model_spec("image", IMAGE_ID)) as pipe:
        before = {name: type(p).__name__ for name, p in pipe.unet.attn_processors.items()}
    result, words, method = s.prompt_map("a red cat", model=IMAGE_ID, seed=1)
    assert method.startswith("cross-attention")
    assert [w.word for w in words] == ["a", "red", "cat"]
    latent = SIZE // 2
    assert all(w.heat.shape == (latent, latent) and w.heat.max() == pytest.approx(1.0) for w in words)
    with s._use(s.model_spec("image", IMAGE_ID)) as pipe:
        assert {name: type(p).__name__ for name, p in pipe.unet.attn_processors.items()} == before


def test_the_capture_processor_computes_the_same_attention(tiny_sd_path):
    pipe = load(tiny_sd_path)
    knobs = dataclasses.replace(KNOBS, scheduler="ddim")  # one iteration per step (PNDM adds one)
    plain = image_engine.generate(pipe, ["a red cat"], knobs, [1])[0]
    with image_inside.capture_cross_attention(pipe, (SIZE // 2, SIZE // 2)) as capture:
        captured = image_engine.generate(pipe, ["a red cat"], knobs, [1])[0]
    assert np.abs(pixels(plain) - pixels(captured)).max() <= 1
    # every attention row sums to 1: the sum over tokens is heads x layers x steps at every pixel
    layers = sum(name.endswith("attn2.processor") for name in pipe.unet.attn_processors)
    heads = {m.heads for name, m in pipe.unet.named_modules() if name.endswith("attn2")}
    total = capture.total.sum(0)
    assert torch.allclose(total, torch.full_like(total, layers * heads.pop() * KNOBS.steps), rtol=1e-4)


def test_overlay_is_the_picture_size_and_hot_where_the_map_is():
    base = Image.new("RGB", (64, 64), "white")
    heat = np.zeros((16, 16), np.float32)
    heat[:8] = 1.0
    shown = np.asarray(image_inside.overlay(base, heat), dtype=np.int16)
    assert shown.shape == (64, 64, 3)
    assert shown[4, 4, 0] > shown[60, 60, 0] - 1 and shown[4, 4, 2] < shown[60, 60, 2]


# ----- the Studio: recipes and refusals --------------------------------------------------

def test_the_recipe_carries_strength_and_the_picture(studio):
    s = studio()
    start = picture(size=40)
    result = s.image_to_image("a red circle", start, model=SHAPES_ID, strength=0.5, seed=3)
    params = result.recipe.params
    assert params["strength"] == 0.5 and params["init_image_size"] == [40, 40]
    assert params["init_image_sha256"] == image_inside.fingerprint(start)
    assert "strength" not in s.image("a red circle", model=SHAPES_ID, seed=3).recipe.params


def test_strength_sweeps_side_by_side_and_needs_a_picture(studio):
    s = studio()
    base = s.params("image", SHAPES_ID, seed=2)
    variants = [(f"strength={v}", dataclasses.replace(base, strength=v)) for v in (0.0, 1.0)]
    results = s.images("a red circle", variants, SHAPES_ID, init_image=picture(size=SIZE))
    assert np.array_equal(pixels(results[0].output), pixels(picture(size=SIZE)))
    with pytest.raises(ParamError, match="^strength: only image to image reads it"):
        s.images("a red circle", variants, SHAPES_ID)


# ----- the API functions ---------------------------------------------------------------------

def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def api(studio):
    import gradio as gr

    from aigc_studio.ui import api as api_module
    from aigc_studio.ui import image_api

    with gr.Blocks():
        api_module.register(studio())
    return image_api


def test_api_image_to_image_streams_the_start_then_a_png_with_its_recipe(api):
    from aigc_studio.recipe import read_recipe
    from tests.conftest import drain

    files = drain(api.image_to_image("a red circle", {"url": data_url(picture())}, strength=0.5, steps=4, seed=1,
                                     model=SHAPES_ID))
    assert len(files) >= 2
    recipe = read_recipe(files[-1]["path"])
    assert recipe.params["strength"] == 0.5 and len(recipe.params["init_image_sha256"]) == 64


def test_api_noise_image_and_prompt_map(api):
    frames = api.noise_image({"url": data_url(picture())}, steps=3, model=SHAPES_ID)
    assert [f["timestep"] for f in frames] == sorted(f["timestep"] for f in frames) and len(frames) == 3
    assert frames[0]["signal"] > frames[-1]["signal"]
    mapped = api.prompt_map("a green triangle", seed=2, steps=3, model=SHAPES_ID)
    assert [w["word"] for w in mapped["words"]] == ["green", "triangle"]
    assert len(mapped["words"][0]["heat"]) == 16 and max(max(r) for r in mapped["words"][0]["heat"]) == 1.0


@pytest.mark.parametrize("bad, message", [
    ({"path": "/etc/passwd"}, "image: must be a file uploaded to this server"),
    ("data:text/plain;base64,aGVsbG8=", "image: a data URL must be data:image/"),
    ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "image: must be a PNG, JPEG or WebP picture"),
    (None, "image: must be a picture"),
])
def test_api_refuses_a_wrong_picture_naming_the_field(api, bad, message):
    import gradio as gr

    with pytest.raises(gr.Error) as error:
        api.noise_image(bad, model=SHAPES_ID)
    assert error.value.message.startswith(message)


def test_api_refuses_strength_out_of_range_and_the_vae(api):
    import gradio as gr

    from tests.conftest import drain

    with pytest.raises(gr.Error) as error:
        drain(api.image_to_image("a red circle", {"url": data_url(picture())}, strength=1.5, model=SHAPES_ID))
    assert error.value.message.startswith("strength: must be a number in [0.0, 1.0], got 1.5")


# ----- the shapes UNet on ONNX Runtime (issue 22) -----------------------------------------

@pytest.mark.parametrize("scheduler", ["ddpm", "dpm++", "euler", "euler_a"])
def test_onnx_runtime_pixels_equal_the_torch_path(tiny_shapes_path, scheduler):
    pipe = load(tiny_shapes_path, "shapes")
    assert pipe.onnx_unet is not None  # the CPU fp32 default
    knobs = dataclasses.replace(KNOBS, steps=8, scheduler=scheduler, width=16, height=16)
    fast = image_engine.generate(pipe, ["a red circle", "a blue square"], knobs, [1, 2])
    session, pipe.onnx_unet = pipe.onnx_unet, None
    slow = image_engine.generate(pipe, ["a red circle", "a blue square"], knobs, [1, 2])
    pipe.onnx_unet = session
    for a, b in zip(fast, slow):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2  # of 255
    eps_torch = pipe.unet(torch.ones(3, 3, 16, 16), torch.tensor(500), class_labels=torch.tensor([0, 5, 19])).sample
    eps_onnx = pipe._eps(torch.ones(3, 3, 16, 16), torch.tensor(500), torch.tensor([0, 5, 19]))
    assert torch.allclose(eps_onnx, eps_torch, atol=1e-4)
