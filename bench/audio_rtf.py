"""Real-time factor of the offline audio path: seconds of compute per second of audio
(< 1 is faster than real time), for the embedded Piper voice through the engine.

    python bench/audio_rtf.py [--runs 3] [--threads 1]

Only offline paths are measured: the Hub models (MMS-TTS, Bark, MusicGen) need the
network, and the tiny random models the tests build say nothing about speed.
Piper makes a fresh onnxruntime session per request (that is how a request's seed
reaches the noise inside the graph), so the session's creation is timed apart.
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

    import onnxruntime
    import torch

    from aigc_studio.catalog import EMBEDDED_MODELS
    from aigc_studio.engines import audio
    from aigc_studio.params import AudioParams

    torch.set_num_threads(args.threads)  # the engine gives onnxruntime torch's thread count
    spec = next(s for s in EMBEDDED_MODELS if s.kind == "piper")
    voice = audio.load(spec, "cpu", torch.float32)
    audio.generate(voice, "Warm up.", AudioParams(seed=0))

    def session_seconds() -> float:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        start = time.perf_counter()
        onnxruntime.InferenceSession(voice.onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        return time.perf_counter() - start

    for name, text in TEXTS.items():
        totals, sessions, seconds = [], [], 0.0
        for run in range(args.runs):  # interleaved, so both see the same load on a shared machine
            start = time.perf_counter()
            rate, samples = audio.generate(voice, text, AudioParams(seed=run))
            totals.append(time.perf_counter() - start)
            sessions.append(session_seconds())
            seconds = samples.size / rate
        total, session = statistics.median(totals), statistics.median(sessions)
        print(f"piper {name}: {seconds:.2f} s of audio in {total:.2f} s -> rtf={total / seconds:.3f} "
              f"(session creation {session:.2f} s of it; without it rtf={(total - session) / seconds:.3f})")

if __name__ == "__main__":
    main()
