"""Start app.py the way users do (a real process on a free loopback port)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(output_dir: Path, **env: str):
    """Yield the URL of a running studio; stop it afterwards. Fails with the log if it never answers."""
    port = free_port()
    environ = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
               "AIGC_PRESET": "offline", "AIGC_OUTPUT_DIR": str(output_dir), "GRADIO_ANALYTICS_ENABLED": "False",
               "AIGC_THREADS": "1", **env}
    log_path = output_dir / "server.log"
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(240):  # polls, not a timing assertion: a dead process fails at once
                if process.poll() is not None:
                    raise RuntimeError(f"app.py exited with {process.returncode}:\n{log_path.read_text()}")
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            else:
                raise RuntimeError(f"app.py never answered on {url}:\n{log_path.read_text()}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def run_concurrently(commands: list[list[str]]) -> None:
    """Run the commands side by side (e.g. the same training twice, to compare): on a
    2-core machine two 1-thread processes take about the time of one. Fails with the
    output of any command that fails."""
    processes = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for c in commands]
    outputs = [p.communicate()[0] for p in processes]
    for command, process, output in zip(commands, processes, outputs):
        assert process.returncode == 0, f"{' '.join(command)} exited with {process.returncode}:\n{output[-3000:]}"
