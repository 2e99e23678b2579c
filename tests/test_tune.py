"""Fine-tuning (issue 16): the data split and its limits, a LoRA adapter that is the same for
the same seed, Stop keeping the last adapter, the adapter in the catalog as <base>+<name>
(generating, explained, restored from its folder) on the tiny model; one short real run on
the embedded SmolLM2 that lowers the held-out perplexity."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aigc_studio import tune
from aigc_studio.catalog import UnknownModelError
from aigc_studio.params import ParamError, TextParams, TuneParams, make
from aigc_studio.ui.session import Sessions
from tests.conftest import CORPUS, TEXT_ID, drain

DATA = Path(__file__).resolve().parent / "data" / "austen_pride_and_prejudice.txt"
SMALL = dict(steps=6, batch_size=2, sequence_length=16, eval_every=3, rank=4, alpha=8, learning_rate=0.01)


def corpus_text(lines: int = 60, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join(rng.choice(CORPUS) for _ in range(lines))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


# ----- the data ------------------------------------------------------------------------------

def test_read_texts_joins_paste_and_files(tmp_path):
    (tmp_path / "a.md").write_text("# notes\nthe quiet town", encoding="utf-8")
    text = tune.read_texts("the lazy dog", [tmp_path / "a.md"])
    assert text == "the lazy dog\n\n# notes\nthe quiet town"


def test_read_texts_names_encoding_errors_and_limits(tmp_path):
    latin = tmp_path / "letter.txt"
    latin.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(tune.TuneError, match=r"letter.txt: not UTF-8 text \(byte 3"):
        tune.read_texts("", [latin])
    pdf = tmp_path / "book.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(tune.TuneError, match="book.pdf: only .txt and .md"):
        tune.read_texts("", [pdf])
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (tune.MAX_FILE_BYTES + 1))
    with pytest.raises(tune.TuneError, match="big.txt: 1,000,001 bytes"):
        tune.read_texts("", [big])
    with pytest.raises(tune.TuneError, match="paste some text"):
        tune.read_texts("  \n ", [])
    with pytest.raises(tune.TuneError, match="at most 1,000,000"):
        tune.read_texts("a" * (tune.MAX_TEXT_CHARS + 1))


def test_tune_params_are_validated():
    with pytest.raises(ParamError, match=r"rank: must be a number in \[1, 256\]"):
        make(TuneParams, rank=0)
    with pytest.raises(ParamError, match="learning_rate"):
        make(TuneParams, learning_rate=1.5)
    assert make(TuneParams, steps="12").steps == 12


def test_split_holds_out_a_fixed_fraction_by_seed(studio):
    s = studio()
    with s._use(s.model_spec("text")) as text_model:
        tokenizer = text_model.tokenizer
    text = corpus_text(200)
    params = make(TuneParams, sequence_length=16, seed=1)
    data = tune.split(text, tokenizer, params)
    total = len(tokenizer(text, add_special_tokens=False).input_ids) // 16
    assert data.train.shape[0] + data.heldout.shape[0] == total
    assert data.heldout.shape[0] == max(1, round(tune.HELDOUT_FRACTION * total)) and data.heldout.shape[1] == 16
    assert data.train_tokens == data.train.shape[0] * 16
    again = tune.split(text, tokenizer, params)
    assert torch.equal(again.heldout, data.heldout) and torch.equal(again.train, data.train)
    other = tune.split(text, tokenizer, make(TuneParams, sequence_length=16, seed=2))
    assert not torch.equal(other.heldout, data.heldout)
    with pytest.raises(tune.TuneError, match="too short: 5 tokens make 0 blocks"):
        tune.split("the quick brown fox jumps", tokenizer, params)


# ----- training ------------------------------------------------------------------------------

def test_same_seed_data_and_knobs_give_the_same_adapter(studio):
    text = corpus_text()
    first = studio().fine_tune(text, TEXT_ID, make(TuneParams, seed=3, **SMALL), name="a")
    second = studio().fine_tune(text, TEXT_ID, make(TuneParams, seed=3, **SMALL), name="a")
    other = studio().fine_tune(text, TEXT_ID, make(TuneParams, seed=4, **SMALL), name="a")
    one, two, three = weights(first.folder), weights(second.folder), weights(other.folder)
    assert one.keys() == two.keys() and len(one) > 0
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not all(torch.equal(one[k], three[k]) for k in one)
    assert first.perplexity_after == second.perplexity_after
    recipe = json.loads((first.folder / tune.TUNE_RECIPE).read_text())
    assert recipe["base_model"] == TEXT_ID and recipe["runtime"] == "torch" and recipe["params"]["seed"] == 3
    assert recipe["data_hash"] == first.recipe["data_hash"] and len(recipe["data_hash"]) == 64
    assert recipe["versions"]["peft"] == "0.21.2" and recipe["steps_done"] == 6
    assert [step for step, _ in recipe["perplexity_history"]] == [0, 3, 6]


def test_training_lowers_heldout_perplexity_on_the_tiny_model(studio):
    result = studio().fine_tune(corpus_text(200), TEXT_ID, make(TuneParams, **{**SMALL, "steps": 40, "eval_every": 20}),
                                name="learns")
    assert result.perplexity_after < 0.85 * result.perplexity_before


def test_stop_keeps_the_adapter_of_the_last_finished_step(studio):
    stop = threading.Event()
    seen = []

    def on_progress(progress):
        seen.append(progress)
        if progress.step == 3:
            stop.set()

    text = corpus_text()
    stopped = studio().fine_tune(text, TEXT_ID, make(TuneParams, seed=5, **{**SMALL, "steps": 20}), name="s",
                                 on_progress=on_progress, stop=stop)
    assert stopped.stopped and stopped.steps_done == 3 and stopped.recipe["stopped"]
    assert [p.step for p in seen if p.loss is not None] == [1, 2, 3]
    assert seen[0].step == 0 and seen[0].perplexity == stopped.perplexity_before
    assert seen[-1].perplexity == stopped.perplexity_after
    three = studio().fine_tune(text, TEXT_ID, make(TuneParams, seed=5, **{**SMALL, "steps": 3}), name="s")
    kept, full = weights(stopped.folder), weights(three.folder)
    assert all(torch.equal(kept[k], full[k]) for k in kept)


def test_the_adapter_joins_the_catalog_generates_and_is_listed_after_a_restart(studio, caplog):
    s = studio()
    result = s.fine_tune(corpus_text(200), TEXT_ID, make(TuneParams, **{**SMALL, "steps": 20}), name="mine")
    assert result.adapter == f"{TEXT_ID}+mine" and result.adapter in s.catalog.choices("text")
    spec = s.model_spec("text", result.adapter)
    assert spec.source == "adapter" and spec.base.id == TEXT_ID
    answer = s.text("the quick brown", model=result.adapter, seed=7, max_new_tokens=6, prompt_mode="completion")
    assert answer.recipe.model_id == result.adapter and answer.recipe.runtime == "torch"
    assert len(answer.output.split()) >= 1
    # the tuned model scores the held-out text as training measured it (merged weights, same numbers)
    base_ppl, _ = s.perplexity("the quick brown fox jumps over the lazy dog", TEXT_ID)
    tuned_ppl, _ = s.perplexity("the quick brown fox jumps over the lazy dog", result.adapter)
    assert tuned_ppl != pytest.approx(base_ppl, rel=1e-3)
    explained = s.explain_next_token("the quick brown", TextParams(seed=1, prompt_mode="completion"), result.adapter)
    assert len(explained.candidates) == 10
    base, tuned = s.text_by_model("the quick brown", [TEXT_ID, result.adapter],
                                  TextParams(seed=11, max_new_tokens=6, prompt_mode="completion"))
    assert base.recipe.params["seed"] == tuned.recipe.params["seed"] == 11
    assert tuned.output == s.text("the quick brown", model=result.adapter, seed=11, max_new_tokens=6,
                                  prompt_mode="completion").output

    # a restart over the same output folder lists it again; unreadable folders are skipped with one line each
    broken = s.settings.output_dir / "adapters" / "broken"
    broken.mkdir()
    (broken / tune.ADAPTER_WEIGHTS).write_bytes(b"not weights")
    (broken / tune.TUNE_RECIPE).write_text("{not json")
    orphan = s.settings.output_dir / "adapters" / "orphan"
    orphan.mkdir()
    for name in (tune.ADAPTER_WEIGHTS, tune.ADAPTER_CONFIG):
        (orphan / name).write_bytes((result.folder / name).read_bytes())
    (orphan / tune.TUNE_RECIPE).write_text(json.dumps({**result.recipe, "base_model": "gone", "name": "orphan"}))
    with caplog.at_level("WARNING"):
        restarted = studio(output_dir=s.settings.output_dir)
    assert [m for m in restarted.catalog.choices("text") if "+" in m] == [result.adapter]
    assert restarted.model_spec("text", result.adapter).base.id == TEXT_ID
    skipped = [r.getMessage() for r in caplog.records if "skipped the adapter folder" in r.getMessage()]
    assert len(skipped) == 2 and any("broken" in m and "not valid JSON" in m for m in skipped)
    assert any("orphan" in m and "'gone' is not in the catalog" in m for m in skipped)
    again = restarted.text("the quick brown", model=result.adapter, seed=7, max_new_tokens=6, prompt_mode="completion")
    assert again.output == answer.output


def test_an_adapter_whose_base_is_unknown_or_without_safetensors_is_refused(studio, tmp_path):
    s = studio()
    result = s.fine_tune(corpus_text(), TEXT_ID, make(TuneParams, **{**SMALL, "steps": 1}), name="orphan")
    recipe_file = result.folder / tune.TUNE_RECIPE
    recipe = json.loads(recipe_file.read_text())
    recipe_file.write_text(json.dumps({**recipe, "base_model": "no-such-model"}))
    fresh = studio()
    with pytest.raises(UnknownModelError, match="'no-such-model' is not in the catalog"):
        fresh.load_adapter(result.folder)
    assert not any("+orphan" in m for m in fresh.catalog.choices("text"))
    recipe_file.write_text(json.dumps(recipe))
    (result.folder / "adapter_model.safetensors").rename(result.folder / "adapter_model.bin")
    with pytest.raises(tune.TuneError, match="safetensors only"):
        fresh.load_adapter(result.folder)
    with pytest.raises(ParamError, match="name: must be 1-40"):
        s.fine_tune(corpus_text(), TEXT_ID, make(TuneParams, **SMALL), name="../evil")


# ----- the embedded model, for real ------------------------------------------------------------

def test_a_short_real_run_lowers_heldout_perplexity(tmp_path_factory):
    from aigc_studio.catalog import EMBEDDED_MODELS
    from aigc_studio.config import Settings
    from aigc_studio.studio import Studio

    settings = Settings.from_env()
    settings.preset, settings.device, settings.dtype, settings.threads = "offline", "cpu", "auto", 1
    settings.text_runtime = "torch"
    settings.output_dir = tmp_path_factory.mktemp("real-tune") / "outputs"
    s = Studio(settings)
    base = EMBEDDED_MODELS[0].id
    text = DATA.read_text(encoding="utf-8")[:12_000]
    params = make(TuneParams, steps=10, batch_size=2, sequence_length=64, learning_rate=2e-3, eval_every=5, seed=0)
    result = s.fine_tune(text, base, params, name="austen")
    assert result.perplexity_after < 0.95 * result.perplexity_before
    answer = s.text("It is a truth", model=result.adapter, seed=1, max_new_tokens=8, prompt_mode="completion")
    assert answer.recipe.runtime == "torch" and answer.output


# ----- the page and the API ----------------------------------------------------------------------

def test_the_tune_tab_and_the_api_endpoint_use_the_studio(studio):
    import gradio as gr

    from aigc_studio.ui import text_api
    from aigc_studio.ui.app import build_demo

    s = studio()
    demo = build_demo(s)
    names = {fn.api_name: fn for fn in demo.fns.values()}
    assert "fine_tune_text" in names and names["fine_tune_text"].concurrency_id == "tune"
    assert any(getattr(block, "id", None) == "tune" for block in demo.blocks.values() if isinstance(block, gr.Tab))
    updates = drain(text_api.fine_tune_text(corpus_text(200), TEXT_ID, rank=4, alpha=8, learning_rate=0.01, steps=2, seed=1,
                                      name="viaapi", method="full"))
    assert [u["step"] for u in updates[:-1]] == [0, 1, 2] and updates[0]["perplexity"] is not None
    final = updates[-1]
    assert final["adapter"] == f"{TEXT_ID}+viaapi" and final["train_tokens"] > final["heldout_tokens"] > 0
    assert final["method"] == "full" and (s.settings.output_dir / "adapters" / final["adapter"] / tune.FULL_WEIGHTS).is_file()
    assert final["perplexity_after"] != final["perplexity_before"]
    answer = list(text_api.generate_text("the quick brown", model=final["adapter"], seed=1, max_new_tokens=3,
                                    prompt_mode="completion"))
    assert answer and answer[-1] == s.text("the quick brown", model=final["adapter"], seed=1, max_new_tokens=3,
                                           prompt_mode="completion").output
    with pytest.raises(gr.Error, match="rank"):
        drain(text_api.fine_tune_text("the quick brown fox", TEXT_ID, rank=0))


def test_the_tab_handlers_stream_the_curve_compare_and_restore(studio, tmp_path):
    from aigc_studio.ui import tune_tab
    from aigc_studio.ui.session import Sessions

    s = studio()
    updates = drain(tune_tab.train(s, Sessions(s.history), None, corpus_text(200), None, TEXT_ID, 4, 8, 0.01, 3, 2, 16,
                                   1, 2, "tab"))
    status, plot, summary, picker = updates[-1]
    assert status == "Done." and list(plot["step"]) == [1, 2, 3] and plot["loss"].notna().all()
    # the tune joins the history; Restore brings back its base, name and knobs into the Tune tab
    [entry] = s.history.entries(None)
    assert (entry.tab, entry.model, entry.file_state) == ("tune", TEXT_ID, "kept")
    assert entry.path.endswith("tune_recipe.json") and f"{TEXT_ID}+tab" in entry.first_line
    import gradio as gr
    with gr.Blocks():
        hook = tune_tab.build(s, Sessions(s.history))
    restored = tune_tab.restore_tune(s, hook, entry.recipe)
    assert len(restored) == len(hook["outputs"]) == 3 + len(hook["knobs"])
    assert restored[:3] == [TEXT_ID, "tab", "lora"]
    assert dict(zip(hook["knobs"], restored[3:])) == {"rank": 4, "alpha": 8, "steps": 3, "batch_size": 2,
                                                      "sequence_length": 16, "eval_every": 2,
                                                      "learning_rate": 0.01, "seed": 1}
    assert f"{TEXT_ID}+tab" in summary and "runs on torch" in summary and picker["value"] == f"{TEXT_ID}+tab"
    base, tuned = tune_tab.compare(s, "the quick brown", f"{TEXT_ID}+tab", 5, 4)
    assert tuned == s.text("the quick brown", model=f"{TEXT_ID}+tab", seed=5, max_new_tokens=4,
                           prompt_mode="completion").output
    assert base == s.text("the quick brown", model=TEXT_ID, seed=5, max_new_tokens=4, prompt_mode="completion").output
    folder = s.settings.output_dir / "adapters" / f"{TEXT_ID}+tab"
    fresh = studio()
    message, picker = tune_tab.load_adapter(fresh, [str(folder / name) for name in tune_tab.ADAPTER_FILES])
    assert f"{TEXT_ID}+tab" in message and picker["choices"] == [f"{TEXT_ID}+tab"]
    with pytest.raises(gr.Error, match="upload exactly"):
        tune_tab.load_adapter(fresh, [str(folder / "adapter_config.json")])


# ----- full fine-tuning and restarts ------------------------------------------------------------

def test_full_fine_tuning_is_reproducible_runs_and_is_refused_when_too_big(studio):
    from aigc_studio.ui import tune_tab

    text = corpus_text()
    full = dict(SMALL, method="full", learning_rate=1e-3, steps=3)
    first = studio().fine_tune(text, TEXT_ID, make(TuneParams, seed=3, **full), name="all")
    s = studio()  # the same knobs through the Tune tab's handler
    *_, (status, _, summary, _) = drain(tune_tab.train(s, Sessions(), None, text, None, TEXT_ID, 4, 8, 1e-3, 3, 2, 16,
                                                       3, 3, "all", "full"))
    assert status == "Done." and "(every weight tuned)" in summary
    folder = s.settings.output_dir / "adapters" / f"{TEXT_ID}+all"
    one, two = (load_file(str(f / tune.FULL_WEIGHTS)) for f in (first.folder, folder))
    assert not (first.folder / tune.ADAPTER_WEIGHTS).exists() and len(one) > 0
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert first.recipe["kind"] == "full" and first.recipe["trained_parameters"] > 0
    assert first.perplexity_after != first.perplexity_before
    # it runs like any tuned model, on its own weights (not the base's), and restores from its two files
    adapter = f"{TEXT_ID}+all"
    spec = s.model_spec("text", adapter)
    assert spec.source == "adapter" and "Fully fine-tuned" in spec.description
    tuned_ppl, _ = s.perplexity("the quick brown fox jumps over the lazy dog", adapter)
    base_ppl, _ = s.perplexity("the quick brown fox jumps over the lazy dog", TEXT_ID)
    assert tuned_ppl != pytest.approx(base_ppl, rel=1e-4)
    answer = s.text("the quick brown", model=adapter, seed=2, max_new_tokens=4, prompt_mode="completion").output
    fresh = studio()
    message, _ = tune_tab.load_adapter(fresh, [str(folder / name) for name in tune_tab.FULL_FILES])
    assert adapter in message
    assert fresh.text("the quick brown", model=adapter, seed=2, max_new_tokens=4, prompt_mode="completion").output == answer
    with pytest.raises(ParamError, match=r"method: full fine-tuning of .* memory budget of 0\.0 GiB.*use method 'lora'"):
        studio(memory_budget_gb=1e-4).fine_tune(text, TEXT_ID, make(TuneParams, **full), name="big")
    with pytest.raises(ParamError, match="method: must be one of lora, full"):
        make(TuneParams, method="qlora")

