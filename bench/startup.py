"""Seconds from process start to the first HTTP 200 of app.py (no model is loaded: loading is lazy).
    python bench/startup.py [--runs 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.live_server import ROOT, free_port


def once() -> float:
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "AIGC_PRESET": "offline"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                return time.perf_counter() - start
            except OSError:
                if process.poll() is not None:
                    raise SystemExit("app.py exited before answering")
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    seconds = [once() for _ in range(args.runs)]
    for i, s in enumerate(seconds):
        print(f"run {i}: {s:.2f} s")
    print(f"startup_seconds={statistics.median(seconds):.2f}")


if __name__ == "__main__":
    main()
