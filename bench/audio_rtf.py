"""Real-time factor of the offline audio path: seconds of compute per second of audio
(< 1 is faster than real time), for the embedded Piper voice through the engine.

    python bench/audio_rtf.py [--runs 3] [--threads 1]

Only offline paths are measured: the Hub models (MMS-TTS, Bark, MusicGen) need the
network, and the tiny random models the tests build say nothing about speed.
Piper keeps one onnxruntime session (its noise comes in as inputs drawn from each request's
seed); `overhead_s=` is what a second request in a row costs beyond the network's own run:
the whole request minus the session runs it made (a one-word text, another seed).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXTS = {
    "sentence": "The birch canoe slid on the smooth planks.",
    "paragraph": " ".join([
        "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
        "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
        "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
        "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    ]),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    from aigc_studio.catalog import EMBEDDED_MODELS
    from aigc_studio.engines import audio
    from aigc_studio.params import AudioParams

    torch.set_num_threads(args.threads)  # the engine gives onnxruntime torch's thread count
    spec = next(s for s in EMBEDDED_MODELS if s.kind == "piper")
    voice = audio.load(spec, "cpu", torch.float32)
    audio.generate(voice, "Warm up.", AudioParams(seed=0))

    for name, text in TEXTS.items():
        totals, seconds = [], 0.0
        for run in range(args.runs):
            start = time.perf_counter()
            rate, samples = audio.generate(voice, text, AudioParams(seed=run))
            totals.append(time.perf_counter() - start)
            seconds = samples.size / rate
        total = statistics.median(totals)
        print(f"piper {name}: {seconds:.2f} s of audio in {total:.2f} s -> rtf={total / seconds:.3f}")

    # the second request in a row: everything but the network's own runs is overhead
    session, network = voice.session, []

    class Timed:
        def run(self, outputs, feeds):
            start = time.perf_counter()
            try:
                return session.run(outputs, feeds)
            finally:
                network.append(time.perf_counter() - start)

    voice.session = Timed()
    overheads = []
    for run in range(args.runs):
        network.clear()
        start = time.perf_counter()
        audio.generate(voice, "Hello.", AudioParams(seed=100 + run))
        overheads.append(time.perf_counter() - start - sum(network))
    voice.session = session
    print(f"overhead_s={statistics.median(overheads):.3f}")


if __name__ == "__main__":
    main()
