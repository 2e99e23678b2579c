"""AIGC Studio entry point (Hugging Face Spaces runs this file): `python app.py`."""

from aigc_studio import Studio, logs
from aigc_studio.ui import build_demo, launch

logs.configure()
studio = Studio()
demo = build_demo(studio)

if __name__ == "__main__":
    launch(demo, studio)
