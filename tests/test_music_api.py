"""The chorale model through a real server (aigc_studio/ui/music_api.py and /generate_audio):
audio, its MIDI, the next-note explainer and bad input, over the shipped bach-chorales weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile
from gradio_client import Client, handle_file

from aigc_studio import music_render
from aigc_studio.recipe import read_recipe

KNOBS = dict(model="bach-chorales", seed=5, bars=2, key="G minor", timbre="choir", tempo=100)


@pytest.fixture(scope="module")
def client(app_client) -> Client:
    """The session's shared app.py server (tests/conftest.py)."""
    return app_client


def test_generate_audio_plays_a_chorale_in_stereo_with_its_midi_beside_it(client, app_server):
    path = client.predict(prompt="A chorale", api_name="/generate_audio", **KNOBS)
    info = soundfile.info(path)
    assert info.channels == 2 and 4.0 < info.duration < 7.0  # 2 bars of 4/4 at 100 BPM: 4.8 s and the release
    recipe = read_recipe(path)
    assert recipe.model_id == "bach-chorales" and recipe.params["key"] == "G minor" and recipe.params["bars"] == 2
    kept = list(Path(app_server[1]).rglob(f"{Path(path).stem}.mid"))
    midi = client.predict(prompt="A chorale", api_name="/generate_music_midi", **KNOBS)
    assert len(kept) == 1 and kept[0].read_bytes() == Path(midi).read_bytes()


def test_generate_music_midi_is_the_same_bytes_for_the_same_seed(client):
    first = Path(client.predict(prompt="Chorale", seed=9, bars=1, api_name="/generate_music_midi")).read_bytes()
    again = Path(client.predict(prompt="Chorale", seed=9, bars=1, api_name="/generate_music_midi")).read_bytes()
    other = Path(client.predict(prompt="Chorale", seed=10, bars=1, api_name="/generate_music_midi")).read_bytes()
    assert first == again != other
    assert music_render.read_midi_recipe(first)["params"]["seed"] == 9


def test_explain_music_note_gives_the_sampling_stages(client):
    result = client.predict(prompt="Chorale", position=4, seed=9, bars=1, top_p=0.9, top_n=5,
                            api_name="/explain_music_note")
    names = [s["name"] for s in result["stages"]]
    assert names[:5] == ["raw", "penalties", "temperature", "top-k", "top-p"]
    assert result["chosen_id"] in result["candidate_ids"]
    raw, top_p = result["stages"][0], result["stages"][names.index("top-p")]
    assert 26 <= raw["kept_tokens"] <= 27  # the soprano's 25 pitches, rest, and hold if a note sounds: the masks
    assert top_p["kept_tokens"] < raw["kept_tokens"] and top_p["setting"] == "0.9"


@pytest.mark.parametrize("kwargs, field", [
    (dict(bars=0), "bars"), (dict(bars=10000), "bars"), (dict(tempo=0), "tempo"), (dict(key="H major"), "key"),
])
def test_bad_music_knobs_name_the_field_and_range(client, kwargs, field):
    with pytest.raises(Exception) as error:
        client.predict(prompt="Chorale", model="bach-chorales", api_name="/generate_audio", **kwargs)
    assert f"{field}:" in str(error.value) and "Traceback" not in str(error.value)
    with pytest.raises(Exception) as error:
        client.predict(prompt="Chorale", api_name="/generate_music_midi", **kwargs)
    assert f"{field}:" in str(error.value)


def _lines(start: str) -> list[list[str]]:
    return [[item for item in line.split() if item != "|"] for line in start.splitlines()]


def test_a_piece_continues_its_first_bars_read_back_from_its_midi(client):
    first = client.predict(prompt="Chorale", seed=3, bars=2, key="G minor", api_name="/generate_music_midi")
    read = client.predict(midi=handle_file(first), api_name="/start_from_midi")
    assert read["metre"] == "4/4" and read["bars"] == 2 and len(_lines(read["start"])) == 4
    longer = client.predict(prompt="Chorale", seed=4, bars=4, key="G minor", start=read["start"],
                            api_name="/generate_music_midi")
    again = client.predict(midi=handle_file(longer), api_name="/start_from_midi")
    assert again["bars"] == 4
    assert [line[:16] for line in _lines(again["start"])] == _lines(read["start"])  # the given bars, unchanged


def test_a_melody_is_harmonised_note_for_note(client):
    melody = "G4 - A4 - Bb4 - C5 - | D5 - - - C5 - Bb4 - | A4 - - - G4 - - -"
    midi = client.predict(prompt="Chorale", seed=1, bars=3, key="G minor", start=melody,
                          api_name="/generate_music_midi")
    read = client.predict(midi=handle_file(midi), api_name="/start_from_midi")
    lines = _lines(read["start"])
    assert len(lines) == 4 and lines[0] == _lines(melody)[0]  # the soprano is the melody; three voices added
    assert music_render.read_midi_recipe(Path(midi).read_bytes())["params"]["start"] == melody


def test_bad_starts_name_the_field(client, tmp_path):
    not_midi = tmp_path / "song.mid"
    not_midi.write_text("this is not MIDI")
    with pytest.raises(Exception) as error:
        client.predict(midi=handle_file(str(not_midi)), api_name="/start_from_midi")
    assert "midi:" in str(error.value) and "Traceback" not in str(error.value)
    for start, words in (("H5 - -", "is not a note"), ("C5\nC4", "four lines"), ("C7", "range")):
        with pytest.raises(Exception) as error:
            client.predict(prompt="Chorale", bars=1, start=start, api_name="/generate_music_midi")
        assert "start:" in str(error.value) and words in str(error.value)
