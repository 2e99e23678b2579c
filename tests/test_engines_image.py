"""The image engine on tiny SD pipelines and the tiny shapes model: per-step previews
(linear projection, TAESD, predicted x0), stopping between steps, memory options, LCM."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny

from aigc_studio import params as knobs
from aigc_studio.catalog import local_spec
from aigc_studio.engines import image as image_engine
from aigc_studio.params import ImageParams, ParamError
from tests.conftest import IMAGE_ID, SHAPES_ID, TINY_IMAGE_SIZE

SIZE = TINY_IMAGE_SIZE
KNOBS = ImageParams(steps=4, guidance=3.0, width=SIZE, height=SIZE, seed=1)


@pytest.fixture(scope="module")
def taesd_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("taesd")
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), latent_channels=4,
                    num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)).save_pretrained(folder)
    return folder


def load(path, kind="diffusers", **extra):
    return image_engine.load(local_spec("x", "image", kind, path, **extra), "cpu", torch.float32)


@pytest.mark.parametrize("scheduler", ["default", "ddim", "dpm++", "euler"])
def test_sd_previews_one_per_iteration_with_the_output_size(tiny_sd_path, scheduler):
    pipe = load(tiny_sd_path)
    previews = []
    image_engine.generate(pipe, ["a cat"], dataclasses.replace(KNOBS, scheduler=scheduler), [1],
                          on_preview=lambda step, picture: previews.append((step, picture)))
    assert [step for step, _ in previews] == list(range(len(pipe.scheduler.timesteps)))
    assert all(picture.size == (SIZE, SIZE) for _, picture in previews)


def test_taesd_decodes_previews_when_the_model_has_one(tiny_sd_path, taesd_path):
    pipe = load(tiny_sd_path, preview_decoder=str(taesd_path))
    assert isinstance(pipe.preview_decoder, AutoencoderTiny)
    latents = torch.randn(1, 4, SIZE // 2, SIZE // 2)
    with_taesd = image_engine.preview({"latents": latents}, (SIZE, SIZE), pipe.preview_decoder)
    linear = image_engine.preview({"latents": latents}, (SIZE, SIZE))
    assert with_taesd.size == linear.size == (SIZE, SIZE)
    assert not np.array_equal(np.asarray(with_taesd), np.asarray(linear))


def test_a_missing_preview_decoder_falls_back_to_the_linear_preview(tiny_sd_path, tmp_path):
    pipe = load(tiny_sd_path, preview_decoder=str(tmp_path / "no-such-taesd"))
    assert pipe.preview_decoder is None


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm++", "euler", "euler_a"])
def test_shapes_previews_show_the_predicted_clean_image(tiny_shapes_path, scheduler):
    pipe = load(tiny_shapes_path, kind="shapes")
    previews = []
    knobs = dataclasses.replace(KNOBS, scheduler=scheduler, steps=5)
    image_engine.generate(pipe, ["a red circle"], knobs, [3], on_preview=lambda s, p: previews.append(p))
    assert len(previews) == 5


def test_stop_ends_between_steps_and_the_pipeline_stays_usable(tiny_sd_path):
    pipe = load(tiny_sd_path)
    stop = threading.Event()
    seen = []

    def on_step(step, total):
        seen.append(step)
        stop.set()  # pressed during the first step

    with pytest.raises(image_engine.GenerationStopped):
        image_engine.generate(pipe, ["a cat"], KNOBS, [1], on_step=on_step, stop=stop)
    assert seen == [0]
    again = image_engine.generate(pipe, ["a cat"], KNOBS, [1])
    fresh = image_engine.generate(load(tiny_sd_path), ["a cat"], KNOBS, [1])
    assert np.array_equal(np.asarray(again[0]), np.asarray(fresh[0]))


def test_memory_options_change_memory_not_pixels(tiny_sd_path):
    plain = image_engine.generate(load(tiny_sd_path), ["a cat"], KNOBS, [5])[0]
    options = image_engine.MemoryOptions(attention_slicing=True, vae_tiling=True, cpu_offload=True)
    pipe = image_engine.load(
        local_spec("x", "image", "diffusers", tiny_sd_path), "cpu", torch.float32, options)
    assert pipe.vae.use_tiling
    saved = image_engine.generate(pipe, ["a cat"], KNOBS, [5])[0]
    assert np.abs(np.asarray(plain, dtype=int) - np.asarray(saved, dtype=int)).max() <= 1


def test_lcm_scheduler_only_for_consistency_models(studio, tiny_sd_path):
    s = studio()
    with pytest.raises(ParamError, match="scheduler"):
        s.params("image", IMAGE_ID, scheduler="lcm")
    s.catalog.add(local_spec("tiny-lcm", "image", "diffusers", tiny_sd_path, schedulers=("default", "lcm", "ddim"),
                             defaults={"steps": 2, "scheduler": "lcm", "width": SIZE, "height": SIZE}))
    result = s.image("a cat", "tiny-lcm", seed=2)
    assert result.recipe.params["scheduler"] == "lcm" and result.output.size == (SIZE, SIZE)


def test_sweeps_and_grids_cannot_smuggle_in_a_scheduler_the_model_lacks(studio, tiny_sd_path):
    s = studio()
    base = s.params("image", IMAGE_ID, steps=2, seed=1)
    with pytest.raises(ParamError, match="^scheduler: .*lcm needs a consistency-distilled model"):
        s.images("a cat", knobs.variants(base, "scheduler", ["ddim", "lcm"]), IMAGE_ID)
    with pytest.raises(ParamError, match="^scheduler:"):
        s.image_grid("a cat", base, "scheduler", ["lcm"], model=IMAGE_ID)
    s.catalog.add(local_spec("tiny-flow", "image", "diffusers", tiny_sd_path, schedulers=("default",)))
    with pytest.raises(ParamError) as caught:
        s.params("image", "tiny-flow", scheduler="euler")
    assert str(caught.value) == "scheduler: tiny-flow samples with default; got euler"


def test_studio_streams_previews_and_stops(studio):
    s = studio()
    previews = []
    s.image("a red circle", SHAPES_ID, on_preview=lambda step, p: previews.append(step), steps=3, seed=1)
    assert previews == [0, 1, 2]
    stop = threading.Event()
    stop.set()
    with pytest.raises(image_engine.GenerationStopped):
        s.images("a red circle", [("", s.params("image", SHAPES_ID, steps=3))], SHAPES_ID, stop=stop)
    assert s.image("a red circle", SHAPES_ID, steps=3, seed=1).output.size == (SIZE, SIZE)
