"""A real server: app.py on a free loopback port, every endpoint driven with gradio_client."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from gradio_client import Client
from PIL import Image

from aigc_studio.recipe import RECIPE_KEY, read_recipe
from tests.live_server import running_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("server")) as url:
        yield Client(url, verbose=False)


def test_api_names_and_keywords_are_stable(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    expected = {
        "/generate_text": ["prompt", "temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty", "seed", "greedy"],
        "/generate_image": ["prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed"],
        "/generate_audio": ["prompt", "speed", "seed"],
    }
    for name, keywords in expected.items():
        parameters = endpoints[name]["parameters"]
        names = [p["parameter_name"] for p in parameters]
        assert names[: len(keywords)] == keywords
        # every knob is optional: only the prompt is required
        assert [p["parameter_name"] for p in parameters if not p["parameter_has_default"]] == ["prompt"]


def test_generate_text_streams_a_real_answer(client):
    job = client.submit(prompt="What is the capital of France?", max_new_tokens=24, seed=1, greedy=True,
                        api_name="/generate_text")
    updates = list(job)
    answer = job.result()
    assert "Paris" in answer
    assert len(updates) > 3  # streamed, not one final blob
    grown = [u for u in updates if u and not u.startswith("Loading")]
    assert all(answer.startswith(u.strip()) or u.strip() in answer for u in grown)


def test_generate_text_is_reproducible_by_seed(client):
    kwargs = dict(prompt="Name a colour.", max_new_tokens=12, temperature=1.0, api_name="/generate_text")
    assert client.predict(seed=7, **kwargs) == client.predict(seed=7, **kwargs)


def test_compare_text_labels_each_column(client):
    columns = client.predict(prompt="Say a word.", mode="Sweep one knob", count=2, knob_name="temperature",
                             values="0.2, 0.9", max_new_tokens=8, seed=3, api_name="/compare_text")
    assert len(columns) == 4
    assert all(isinstance(c, str) for c in columns)  # plain text for API users, no UI updates
    assert columns[0] and columns[1] and list(columns[2:]) == ["", ""]


def test_generate_image_returns_a_png_with_its_recipe(client):
    path = client.predict(prompt="a blue square", steps=10, seed=4, api_name="/generate_image")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (256, 256)
        recipe = json.loads(image.text[RECIPE_KEY])
    assert recipe["params"]["seed"] == 4 and recipe["params"]["steps"] == 10
    assert recipe["model_id"] == "shapes-diffusion"


def test_compare_image_gives_labelled_variants(client):
    gallery = client.predict(prompt="a red circle", mode="Different seeds", count=3, knob_name="guidance",
                             values="1, 3", steps=5, seed=10, api_name="/compare_image")
    assert [item["caption"] for item in gallery] == ["seed=10", "seed=11", "seed=12"]
    pixels = [np.asarray(Image.open(item["image"])) for item in gallery]
    assert not np.array_equal(pixels[0], pixels[1])  # different seeds, different images


def test_generate_audio_returns_speech_wav(client):
    path = client.predict(prompt="Hello, this is the studio speaking.", seed=1, api_name="/generate_audio")
    samples, rate = soundfile.read(path)
    assert path.endswith(".wav") and rate == 22050
    assert len(samples) / rate > 1.0
    assert np.abs(samples).max() > 0.1
    assert read_recipe(path).params["seed"] == 1


def test_compare_audio_sweeps_speed(client):
    players = client.predict(prompt="One two three four five.", mode="Sweep one knob", count=2, knob_name="speed",
                             values="0.7, 1.5", seed=2, api_name="/compare_audio")
    durations = [soundfile.info(p).duration for p in players if p]
    assert len(durations) == 2 and durations[0] > durations[1]


@pytest.mark.parametrize("endpoint, kwargs, field", [
    ("/generate_text", dict(prompt=""), "prompt"),
    ("/generate_text", dict(prompt="hi", top_k=2.5), "top_k"),
    ("/generate_image", dict(prompt="a red circle", width=100), "width"),
    ("/generate_image", dict(prompt="a purple hexagon"), "prompt"),
    ("/generate_audio", dict(prompt="hi", speed=0), "speed"),
])
def test_bad_input_names_the_field_and_server_keeps_serving(client, endpoint, kwargs, field):
    with pytest.raises(Exception) as error:
        client.predict(api_name=endpoint, **kwargs)
    assert field in str(error.value)
    assert "Traceback" not in str(error.value)
    assert client.predict(prompt="Say yes.", max_new_tokens=2, seed=0, api_name="/generate_text")
