"""The studio on an accelerator: which device and dtype it picks, every engine on tiny
models built from configs (no Hub), the embedded shapes model's adherence and speed,
the GPU memory options, same seed -> same output, and the ZeroGPU-shaped entry points
(aigc_studio/hosting.py) run the way ZeroGPU runs them: in a forked process with
pickled arguments and results, their output equal to the in-process one, no model
loaded inside the call.

CI has no GPU, so this is a script for whoever has one (a Space, a workstation):
    python bench/gpu_check.py [--per-class 17]
One line per check; the last line is `gpu_check=<passed>/<checks>`.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from tests.conftest import (  # the tests' tiny-model builders: one recipe for each model
    IMAGE_ID, MUSICGEN_ID, TEXT_ID, TINY_IMAGE_SIZE, VITS_ID, build_musicgen, build_sd_pipeline, build_text_model, build_vits,
)
from aigc_studio.catalog import EMBEDDED_MODELS, Catalog, local_spec
from aigc_studio.config import Settings
from aigc_studio.engines import image as image_engine
from aigc_studio.studio import Studio
from aigc_studio.train import evaluate
from aigc_studio import hosting
from aigc_studio.params import AudioParams, ImageParams, TextParams

IMAGE_KNOBS = {"steps": 4, "guidance": 3.0, "width": TINY_IMAGE_SIZE, "height": TINY_IMAGE_SIZE}
checks: list[tuple[str, bool]] = []


def check(name: str, passed: bool, detail: str = "") -> None:
    checks.append((name, passed))
    print(f"{'ok  ' if passed else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def pixels(result) -> np.ndarray:
    return np.asarray(result.output, dtype=np.int16)


def tiny_studio(folder: Path, **memory) -> Studio:
    shapes = next(s for s in EMBEDDED_MODELS if s.id == "shapes-diffusion")
    catalog = Catalog([
        local_spec(TEXT_ID, "text", "causal-lm", folder / "lm", defaults={"max_new_tokens": 16}),
        local_spec(IMAGE_ID, "image", "diffusers", folder / "sd", defaults=dict(IMAGE_KNOBS)),
        local_spec(VITS_ID, "audio", "vits", folder / "vits"),
        local_spec(MUSICGEN_ID, "audio", "musicgen", folder / "musicgen", defaults={"duration": 0.5}),
        shapes,
    ], {"text": TEXT_ID, "image": IMAGE_ID, "audio": VITS_ID})
    settings = Settings(preset="offline", cache_dir=folder / "cache", output_dir=folder / "outputs", **memory)
    return Studio(settings, catalog=catalog)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=17, help="shapes images per colour x shape")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    for build, name in [(build_text_model, "lm"), (build_sd_pipeline, "sd"), (build_vits, "vits"),
                        (build_musicgen, "musicgen")]:
        build(folder / name)

    studio = tiny_studio(folder)
    check("device", studio.device != "cpu", f"{studio.device} {studio.dtype}"
          + (f" ({torch.cuda.get_device_name()})" if studio.device == "cuda" else ""))

    first, again = (studio.text("Once upon a time", TEXT_ID, seed=3) for _ in range(2))
    check("text: same seed, same text", first.output == again.output and first.recipe.device == studio.device,
          f"{len(first.output)} chars, recipe device {first.recipe.device}, dtype {first.recipe.dtype}")

    plain, again = (studio.image("a cat", IMAGE_ID, seed=5) for _ in range(2))
    check("image: same seed, same pixels", np.array_equal(pixels(plain), pixels(again)),
          f"max difference {np.abs(pixels(plain) - pixels(again)).max()}/255")
    for option in ("attention_slicing", "vae_tiling", "cpu_offload"):
        other = tiny_studio(folder, **{option: True}).image("a cat", IMAGE_ID, seed=5)
        difference = np.abs(pixels(other) - pixels(plain)).max()
        # each trades speed for memory: the picture may move by rounding, not change
        check(f"image with {option}", difference <= 8, f"max difference from plain {difference}/255")

    for model_id in (VITS_ID, MUSICGEN_ID):
        first, again = (studio.audio("hello there", model_id, seed=7) for _ in range(2))
        same = np.array_equal(first.output[1], again.output[1])
        check(f"audio {model_id}: same seed, same samples", same and np.isfinite(first.output[1]).all(),
              f"{len(first.output[1]) / first.output[0]:.2f} s at {first.output[0]} Hz")

    pipe = image_engine.load(next(s for s in EMBEDDED_MODELS if s.id == "shapes-diffusion"), studio.device, studio.dtype)
    for guidance, bar in ((3.0, 0.9), (0.0, None)):
        started = time.perf_counter()
        adherence = evaluate(pipe, args.per_class, guidance, "dpm++", 30)
        seconds = (time.perf_counter() - started) / (12 * args.per_class)
        passed = adherence >= bar if bar is not None else adherence <= 0.5
        check(f"shapes model at guidance {guidance}", passed,
              f"adherence {adherence:.3f} over {12 * args.per_class} images, {seconds:.4f} s/image ({studio.dtype})")

    zero_gpu_checks(studio)
    if studio.device == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"gpu_check={sum(p for _, p in checks)}/{len(checks)}")


def zero_gpu_checks(studio: Studio) -> None:
    """Each ZeroGPU entry point forked and pickled (tests/test_hosting.py's harness) on the
    preloaded tiny models: same output as in-process, nothing loaded in the worker. CUDA in
    a forked child needs the parent not to have touched CUDA, as on ZeroGPU (spaces packs the
    weights instead); a fork after CUDA use fails here, which this reports."""
    from tests.test_hosting import run_forked, run_here

    hosting.preload(studio, [TEXT_ID, IMAGE_ID, VITS_ID])
    hosting.install(studio)
    size = dict(width=TINY_IMAGE_SIZE, height=TINY_IMAGE_SIZE)
    calls = [
        ("text", hosting.gpu_text_compare, ("Hello", [("", TextParams(seed=1, max_new_tokens=8))], TEXT_ID),
         lambda out: out[-1].columns[0].text),
        ("explainer", hosting.gpu_explain, ("Hello", TextParams(top_k=5), TEXT_ID, "", 0, 5),
         lambda out: out.candidate_ids),
        ("perplexity", hosting.gpu_perplexity, ("n1 n2 n3 n4", TEXT_ID), lambda out: round(out[0], 3)),
        ("image", hosting.gpu_images, ("a cat", [("", ImageParams(steps=3, seed=2, **size))], IMAGE_ID),
         lambda out: np.asarray(out[-1][1][0].output).tobytes()),
        ("grid", hosting.gpu_image_grid, ("a cat", ImageParams(steps=2, seed=2, **size), "seed", ["1", "2"], None, None,
                                          IMAGE_ID), lambda out: np.asarray(out[-1][1][0]).tobytes()),
        ("audio", hosting.gpu_audio, ("hello there", AudioParams(seed=4), VITS_ID), lambda out: out.output[1].tobytes()),
    ]
    for name, fn, call_args, key in calls:
        try:
            there, loaded = run_forked(fn, *call_args)
            same = key(there) == key(run_here(fn, *call_args))
            check(f"zerogpu {name}: forked and pickled = in-process", same and not loaded,
                  f"models loaded in the worker: {loaded or 'none'}")
        except AssertionError as error:
            check(f"zerogpu {name}: forked and pickled = in-process", False, str(error)[:200])


if __name__ == "__main__":
    main()
