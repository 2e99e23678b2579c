"""AIGC Studio entry point (Hugging Face Spaces runs this file): `python app.py`."""

from aigc_studio import Studio, hosting, logs
from aigc_studio.models import limit_malloc_arenas
from aigc_studio.ui import build_demo, launch

logs.configure()
limit_malloc_arenas()  # a server that runs for weeks: memory stays flat (bench/soak.py)
# On a ZeroGPU Space: the ZeroGPU set loads now (main thread, import time) and GPU work
# runs through spaces.GPU entry points; elsewhere the Studio is returned unchanged.
studio = hosting.serve(Studio())
demo = build_demo(studio)

if __name__ == "__main__":
    launch(demo, studio)
