"""The public API: one typed function per endpoint, shared by the HTTP API
(gradio_client), the MCP tools and, through the Studio, the ZeroGPU entry points.

Each function's keywords are the knob dataclasses' fields (aigc_studio/params.py),
in the order the endpoints have always had (the knobs shipped first, then `model`,
then the knobs added later), so positional callers keep working. A knob left out
(None) takes the model's recommended value. Functions call only the Studio's public
methods; `register(studio)` wires them with `gr.api` inside the Blocks. The tabs keep
their own (private) events for the page.

Results: text as str; images and audio as files carrying their recipe (PNG text
chunk, WAV/FLAC tag), which gradio_client downloads and MCP clients get as image
content plus a URL of the original file.
"""

import logging
from pathlib import Path
from typing import Literal

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.studio import Studio
from aigc_studio.ui.files import cached_png, keep_or_cache, with_recipe

File = dict  # a gradio FileData dict: gradio_client downloads it, MCP turns an image into image content
VariantMode = Literal["Different seeds", "Sweep one knob"]

log = logging.getLogger(__name__)
_studio: Studio | None = None


def studio() -> Studio:
    if _studio is None:
        raise RuntimeError("aigc_studio.ui.api.register(studio) was not called")
    return _studio


# ----- checks for the inputs that are not knobs (knobs are checked by params.validate) --------

def _file(path: str | Path) -> File:
    return gr.FileData(path=str(path), orig_name=Path(path).name).model_dump()


def uploaded_bytes(path: str, field: str) -> bytes:
    """A file under Gradio's upload folder (where uploads land); any other path is refused."""
    folder = Path(gr.utils.get_upload_folder()).resolve()
    target = Path(path).resolve()
    if folder not in target.parents:
        raise knobs.ParamError(field, "must be a file uploaded to this server (gradio_client.handle_file)")
    if not target.is_file():
        raise knobs.ParamError(field, "the uploaded file is gone; upload it again")
    return target.read_bytes()


def _picture_file(save, result) -> File:
    """A studio PNG in the output folder; when the disk is full, the picture with its
    recipe in Gradio's cache instead (the tabs do the same), with a warning."""
    return keep_or_cache(lambda: _file(save(result)), lambda: _file(cached_png(with_recipe(result))))


def history(request: gr.Request = None) -> list[dict]:
    """This session's results, newest first (at most 100): what the History tab lists.

    Each entry is a dict: id (int), tab (text | image | audio), model, label (a short
    label of the knobs), recipe (the whole recipe: prompt, model_id, params with every
    knob and the seed), path (the output file, or None for text), file_state (kept,
    pruned by the retention policy, or none), text and first_line (text answers),
    created (seconds since the epoch) and created_iso. A page's session is linked to its
    browser, so a browser's results from before a reload are included."""
    return [entry.describe() for entry in _studio.history.entries(request.session_hash if request else None)]


def register(studio_: Studio) -> None:
    """Serve every endpoint over studio_, each in its modality's concurrency group (a tab's
    button and its public endpoint share the group, so AIGC_CONCURRENCY bounds a modality's
    generations however they arrive). Call inside the Blocks before the tabs: their private
    events of the same names then get suffixed names, these keep the public ones."""
    global _studio
    _studio = studio_
    from aigc_studio.ui import audio_api, image_api, music_api, text_api

    for module in (text_api, image_api, audio_api, music_api):
        for fn, group in module.ENDPOINTS.items():
            gr.api(fn, api_name=fn.__name__, concurrency_id=group)
    # one at a time, beside the rest
    gr.api(text_api.fine_tune_text, api_name="fine_tune_text", concurrency_id="tune", concurrency_limit=1)
    gr.api(history, api_name="history", queue=False)  # a listing: no generation to wait behind
