"""Builds the Blocks page (header + one tab per modality) and launches it."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request

from aigc_studio import storage
from aigc_studio.studio import Studio
from aigc_studio.ui import api, audio_tab, history_tab, image_tab, text_tab, tune_tab
from aigc_studio.ui.session import Sessions

CSS = """
#header h1 { margin-bottom: 0; }
"""
# Uploads are studio PNG/WAV/FLAC files carrying a recipe (a few MB at most);
# anything bigger is refused by Gradio with HTTP 413 before it reaches a handler.
MAX_UPLOAD = "20mb"
RETRY_AFTER_S = 5  # what a refused client is told to wait (the Retry-After header)


def build_demo(studio: Studio) -> gr.Blocks:
    sessions = Sessions(studio.history)  # every tab's kept results also go into the History tab
    # Gradio deletes the files it cached once they are keep_hours old (hourly), and forgets
    # their paths: on a Space that runs for weeks neither the disk nor that list grows.
    keep_seconds = int(studio.settings.keep_hours * 3600)
    with gr.Blocks(title="AIGC Studio", delete_cache=(min(3600, keep_seconds), keep_seconds)) as demo:
        intro = "# AIGC Studio\nGenerate text, images and audio; turn the knobs and see what they do. Running: "
        header = gr.Markdown(intro + f"preset **{studio.preset}** · …", elem_id="header")
        # The device line needs torch (seconds to import): the page answers first, the line follows.
        demo.load(lambda: intro + studio.describe(), outputs=header, api_visibility="private", queue=False)
        api.register(studio)  # the public endpoints (and MCP tools); the tabs' events are private
        browser = history_tab.browser_state()  # the History tab's browser id, read at each page load
        with gr.Tabs() as tabs:
            hooks = {"text": text_tab.build(studio, sessions)}
            hooks["image"] = image_tab.build(studio, sessions)
            hooks["audio"] = audio_tab.build(studio, sessions)
            hooks["tune"] = tune_tab.build(studio, sessions)
            history_tab.build(studio, demo, tabs, hooks, browser)
    return demo


def busy_message(queue_size: int) -> str:
    return (f"busy: the studio is serving others and {queue_size} requests are already waiting; "
            f"please try again in a few seconds.")


def busy_handler(queue_size: int):
    """Gradio refuses a request when its queue is full with HTTP 503 and "Queue is full.
    Max size is N and size is N."; this says it for people (and adds Retry-After).
    The page shows its own "This application is currently busy. Please try again.";
    gradio_client raises QueueError("Queue is full! Please try again.")."""

    async def handle(request: Request, error: HTTPException):
        if error.status_code == 503 and str(error.detail).startswith("Queue is full"):
            return JSONResponse({"detail": busy_message(queue_size)}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return await http_exception_handler(request, error)

    return handle


def start_pruning(settings) -> None:
    """Prune the output folder and Gradio's upload cache by age and size while the server runs."""
    storage.start_janitor([
        storage.Budget(settings.output_dir, settings.keep_hours, settings.max_output_mb),
        storage.Budget(Path(gr.utils.get_upload_folder()), settings.keep_hours, settings.max_cache_mb),
    ])


def launch(demo: gr.Blocks, studio: Studio, **kwargs):
    """Queue with the configured limits and serve; GRADIO_SERVER_NAME/PORT apply.

    At most settings.queue_size requests wait (AIGC_QUEUE_SIZE; one more is refused
    at once with a "busy, try again" message) and each modality runs at most
    settings.concurrency generations at a time (AIGC_CONCURRENCY): a tab's buttons and
    the public endpoints of that modality share one concurrency group. Uploads above
    MAX_UPLOAD are refused; only files under the output folder are served.
    The MCP server (tools built from ui/api.py) is served at /gradio_api/mcp/ unless
    settings.mcp is off (AIGC_MCP=0). With settings.openai_api (AIGC_OPENAI_API=1) the
    OpenAI protocol is served at /v1 (aigc_studio/openai_api.py), on the same server.
    Returns what gr.Blocks.launch returns (with prevent_thread_lock=True, it does not block).
    """
    settings = studio.settings
    start_pruning(settings)
    kwargs.setdefault("mcp_server", settings.mcp)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    app_kwargs = {"exception_handlers": {HTTPException: busy_handler(settings.queue_size)}}
    if settings.openai_api:  # FastAPI(routes=...): Gradio builds its app with these first
        from aigc_studio import openai_api

        app_kwargs["routes"] = openai_api.router(studio).routes
    return demo.launch(theme=gr.themes.Soft(), css=CSS, max_file_size=MAX_UPLOAD, app_kwargs=app_kwargs,
                       allowed_paths=[str(settings.output_dir.resolve())], footer_links=["api", "gradio"], **kwargs)
