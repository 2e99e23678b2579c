"""Results into files: kept in the output folder, or, when that folder cannot be written
(a full disk), shown from Gradio's cache with one warning, so nothing made is lost."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import gradio as gr
from PIL import Image

from aigc_studio.studio import RECIPE_KEY, NotKept, Result, Studio

log = logging.getLogger(__name__)

Kept = TypeVar("Kept")
Shown = TypeVar("Shown")


def keep_or_cache(save: Callable[[], Kept], fallback: Callable[[], Shown],
                  note: str = "Download it to keep it.") -> Kept | Shown:
    """save() when the output folder takes it; on NotKept, a warning for the person and the
    operator (the disk needs attention), then fallback(): what to show instead."""
    try:
        return save()
    except NotKept as error:
        log.warning("%s", error)
        gr.Warning(f"{error}. {note}")
        return fallback()


def with_recipe(result: Result) -> Image.Image:
    """A copy of a result's picture carrying its recipe in the PNG text chunk read_recipe reads."""
    picture = result.output.copy()
    picture.info[RECIPE_KEY] = result.recipe.to_json()
    return picture


def cached_png(picture: Image.Image) -> Path:
    """The picture as a PNG in Gradio's cache (its info, the recipe, goes into the file)."""
    return Path(gr.processing_utils.save_pil_to_cache(picture, gr.utils.get_upload_folder(), format="png"))


def keep_walk(studio: Studio, animation: bytes) -> str:
    """Write a walk's GIF into the output folder; when it cannot be written (disk full),
    into Gradio's upload folder, with a warning (the file still carries its recipe)."""
    def cached() -> str:
        path = Path(tempfile.mkdtemp(dir=gr.utils.get_upload_folder())) / "walk.gif"
        path.write_bytes(animation)
        return str(path)

    return keep_or_cache(lambda: str(studio.save_walk(animation)), cached)
