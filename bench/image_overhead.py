"""Seconds per image through Studio vs a direct pipeline call on the same model and knobs,
and a batched-seed grid vs the same cells generated one call at a time.

Rounds alternate so machine noise hits both alike. Prints `ratio=<raw seconds / studio seconds>`
(1.0 = no overhead) and `batched_speedup=<sequential / batched>`, then `server_single_s=` (one image
through a running app.py's API, as a client sees it; issue 22's bar is <= 0.6 s on one thread).
    python bench/image_overhead.py [--rounds 3] [--steps 30]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from aigc_studio import Studio
from aigc_studio.config import Settings
from aigc_studio.engines.image import set_scheduler
from aigc_studio.params import ImageParams

PROMPT = "a yellow triangle"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-server", action="store_true", help="skip server_single_s (starts app.py)")
    args = parser.parse_args()
    settings = Settings.from_env()
    settings.threads = args.threads
    studio = Studio(settings)
    knobs = studio.params("image", steps=args.steps, seed=1)
    studio.load("image")
    pipe = studio.models.get(studio.model_spec("image").id, lambda: None).value

    def raw() -> None:
        set_scheduler(pipe, knobs.scheduler)
        pipe(PROMPT, num_inference_steps=knobs.steps, guidance_scale=knobs.guidance,
             generator=torch.Generator("cpu").manual_seed(knobs.seed))

    def through_studio() -> None:
        studio.image(PROMPT, steps=knobs.steps, seed=knobs.seed, scheduler=knobs.scheduler, guidance=knobs.guidance)

    raw(), through_studio()  # warm-up
    raw_s, studio_s = [], []
    for i in range(args.rounds):
        raw_s.append(timed(raw))
        studio_s.append(timed(through_studio))
        print(f"round {i}: raw {raw_s[-1]:.3f} s/image, studio {studio_s[-1]:.3f} s/image")

    seeds = [("", ImageParams(**{**knobs.__dict__, "seed": s})) for s in range(8)]
    batched = statistics.median(timed(lambda: studio.images(PROMPT, seeds)) for _ in range(args.rounds))
    sequential = statistics.median(timed(lambda: [studio.images(PROMPT, [cell]) for cell in seeds]) for _ in range(args.rounds))
    print(f"model={studio.model_spec('image').id} steps={args.steps} scheduler={knobs.scheduler} threads={args.threads}")
    print(f"8 seeds: batched {batched:.2f} s, sequential {sequential:.2f} s, batched_speedup={sequential / batched:.2f}")
    print(f"raw={statistics.median(raw_s):.3f} s/image studio={statistics.median(studio_s):.3f} s/image")
    print(f"ratio={statistics.median(raw_s) / statistics.median(studio_s):.3f}")
    print(f"unet_runtime={'onnxruntime' if getattr(pipe, 'onnx_unet', None) is not None else 'torch'}")
    if not args.no_server:
        print(f"server_single_s={server_single(args):.3f}")


def server_single(args) -> float:
    """Seconds for one image (args.steps steps) through a running app.py's /generate_image, as a
    client sees it (the median of args.rounds after one warm-up; the server on args.threads)."""
    import tempfile
    from pathlib import Path

    from gradio_client import Client

    from tests.live_server import running_app

    with tempfile.TemporaryDirectory() as folder, running_app(Path(folder), AIGC_THREADS=str(args.threads)) as url:
        client = Client(url, verbose=False, download_files=folder)
        ask = lambda: client.predict(prompt=PROMPT, steps=args.steps, seed=1, api_name="/generate_image")
        ask()  # loads the model
        return statistics.median(timed(ask) for _ in range(max(args.rounds, 3)))


if __name__ == "__main__":
    main()
