"""The embedded shapes UNet's 30 calls of one guided image (batch 2: the conditional and
unconditional passes as one batch), on the runtimes the image speed issue asked to try:
torch eager (the fallback), channels-last memory format, torch.compile (inductor, CPU), and
ONNX Runtime (the default). Rounds alternate the contenders; each figure is the median.
Outputs are compared with eager's.
Last line: eager_s=<s> channels_last=<x eager> compiled=<x eager> onnxruntime=<x eager> compile_s=<s>
    python bench/image_unet_variants.py [--rounds 5] [--threads 1]
"""

import argparse
import copy
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from aigc_studio import Studio
from aigc_studio.config import Settings
from image_overhead import timed  # bench/ is this script's folder, first on sys.path

CALLS = 30  # one 30-step image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings.from_env()
    settings.threads = args.threads
    studio = Studio(settings)
    studio.load("image")
    pipe = studio.models.get(studio.model_spec("image").id, lambda: None).value
    unet = pipe.unet.eval()
    size = unet.config.sample_size
    x = torch.randn(2, unet.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    t, labels = torch.tensor([500.0, 500.0]), torch.tensor([3, 0])

    def eager():
        return unet(x, t, class_labels=labels).sample

    unet_cl = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last)

    def channels_last():
        return unet_cl(x_cl, t, class_labels=labels).sample

    compiled_unet = torch.compile(unet)
    with torch.no_grad():
        compile_s = timed(lambda: compiled_unet(x, t, class_labels=labels))  # the first call compiles

    def compiled():
        return compiled_unet(x, t, class_labels=labels).sample

    def onnxruntime():
        return pipe._eps(x, t, labels)

    contenders = {"eager": eager, "channels_last": channels_last, "compiled": compiled, "onnxruntime": onnxruntime}
    with torch.no_grad():
        reference = eager()
        for name, run in contenders.items():
            print(f"{name:14s} max |eps - eager| {float((run() - reference).abs().max()):.2e}")
        seconds = {name: [] for name in contenders}
        for round_ in range(args.rounds):
            for name, run in contenders.items():
                seconds[name].append(timed(lambda: [run() for _ in range(CALLS)]))
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {s[-1]:.3f} s" for n, s in seconds.items()))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    relative = {name: median[name] / median["eager"] for name in contenders}
    print(f"eager_s={median['eager']:.3f} channels_last={relative['channels_last']:.2f} "
          f"compiled={relative['compiled']:.2f} onnxruntime={relative['onnxruntime']:.2f} compile_s={compile_s:.1f}")


if __name__ == "__main__":
    main()
