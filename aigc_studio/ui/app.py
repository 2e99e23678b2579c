"""Builds the Blocks page (header + one tab per modality) and launches it."""

from __future__ import annotations

import gradio as gr

from aigc_studio.studio import Studio
from aigc_studio.ui import audio_tab, image_tab, text_tab
from aigc_studio.ui.widgets import Sessions

CSS = """
#header h1 { margin-bottom: 0; }
"""


def build_demo(studio: Studio) -> gr.Blocks:
    sessions = Sessions()
    with gr.Blocks(title="AIGC Studio") as demo:
        gr.Markdown(f"# AIGC Studio\nGenerate text, images and audio; turn the knobs and see what they do. "
                    f"Running: {studio.describe()}", elem_id="header")
        with gr.Tabs():
            text_tab.build(studio, sessions)
            image_tab.build(studio, sessions)
            audio_tab.build(studio, sessions)
    return demo


def launch(demo: gr.Blocks, studio: Studio, **kwargs) -> None:
    """Queue with the configured limits and serve; GRADIO_SERVER_NAME/PORT apply."""
    settings = studio.settings
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency)
    demo.launch(theme=gr.themes.Soft(), css=CSS, max_file_size="20mb",
                allowed_paths=[str(settings.output_dir.resolve())], footer_links=["api", "gradio"], **kwargs)
