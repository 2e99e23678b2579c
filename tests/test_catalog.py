"""The model catalog and presets: which models a Studio may use, and which by default."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aigc_studio import catalog as catalog_module
from aigc_studio import params as knobs
from aigc_studio.catalog import (
    EMBEDDED_MODELS,
    HUB_MODELS,
    MODALITIES,
    PRESET_DEFAULTS,
    Catalog,
    ModelSpec,
    ModelUnavailableError,
    UnknownModelError,
    local_spec,
    resolve_preset,
)
from aigc_studio.config import PRESETS, Settings
from aigc_studio.studio import PARAMS_TYPES

ALL_MODELS = HUB_MODELS + EMBEDDED_MODELS
KINDS = {"text": {"causal-lm"}, "image": {"diffusers", "shapes", "vae", "gan"}, "audio": {"piper", "vits", "musicgen", "bark", "chorales"}}


@pytest.fixture
def shapes_installed(tmp_path, monkeypatch):
    """Point the catalog at an assets folder that holds the shapes model's unet/."""
    (tmp_path / "shapes-diffusion" / "unet").mkdir(parents=True)
    monkeypatch.setattr(catalog_module, "ASSETS", tmp_path)


@pytest.fixture
def shapes_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "ASSETS", tmp_path / "nothing-here")


# ----- the entries ---------------------------------------------------------------------------

def test_ids_are_unique():
    ids = [spec.id for spec in ALL_MODELS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("spec", ALL_MODELS, ids=lambda s: s.id)
def test_every_entry_is_complete(spec: ModelSpec):
    assert spec.modality in MODALITIES
    assert spec.kind in KINDS[spec.modality]
    assert spec.source in ("hub", "embedded")
    assert spec.license.strip()
    assert spec.size_mb > 0
    assert spec.description.strip()
    if spec.source == "hub":
        assert spec.location.count("/") == 1, "a hub location is an owner/name repo id"


@pytest.mark.parametrize("spec", ALL_MODELS, ids=lambda s: s.id)
def test_recommended_knobs_are_valid_knobs(spec: ModelSpec):
    checked = knobs.make(PARAMS_TYPES[spec.modality], **spec.defaults)
    for name, value in spec.defaults.items():
        assert getattr(checked, name) == value


@pytest.mark.parametrize("preset", ["hub", "offline"])
def test_every_preset_has_a_default_for_every_modality(preset):
    assert set(PRESET_DEFAULTS[preset]) == set(MODALITIES)
    for modality, model_id in PRESET_DEFAULTS[preset].items():
        spec = next(s for s in ALL_MODELS if s.id == model_id)
        assert spec.modality == modality


def test_offline_defaults_are_embedded_and_hub_defaults_are_hub():
    by_id = {s.id: s for s in ALL_MODELS}
    assert {by_id[i].source for i in PRESET_DEFAULTS["offline"].values()} == {"embedded"}
    assert {by_id[i].source for i in PRESET_DEFAULTS["hub"].values()} == {"hub"}


# ----- presets ---------------------------------------------------------------------------------

def test_hub_preset_defaults():
    catalog = Catalog.for_preset("hub")
    assert catalog.get(None, "text").id == "smollm2-360m-instruct"
    assert catalog.get(None, "image").id == "sd-turbo"
    assert catalog.get(None, "audio").id == "mms-tts-eng"


def test_offline_preset_defaults(shapes_installed):
    catalog = Catalog.for_preset("offline")
    assert catalog.get(None, "text").id == "smollm2-135m-instruct"
    assert catalog.get(None, "image").id == "shapes-diffusion"
    assert catalog.get(None, "audio").id == "piper-joe-medium"
    assert catalog.get("", "audio").id == "piper-joe-medium"


def test_offline_preset_without_the_shapes_weights_says_how_to_get_an_image_model(shapes_missing):
    catalog = Catalog.for_preset("offline")
    with pytest.raises(UnknownModelError) as caught:
        catalog.get(None, "image")
    message = str(caught.value)
    assert message.startswith("model:")
    assert "hub" in message
    # The other modalities keep their offline defaults, and hub image models stay selectable.
    assert catalog.get(None, "text").id == "smollm2-135m-instruct"
    assert catalog.get("sd-turbo", "image").source == "hub"


def test_presets_do_not_share_mutable_defaults():
    first = Catalog.for_preset("hub")
    first.add(local_spec("mine", "text", "causal-lm", Path("/tmp/mine")), default=True)
    assert first.get(None, "text").id == "mine"
    assert Catalog.for_preset("hub").get(None, "text").id == "smollm2-360m-instruct"
    assert PRESET_DEFAULTS["hub"]["text"] == "smollm2-360m-instruct"


def test_both_presets_list_every_model_when_the_hub_answers():
    for preset in ("hub", "offline"):
        catalog = Catalog.for_preset(preset, hub_online=True)
        for modality in MODALITIES:
            assert catalog.choices(modality) == [s.id for s in ALL_MODELS if s.modality == modality]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hub cache (HF_HUB_CACHE); place(repo) puts a snapshot of repo's config in it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    def place(repo_id: str, filename: str = "config.json") -> None:
        folder = tmp_path / f"models--{repo_id.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
        (folder / "snapshots" / ("0" * 40) / filename).write_text("{}")

    return place


def test_offline_lists_embedded_models_and_hub_models_in_the_local_cache_only(hub_cache):
    catalog = Catalog.for_preset("offline", hub_online=False)
    for modality in MODALITIES:
        assert catalog.choices(modality) == [s.id for s in EMBEDDED_MODELS if s.modality == modality]
    hub_cache("HuggingFaceTB/SmolLM2-360M-Instruct")
    hub_cache("stabilityai/sd-turbo", "model_index.json")
    assert catalog.choices("text") == ["smollm2-360m-instruct", "smollm2-135m-instruct"]
    assert catalog.choices("image")[0] == "sd-turbo" and "sdxl-turbo" not in catalog.choices("image")
    assert catalog.require_runnable(catalog.get("sd-turbo", "image")).id == "sd-turbo"


def test_a_hub_model_offline_is_refused_at_once_naming_what_can_run(hub_cache):
    catalog = Catalog.for_preset("offline", hub_online=False)
    spec = catalog.get("qwen2.5-1.5b-instruct", "text")  # the spec itself is still known (recipes, cards)
    with pytest.raises(ModelUnavailableError) as caught:
        catalog.require_runnable(spec)
    message = str(caught.value)
    assert message.startswith("model: qwen2.5-1.5b-instruct needs the Hub")
    assert "Qwen/Qwen2.5-1.5B-Instruct" in message and "smollm2-135m-instruct" in message
    assert isinstance(caught.value, UnknownModelError)  # every front door already translates these


def test_the_hub_is_asked_once_and_only_when_a_hub_model_is_listed(monkeypatch):
    asked = []
    monkeypatch.setattr(catalog_module, "hub_reachable", lambda: asked.append(1) or True)
    catalog = Catalog.for_preset("offline")
    catalog.require_runnable(catalog.get("piper-joe-medium", "audio"))
    assert asked == []
    assert "sd-turbo" in catalog.choices("image") and "mms-tts-eng" in catalog.choices("audio")
    assert asked == [1]


# ----- refusing ids --------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", MODALITIES)
def test_unknown_id_is_refused_with_the_known_ids(modality):
    catalog = Catalog.for_preset("hub")
    with pytest.raises(UnknownModelError) as caught:
        catalog.get("gpt-99-ultra", modality)
    message = str(caught.value)
    assert message.startswith("model:")
    assert "gpt-99-ultra" in message
    for model_id in catalog.choices(modality):
        assert model_id in message
    for other in MODALITIES:
        if other != modality:
            assert not any(model_id in message for model_id in catalog.choices(other))


def test_a_hub_repo_id_is_not_a_catalog_id():
    catalog = Catalog.for_preset("hub")
    with pytest.raises(UnknownModelError):
        catalog.get("stabilityai/sd-turbo", "image")  # the location, not the id
    assert catalog.get("sd-turbo", "image").location == "stabilityai/sd-turbo"


@pytest.mark.parametrize("model_id, modality", [("sd-turbo", "text"), ("smollm2-360m-instruct", "audio"),
                                                ("musicgen-small", "image"), ("piper-joe-medium", "text")])
def test_modality_mismatch_is_refused(model_id, modality):
    catalog = Catalog.for_preset("offline")
    with pytest.raises(UnknownModelError) as caught:
        catalog.get(model_id, modality)
    actual = next(s.modality for s in ALL_MODELS if s.id == model_id)
    assert model_id in str(caught.value)
    assert f"is a {actual} model, not {modality}" in str(caught.value)


@pytest.mark.parametrize("modality, kind", [("text", "causal-lm"), ("image", "diffusers"), ("audio", "vits")])
def test_allowlisted_ids_become_hub_specs(modality, kind):
    catalog = Catalog.for_preset("hub", allowlist=("someone/custom-model",))
    spec = catalog.get("someone/custom-model", modality)
    assert (spec.id, spec.modality, spec.kind, spec.source, spec.location) == (
        "someone/custom-model", modality, kind, "hub", "someone/custom-model")
    assert spec.license  # the UI shows something, even for a custom model
    with pytest.raises(UnknownModelError):
        catalog.get("someone/other-model", modality)


def test_allowlist_comes_from_settings(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = Settings.from_env({"AIGC_PRESET": "hub", "AIGC_ALLOWLIST": " a/one , b/two,,"})
    assert settings.allowlist == ("a/one", "b/two")
    catalog = Catalog.for_preset(settings.preset, settings.allowlist)
    assert catalog.get("b/two", "text").location == "b/two"


def test_local_spec_and_add():
    spec = local_spec("my-lm", "text", "causal-lm", Path("/models/my-lm"), license="MIT", defaults={"top_k": 5})
    assert (spec.source, spec.location, spec.license, spec.defaults) == ("local", "/models/my-lm", "MIT", {"top_k": 5})
    catalog = Catalog([], {"text": None, "image": None, "audio": None})
    with pytest.raises(UnknownModelError):
        catalog.get(None, "text")
    catalog.add(spec)
    assert catalog.get("my-lm", "text") == spec
    with pytest.raises(UnknownModelError):
        catalog.get(None, "text")
    catalog.add(spec, default=True)
    assert catalog.get(None, "text") == spec
    assert catalog.choices("text") == ["my-lm"] and catalog.choices("image") == []


# ----- resolving 'auto' -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_auto_is_offline_when_hf_hub_offline_is_set(monkeypatch, value):
    def no_network(*args, **kwargs):
        raise AssertionError("must not touch the network when HF_HUB_OFFLINE is set")

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert resolve_preset("auto") == "offline"


def test_auto_is_hub_when_the_hub_answers(monkeypatch):
    class FakeConnection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: calls.append(address) or FakeConnection())
    assert resolve_preset("auto") == "hub"
    assert calls and calls[0][0] == "huggingface.co"


def test_auto_is_offline_when_the_hub_does_not_answer(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert resolve_preset("auto") == "offline"


@pytest.mark.parametrize("preset", ["hub", "offline"])
def test_explicit_presets_are_kept(monkeypatch, preset):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_preset(preset) == preset


def test_studio_with_auto_preset_under_hf_hub_offline_uses_offline_defaults(monkeypatch, tmp_path, shapes_installed):
    from aigc_studio.studio import Studio

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    studio = Studio(Settings(preset="auto", device="cpu", cache_dir=tmp_path, output_dir=tmp_path))
    assert studio.preset == "offline"
    assert studio.model_spec("text").id == PRESET_DEFAULTS["offline"]["text"]
    assert "offline" in studio.describe() and "cpu" in studio.describe()
    assert studio.models.loaded() == []  # nothing loads until first use


# ----- settings ---------------------------------------------------------------------------------------

def test_settings_from_env(tmp_path):
    settings = Settings.from_env({
        "AIGC_PRESET": "offline", "AIGC_DEVICE": "cpu", "AIGC_DTYPE": "bfloat16", "AIGC_THREADS": "3",
        "AIGC_MEMORY_BUDGET_GB": "1.5", "AIGC_CACHE_DIR": str(tmp_path / "c"), "AIGC_OUTPUT_DIR": str(tmp_path / "o"),
        "AIGC_QUEUE_SIZE": "4", "AIGC_CONCURRENCY": "2",
    })
    assert (settings.preset, settings.device, settings.dtype, settings.threads) == ("offline", "cpu", "bfloat16", 3)
    assert settings.memory_budget_gb == 1.5
    assert (settings.cache_dir, settings.output_dir) == (tmp_path / "c", tmp_path / "o")
    assert (settings.queue_size, settings.concurrency) == (4, 2)
    assert Settings.from_env({}).preset == "auto"


@pytest.mark.parametrize("name, value", [("AIGC_PRESET", "cloud"), ("AIGC_DEVICE", "tpu"), ("AIGC_DTYPE", "int8")])
def test_bad_settings_name_the_setting_and_the_choices(name, value):
    with pytest.raises(ValueError) as caught:
        Settings.from_env({name: value})
    field = name.removeprefix("AIGC_").lower()
    assert str(caught.value).startswith(f"{field}:")
    assert value in str(caught.value)
    if name == "AIGC_PRESET":
        assert all(preset in str(caught.value) for preset in PRESETS)


def test_non_numeric_settings_name_the_variable():
    """A typo in an environment variable should say which variable, not just
    "invalid literal for int() with base 10"."""
    unnamed = {}
    for name, value in (("AIGC_THREADS", "two"), ("AIGC_MEMORY_BUDGET_GB", "8GB"), ("AIGC_QUEUE_SIZE", "many"),
                        ("AIGC_CONCURRENCY", "1.5")):
        with pytest.raises(ValueError) as caught:
            Settings.from_env({name: value})
        message = str(caught.value)
        if name not in message and name.removeprefix("AIGC_").lower() not in message:
            unnamed[name] = message
    assert not unnamed, f"errors that do not name their setting: {unnamed}"


def test_auto_honours_every_offline_switch_the_hub_libraries_honour(monkeypatch):
    """huggingface_hub treats HF_HUB_OFFLINE=1/ON/YES/TRUE (any case) and TRANSFORMERS_OFFLINE
    as offline; 'auto' must then not pick the hub preset, whose downloads would all fail."""
    class FakeConnection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: FakeConnection())
    picked = {}
    for env in ({"HF_HUB_OFFLINE": "ON"}, {"HF_HUB_OFFLINE": "on"}, {"TRANSFORMERS_OFFLINE": "1"}):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        picked[str(env)] = resolve_preset("auto")
    assert set(picked.values()) == {"offline"}, picked
