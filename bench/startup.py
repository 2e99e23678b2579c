"""Start-up of the studio's app.py next to a bare Gradio Blocks app, in one run.

Both start the same way (a fresh `python <file>` on a free loopback port, offline
preset) and are timed from process start to the first HTTP 200 of the page; the two
alternate, so a busy machine slows both alike. Each studio run also checks that the
API schema is complete as soon as the page answers (no endpoint appears later).
    python bench/startup.py [--rounds 3]
Prints each round, the medians and ratio= (the median of the rounds' studio / bare; issue 12 asks for <= 1.5).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.live_server import ROOT, free_port

BARE_APP = """import gradio as gr

with gr.Blocks() as demo:
    gr.Markdown("bare")
demo.launch()
"""
# The studio's named endpoints (tests/test_app.py checks their keywords).
STUDIO_ENDPOINTS = {"/generate_text", "/compare_text", "/explain_next_token", "/perplexity", "/generate_image",
                    "/compare_image", "/image_grid", "/generate_audio", "/compare_audio"}


def time_to_page(script: Path, output_dir: str) -> tuple[float, int]:
    """(seconds from process start to the page's first HTTP 200, named endpoints in
    the API schema read right after)."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "AIGC_PRESET": "offline", "AIGC_OUTPUT_DIR": output_dir, "GRADIO_ANALYTICS_ENABLED": "False"}
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/", timeout=1)
                seconds = time.perf_counter() - start
                break
            except OSError:
                if process.poll() is not None:
                    raise SystemExit(f"{script} exited before answering")
                time.sleep(0.05)
        with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=30) as response:
            endpoints = set(json.load(response)["named_endpoints"])
        return seconds, len(endpoints & STUDIO_ENDPOINTS)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare_times, studio_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        bare = Path(folder) / "bare_app.py"
        bare.write_text(BARE_APP)
        for round_ in range(args.rounds):
            bare_s, _ = time_to_page(bare, folder)
            studio_s, found = time_to_page(ROOT / "app.py", folder)
            if found != len(STUDIO_ENDPOINTS):
                raise SystemExit(f"the studio's API schema had {found} of {len(STUDIO_ENDPOINTS)} endpoints at start")
            bare_times.append(bare_s)
            studio_times.append(studio_s)
            print(f"round {round_}: bare {bare_s:.2f} s, studio {studio_s:.2f} s, ratio {studio_s / bare_s:.2f}")
    # The ratio of each round's neighbours, then the median: a load that comes and goes
    # between rounds moves both of a pair alike.
    ratio = statistics.median(s / b for s, b in zip(studio_times, bare_times))
    print(f"bare_seconds={statistics.median(bare_times):.2f} studio_seconds={statistics.median(studio_times):.2f} "
          f"ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
