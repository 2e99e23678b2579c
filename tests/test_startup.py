"""Start-up imports only what the page needs: the model libraries load with the first
model (bench/startup.py measures what that saves, next to a bare Gradio app)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.live_server import ROOT

# Each takes a second or more to import and is needed only to run a model.
MODEL_LIBRARIES = ("diffusers", "transformers", "onnxruntime", "piper")

BUILD_THE_PAGE = f"""
import json, sys
from aigc_studio import Studio
from aigc_studio.ui import build_demo

demo = build_demo(Studio())
print(json.dumps({{"loaded": [name for name in {MODEL_LIBRARIES!r} if name in sys.modules],
                   "endpoints": sorted(demo.get_api_info()["named_endpoints"])}}))
"""


def test_building_the_page_imports_no_model_library_and_the_api_is_complete():
    env = {**os.environ, "AIGC_PRESET": "offline", "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "-c", BUILD_THE_PAGE], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    for name in ("/generate_text", "/compare_text", "/generate_image", "/image_grid", "/generate_audio"):
        assert name in report["endpoints"]
