"""A real server: app.py on a free loopback port (the session's shared one), every endpoint driven with gradio_client."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from aigc_studio.recipe import RECIPE_KEY, read_recipe


@pytest.fixture(scope="module")
def client(app_client) -> Client:
    """The session's shared app.py server (tests/conftest.py)."""
    return app_client


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


API_SIGNATURE = Path(__file__).parent / "data" / "api_signature.json"


def api_signature(client: Client) -> dict:
    """Every named endpoint's parameters (name, has a default, the default, JSON type) and return types."""
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    return {name: {"parameters": [[p["parameter_name"], p["parameter_has_default"], p["parameter_default"], p["type"]]
                                  for p in endpoint["parameters"]],
                   "returns": [r["type"] for r in endpoint["returns"]]}
            for name, endpoint in sorted(endpoints.items())}


def test_the_whole_api_matches_its_saved_signature(client):
    """Endpoint names, parameters, defaults and types are a contract with API and MCP users: a
    change to them is deliberate. After one, write the file anew:
    python -c "from tests.test_app import write_api_signature; write_api_signature(URL)"."""
    assert api_signature(client) == json.loads(API_SIGNATURE.read_text())


def write_api_signature(url: str) -> None:
    API_SIGNATURE.write_text(json.dumps(api_signature(Client(url, verbose=False)), indent=1, sort_keys=True) + "\n")


def test_generate_text_streams_a_real_answer(client):
    # long enough to stream over several of the page's update intervals (streaming.STREAM_INTERVAL_S)
    job = client.submit(prompt="Tell me about Paris, the capital of France, in three paragraphs.",
                        max_new_tokens=96, seed=1, greedy=True, api_name="/generate_text")
    updates = list(job)
    answer = job.result()
    assert "Paris" in answer
    assert len(updates) > 3  # streamed, not one final blob
    grown = [u for u in updates if u and not u.startswith("Loading")]
    assert all(answer.startswith(u.strip()) or u.strip() in answer for u in grown)


def test_generate_text_is_reproducible_by_seed(client):
    kwargs = dict(prompt="Name a colour.", max_new_tokens=12, temperature=1.0, api_name="/generate_text")
    assert client.predict(seed=7, **kwargs) == client.predict(seed=7, **kwargs)


def test_compare_text_gives_each_column_its_text_label_and_numbers(client):
    *columns, numbers = client.predict(prompt="Say a word.", mode="Sweep one knob", count=2, knob_name="temperature",
                                       values="0.2, 0.9", max_new_tokens=8, seed=3, api_name="/compare_text")
    assert len(columns) == 4
    assert all(isinstance(c, str) for c in columns)  # plain text for API users, no UI updates
    assert columns[0] and columns[1] and list(columns[2:]) == ["", ""]
    assert [c["label"] for c in numbers["columns"]] == ["temperature=0.2", "temperature=0.9"]
    for column in numbers["columns"]:
        assert 1 <= column["tokens"] <= 8 and column["tokens_per_s"] > 0 and column["mean_logprob"] <= 0
    first = numbers["first_difference"]
    assert first is None or 0 <= first <= 8


def test_compare_text_streams_the_columns_together(client):
    job = client.submit(prompt="Count from one to fifty in words.", mode="Different seeds", count=2, max_new_tokens=64,
                        seed=1, api_name="/compare_text")
    updates = [update for update in job]  # every streamed update, then the final one
    assert len(updates) >= 3
    growing = [len(update[0]) for update in updates if update[0] and not update[0].startswith("Loading")]
    assert growing == sorted(growing) and growing[0] < growing[-1]  # column 1 grew token by token
    assert updates[-1][4] is not None and all(update[4] is None for update in updates[:-1])  # numbers come last


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
    ("/compare_text", dict(prompt="hi", count="abc"), "count"),
    ("/compare_image", dict(prompt="a red circle", count=9), "count"),
])
def test_bad_input_names_the_field_and_server_keeps_serving(client, endpoint, kwargs, field):
    with pytest.raises(Exception) as error:
        client.predict(api_name=endpoint, **kwargs)
    assert field in str(error.value)
    assert "Traceback" not in str(error.value)
    assert client.predict(prompt="Say yes.", max_new_tokens=2, seed=0, api_name="/generate_text")


def test_generate_audio_writes_flac_carrying_its_recipe(client):
    path = client.predict(prompt="Keep this one.", seed=2, gain_db=-3.0, file_format="flac", api_name="/generate_audio")
    assert path.endswith(".flac") and soundfile.info(path).format == "FLAC"
    recipe = read_recipe(path)
    assert (recipe.params["seed"], recipe.params["gain_db"], recipe.model_id) == (2, -3.0, "piper-joe-medium")


def test_compare_audio_refuses_to_sweep_a_knob_the_voice_ignores(client):
    with pytest.raises(AppError) as error:
        client.predict(prompt="Hello.", mode="Sweep one knob", knob_name="temperature", values="0.5, 1.5",
                       api_name="/compare_audio")
    assert str(error.value).startswith("knob_name: piper-joe-medium does not use temperature; sweep one of speed,")


def test_compare_audio_players_are_loudness_matched_and_reproducible(client):
    from aigc_studio.audio_views import loudness_db

    players = client.predict(prompt="Listen to the difference.", mode="Sweep one knob", count=2,
                             knob_name="noise_scale", values="0.1, 1.4", seed=4, api_name="/compare_audio")
    paths = [p for p in players if p]
    levels = []
    for path in paths:
        samples, rate = soundfile.read(path)
        levels.append(loudness_db(samples, rate))
    assert len(paths) == 2 and max(levels) - min(levels) < 0.2
    recipes = [read_recipe(p) for p in paths]
    assert [r.params["noise_scale"] for r in recipes] == [0.1, 1.4]
    # The gain each player got is in its recipe, so the recipe makes the same file again.
    again = client.predict(prompt=recipes[1].prompt, api_name="/generate_audio", **recipes[1].params)
    assert np.array_equal(soundfile.read(again, dtype="int16")[0], soundfile.read(paths[1], dtype="int16")[0])


def test_uploading_a_studio_file_restores_its_knobs(client):
    from gradio_client import handle_file

    from aigc_studio.ui.audio_tab import KNOBS

    path = client.predict(prompt="Restore me.", speed=1.3, seed=5, sentence_silence=0.5, file_format="flac",
                          api_name="/generate_audio")
    restored = client.predict(handle_file(path), api_name="/restore_audio_recipe")
    prompt, model, *knob_values, file_format = restored
    values = dict(zip(KNOBS, knob_values))
    assert (prompt, model, file_format) == ("Restore me.", "piper-joe-medium", "flac")
    assert (values["speed"], values["seed"], values["sentence_silence"]) == (1.3, 5, 0.5)


@pytest.mark.parametrize("content, message", [(b"not audio at all", "could not be read"), (None, "carries no studio recipe")])
def test_uploading_a_malformed_audio_file_names_the_problem(client, tmp_path, content, message):
    from gradio_client import handle_file

    path = tmp_path / "upload.wav"
    if content is None:
        soundfile.write(path, np.zeros(800, dtype=np.float32), 8000)  # a valid WAV without a recipe
    else:
        path.write_bytes(content)
    with pytest.raises(Exception) as error:
        client.predict(handle_file(str(path)), api_name="/restore_audio_recipe")
    assert "recipe file" in str(error.value) and message in str(error.value)
    assert "Traceback" not in str(error.value)


# ----- text: explainer, perplexity, presets side by side, newer knobs ----------------------------

def test_explain_next_token_gives_every_sampling_stage(client):
    explanation = client.predict(prompt="What is the capital of France?", top_k=5, top_n=8, api_name="/explain_next_token")
    stages = {s["name"]: s for s in explanation["stages"]}
    assert list(stages) == ["raw", "penalties", "temperature", "top-k", "top-p", "min-p", "typical-p"]
    assert len(explanation["candidates"]) == 8 and explanation["position"] == 0
    assert stages["raw"]["kept_tokens"] > 10_000 and stages["top-k"]["kept_tokens"] == 5
    last = stages["typical-p"]
    assert sum(p for p, kept in zip(last["probs"], last["kept"]) if kept) == pytest.approx(1.0, abs=1e-4)
    assert not any(stages["top-k"]["kept"][5:])  # the sixth likeliest and below are cut
    with pytest.raises(Exception) as error:
        client.predict(prompt="Hi", answer="Hello there", position=99, api_name="/explain_next_token")
    assert "position" in str(error.value)


def test_perplexity_of_natural_text_is_lower_than_shuffled(client):
    natural = "The cat sat on the mat and looked out of the window at the rain falling on the garden."
    shuffled = "window sat garden the on rain mat The the looked falling of cat at out the on and the."
    low = client.predict(text=natural, api_name="/perplexity")
    high = client.predict(text=shuffled, api_name="/perplexity")
    assert 1.0 < low < high


def test_attention_gives_causal_weights_matrix_and_lens(client):
    view = client.predict(prompt="What is the capital of France?", answer="The capital of France is", layer=3, head=2,
                          api_name="/attention")
    count = len(view["tokens"])
    assert view["position"] == count - 1 and (view["layer"], view["head"]) == (3, 2)
    assert view["tokens"][0]["kind"] == "template" and view["tokens"][-1]["kind"] == "answer"
    assert len(view["weights"]) == view["layers"] and len(view["weights"][0]) == view["heads"]
    assert all(abs(sum(row) - 1) < 1e-4 for rows in view["weights"] for row in rows)
    assert len(view["matrix"]) == count and view["matrix"][2][3:] == [0.0] * (count - 3)
    assert view["lens"][-1]["tokens"][0] == " Paris" and len(view["lens"]) == view["layers"]
    with pytest.raises(AppError) as error:
        client.predict(prompt="Hi", answer="Hello there", position=999, api_name="/attention")
    assert "position: must be" in str(error.value) and "Traceback" not in str(error.value)


def test_compare_text_styles_side_by_side_share_one_seed(client):
    *columns, numbers = client.predict(prompt="Describe the sea.", mode="Styles side by side", max_new_tokens=6,
                                       seed=5, min_p=0.02, api_name="/compare_text")
    assert len(columns) == 4 and all(columns[:3]) and columns[3] == ""
    assert [c["label"] for c in numbers["columns"]] == ["Precise", "Balanced", "Creative"]
    # the mode's earlier name still works for API users
    *legacy, _ = client.predict(prompt="Describe the sea.", mode="Presets side by side", max_new_tokens=6,
                                seed=5, min_p=0.02, api_name="/compare_text")
    assert legacy == columns


def test_generate_text_newer_knobs_and_positional_calls(client):
    answer = client.predict(prompt="The capital of France is", prompt_mode="completion", greedy=True,
                            stop_sequences=".", max_new_tokens=8, api_name="/generate_text")
    assert answer.strip() == "Paris"  # completion mode continues the text; the stop sequence is left out
    pirate = client.predict(prompt="Who are you?", system_prompt="You are a pirate. Always answer like a pirate.",
                            greedy=True, max_new_tokens=12, api_name="/generate_text")
    assert "Aye" in pirate or "Captain" in pirate
    positional = client.predict("Say yes.", 0.7, 50, 0.95, 4, 1.1, 0, True, api_name="/generate_text")
    assert positional == client.predict(prompt="Say yes.", max_new_tokens=4, greedy=True, api_name="/generate_text")


def test_text_and_audio_grids_over_the_api(client):
    """/text_grid: labelled cells with their figures and recipes, and the export files;
    /audio_grid: loudness-matched cells and a zip; a knob the voice ignores is refused."""
    import csv
    import zipfile

    grid, json_file, csv_file = client.predict(prompt="Name a colour.", x_knob="temperature", x_values="0.2, 1.5",
                                               y_knob="none", max_new_tokens=4, seed=5, api_name="/text_grid")
    assert grid["x_labels"] == ["temperature=0.2", "temperature=1.5"] and grid["y_labels"] == []
    assert [c["recipe"]["params"]["seed"] for c in grid["cells"]] == [5, 5]
    assert all(c["tokens"] >= 1 and c["tokens_per_s"] > 0 and c["mean_logprob"] <= 0 for c in grid["cells"])
    assert json.load(open(json_file))["cells"] == grid["cells"]
    assert [row["label"] for row in csv.DictReader(open(csv_file))] == grid["x_labels"]
    audio, archive = client.predict(prompt="One two three.", x_knob="speed", x_values="0.8, 1.4", seed=2,
                                    api_name="/audio_grid")
    levels = [c["loudness_lufs"] for c in audio["cells"]]
    assert len(levels) == 2 and abs(levels[0] - levels[1]) < 1.0
    assert len([n for n in zipfile.ZipFile(archive).namelist() if n.endswith(".wav")]) == 2
    with pytest.raises(Exception) as error:
        client.predict(prompt="hi", x_knob="guidance", x_values="1, 3", api_name="/audio_grid")
    assert "does not use guidance" in str(error.value) and "Traceback" not in str(error.value)
