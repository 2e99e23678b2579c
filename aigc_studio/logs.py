"""The studio's log: one format for every entry point, request ids for errors, and
no library warnings that nobody running the studio can act on.

    from aigc_studio import logs
    logs.configure()                    # once, in app.py or `python -m aigc_studio`
    request = logs.new_request_id()     # e.g. "a1b2c3": in the log line and in the user's message
"""

from __future__ import annotations

import logging
import uuid

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Library messages dropped by logger name and a phrase of the message, each with the
# reason nobody can act on it. Anything else a library says still shows.
NOISE = {
    # diffusers imports transformers' CLIP/SigLIP image processors; without torchvision
    # transformers falls back to the PIL ones, which is all the studio needs.
    "transformers.utils.import_utils": ("requires torchvision (not installed)",),
}


class DropPhrases(logging.Filter):
    """Drops the records whose message contains one of `phrases`."""

    def __init__(self, phrases: tuple[str, ...]):
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self.phrases)


def configure(level: int = logging.INFO) -> None:
    """Send the studio's own messages (at `level`) and every library's warnings to
    stderr in one format, minus NOISE. Safe to call more than once."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)  # does nothing if the root has a handler
    logging.getLogger("aigc_studio").setLevel(level)
    for name, phrases in NOISE.items():
        library = logging.getLogger(name)
        if not any(isinstance(f, DropPhrases) for f in library.filters):
            library.addFilter(DropPhrases(phrases))


def new_request_id() -> str:
    """A short random id that ties a log line to the message a user was shown."""
    return uuid.uuid4().hex[:6]


def one_line(text: str) -> str:
    """text with line breaks escaped, so user input cannot start a fake log line."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
