"""The thread policy, measured through the real server: the default against 1 and 2
threads, for an image and a text answer, on an idle machine and beside one busy process.

Three app.py servers run side by side (AIGC_THREADS unset = the default policy, 1, 2);
every round asks each of them the same two requests, once idle and once while a
separate process keeps one core busy, so noise hits every setting alike. The median
over rounds counts.
Last line: idle=<default / best explicit> busy=<default / best explicit> (issue 12 asks <= 1.3 in both)
    python bench/threads.py [--rounds 3]
"""

import argparse
import contextlib
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gradio_client import Client

from tests.live_server import ROOT, free_port

SETTINGS = {"default": None, "1 thread": "1", "2 threads": "2"}
IMAGE = dict(prompt="a red circle", steps=30, seed=1, api_name="/generate_image")
TEXT = dict(prompt="Write a short story about the sea.", max_new_tokens=64, greedy=True, seed=1, api_name="/generate_text")


@contextlib.contextmanager
def server(threads: str | None, folder: Path):
    environ = {k: v for k, v in os.environ.items() if k not in ("AIGC_THREADS", "OMP_NUM_THREADS")}
    port = free_port()
    environ.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), AIGC_PRESET="offline",
                   AIGC_OUTPUT_DIR=str(folder), GRADIO_ANALYTICS_ENABLED="False", AIGC_MCP="0")
    if threads is not None:
        environ["AIGC_THREADS"] = threads
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text())
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield Client(url, verbose=False)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def busy_loop() -> None:
    """Another program using one core flat out (a browser tab, a build, a second app)."""
    while True:
        pass


def seconds(client: Client, request: dict) -> float:
    start = time.perf_counter()
    client.predict(**request)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = {(name, condition, kind): [] for name in SETTINGS for condition in ("idle", "busy") for kind in ("image", "text")}
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        clients = {}
        for name, threads in SETTINGS.items():
            folder = Path(scratch) / name.replace(" ", "-")
            folder.mkdir()
            clients[name] = stack.enter_context(server(threads, folder))
        for client in clients.values():  # warm-up: load the models (and convert the text model once)
            client.predict(**{**IMAGE, "steps": 2})
            client.predict(**{**TEXT, "max_new_tokens": 4})
        for round_ in range(args.rounds):
            for condition in ("idle", "busy"):
                hog = None
                if condition == "busy":
                    hog = multiprocessing.get_context("spawn").Process(target=busy_loop, daemon=True)
                    hog.start()
                    time.sleep(1.0)
                try:
                    for name, client in clients.items():
                        times[(name, condition, "image")].append(seconds(client, IMAGE))
                        times[(name, condition, "text")].append(seconds(client, TEXT))
                finally:
                    if hog is not None:
                        hog.terminate()
                        hog.join()
            print(f"round {round_ + 1}: " + ", ".join(f"{k[0]}/{k[1]}/{k[2]} {v[-1]:.2f}s" for k, v in times.items()))

    median = {key: statistics.median(values) for key, values in times.items()}
    print("\nsetting      idle image  idle text   busy image  busy text")
    for name in SETTINGS:
        print(f"{name:10s} " + "  ".join(f"{median[(name, c, k)]:9.2f}s" for c in ("idle", "busy") for k in ("image", "text")))
    ratios = {}
    for condition in ("idle", "busy"):
        worst = 0.0
        for kind in ("image", "text"):
            best = min(median[(name, condition, kind)] for name in SETTINGS if name != "default")
            worst = max(worst, median[("default", condition, kind)] / best)
        ratios[condition] = worst
    print(f"idle={ratios['idle']:.2f} busy={ratios['busy']:.2f}  (default / best explicit setting, worse of image and text)")


if __name__ == "__main__":
    main()
