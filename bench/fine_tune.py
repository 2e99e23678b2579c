"""Fine-tuning the embedded text model on one author's prose: held-out perplexity before
and after a LoRA run at the default knobs (TuneParams()), and the minutes it took.

The text is tests/data/austen_pride_and_prejudice.txt (Jane Austen, 1813: public domain,
chapters 1-5, ~29 kB). The studio holds out 10% of its blocks (by the seed) and measures
them before training, every eval_every steps and at the end. One thread (AIGC_THREADS=1).
Last line: ratio=<perplexity after / before> minutes=<wall-clock minutes of training>
    python bench/fine_tune.py [--steps N] [--seed S] [--model smollm2-135m-instruct] [--plot curve.png]
    python bench/fine_tune.py --plot-from <adapter folder>/tune_recipe.json --plot curve.png
"""

import argparse
import json
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


def plot(recipe: dict, path: Path) -> None:
    """The training loss per step and the held-out perplexity where it was measured, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    steps, losses = zip(*recipe["loss_history"])
    loss_axis.plot(steps, losses, color="tab:blue", label="training loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    ppl_axis = loss_axis.twinx()
    ppl_steps, ppls = zip(*recipe["perplexity_history"])
    ppl_axis.plot(ppl_steps, ppls, "o-", color="tab:orange", label="held-out perplexity")
    ppl_axis.set_ylabel("held-out perplexity", color="tab:orange")
    loss_axis.set_title(f"{recipe['adapter']}: held-out perplexity {recipe['perplexity_before']:.1f} -> "
                        f"{recipe['perplexity_after']:.1f}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a text model of the catalog (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="write the loss and perplexity curve to this PNG")
    parser.add_argument("--plot-from", type=Path, default=None, help="only plot this tune_recipe.json")
    args = parser.parse_args()
    if args.plot_from:
        plot(json.loads(args.plot_from.read_text()), args.plot or Path("fine_tune_curve.png"))
        return

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
    if args.plot:
        plot(result.recipe, args.plot)
    print(f"ratio={result.perplexity_after / result.perplexity_before:.3f} minutes={minutes:.1f}")


if __name__ == "__main__":
    main()
