"""AIGC Studio entry point (Hugging Face Spaces runs this file): `python app.py`."""

import os
import sys

from aigc_studio.models import huge_pages_environment, limit_malloc_arenas

if __name__ == "__main__" and (environment := huge_pages_environment(os.environ)) is not None:
    # glibc reads its tunables only at start: run again with huge pages, before anything is loaded
    os.execve(sys.executable, [sys.executable, *sys.argv], environment)

from aigc_studio import Studio, hosting, logs  # noqa: E402
from aigc_studio.ui import build_demo, launch  # noqa: E402

logs.configure()
limit_malloc_arenas()  # a server that runs for weeks: memory stays flat (bench/soak.py)
# On a ZeroGPU Space: the ZeroGPU set loads now (main thread, import time) and GPU work
# runs through spaces.GPU entry points; elsewhere the Studio is returned unchanged.
studio = hosting.serve(Studio())
demo = build_demo(studio)

if __name__ == "__main__":
    launch(demo, studio)
