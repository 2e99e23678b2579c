"""Fine-tuning the embedded text model on one author's prose: held-out perplexity before
and after a LoRA run at the default knobs (TuneParams()), and the minutes it took.

The text is tests/data/austen_pride_and_prejudice.txt (Jane Austen, 1813: public domain,
chapters 1-5, ~29 kB). The studio holds out 10% of its blocks (by the seed) and measures
them before training, every eval_every steps and at the end. One thread (AIGC_THREADS=1).
Last line: ratio=<perplexity after / before> minutes=<wall-clock minutes of training>
    python bench/fine_tune.py [--steps N] [--seed S] [--model smollm2-135m-instruct]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from aigc_studio.config import Settings  # noqa: E402
from aigc_studio.params import TuneParams, make  # noqa: E402
from aigc_studio.studio import Studio  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "austen_pride_and_prejudice.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a text model of the catalog (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = Settings.from_env()
    settings.preset, settings.threads = "offline", 1
    settings.output_dir = Path(tempfile.mkdtemp(prefix="fine-tune-bench-"))
    studio = Studio(settings)
    params = make(TuneParams, seed=args.seed, steps=args.steps, learning_rate=args.learning_rate)
    text = DATA.read_text(encoding="utf-8")
    print(f"text: {DATA.name}, {len(text):,} characters; knobs: {params}")

    def on_progress(progress):
        line = f"step {progress.step:3d}/{progress.steps}  {progress.seconds:6.1f} s"
        if progress.loss is not None:
            line += f"  loss {progress.loss:.3f}"
        if progress.perplexity is not None:
            line += f"  held-out perplexity {progress.perplexity:.2f}"
        print(line, flush=True)

    started = time.perf_counter()
    result = studio.fine_tune(text, args.model, params, name="austen", on_progress=on_progress)
    minutes = (time.perf_counter() - started) / 60
    print(f"{result.adapter}: {result.train_tokens} train tokens, {result.heldout_tokens} held out; "
          f"perplexity {result.perplexity_before:.2f} -> {result.perplexity_after:.2f}; adapter in {result.folder}")
    print(f"ratio={result.perplexity_after / result.perplexity_before:.3f} minutes={minutes:.1f}")


if __name__ == "__main__":
    main()
