"""Security: only catalog models, safetensors only (no pickle, no remote code),
generated output names, bounded uploads, no files served from outside the
output folder, malformed recipe files refused with a message."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from aigc_studio.catalog import Catalog, UnknownModelError, local_spec
from aigc_studio.config import Settings
from aigc_studio.recipe import RECIPE_KEY, Recipe, Result, save
from aigc_studio.studio import ModelLoadError, Studio
from aigc_studio.ui.app import MAX_UPLOAD
from tests.conftest import TINY_IMAGE_SIZE
from tests.live_server import ROOT, running_app

PATH_LIKE_IDS = ["../../etc", "/tmp/x", "..", "~/.ssh", "C:\\models\\x", "gpt2", "HuggingFaceTB/SmolLM2-360M-Instruct",
                 "smollm2-135m-instruct/../../etc", "file:///etc/passwd"]
GENERATED_NAME = re.compile(r"^(text|image|audio|grid)-\d{6}-[0-9a-f]{8}\.(json|png|wav|flac)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd_path):
    output_dir = tmp_path_factory.mktemp("security-server")
    # the operator allows one more image model: a local folder here, a Hub repo id in real use
    with running_app(output_dir, AIGC_ALLOWLIST=f"image:{tiny_sd_path}") as url:
        yield url, output_dir, Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


# ===== only catalog models ========================================================================

def test_the_python_api_refuses_ids_outside_the_catalog(tmp_path):
    studio = Studio(Settings(preset="offline", cache_dir=tmp_path / "cache", output_dir=tmp_path / "out"))
    for modality in ("text", "image", "audio"):
        for model_id in PATH_LIKE_IDS:
            with pytest.raises(UnknownModelError) as error:
                studio.params(modality, model_id)
            assert str(error.value).startswith(f"model: {model_id!r} is not in the catalog"), (modality, model_id)
    assert studio.models.loaded() == []


def test_the_allowlist_admits_exactly_the_listed_ids():
    catalog = Catalog([], {}, allowlist=("org/model",))
    assert catalog.get("org/model", "text").location == "org/model"
    for near_miss in ("org/model/../../etc", "org/model2", "ORG/MODEL", "org", "../org/model"):
        with pytest.raises(UnknownModelError):
            catalog.get(near_miss, "text")


def test_allowlist_entries_join_the_pickers_of_their_modality(tmp_path):
    catalog = Catalog([], {}, allowlist=("image:org/pictures", "org/any", "file:///etc/passwd"), hub_online=True)
    assert catalog.choices("image") == ["org/pictures", "org/any", "file:///etc/passwd"]
    assert catalog.choices("text") == ["org/any", "file:///etc/passwd"]
    # offline only a folder on disk can load: hub repos outside the local cache and ids that are
    # no repo id at all are not offered (and listing them does not fail)
    offline = Catalog([], {}, allowlist=(f"image:{tmp_path}", "org/any", "file:///etc/passwd"), hub_online=False)
    assert offline.choices("image") == [str(tmp_path)] and offline.choices("text") == []
    assert catalog.get("org/pictures", "image").location == "org/pictures"
    with pytest.raises(UnknownModelError):
        catalog.get("org/pictures", "text")
    with pytest.raises(UnknownModelError):
        catalog.get("image:org/pictures", "image")


def test_an_allowlisted_model_generates_over_the_gradio_api(server, tiny_sd_path):
    _, output_dir, client = server
    path = client.predict(prompt="a cat", model=str(tiny_sd_path), steps=2, width=TINY_IMAGE_SIZE,
                          height=TINY_IMAGE_SIZE, seed=1, api_name="/generate_image")
    picture = Image.open(path)
    assert picture.size == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert json.loads(picture.text[RECIPE_KEY])["model_id"] == str(tiny_sd_path)
    with pytest.raises(AppError, match="^model: .* is not in the catalog"):  # allowed for images only
        client.predict(prompt="hi", model=str(tiny_sd_path), api_name="/generate_text")


def test_the_gradio_api_refuses_unknown_and_path_like_model_ids(server):
    _, _, client = server
    cases = [("/generate_text", dict(prompt="hi", max_new_tokens=2)),
             ("/generate_image", dict(prompt="a red circle", steps=2)),
             ("/generate_audio", dict(prompt="hi"))]
    for api_name, kwargs in cases:
        for model_id in PATH_LIKE_IDS:
            with pytest.raises(AppError) as error:
                client.predict(api_name=api_name, model=model_id, **kwargs)
            message = str(error.value)
            assert message.startswith("model:") and "is not in the catalog; choose one of" in message, message
    assert client.predict(prompt="Say yes.", max_new_tokens=2, seed=0, api_name="/generate_text")


# ===== safetensors only, no remote code, no pickle ==================================================

def pickle_only(folder: Path, cls, safetensors: str, pickle_name: str) -> None:
    """Swap a model's safetensors weights in folder for a pickled state dict."""
    module = cls.from_pretrained(folder)
    (folder / safetensors).unlink()
    torch.save(module.state_dict(), folder / pickle_name)


@pytest.fixture(scope="module")
def pickled(tiny_lm_path, tiny_sd_path, tiny_vits_path, tmp_path_factory):
    """A studio whose catalog holds a text, an image and an audio model with only pickle checkpoints."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, LlamaForCausalLM, VitsModel

    folder = tmp_path_factory.mktemp("pickled")
    lm = shutil.copytree(tiny_lm_path, folder / "lm")
    vits = shutil.copytree(tiny_vits_path, folder / "vits")
    sd = shutil.copytree(tiny_sd_path, folder / "sd")
    for where, cls, safetensors, pickle_name in [
        (lm, LlamaForCausalLM, "model.safetensors", "pytorch_model.bin"),
        (vits, VitsModel, "model.safetensors", "pytorch_model.bin"),
        (sd / "unet", UNet2DConditionModel, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
        (sd / "vae", AutoencoderKL, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
        (sd / "text_encoder", CLIPTextModel, "model.safetensors", "pytorch_model.bin"),
    ]:
        pickle_only(where, cls, safetensors, pickle_name)
    assert not list(folder.rglob("*.safetensors")) and len(list(folder.rglob("*.bin"))) == 5
    catalog = Catalog([local_spec("pickled-lm", "text", "causal-lm", lm),
                       local_spec("pickled-sd", "image", "diffusers", sd),
                       local_spec("pickled-vits", "audio", "vits", vits)],
                      {"text": "pickled-lm", "image": "pickled-sd", "audio": "pickled-vits"})
    settings = Settings(preset="offline", device="cpu", cache_dir=folder / "cache", output_dir=folder / "out")
    return Studio(settings, catalog=catalog), lm


@pytest.fixture
def unpickling(monkeypatch):
    """Every torch.load call, recorded (and still carried out)."""
    calls = []
    real = torch.load

    def recorded(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("f"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recorded)
    return calls


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_a_model_with_only_pickle_checkpoints_is_refused_unopened(pickled, unpickling, modality):
    studio, _ = pickled
    with pytest.raises(ModelLoadError) as error:
        studio.load(modality)
    message = str(error.value)
    assert message.startswith(f"model: could not load pickled-") and "safetensors" in message, message
    assert unpickling == [], "a pickle checkpoint was opened"
    assert studio.models.loaded() == []


def test_the_pickle_refusal_is_the_studios_doing(pickled, unpickling):
    """Without use_safetensors=True, transformers would unpickle the same folder:
    the refusal above comes from the studio's flag, not from a broken folder."""
    from transformers import AutoModelForCausalLM

    _, lm = pickled
    AutoModelForCausalLM.from_pretrained(lm)
    assert [Path(str(f)).name for f in unpickling] == ["pytorch_model.bin"]


def source_calls(attribute: str):
    """(file, ast.Call) for every call of `.attribute(...)` in the studio's own code."""
    for path in sorted((ROOT / "aigc_studio").rglob("*.py")) + [ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute:
                yield path.relative_to(ROOT), node


def keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return ast.literal_eval(kw.value) if isinstance(kw.value, ast.Constant) else kw.value
    return None


WEIGHT_CLASSES = re.compile(r"(Model|Pipeline|Autoencoder|ForCausalLM|ForConditionalGeneration|ForText2Image)")


def test_every_weight_load_in_the_code_asks_for_safetensors_and_none_trusts_remote_code():
    loads = list(source_calls("from_pretrained"))
    assert len(loads) >= 8  # the scan sees the engines' loads
    for path, call in loads:
        receiver = ast.unparse(call.func.value)
        assert keyword(call, "trust_remote_code") in (None, False), f"{path}:{call.lineno} trusts remote code"
        if WEIGHT_CLASSES.search(receiver) and keyword(call, "gguf_file") is None:  # GGUF is not pickle
            assert keyword(call, "use_safetensors") is True, f"{path}:{call.lineno} {receiver} may load pickle weights"


def test_nothing_in_the_code_unpickles():
    for path in sorted((ROOT / "aigc_studio").rglob("*.py")) + [ROOT / "app.py"]:
        tree = ast.parse(path.read_text())
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        imported = {alias.name for node in imports for alias in node.names}
        imported |= {node.module for node in imports if isinstance(node, ast.ImportFrom)}
        assert not imported & {"pickle", "cPickle", "dill", "joblib", "shelve"}, f"{path} imports an unpickler"
    unpicklers = [f"{path}:{call.lineno}" for path, call in source_calls("load")
                  if ast.unparse(call.func.value) in ("torch", "pickle")]
    assert unpicklers == [], "torch.load / pickle.load in the studio's code"


# ===== outputs: generated names under the output folder ==============================================

def test_saved_files_get_generated_names_whatever_the_prompt(tmp_path):
    for prompt in ("../../../../tmp/evil", "/etc/passwd", "a\x00b", "con.png", "x" * 300):
        recipe = Recipe("text", "m", prompt, {}, "cpu", "float32")
        path = save(Result("hello", recipe), tmp_path / "out")
        assert path.resolve().parent.parent == (tmp_path / "out").resolve()
        assert GENERATED_NAME.match(path.name), path.name


def test_server_outputs_land_in_the_output_folder_under_generated_names(server):
    _, output_dir, client = server
    client.predict(prompt="a red circle ../../../../tmp/x", steps=2, seed=1, api_name="/generate_image")
    client.predict(prompt="../../etc/passwd", seed=1, api_name="/generate_audio")
    written = [p for p in output_dir.rglob("*") if p.is_file() and p.name != "server.log"]
    assert len(written) >= 2
    for path in written:
        assert GENERATED_NAME.match(path.name), path
        assert path.resolve().is_relative_to(output_dir.resolve())


@pytest.mark.parametrize("target", ["/etc/passwd", str(ROOT / "app.py"), str(ROOT / "aigc_studio" / "config.py")])
def test_the_server_serves_no_file_outside_the_output_folder(server, target):
    url, _, _ = server
    for route in (f"gradio_api/file={target}", f"file={target}"):
        response = httpx.get(url + route)
        assert response.status_code in (403, 404), (route, response.status_code)
        assert "root:" not in response.text and "import" not in response.text


# ===== uploads =====================================================================================

def upload_limit_bytes() -> int:
    number, unit = re.fullmatch(r"(\d+)(kb|mb|gb)", MAX_UPLOAD).groups()
    return int(number) * {"kb": 2**10, "mb": 2**20, "gb": 2**30}[unit]


def test_uploads_above_the_limit_are_refused_and_the_server_keeps_serving(server, tmp_path):
    url, _, client = server
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (upload_limit_bytes() + 2**20))
    with open(big, "rb") as f:
        response = httpx.post(url + "gradio_api/upload", files={"files": ("big.wav", f, "audio/wav")}, timeout=120)
    assert response.status_code == 413, response.text
    assert "maximum allowed size" in response.text
    small = tmp_path / "small.wav"
    small.write_bytes(b"RIFF")
    with open(small, "rb") as f:
        assert httpx.post(url + "gradio_api/upload", files={"files": ("small.wav", f, "audio/wav")}).status_code == 200
    assert client.predict(prompt="Say yes.", max_new_tokens=2, seed=0, api_name="/generate_text")


def studio_wav(path: Path, recipe: dict | str | None) -> Path:
    """A WAV whose comment field holds `recipe` (JSON for a dict; none at all for None)."""
    with soundfile.SoundFile(path, "w", samplerate=8000, channels=1, format="WAV", subtype="PCM_16") as f:
        if recipe is not None:
            f.comment = recipe if isinstance(recipe, str) else json.dumps(recipe)
        f.write(np.zeros(800, dtype=np.float32))
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not a wav at all" * 100)
    return path


GOOD_RECIPE = dict(modality="audio", model_id="piper-joe-medium", prompt="hello", params={"speed": 1.0, "seed": 3},
                   device="cpu", dtype="float32")


@pytest.mark.parametrize("name, make, field", [
    ("garbage", garbage, "recipe file"),
    ("no-recipe", lambda p: studio_wav(p, None), "recipe file"),
    ("not-json", lambda p: studio_wav(p, "{modality: audio"), "recipe"),
    ("path-like-model", lambda p: studio_wav(p, {**GOOD_RECIPE, "model_id": "../../etc"}), "model"),
    ("image-recipe", lambda p: studio_wav(p, {**GOOD_RECIPE, "modality": "image"}), "recipe file"),
    ("bad-knob", lambda p: studio_wav(p, {**GOOD_RECIPE, "params": {"speed": 1e9}}), "speed"),
    ("wrong-types", lambda p: studio_wav(p, {**GOOD_RECIPE, "params": ["speed"]}), "recipe"),
])
def test_malformed_recipe_files_are_refused_with_a_message(server, tmp_path, name, make, field):
    _, _, client = server
    path = make(tmp_path / f"{name}.wav")
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(path)), api_name="/restore_audio_recipe")
    message = str(error.value)
    assert message.startswith(f"{field}") and "Traceback" not in message, message
    restored = client.predict(handle_file(str(studio_wav(tmp_path / "good.wav", GOOD_RECIPE))),
                              api_name="/restore_audio_recipe")
    assert restored[0] == "hello" and restored[1] == "piper-joe-medium"
