"""Images: variants side by side, image to image, X/Y grids, model families side by side,
latent walks, and the views inside a diffusion model (the forward process, prompt maps).

The module-level functions taking a runtime first are tasks (runtime.run sends them where
models run); `ImageService` holds what the Studio's image methods do around them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from aigc_studio import grid
from aigc_studio import params as knobs
from aigc_studio.catalog import ModelSpec
from aigc_studio.engines import image as image_engine
from aigc_studio.params import ImageParams
from aigc_studio.recipe import Result
from aigc_studio.services.runtime import Runtime, check_scheduler


def image_inside():
    """engines/image_inside.py (image to image inputs, the forward process, prompt maps), on first use."""
    from aigc_studio.engines import image_inside as inside

    return inside


# ----- tasks ---------------------------------------------------------------------------------------

def images(runtime: Runtime, prompt: str, variants: list[tuple[str, ImageParams]], model: str | None,
           on_step: image_engine.StepCallback | None, on_preview: image_engine.PreviewCallback | None,
           stop: threading.Event | None, init_image: Image.Image | None) -> list[Result]:
    """One image per labelled variant, variants that differ only by seed in one batched call (Studio.images)."""
    prompt = knobs.check_prompt(prompt)
    spec = runtime.model_spec("image", model)
    for _, p in variants:  # sweeps and grid axes set the scheduler too
        check_scheduler(spec, p)
    start = start_picture(spec, init_image, [p for _, p in variants])
    chosen = _expand_batches([(label, knobs.resolve_seed(knobs.validate(p))) for label, p in variants])
    results: list[Result | None] = [None] * len(chosen)
    for indices in _indices_by_all_but_seed([p for _, p in chosen]):
        started = time.perf_counter()
        shared = chosen[indices[0]][1]
        seeds = [chosen[i][1].seed for i in indices]
        with runtime.use(spec) as pipe:
            pictures = image_engine.generate(pipe, [prompt] * len(indices), shared, seeds, on_step,
                                             on_preview if indices[0] == 0 else None, stop, start)
        for i, picture in zip(indices, pictures):
            label, p = chosen[i]
            results[i] = Result(picture, runtime.recipe(spec, prompt, p, label, started))
            if start is None:  # text to image: strength is read only from a start picture
                results[i].recipe.params.pop("strength", None)
            else:
                results[i].recipe.params.update(init_image_sha256=image_inside().fingerprint(start),
                                                init_image_size=list(start.size))
    return results


def image_grid(runtime: Runtime, prompt: str, base: ImageParams, x_knob: str, x_values: list, y_knob: str | None,
               y_values: list | None, model: str | None, on_step: image_engine.StepCallback | None,
               stop: threading.Event | None, init_image: Image.Image | None) -> tuple[Image.Image, list[Result]]:
    """An X/Y grid: (the labelled grid picture, each cell's Result, row-major) (Studio.image_grid)."""
    plan = grid.plan(base, x_knob, x_values, y_knob, y_values)
    if plan.models and init_image is not None:
        raise knobs.ParamError("x_knob", "a model axis draws from the prompt only: start from nothing, "
                                         "or vary knobs of one model")
    if plan.models:  # `model` is an axis: each cell runs on its own model
        cells = images_by_model(runtime, prompt, plan.cells, plan.models, on_step, stop)
    else:
        cells = runtime.run(images, prompt, plan.cells, model, on_step, None, stop, init_image)
    return grid.render([cell.output for cell in cells], plan), cells


def images_by_model(runtime: Runtime, prompt: str, variants: list[tuple[str, ImageParams]], models: list[str],
                    on_step: image_engine.StepCallback | None, stop: threading.Event | None) -> list[Result]:
    """Like images(), one image per variant, each on its own model (one `images` task per
    model). Every model id is checked before any model runs."""
    for model_id in models:
        runtime.model_spec("image", model_id)
    variants = [(label, dataclasses.replace(p, batch_size=1)) for label, p in variants]
    results: list[Result | None] = [None] * len(variants)
    for model_id in dict.fromkeys(models):
        indices = [i for i, m in enumerate(models) if m == model_id]
        made = runtime.run(images, prompt, [variants[i] for i in indices], model_id, on_step, None, stop, None)
        for i, result in zip(indices, made):
            results[i] = result
    return results


def noise_frames(runtime: Runtime, spec: ModelSpec, picture: Image.Image, steps: int, scheduler: str, seed: int,
                 size: tuple[int, int]) -> list:
    """The forward process of a checked picture (Studio.noise_image)."""
    with runtime.use(spec) as pipe:
        return image_inside().noise_frames(pipe, picture, steps, scheduler, seed, size)


def prompt_maps(runtime: Runtime, spec: ModelSpec, prompt: str, chosen: ImageParams,
                stop: threading.Event | None) -> tuple[Image.Image, list, str]:
    """(picture, word maps, method) of a checked prompt and knobs (Studio.prompt_map)."""
    with runtime.use(spec) as pipe:
        return image_inside().prompt_maps(pipe, prompt, chosen, chosen.seed, stop)


def walk(runtime: Runtime, spec: ModelSpec, prompt: str, chosen: ImageParams, seed_a: int, seed_b: int,
         frames: int, on_step: image_engine.StepCallback | None, stop: threading.Event | None) -> list[Image.Image]:
    """The pictures of a latent walk between two seeds (Studio.latent_walk)."""
    with runtime.use(spec) as pipe:
        return image_engine.walk(pipe, prompt, chosen, seed_a, seed_b, frames, on_step, stop)


def reconstruction(runtime: Runtime, spec: ModelSpec) -> Image.Image:
    """A VAE's reference render beside its reconstruction (Studio.family_views)."""
    from aigc_studio import families

    with runtime.use(spec) as vae:
        return families.reconstruction_view(vae)


# ----- helpers -------------------------------------------------------------------------------------

def start_picture(spec: ModelSpec, init_image: Any, chosen: list[ImageParams]) -> Image.Image | None:
    """The checked start picture of image to image (RGB), or None; refuses a model
    without image to image, and a strength sweep with no picture to start from."""
    if init_image is None:
        if len({p.strength for p in chosen}) > 1:
            raise knobs.ParamError("strength", "only image to image reads it: give a start picture to vary it")
        return None
    if spec.kind in image_engine.FAMILY_KINDS:
        raise knobs.ParamError("model", f"{spec.id} is a {spec.kind.upper()}: it draws in one pass from a latent "
                                        f"and has no image to image; use a diffusion model (e.g. shapes-diffusion)")
    return image_inside().check_input(init_image)


def _expand_batches(chosen: list[tuple[str, ImageParams]]) -> list[tuple[str, ImageParams]]:
    """A variant with batch_size n becomes n variants at seeds seed .. seed+n-1."""
    expanded = []
    for label, p in chosen:
        if p.batch_size == 1:
            expanded.append((label, p))
            continue
        for k in range(p.batch_size):
            seed = (p.seed + k) % (knobs.MAX_SEED + 1)
            expanded.append((f"{label}, seed={seed}" if label else f"seed={seed}", dataclasses.replace(p, seed=seed)))
    return expanded


def _indices_by_all_but_seed(chosen: list[ImageParams]) -> list[list[int]]:
    """Indices of params grouped by every knob except the seed."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(chosen):
        key = tuple(v for k, v in dataclasses.asdict(p).items() if k != "seed")
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _whole_number(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise knobs.ParamError(name, f"must be a whole number in [{low}, {high}], got {value!r}")


# ----- the service ---------------------------------------------------------------------------------

class ImageService:
    """The Studio's image operations; model work goes through runtime.run."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def images(self, prompt: str, variants: list[tuple[str, ImageParams]], model: str | None, on_step, on_preview,
               stop: threading.Event | None, init_image: Image.Image | None) -> list[Result]:
        return self.runtime.run(images, prompt, variants, model, on_step, on_preview, stop, init_image)

    def image_grid(self, prompt: str, base: ImageParams, x_knob: str, x_values: list, y_knob: str | None,
                   y_values: list | None, model: str | None, on_step, stop: threading.Event | None,
                   init_image: Image.Image | None) -> tuple[Image.Image, list[Result]]:
        return self.runtime.run(image_grid, prompt, base, x_knob, x_values, y_knob, y_values, model, on_step, stop,
                                init_image)

    def images_by_model(self, prompt: str, variants: list[tuple[str, ImageParams]], models: list[str], on_step,
                        stop: threading.Event | None) -> list[Result]:
        return images_by_model(self.runtime, prompt, variants, models, on_step, stop)

    def noise_image(self, image: Image.Image, steps: int | None, scheduler: str | None, model: str | None,
                    seed: int) -> list:
        inside = image_inside()
        spec = self.runtime.model_spec("image", model)
        steps = 10 if steps is None else steps
        _whole_number("steps", steps, 1, inside.MAX_FRAMES)
        _whole_number("seed", seed, 0, knobs.MAX_SEED)
        if spec.kind in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} is a {spec.kind.upper()}: it has no noising process")
        chosen = self.runtime.params("image", spec.id, scheduler=scheduler)
        picture = inside.check_input(image)
        return self.runtime.run(noise_frames, spec, picture, steps, chosen.scheduler, seed,
                                (chosen.width, chosen.height))

    def prompt_map(self, prompt: str, model: str | None, stop: threading.Event | None,
                   values: dict[str, Any]) -> tuple[Result, list, str]:
        prompt = knobs.check_prompt(prompt)
        spec = self.runtime.model_spec("image", model)
        if spec.kind in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} is a {spec.kind.upper()}: prompt maps need a diffusion model")
        chosen = knobs.resolve_seed(dataclasses.replace(self.runtime.params("image", spec.id, **values), batch_size=1))
        started = time.perf_counter()
        picture, words, method = self.runtime.run(prompt_maps, spec, prompt, chosen, stop)
        recipe = self.runtime.recipe(spec, prompt, chosen, f"prompt map ({method})", started)
        recipe.params.pop("strength", None)
        return Result(picture, recipe), words, method

    def compare_models(self, prompt: str, models: list[str], params: ImageParams | None, on_step,
                       stop: threading.Event | None, values: dict[str, Any]) -> list[Result]:
        if not 2 <= len(models) <= 4:
            raise knobs.ParamError("models", f"give 2 to 4 models to compare, got {len(models)}")
        if params is not None:
            chosen = {m: params for m in models}
        else:  # each model's own recommendations: a turbo model keeps its 1 step beside a 30-step one
            chosen = {m: self.runtime.params("image", m, **values) for m in models}
        seed = knobs.resolve_seed(params or chosen[models[0]]).seed
        variants = [(f"model={m}", dataclasses.replace(chosen[m], seed=seed)) for m in models]
        return self.images_by_model(prompt, variants, list(models), on_step, stop)

    def latent_walk(self, prompt: str, seed_a: int, seed_b: int, frames: int, model: str | None,
                    params: ImageParams | None, on_step, stop: threading.Event | None,
                    image_format: str) -> tuple[list[Result], bytes]:
        prompt = knobs.check_prompt(prompt)
        spec = self.runtime.model_spec("image", model)
        _whole_number("seed_a", seed_a, 0, knobs.MAX_SEED)
        _whole_number("seed_b", seed_b, 0, knobs.MAX_SEED)
        _whole_number("frames", frames, 2, 32)
        if image_format not in ("GIF", "WEBP"):
            raise knobs.ParamError("image_format", f"must be GIF or WEBP, got {image_format!r}")
        chosen = dataclasses.replace(knobs.validate(params or self.runtime.params("image", spec.id)), seed=seed_a,
                                     batch_size=1)
        check_scheduler(spec, chosen)
        started = time.perf_counter()
        pictures = self.runtime.run(walk, spec, prompt, chosen, seed_a, seed_b, frames, on_step, stop)
        steps = {"walk_to_seed": seed_b, "walk_frames": frames}
        results = []
        for i, picture in enumerate(pictures):
            label = f"walk frame {i + 1}/{frames}: seed {seed_a} -> {seed_b}"
            recipe = self.runtime.recipe(spec, prompt, chosen, label, started)
            recipe.params.update(steps, walk_t=round(i / (frames - 1), 6))
            results.append(Result(picture, recipe))
        label = f"latent walk: seed {seed_a} -> {seed_b}, {frames} frames (slerp)"
        whole = self.runtime.recipe(spec, prompt, chosen, label, started)
        whole.params.update(steps)
        return results, grid.animate(pictures, whole.to_json(), image_format=image_format)

    def save_walk(self, animation: bytes, image_format: str) -> Path:
        from aigc_studio.storage import write_atomically

        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6:06d}"
        path = self.runtime.settings.output_dir / f"walk-{stamp}.{image_format.lower()}"
        return write_atomically(path, lambda part: part.write_bytes(animation))

    def family_views(self, model: str) -> list[tuple[str, Image.Image]]:
        from aigc_studio import families

        spec = self.runtime.model_spec("image", model)
        if spec.kind not in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} has no training views; shapes-vae and shapes-gan do")
        log = families.training_log(Path(spec.location))
        if spec.kind == "gan":
            views = [("discriminator and generator hinge losses per epoch", families.curve_view(log, ("d_loss", "g_loss")))]
            if "shipped_epoch" in log:  # logged since the GAN keeps its best epoch
                views.append((f"adherence on held-out seeds per epoch (epoch {log['shipped_epoch']} ships)",
                              families.curve_view(log, ("held_out_adherence",))))
            return views
        return [("reference render | its reconstruction", self.runtime.run(reconstruction, spec)),
                ("ELBO: reconstruction term per epoch", families.curve_view(log, ("reconstruction",))),
                ("ELBO: KL term per epoch", families.curve_view(log, ("kl",)))]
