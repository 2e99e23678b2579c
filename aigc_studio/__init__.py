"""AIGC Studio: generate text, images and audio, turn the knobs, see what they do."""

from aigc_studio.studio import Studio

__all__ = ["Studio"]
__version__ = "0.1.0"
