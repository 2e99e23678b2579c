"""Inside the text model (aigc_studio/inside.py, Studio.attention): attention weights equal an
independent eager computation, are causal and sum to 1; the logit lens's last layer is the
model's own next-token distribution; bad positions, layers, heads and models are refused."""

from __future__ import annotations

import math

import pytest
import torch

from aigc_studio import inside
from aigc_studio.catalog import remote_spec
from aigc_studio.config import Settings
from aigc_studio.params import ParamError, TextParams
from aigc_studio.studio import Studio
from tests.conftest import TEXT_ID

PROMPT = "the quick brown fox"  # words the tiny model's tokenizer knows
ANSWER = "jumps over the lazy dog"
COMPLETION = TextParams(prompt_mode="completion")


@pytest.fixture(scope="module")
def s(studio) -> Studio:
    return studio()


def eager_attentions(folder, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(attentions (layers, heads, T, T), logits (T, vocab)) from a fresh eager transformers model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return torch.stack([a[0] for a in out.attentions]), out.logits[0]


def assert_causal_rows(rows: torch.Tensor, position: int) -> None:
    assert torch.allclose(rows.sum(-1), torch.ones(rows.shape[:-1]), atol=1e-4)
    assert torch.all(rows[..., position + 1:] == 0) and torch.all(rows >= 0)


# ----- the tiny Llama built from a config -----------------------------------------------------

def test_weights_are_causal_rows_summing_to_one(s):
    view = s.attention(PROMPT, COMPLETION, TEXT_ID, answer=ANSWER, position=5, layer=1, head=2)
    count = len(view["tokens"])
    assert (view["layers"], view["heads"], view["position"], count) == (2, 4, 5, 9)
    weights = torch.tensor(view["weights"])
    assert weights.shape == (2, 4, count)
    assert_causal_rows(weights, 5)
    matrix = torch.tensor(view["matrix"])
    assert matrix.shape == (count, count)
    for query in range(count):
        assert_causal_rows(matrix[query], query)
    assert torch.allclose(matrix[5], weights[1, 2], atol=1e-6)  # the matrix's row is the position's weights


def test_weights_equal_an_independent_eager_computation(s, tiny_lm_path):
    view = s.attention(PROMPT, COMPLETION, TEXT_ID, answer=ANSWER, layer=0, head=None)
    ids = [t["id"] for t in view["tokens"]]
    expected, _ = eager_attentions(tiny_lm_path, ids)
    last = len(ids) - 1
    assert view["position"] == last  # None: the last token
    assert torch.allclose(torch.tensor(view["weights"]), expected[:, :, last], atol=1e-4)
    assert torch.allclose(torch.tensor(view["matrix"]), expected[0].mean(0), atol=1e-4)  # head None: their average


def test_first_layer_equals_softmax_of_rotated_queries_and_keys(s, tiny_lm_path):
    """Layer 0 by hand: RMS-normed embeddings, q/k projections, rotary positions,
    softmax(q k^T / sqrt(d)) under the causal mask; no transformers attention code."""
    from transformers import AutoModelForCausalLM
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    view = s.attention(PROMPT, COMPLETION, TEXT_ID, layer=0, head=3)
    ids = torch.tensor([[t["id"] for t in view["tokens"]]])
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32).eval()
    config, block = model.config, model.model.layers[0]
    d = config.hidden_size // config.num_attention_heads
    with torch.inference_mode():
        x = block.input_layernorm(model.model.embed_tokens(ids))
        t = ids.shape[1]
        q = block.self_attn.q_proj(x).view(1, t, -1, d).transpose(1, 2)
        k = block.self_attn.k_proj(x).view(1, t, -1, d).transpose(1, 2)
        cos, sin = model.model.rotary_emb(x, torch.arange(t)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(config.num_attention_heads // config.num_key_value_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        by_hand = torch.softmax(scores, dim=-1)[0]
    assert torch.allclose(torch.tensor(view["matrix"]), by_hand[3], atol=1e-4)
    assert torch.allclose(torch.tensor(view["weights"])[0], by_hand[:, -1], atol=1e-4)


def test_lens_last_layer_is_the_models_own_distribution(s, tiny_lm_path):
    view = s.attention(PROMPT, COMPLETION, TEXT_ID, answer=ANSWER, position=6)
    ids = [t["id"] for t in view["tokens"]]
    _, logits = eager_attentions(tiny_lm_path, ids)
    probs = torch.softmax(logits[6], -1)
    top = torch.topk(probs, inside.LENS_TOP)
    lens = view["lens"]
    assert [row["layer"] for row in lens] == [0, 1] and all(len(row["ids"]) == inside.LENS_TOP for row in lens)
    assert lens[-1]["ids"] == top.indices.tolist()
    assert torch.allclose(torch.tensor(lens[-1]["probs"]), top.values, atol=1e-5)
    # the same token the explainer starts from: its raw stage, explaining the token after position 6
    assert view["explain_position"] == 6 - view["prompt_tokens"] + 1
    explanation = s.explain_next_token(PROMPT, COMPLETION, TEXT_ID, answer=ANSWER, position=view["explain_position"])
    raw = explanation.stages[0].probs
    assert explanation.candidate_ids[raw.index(max(raw))] == lens[-1]["ids"][0]
    assert lens[0]["probs"] != lens[-1]["probs"]  # the first layer's guess is its own


def test_chat_template_tokens_are_marked(s):
    chat = TextParams(system_prompt="write a short poem")
    view = s.attention("spring rain", chat, TEXT_ID, answer="the smell of wet earth")
    kinds = {t["text"]: t["kind"] for t in view["tokens"]}
    assert kinds["<|user|>"] == kinds["<|assistant|>"] == kinds["<|end|>"] == "template"
    assert kinds["spring"] == kinds["rain"] == "prompt" and kinds["poem"] == "system"
    assert kinds["earth"] == "answer"
    answer = [t for t in view["tokens"] if t["kind"] == "answer"]
    assert answer[0]["index"] == view["prompt_tokens"] and len(answer) == 5


def test_each_context_runs_the_model_once_and_generation_keeps_its_attention(s):
    s.attention("rain falls on the quiet town", COMPLETION, TEXT_ID)  # loaded now
    model = s.models.get(TEXT_ID, lambda: None).value.model
    generates_with = model.config._attn_implementation
    calls = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        for position in (0, 2, -1):
            s.attention("a red circle sits", COMPLETION, TEXT_ID, position=position, layer=0, head=1)
        picture = s.attention_overview("a red circle sits", COMPLETION, TEXT_ID, layer=1, head=0)
    finally:
        hook.remove()
    assert len(calls) == 1
    assert picture.size == (22 + 2 * 39, 22 + 4 * 39)  # columns are layers, rows heads
    assert generates_with == model.config._attn_implementation == "sdpa"  # eager for the view's pass only


@pytest.mark.parametrize("values, field", [
    (dict(position=9), "position"), (dict(position=-2), "position"), (dict(layer=2), "layer"),
    (dict(layer=-3), "layer"), (dict(head=4), "head"), (dict(head=-1), "head"),
])
def test_out_of_range_is_refused_naming_the_field_and_range(s, values, field):
    with pytest.raises(ParamError, match=rf"^{field}: must be .*whole number in \[0, \d\]"):
        s.attention(PROMPT, COMPLETION, TEXT_ID, answer=ANSWER, **values)


def test_a_remote_model_and_a_too_long_context_are_refused(s):
    s.catalog.add(remote_spec("somewhere", "http://127.0.0.1:9"))
    with pytest.raises(ParamError, match="^model: remote:somewhere runs on a server that sends no attention weights"):
        s.attention(PROMPT, model="remote:somewhere")
    long_answer = " ".join(["n1"] * inside.MAX_TOKENS)
    with pytest.raises(ParamError, match=f"^answer: prompt and answer must be at most {inside.MAX_TOKENS} tokens"):
        s.attention(PROMPT, COMPLETION, TEXT_ID, answer=long_answer)


def test_overview_draws_one_heat_map_per_layer_and_head():
    attentions = torch.zeros(3, 2, 4, 4)
    attentions[:, :, :, 0] = 1.0  # every token looks at the first: a dark left column
    picture = inside.overview(attentions, cell=8, gap=2, chosen=(2, 1))
    assert picture.size == (22 + 3 * 10, 22 + 2 * 10)
    assert picture.getpixel((22, 22)) == inside.INK  # layer 0, head 0: the first column
    assert picture.getpixel((22 + 7, 22)) == (255, 255, 255)  # and nothing else
    assert picture.getpixel((22 + 2 * 10 - 2, 22 + 10 + 3)) == (220, 38, 38)  # the chosen cell's frame


# ----- the embedded SmolLM2 (quality tier) ----------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Studio:
    """The embedded model, as the app runs it (ONNX int8): the view reads a torch copy."""
    settings = Settings.from_env()
    settings.preset, settings.device, settings.dtype, settings.threads = "offline", "cpu", "auto", 1
    settings.text_runtime = "auto"
    settings.output_dir = tmp_path_factory.mktemp("real-inside") / "outputs"
    return Studio(settings)


def test_embedded_model_weights_equal_eager_transformers_and_lens_matches_explainer(real):
    from aigc_studio.engines.text import converted_folder

    prompt, answer = "What is the capital of France?", "The capital of France is"
    view = real.attention(prompt, answer=answer, layer=7, head=4)
    spec = real.model_spec("text")
    assert f"{spec.id}@torch" in real.models.loaded()  # ONNX has no weights: a torch copy answered
    assert view["tokens"][0]["kind"] == "template" and view["tokens"][-1]["kind"] == "answer"
    ids = [t["id"] for t in view["tokens"]]
    expected, _ = eager_attentions(converted_folder(spec, real.settings.cache_dir), ids)
    last = len(ids) - 1
    weights = torch.tensor(view["weights"])
    assert_causal_rows(weights, last)
    assert torch.allclose(weights, expected[:, :, last], atol=1e-4)
    assert torch.allclose(torch.tensor(view["matrix"]), expected[7, 4], atol=1e-4)
    explanation = real.explain_next_token(prompt, answer=answer, position=view["explain_position"])
    raw = explanation.stages[0].probs
    assert view["lens"][-1]["tokens"][0] == explanation.candidates[raw.index(max(raw))] == " Paris"
