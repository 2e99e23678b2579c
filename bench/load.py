"""Load: concurrent gradio_client sessions against the studio; latency and throughput.

    python bench/load.py                         # starts app.py (offline preset) on a free port
    python bench/load.py --clients 20 --seconds 60 --queue-size 32 --concurrency 1
    python bench/load.py --url http://127.0.0.1:7860/   # a studio that is already running

Each client loops over /generate_text, /generate_image and /generate_audio with
small knobs until the time is up. A refused request ("queue full") is counted,
and the client waits --backoff seconds before its next one. Models are warmed
first (one request per endpoint), so latencies are steady-state. Prints, per
endpoint and overall: answered, refused, failed, p50/p95 latency of the answered
requests (seconds, submit to result) and throughput (answered per second).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gradio_client import Client  # noqa: E402
from gradio_client.utils import QueueError  # noqa: E402

from tests.live_server import running_app  # noqa: E402


def requests(tokens: int, steps: int) -> dict[str, dict]:
    return {
        "/generate_text": dict(prompt="Write a haiku about rain.", max_new_tokens=tokens, seed=1),
        "/generate_image": dict(prompt="a small yellow triangle", steps=steps, seed=1),
        "/generate_audio": dict(prompt="Hello from the studio.", seed=1),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def run(url: str, clients: int, seconds: float, calls: dict[str, dict], backoff: float, downloads: str) -> dict:
    """{endpoint: {"latencies": [...], "refused": n, "failed": [messages]}} plus the measured wall time."""
    results: dict = defaultdict(lambda: {"latencies": [], "refused": 0, "failed": []})
    lock = threading.Lock()
    endpoints = list(calls)
    stop_at = time.monotonic() + seconds

    def session(index: int) -> None:
        client = Client(url, verbose=False, download_files=downloads)
        turn = index
        while time.monotonic() < stop_at:
            endpoint = endpoints[turn % len(endpoints)]
            turn += 1
            started = time.perf_counter()
            try:
                client.predict(api_name=endpoint, **calls[endpoint])
            except QueueError:
                with lock:
                    results[endpoint]["refused"] += 1
                time.sleep(backoff)
                continue
            except Exception as error:  # reported, the load goes on
                with lock:
                    results[endpoint]["failed"].append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                results[endpoint]["latencies"].append(time.perf_counter() - started)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(session, i) for i in range(clients)]:
            future.result()
    return {"endpoints": dict(results), "wall_s": time.perf_counter() - began}


def report(measured: dict) -> None:
    wall = measured["wall_s"]
    rows = list(measured["endpoints"].items())
    everything = {"latencies": [latency for _, r in rows for latency in r["latencies"]],
                  "refused": sum(r["refused"] for _, r in rows), "failed": [f for _, r in rows for f in r["failed"]]}
    print(f"{'endpoint':<16} {'answered':>8} {'refused':>8} {'failed':>7} {'p50 s':>7} {'p95 s':>7} {'req/s':>7}")
    for name, r in sorted(rows) + [("all", everything)]:
        latencies = r["latencies"]
        print(f"{name:<16} {len(latencies):>8} {r['refused']:>8} {len(r['failed']):>7} "
              f"{percentile(latencies, 50):>7.2f} {percentile(latencies, 95):>7.2f} {len(latencies) / wall:>7.2f}")
    print(f"wall time {wall:.1f} s (the last requests finish after the load window closes)")
    for failure in everything["failed"][:5]:
        print("failed:", failure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running studio; default: start app.py (offline preset) on loopback")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the load window")
    parser.add_argument("--tokens", type=int, default=8, help="max_new_tokens of each text request")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps of each image request")
    parser.add_argument("--queue-size", type=int, default=32, help="AIGC_QUEUE_SIZE of the started server")
    parser.add_argument("--concurrency", type=int, default=1, help="AIGC_CONCURRENCY of the started server")
    parser.add_argument("--backoff", type=float, default=0.5, help="seconds a refused client waits")
    args = parser.parse_args()

    calls = requests(args.tokens, args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        env = {"AIGC_QUEUE_SIZE": str(args.queue_size), "AIGC_CONCURRENCY": str(args.concurrency)}
        server = nullcontext(args.url) if args.url else running_app(Path(scratch) / "server", **env)
        with server as url:
            print(f"{url}: {args.clients} clients for {args.seconds:.0f} s; text {args.tokens} tokens, "
                  f"image {args.steps} steps" + ("" if args.url else f"; queue {args.queue_size}, "
                                                                      f"concurrency {args.concurrency}"))
            warm = Client(url, verbose=False, download_files=scratch)
            for endpoint, kwargs in calls.items():  # load every model before measuring
                started = time.perf_counter()
                warm.predict(api_name=endpoint, **kwargs)
                print(f"warm-up {endpoint}: {time.perf_counter() - started:.1f} s")
            report(run(url, args.clients, args.seconds, calls, args.backoff, scratch))


if __name__ == "__main__":
    main()
