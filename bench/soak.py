"""Soak: many mixed requests through one real server; does its memory level off?

    python bench/soak.py                   # 1,000 requests after the warm-up (offline preset)
    python bench/soak.py --requests 60     # a quick check
    AIGC_THREADS=1 python bench/soak.py    # what the tests use on a shared CPU

Starts app.py the way users do (tests/live_server.py) and sends, one after another,
text, image, audio, side-by-side text and image, X/Y grid and next-token explainer
requests through gradio_client, with a new seed each time (as strangers would).
The server's resident memory (psutil, the app process and its children) is read
after the warm-up rounds and at the end; `growth=` is their ratio. Also prints the
files left in the output folder and Gradio's cache, which retention keeps bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402
from gradio_client import Client  # noqa: E402

from aigc_studio.storage import folder_size  # noqa: E402
from tests.live_server import running_app  # noqa: E402

MB = 2**20


def mixed_requests(tokens: int, steps: int) -> list[tuple[str, dict]]:
    """One round: every kind of request the studio serves, with small knobs."""
    return [
        ("/generate_text", dict(prompt="Write a haiku about rain.", max_new_tokens=tokens)),
        ("/generate_image", dict(prompt="a small yellow triangle", steps=steps)),
        ("/generate_audio", dict(prompt="Hello from the studio.")),
        ("/compare_text", dict(prompt="Name a colour.", mode="Sweep one knob", count=2, knob_name="temperature",
                               values="0.3, 1.2", max_new_tokens=tokens)),
        ("/compare_image", dict(prompt="a big red circle", mode="Different seeds", count=2, knob_name="guidance",
                                values="1, 3", steps=steps)),
        ("/image_grid", dict(prompt="a blue square", x_knob="guidance", x_values="1, 4", y_knob="none", y_values="",
                             steps=steps)),
        ("/explain_next_token", dict(prompt="The capital of France is", answer="", position=0, top_n=10)),
    ]


def server_rss(pid: int) -> int:
    """Resident bytes of the server process and its children."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def app_pid() -> int:
    """The app.py process that running_app started from this one."""
    for child in psutil.Process().children(recursive=True):
        if "app.py" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError("no app.py child process found")


def send(client: Client, number: int, endpoint: str, knobs: dict) -> None:
    if endpoint != "/explain_next_token":
        knobs = {**knobs, "seed": number}  # a new result each time, as different users would get
    client.predict(api_name=endpoint, **knobs)


def soak(url: str, requests: int, warmup_rounds: int, tokens: int, steps: int, downloads: str, every: int) -> tuple[int, int]:
    """(rss after warm-up, rss at the end) in bytes."""
    client = Client(url, verbose=False, download_files=downloads)
    pid = app_pid()
    calls = mixed_requests(tokens, steps)
    number = 0
    for _ in range(warmup_rounds):
        for endpoint, knobs in calls:
            number += 1
            send(client, number, endpoint, knobs)
    start_rss = server_rss(pid)
    print(f"after warm-up ({number} requests): rss={start_rss / MB:.0f} MB", flush=True)
    started = time.perf_counter()
    for i in range(requests):
        endpoint, knobs = calls[i % len(calls)]
        number += 1
        send(client, number, endpoint, knobs)
        if every and (i + 1) % every == 0:
            print(f"  {i + 1}/{requests}: rss={server_rss(pid) / MB:.0f} MB "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return start_rss, server_rss(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="mixed requests after the warm-up")
    parser.add_argument("--warmup-rounds", type=int, default=3, help="rounds of every request kind before measuring")
    parser.add_argument("--tokens", type=int, default=8, help="max_new_tokens of text requests")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps of image requests")
    parser.add_argument("--every", type=int, default=100, help="print the memory every this many requests (0: never)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outputs, cache = Path(tmp) / "outputs", Path(tmp) / "gradio"
        with running_app(outputs, GRADIO_TEMP_DIR=str(cache)) as url:
            start, end = soak(url, args.requests, args.warmup_rounds, args.tokens, args.steps,
                              str(Path(tmp) / "downloads"), args.every)
        files = {name: folder_size(folder) for name, folder in (("outputs", outputs), ("gradio cache", cache))}
    print(f"requests={args.requests} rss_start={start / MB:.0f} MB rss_end={end / MB:.0f} MB "
          f"growth={end / start:.3f}")
    for name, (count, size) in files.items():
        print(f"{name}: {count} files, {size / MB:.1f} MB")


if __name__ == "__main__":
    main()
