"""The VAE and the GAN beside the diffusion model: reproducible training,
shipped weights that follow the prompt (the project's checker), seeds that reproduce,
knobs that act, latent walks whose ends are the two seeds' images, and models side by
side (a compare mode and a grid axis)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from aigc_studio import families, grid, shapes
from aigc_studio.catalog import EMBEDDED_MODELS, Catalog, local_spec
from aigc_studio.config import Settings
from aigc_studio.engines.image import GenerationStopped
from aigc_studio.params import ImageParams, ParamError
from aigc_studio.studio import Studio
from aigc_studio.train import evaluate_family
from tests.conftest import drain
from tests.live_server import run_concurrently

FAMILY_IDS = ("shapes-vae", "shapes-gan")
ALL_IDS = ("shapes-diffusion", *FAMILY_IDS)
SPECS = {s.id: s for s in EMBEDDED_MODELS}


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Studio:
    """A CPU Studio over the shipped embedded image models."""
    folder = tmp_path_factory.mktemp("families")
    settings = Settings(preset="offline", device="cpu", dtype="auto", threads=1, cache_dir=folder / "cache",
                        output_dir=folder / "outputs")
    specs = [SPECS[i] for i in ALL_IDS]
    return Studio(settings, catalog=Catalog(specs, {"image": "shapes-diffusion"}))


# ----- training ----------------------------------------------------------------------------

@pytest.mark.parametrize("family, logged", [("vae", {"reconstruction", "kl", "elbo"}),
                                             ("gan", {"d_loss", "g_loss", "held_out_adherence"})])
def test_training_is_reproducible_from_its_seed_and_logs_each_epoch(tmp_path, family, logged):
    outs = [tmp_path / "a", tmp_path / "b"]
    run_concurrently([[sys.executable, "-m", "aigc_studio.train", family, "--epochs", "2", "--dataset", "128",
                       "--out", str(out), "--no-eval"] for out in outs])
    first, second = (load_file(out / families.WEIGHTS) for out in outs)
    log = json.loads((outs[0] / families.TRAINING_LOG).read_text())
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert logged <= set(log["epochs"][0])
    assert families.load(tmp_path / "a").family == family
    if family == "gan":  # the epoch with the best held-out adherence ships (a later one on ties)
        best = max(e["held_out_adherence"] for e in log["epochs"])
        assert log["shipped_adherence"] == best
        assert log["shipped_epoch"] == max(e["epoch"] for e in log["epochs"] if e["held_out_adherence"] == best)


# ----- the shipped weights -----------------------------------------------------------------

@pytest.mark.parametrize("model_id", FAMILY_IDS)
def test_weights_are_shipped_small_and_safetensors(model_id):
    spec = SPECS[model_id]
    weights = Path(spec.location) / families.WEIGHTS
    assert weights.stat().st_size <= 10 * 2**20
    assert load_file(weights)
    assert spec.license == "GPL-3.0-or-later"
    assert spec.size_mb >= weights.stat().st_size / 2**20 - 1
    log = families.training_log(Path(spec.location))
    assert log["epochs"] and log["train_minutes"] > 0


# The adherence each shipped model must reach (bench/image_quality.py: VAE 0.988, GAN 0.958 on
# seeds 0-19), here on other seeds.
ADHERENCE_FLOOR = {"shapes-vae": 0.90, "shapes-gan": 0.90}


@pytest.mark.parametrize("model_id", ["shapes-vae", "shapes-gan"])
def test_adherence_at_default_knobs_keeps_its_measured_level(real, model_id):
    """5 seeds x 12 colour-shape prompts through the engine as the studio loads it
    (bench/image_quality.py measures 20 seeds each)."""
    with real._use(real.model_spec("image", model_id)) as model:
        assert evaluate_family(model, per_class=5, first_seed=1000) >= ADHERENCE_FLOOR[model_id]


def test_colour_alone_is_honoured(real):
    for model_id in FAMILY_IDS:
        results = real.images("something red", [("", real.params("image", model_id, seed=0, batch_size=8))], model_id)
        assert sum(shapes.check(r.output).colour == "red" for r in results) >= 7, model_id


# ----- seeds, knobs, batches, Stop -----------------------------------------------------------

@pytest.mark.parametrize("model_id", FAMILY_IDS)
def test_a_seed_reproduces_its_image_whatever_the_batch(real, model_id):
    first = real.image("a blue square", model_id, seed=11).output
    again = real.image("a blue square", model_id, seed=11).output
    other = real.image("a blue square", model_id, seed=12).output
    batch = real.image("a blue square", model_id, seed=10, batch_size=3)  # the first of seeds 10, 11, 12
    assert same(first, again)
    assert not same(first, other)
    results = real.images("a blue square", [("", real.params("image", model_id, seed=10, batch_size=3))], model_id)
    assert same(results[1].output, first) and same(results[2].output, other)
    assert batch.recipe.model_id == model_id


@pytest.mark.parametrize("model_id, knob", [("shapes-vae", "latent_temperature"), ("shapes-gan", "truncation")])
def test_the_latent_knob_at_zero_gives_one_image_for_every_seed(real, model_id, knob):
    at_zero = [real.image("a green circle", model_id, seed=s, **{knob: 0.0}).output for s in (1, 2, 3)]
    at_one = [real.image("a green circle", model_id, seed=s, **{knob: 1.0}).output for s in (1, 2, 3)]
    assert same(at_zero[0], at_zero[1]) and same(at_zero[0], at_zero[2])
    assert not same(at_one[0], at_one[1])


def test_each_family_reads_only_its_own_knobs(real):
    assert "latent_temperature" in real.knobs_used("image", "shapes-vae")
    assert "truncation" in real.knobs_used("image", "shapes-gan")
    for model_id in FAMILY_IDS:
        assert not {"steps", "guidance", "scheduler", "negative_prompt"} & set(real.knobs_used("image", model_id))
    # a knob the model does not read leaves its image alone
    plain = real.image("a red triangle", "shapes-vae", seed=4).output
    assert same(plain, real.image("a red triangle", "shapes-vae", seed=4, steps=5, guidance=9.0, truncation=0.1).output)


def test_knob_ranges_are_validated():
    with pytest.raises(ParamError, match="latent_temperature"):
        from aigc_studio import params

        params.make(ImageParams, latent_temperature=3.0)
    with pytest.raises(ParamError, match="truncation"):
        from aigc_studio import params

        params.make(ImageParams, truncation=-0.5)


def test_stop_before_a_one_pass_model_runs_raises(real):
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationStopped):
        real.images("a red circle", [("", real.params("image", "shapes-gan", seed=1))], "shapes-gan", stop=stop)


def test_a_png_keeps_the_recipe_with_the_new_knob(real):
    from aigc_studio.recipe import read_recipe

    result = real.image("a yellow triangle", "shapes-vae", seed=3, latent_temperature=0.7)
    saved = read_recipe(real.save(result))
    assert saved.model_id == "shapes-vae" and saved.params["latent_temperature"] == 0.7
    restored = real.params("image", saved.model_id, **saved.params)
    assert same(real.images(saved.prompt, [("", restored)], saved.model_id)[0].output, result.output)


# ----- latent walks --------------------------------------------------------------------------

@pytest.mark.parametrize("model_id, knobs", [("shapes-vae", {}), ("shapes-gan", {}), ("shapes-diffusion", {"steps": 10})])
def test_latent_walk_ends_at_the_two_seeds_images(real, model_id, knobs):
    chosen = real.params("image", model_id, **knobs)
    frames, animation = real.latent_walk("a red square", 5, 9, frames=5, model=model_id, params=chosen)
    start = real.images("a red square", [("", real.params("image", model_id, seed=5, **knobs))], model_id)[0].output
    end = real.images("a red square", [("", real.params("image", model_id, seed=9, **knobs))], model_id)[0].output
    assert len(frames) == 5
    assert same(frames[0].output, start) and same(frames[-1].output, end)
    assert not same(frames[2].output, start) and not same(frames[2].output, end)
    gif = Image.open(io.BytesIO(animation))
    assert gif.format == "GIF" and gif.n_frames == 8  # there and back: 5 + 3
    recipe = json.loads(gif.info["comment"])
    assert recipe["model_id"] == model_id and recipe["params"]["seed"] == 5
    assert recipe["params"]["walk_to_seed"] == 9 and recipe["params"]["walk_frames"] == 5
    assert frames[2].recipe.params["walk_t"] == 0.5
    assert real.save_walk(animation).stat().st_size == len(animation)


def test_slerp_keeps_the_ends_exact_and_the_norm():
    import torch

    a, b = torch.randn(1, 64, generator=torch.Generator().manual_seed(0)), torch.randn(1, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(families.slerp(a, b, 0.0), a) and torch.equal(families.slerp(a, b, 1.0), b)
    middle = families.slerp(a, b, 0.5)
    assert abs(middle.norm() - (a.norm() + b.norm()) / 2) < 0.15 * a.norm()  # a straight line would shrink it to ~0.7


def test_latent_walk_refuses_bad_values(real):
    with pytest.raises(ParamError, match="frames"):
        real.latent_walk("a red square", 1, 2, frames=1, model="shapes-vae")
    with pytest.raises(ParamError, match="seed_b"):
        real.latent_walk("a red square", 1, -3, model="shapes-vae")


# ----- models side by side ---------------------------------------------------------------------

def test_compare_models_runs_one_prompt_and_seed_on_each_model(real):
    results = real.compare_models("a blue triangle", list(ALL_IDS), real.params("image", "shapes-diffusion", seed=21, steps=10))
    assert [r.recipe.model_id for r in results] == list(ALL_IDS)
    assert [r.label for r in results] == [f"model={m}" for m in ALL_IDS]
    assert {r.recipe.params["seed"] for r in results} == {21}
    assert same(results[1].output, real.image("a blue triangle", "shapes-vae", seed=21).output)
    with pytest.raises(ParamError, match="models"):
        real.compare_models("a blue triangle", ["shapes-vae"])


def test_model_is_a_grid_axis(real):
    base = real.params("image", "shapes-diffusion", seed=8, steps=10, width=64, height=64)
    picture, cells = real.image_grid("a green square", base, "model", list(ALL_IDS), "seed", [8, 9])
    assert [c.recipe.model_id for c in cells] == [*ALL_IDS, *ALL_IDS]
    assert cells[0].label == "model=shapes-diffusion, seed=8"
    assert picture.size[0] >= 3 * 64 and picture.size[1] >= 2 * 64
    vae_seed_9 = real.images("a green square", [("", real.params("image", "shapes-vae", seed=9, width=64, height=64))],
                             "shapes-vae")[0]
    assert same(cells[4].output, vae_seed_9.output)
    plan = grid.plan(base, "steps", [5, 10], "model", ["shapes-vae", "shapes-gan"])
    assert plan.y_labels == ["model=shapes-vae", "model=shapes-gan"] and plan.models[2:] == ["shapes-gan"] * 2
    with pytest.raises(ValueError, match="not in the catalog"):
        real.image_grid("a green square", base, "model", ["shapes-vae", "no-such-model"])


def test_family_views_are_pictures(real):
    views = real.family_views("shapes-vae")
    assert [caption for caption, _ in views][0].startswith("reference render")
    assert all(isinstance(picture, Image.Image) and picture.width > 100 for _, picture in views)
    gan_views = real.family_views("shapes-gan")
    assert [caption.split(" per epoch")[0] for caption, _ in gan_views] == [
        "discriminator and generator hinge losses", "adherence on held-out seeds"]
    shipped = families.training_log(Path(SPECS["shapes-gan"].location))["shipped_epoch"]
    assert f"(epoch {shipped} ships)" in gan_views[1][0]
    with pytest.raises(ParamError):
        real.family_views("shapes-diffusion")


def test_tiny_random_family_models_load_through_a_local_spec(tmp_path):
    """Plumbing without the shipped weights: a random VAE and GAN saved and loaded as the engine does."""
    from aigc_studio.engines import image as image_engine

    for family, cls in families.FAMILIES.items():
        folder = tmp_path / family
        families.save(cls(), folder)
        model = image_engine.load(local_spec(family, "image", family, folder), "cpu", __import__("torch").float32)
        pictures = image_engine.generate(model, ["a red circle"] * 2, ImageParams(width=32, height=32), [1, 2])
        assert [p.size for p in pictures] == [(32, 32)] * 2


# ----- in the UI: the Image tab and the public API -------------------------------------------

@pytest.fixture(scope="module")
def tab(real):
    """The Image tab alone over the embedded models: its handlers by name (bound to this studio
    and session store, as wire() binds them), its components by elem_id."""
    from functools import partial

    import gradio as gr

    from aigc_studio.ui import image_inside_tab, image_tab
    from aigc_studio.ui.session import Sessions

    sessions = Sessions(real.history)
    with gr.Blocks() as demo:
        parts = image_tab.layout(real)
        image_tab.wire(parts, real, sessions)
    handlers = {name: partial(getattr(image_tab, name), real, sessions)
                for name in ("compare_image", "image_grid", "restore_recipe")}
    handlers |= {name: partial(getattr(image_tab, name), real)
                 for name in ("grid_values_for", "model_views", "model_pickers")}
    handlers["use_model"] = partial(image_tab.use_model, real, parts.controls)
    handlers["walk_image"] = partial(image_inside_tab.walk_image, real, sessions)
    components = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    return handlers, components, sessions


def knob_values(real, model_id, **values) -> list:
    from aigc_studio.actions.image import ALL_KNOBS

    chosen = real.params("image", model_id, **values)
    return [getattr(chosen, name) for name in ALL_KNOBS]


def quiet(*args, **kwargs):  # stands in for gr.Progress
    pass


def refusal(call, *args, **kwargs) -> str:
    """The message of the gr.Error that call(*args, **kwargs) raises (a generator is run)."""
    import gradio as gr

    with pytest.raises(gr.Error) as error:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
        elif hasattr(result, "__anext__"):
            drain(result)
    return error.value.message


def test_the_image_tab_compares_models_at_one_seed(real, tab):
    from aigc_studio.actions.image import MODELS

    handlers, components, sessions = tab
    assert components["image-models"].value == list(ALL_IDS)  # defaults: the catalog's embedded image models
    cells = handlers["compare_image"](None, quiet, "a blue triangle", MODELS, 3, "guidance", "", list(ALL_IDS),
                                      "shapes-diffusion", *knob_values(real, "shapes-diffusion", seed=21, steps=8))
    assert [caption for _, caption in cells] == [f"model={m}" for m in ALL_IDS]
    kept = sessions.recipes(None)  # the recipe card shows these
    assert [r.model_id for r in kept] == list(ALL_IDS) and {r.params["seed"] for r in kept} == {21}
    assert same(Image.open(cells[1][0]).convert("RGB"), real.image("a blue triangle", "shapes-vae", seed=21).output)
    assert refusal(handlers["compare_image"], None, quiet, "a blue triangle", MODELS, 3, "guidance", "",
                   ["shapes-vae"], "shapes-vae", *knob_values(real, "shapes-vae")).startswith(
        "models: give 2 to 4 models to compare, got 1")


def test_the_image_tab_grid_takes_model_as_an_axis(real, tab):
    handlers, _, _ = tab
    assert handlers["grid_values_for"]("model", "shapes-diffusion", *knob_values(real, "shapes-diffusion")) == \
        ", ".join(ALL_IDS)
    grid_path, cells = handlers["image_grid"](None, quiet, "a green square", "model", "shapes-vae, shapes-gan", "seed",
                                              "4, 5", "shapes-vae", *knob_values(real, "shapes-vae"))
    assert [caption for _, caption in cells] == ["model=shapes-vae, seed=4", "model=shapes-gan, seed=4",
                                                 "model=shapes-vae, seed=5", "model=shapes-gan, seed=5"]
    assert Image.open(grid_path).width >= 2 * 64
    # a model change keeps "model" among the grid pickers' choices
    picker = handlers["use_model"]("shapes-gan", "model", "none", "guidance")[-5]  # x_knob
    assert ("model", "model") in picker["choices"] and picker["value"] == "model"


def test_the_grid_pickers_accept_model_after_a_rebuild():
    from gradio.context import LocalContext

    from aigc_studio.ui.components import SweepDropdown

    picker = SweepDropdown([("steps", "steps")], value="steps", knob_name="x_knob", sweepable=("steps", "model"),
                           render=False)
    token = LocalContext.in_event_listener.set(True)
    try:
        rebuilt = SweepDropdown(**{**picker.constructor_args, "visible": True, "render": False})
    finally:
        LocalContext.in_event_listener.reset(token)
    assert rebuilt.preprocess("model") == "model"
    assert refusal(rebuilt.preprocess, "warp").startswith("x_knob: must be one of steps, model")


def test_the_image_tab_walks_from_seed_a_to_seed_b(real, tab):
    from aigc_studio.recipe import RECIPE_KEY, read_recipe

    handlers, components, sessions = tab
    assert components["image-frames"].knob_range == (2, 32)
    walk = handlers["walk_image"]
    [(gif, frames, card, raw)] = drain(walk(None, quiet, "a red square", 5, 9, 4.0, "shapes-gan",
                                            *knob_values(real, "shapes-gan")))
    recipe = read_recipe(gif)
    assert gif.endswith(".gif") and recipe.model_id == "shapes-gan" and recipe.params["seed"] == 5
    assert recipe.params["walk_to_seed"] == 9 and recipe.params["walk_frames"] == 4
    assert [caption for _, caption in frames] == ["1/4", "2/4", "3/4", "4/4"]
    assert json.loads(frames[0][0].info[RECIPE_KEY])["label"] == "walk frame 1/4: seed 5 -> 9"  # the full label
    assert same(frames[0][0], real.image("a red square", "shapes-gan", seed=5).output)
    assert "shapes-gan" in card and raw[0]["params"]["walk_frames"] == 4
    walked = real.history.entries(None)[0]  # the walk joins the history, its GIF beside it
    assert (walked.tab, walked.model, walked.path, walked.file_state) == ("image", "shapes-gan", gif, "kept")
    assert walked.recipe["params"]["walk_to_seed"] == 9
    assert refusal(walk, None, quiet, "a red square", 5, 9, 50, "shapes-gan", *knob_values(real, "shapes-gan")
                   ).startswith("frames: must be a whole number in [2, 32], got 50")

    def stop_at_once(*args, **kwargs):  # Stop pressed during the first denoising step
        sessions.stop(None, "image")

    assert drain(walk(None, stop_at_once, "a red square", 5, 9, 3, "shapes-diffusion",
                      *knob_values(real, "shapes-diffusion", steps=4))) == []


def test_the_image_tab_shows_what_a_vae_or_gan_learned(tab):
    handlers, components, _ = tab
    assert components["image-family"].visible is False  # the default model is a diffusion model
    assert components["image-trajectory"].visible is True
    *_, trajectory, box, views = handlers["use_model"]("shapes-vae", "steps", "none", "guidance")
    assert box["visible"] is True and trajectory["visible"] is False  # one pass: no denoising steps
    assert [caption for _, caption in views["value"]][0].startswith("reference render")
    *_, trajectory, box, views = handlers["use_model"]("shapes-gan", "steps", "none", "guidance")
    assert box["visible"] is True and "hinge losses" in views["value"][0][1] and trajectory["visible"] is False
    *_, trajectory, box, _ = handlers["use_model"]("shapes-diffusion", "steps", "none", "guidance")
    assert box["visible"] is False and trajectory["visible"] is True


def test_restoring_a_gan_recipe_shows_the_gans_knobs_and_views(tab, real):
    from aigc_studio.actions.image import ALL_KNOBS

    handlers, _, _ = tab
    saved = real.save(real.image("a red square", "shapes-gan", seed=4, truncation=0.7))
    prompt, model, *knobs = handlers["restore_recipe"](str(saved))
    assert (prompt, model) == ("a red square", "shapes-gan")
    restored = dict(zip(ALL_KNOBS, knobs))
    assert restored["truncation"] == {"value": 0.7, "visible": True, "__type__": "update"}
    assert restored["seed"]["value"] == 4 and restored["steps"]["visible"] is False  # a GAN has no steps
    card, trajectory, box, views = handlers["model_views"](model)
    assert "shapes-gan" in card and trajectory["visible"] is False and box["visible"] is True and views["value"]


def test_the_api_walks_and_compares_models(real):
    import gradio as gr

    from aigc_studio.recipe import read_recipe
    from aigc_studio.ui import api, image_api

    with gr.Blocks():
        api.register(real)
    gif, frames = image_api.latent_walk("a blue circle", seed_a=1, seed_b=2, frames=3, model="shapes-vae")
    assert read_recipe(gif["path"]).params["walk_to_seed"] == 2 and len(frames) == 3
    assert read_recipe(frames[1]["image"]["path"]).params["walk_t"] == 0.5
    assert refusal(image_api.latent_walk, "a blue circle", frames=2.5, model="shapes-vae").startswith(
        "frames: must be a whole number in [2, 32], got 2.5")
    cells = image_api.compare_image("a blue circle", mode="Different models", models="shapes-vae, shapes-gan", seed=4)
    assert [c["caption"] for c in cells] == ["model=shapes-vae", "model=shapes-gan"]
    assert {read_recipe(c["image"]["path"]).params["seed"] for c in cells} == {4}
    names = {fn.__name__: group for fn, group in image_api.ENDPOINTS.items()}
    assert names["latent_walk"] == "image"
