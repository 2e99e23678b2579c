"""The onnx-int8 recipe for Llama-family models (engines/text_int8.py).

Plumbing on a tiny random Llama with 16-wide heads (ONNX Runtime's attention needs a multiple
of 16), converted here; fidelity on the real embedded model, converted once into the studio cache.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest
import torch

from aigc_studio.catalog import Catalog
from aigc_studio.config import Settings
from aigc_studio.engines import text as text_engine
from aigc_studio.engines import text_int8
from aigc_studio.engines.text_backends import (
    BUILD_OPTIONS, CONVERTED_MARKER, OnnxBackend, conversion_options, convert_to_onnx,
)
from aigc_studio.params import TextParams
from tests.conftest import build_onnx_text_model

# other requests than the calibration's and the fidelity bench's
HELD_OUT_PROMPTS = ["Name three colours.", "How do bees make honey?", "Write two sentences about a winter morning.",
                    "What is a good name for a grey cat?", "Explain what a database index is.",
                    "Give me tips for a job interview.", "Write a haiku about the ocean.", "Why do we have seasons?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_onnx_text_model(tmp_path_factory.mktemp("int8-lm"))


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory) -> Path:
    return convert_to_onnx(tiny, tmp_path_factory.mktemp("int8-cache") / "int8", "onnx-int8", report=lambda _: None)


def test_smoothing_keeps_the_function_and_moves_the_scale_into_the_weights(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.inference_mode():
        before = model(ids).logits
    batches = text_int8.calibration_ids(model, AutoTokenizer.from_pretrained(tiny))
    assert len(batches) == len(text_int8.CALIBRATION_PROMPTS) and all(b.shape[1] > 1 for b in batches)
    norm = model.model.layers[0].input_layernorm.weight.detach().clone()
    text_int8.smooth(model, text_int8.input_statistics(model, batches, text_int8.channel_maxima))
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, before, atol=1e-4)
    assert not torch.allclose(model.model.layers[0].input_layernorm.weight, norm)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # untied to be scaled


def test_gate_up_takes_a_constant_activation_scale_and_every_other_product_int8_blocks(tiny, converted):
    graph = onnx.load(str(converted / "model.onnx"), load_external_data=False).graph
    layers = json.loads((tiny / "config.json").read_text())["num_hidden_layers"]
    ops = Counter(node.op_type for node in graph.node)
    assert ops["MatMulIntegerToFloat"] == ops["QuantizeLinear"] == layers
    assert ops["MatMulNBits"] == 3 * layers + 1  # qkv, o, down in every layer, and the head
    assert "MatMul" not in ops and "DynamicQuantizeLinear" not in ops  # no float product, no per-batch scale
    constants = {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            assert node.input[1] in constants and node.input[2] in constants
    marker = json.loads((converted / CONVERTED_MARKER).read_text())
    assert marker["options"] == [*BUILD_OPTIONS, f"int8_recipe={text_int8.RECIPE}"]


def test_each_row_of_a_batch_gets_the_logits_of_a_lone_run_bit_for_bit(converted):
    backend = OnnxBackend(converted, "onnx-int8", threads=1)
    prompt, tokens = torch.tensor([[1, 5, 9, 13]]), torch.tensor([3, 7, 11, 20])
    batch = backend.decoder()
    batch.prefill(prompt, rows=4)
    together = batch.step(tokens)
    for row, token in enumerate(tokens):
        lone = backend.decoder()
        lone.prefill(prompt)
        assert torch.equal(lone.step(token.reshape(1)), together[row:row + 1])


@pytest.mark.unit  # reads a config.json, converts nothing
def test_other_model_families_keep_the_builders_int8(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gemma"}))  # its norms scale by 1 + weight: not foldable so
    assert conversion_options("onnx-int8", tmp_path) == BUILD_OPTIONS
    config.write_text(json.dumps({"model_type": "llama"}))
    assert conversion_options("onnx-int8", tmp_path) == (*BUILD_OPTIONS, f"int8_recipe={text_int8.RECIPE}")
    assert conversion_options("onnx-fp32", tmp_path) == BUILD_OPTIONS


@pytest.mark.quality  # the embedded model's real weights
def test_the_embedded_model_in_int8_agrees_with_transformers_fp32_on_unseen_prompts():
    spec = Catalog.for_preset("offline").get(None, "text")
    cache = Settings.from_env().cache_dir
    load = lambda runtime: text_engine.load(spec, "cpu", torch.float32, cache, lambda _: None, runtime=runtime,
                                            threads=1)
    reference, int8 = load("torch"), load("onnx-int8")
    assert int8.runtime == "onnx-int8" and not int8.runtime_note
    agree = []
    for prompt in HELD_OUT_PROMPTS:
        params = TextParams(greedy=True, max_new_tokens=40, repetition_penalty=1.0, seed=0)
        answer = [token.id for _, token in text_engine.generate(reference, prompt, [params])]
        prompt_ids = text_engine.encode_prompt(reference, prompt)
        ids = torch.cat([prompt_ids, torch.tensor([answer])], dim=1)
        start = prompt_ids.shape[1] - 1  # the logits that predict the answer's tokens
        expected, got = (model.backend.logits(ids)[start:-1].argmax(-1) for model in (reference, int8))
        agree += (expected == got).tolist()
    assert sum(agree) / len(agree) >= 0.95, f"top-1 agreement {sum(agree) / len(agree):.3f} over {len(agree)} positions"
