"""The Gradio UI: the only package that imports gradio."""

from aigc_studio.ui.app import build_demo, launch

__all__ = ["build_demo", "launch"]
