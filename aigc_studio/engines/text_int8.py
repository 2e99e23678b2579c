"""The onnx-int8 conversion of Llama-family models: SmoothQuant, then int8 with two kinds of product.

Run as a child process by text_backends.convert_to_onnx (it loads the model twice over):

    python -m aigc_studio.engines.text_int8 SOURCE OUT

1. SmoothQuant (Xiao et al., 2022): each projection's input channels are divided by a
   per-channel factor that is multiplied back into its weights, folded into the RMSNorm
   weights (and v_proj / up_proj rows) in front. Exact in floating point; it moves this
   model's activation outliers into the weights, where int8 blocks hold them better.
2. The onnxruntime-genai builder writes the smoothed model in fp32.
3. Every product becomes MatMulNBits (int8 weights in blocks of 32, int8 compute) except the
   MLP's gate/up product, the largest: its activations are quantised with one calibrated
   scale per layer (QuantizeLinear) and multiplied by per-channel int8 weights
   (MatMulIntegerToFloat, ONNX Runtime's integer GEMM).
   A constant scale keeps each batch row independent of the others (side-by-side columns
   equal lone runs), and ONNX Runtime's integer GEMM tiles rows: 4 rows cost ~1.5 x one row
   instead of ~1.65 x (bench/text_speed.py, README's performance section).

On SmolLM2-135M: top-1 agreement with transformers fp32 0.963 on the fidelity bench's prompts,
0.965 on 16 others (the builder's plain int8: 0.954 and 0.953). Models of other families keep
the builder's int8 (`smoothable`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

SMOOTHABLE_TYPES = ("llama", "mistral", "qwen2")  # RMSNorm weight * x, separate q/k/v and gate/up/down
SMOOTHING_ALPHA = 0.65  # 0.5 and 0.8 measured lower agreement (README)
BLOCK_SIZE = 32
GATE_UP = "/mlp/gate_up_proj/MatMul"  # the builder's node name with fuse_mlp_gate_up=true
RECIPE = "smoothquant-0.65+static-gate-up"  # recorded in the conversion marker: a new recipe converts again

# Calibration: the model's own greedy answers to these requests (unlike the fidelity bench's prompts,
# bench/text_fidelity.py). Its own answers calibrate better than written ones: top-1 agreement 0.965
# against 0.942 on 16 other prompts (README).
CALIBRATION_PROMPTS = [
    "Tell me about the history of the bicycle.", "Write a poem about autumn leaves.",
    "How do I sort a list in Python?", "What is photosynthesis?", "Plan a three-day trip to Rome.",
    "Explain the rules of chess briefly.", "Write a letter to a friend who moved away.",
    "What causes earthquakes?", "Summarise the plot of a detective novel you invent.",
    "List five uses for a paperclip.",
]
CALIBRATION_TOKENS = 100


def smoothable(config: dict) -> bool:
    """Whether this recipe applies to a model with this config.json (else: the builder's int8)."""
    return config.get("model_type") in SMOOTHABLE_TYPES


@torch.inference_mode()
def calibration_ids(model, tokenizer) -> list[torch.Tensor]:
    """Each calibration prompt with the model's greedy answer, as token ids (1 x L each).

    The answers are generated as one left-padded batch; the padding is dropped from the result."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             if tokenizer.chat_template else p + "\n" for p in CALIBRATION_PROMPTS]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=CALIBRATION_TOKENS, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    padding = (batch.attention_mask == 0).sum(1)
    answers = out[:, batch.input_ids.shape[1]:]
    return [torch.cat([ids[pad:], answer[answer != tokenizer.pad_token_id]])[None]
            for ids, pad, answer in zip(batch.input_ids, padding.tolist(), answers)]


@torch.inference_mode()
def input_statistics(model, batches: list[torch.Tensor], reduce) -> dict[str, torch.Tensor]:
    """reduce(previous, x) over the inputs x (positions x channels) of every Linear, running the
    batches (1 x L each) one by one; keyed by the Linear's module name."""
    stats: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args):
            stats[name] = reduce(stats.get(name), args[0].reshape(-1, args[0].shape[-1]))
        return record

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        for ids in batches:
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return stats


def channel_maxima(previous, x):
    amax = x.abs().amax(0)
    return amax if previous is None else torch.maximum(previous, amax)


def tensor_range(previous, x):
    """(min, max) over all positions but the first: the first token's activations are the model's
    attention sink, orders of magnitude above the rest, and would stretch the scale for every other
    (clipping them at run time measured better: README)."""
    x = x[1:]
    low, high = x.min().reshape(1), x.max().reshape(1)
    return torch.cat([low, high]) if previous is None else torch.cat([torch.minimum(previous[:1], low),
                                                                       torch.maximum(previous[1:], high)])


def _factors(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    return (x_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


def _input_factors(x_max: torch.Tensor, linears, alpha: float) -> torch.Tensor:
    w_max = torch.cat([layer.weight.abs() for layer in linears], 0).amax(0)
    return _factors(x_max, w_max, alpha)


@torch.no_grad()
def smooth(model, x_max: dict[str, torch.Tensor], alpha: float = SMOOTHING_ALPHA) -> None:
    """SmoothQuant in place: the same function, activation outliers moved into the weights.

    x_max: per-channel maxima of |input| of every Linear (`input_statistics` with
    `channel_maxima`). The output head is untied from the embedding so that it can be scaled."""
    config = model.config
    groups = config.num_attention_heads // config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for i, layer in enumerate(model.model.layers):
        attn, mlp, prefix = layer.self_attn, layer.mlp, f"model.layers.{i}."
        s = _input_factors(x_max[prefix + "self_attn.q_proj"], [attn.q_proj, attn.k_proj, attn.v_proj], alpha)
        layer.input_layernorm.weight.div_(s)
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
            linear.weight.mul_(s)
        s = _input_factors(x_max[prefix + "mlp.gate_proj"], [mlp.gate_proj, mlp.up_proj], alpha)
        layer.post_attention_layernorm.weight.div_(s)
        for linear in (mlp.gate_proj, mlp.up_proj):
            linear.weight.mul_(s)
        s = _input_factors(x_max[prefix + "mlp.down_proj"], [mlp.down_proj], alpha)
        mlp.up_proj.weight.div_(s[:, None])  # down's input is silu(gate) * up: scaling up's rows scales it
        mlp.down_proj.weight.mul_(s)
        # o_proj's input channel (h, d) carries v's channel (h // groups, d): one factor per value channel
        x = x_max[prefix + "self_attn.o_proj"].reshape(config.num_key_value_heads, groups, head_dim).amax(1)
        w = attn.o_proj.weight.abs().amax(0).reshape(config.num_key_value_heads, groups, head_dim).amax(1)
        s = _factors(x, w, alpha)
        attn.v_proj.weight.div_(s.reshape(-1)[:, None])
        if attn.v_proj.bias is not None:
            attn.v_proj.bias.div_(s.reshape(-1))
        attn.o_proj.weight.mul_(s[:, None, :].expand(-1, groups, -1).reshape(-1))
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    s = _input_factors(x_max["lm_head"], [model.lm_head], alpha)
    model.model.norm.weight.div_(s)
    model.lm_head.weight.mul_(s)


def smooth_folder(source: Path, out: Path) -> dict[int, tuple[float, float]]:
    """Write the smoothed model of `source` to `out` (safetensors + tokenizer) and return each
    layer's calibrated (min, max) of the gate/up product's input."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, use_safetensors=True,
                                                 trust_remote_code=False).eval()
    batches = calibration_ids(model, tokenizer)
    smooth(model, input_statistics(model, batches, channel_maxima))
    ranges = input_statistics(model, batches, tensor_range)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for extra in source.iterdir():  # chat template, generation config: whatever the builder reads
        if extra.is_file() and not (out / extra.name).exists() and not extra.name.startswith("model"):
            shutil.copy(extra, out / extra.name)
    return {i: tuple(ranges[f"model.layers.{i}.mlp.gate_proj"].tolist()) for i in range(len(model.model.layers))}


def _activation_quantization(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 scale and zero point for values in [low, high] (the range always holds 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    return np.array(scale, np.float32), np.array(np.clip(np.round(-low / scale), 0, 255), np.uint8)


def _is_gate_up(node) -> bool:
    return node.op_type == "MatMul" and node.name.endswith(GATE_UP)


def quantize(fp32: Path, out: Path, gate_up_ranges: dict[int, tuple[float, float]]) -> None:
    """Write fp32/model.onnx to out/model.onnx with the products quantised as described above."""
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(fp32 / "model.onnx"))
    nbits = MatMulNBitsQuantizer(model, bits=8, block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=4,
                                 nodes_to_exclude=[n.name for n in model.graph.node if _is_gate_up(n)])
    nbits.process()
    graph = nbits.model.model.graph
    weights = {w.name: w for w in graph.initializer}
    nodes = []
    for node in graph.node:
        if not _is_gate_up(node):
            nodes.append(node)
            continue
        layer = int(node.name.split("/layers.")[1].split("/")[0])
        x, w_name = node.input
        initializer = weights.pop(w_name)
        graph.initializer.remove(initializer)
        w = numpy_helper.to_array(initializer).astype(np.float32)  # K x N
        w_scale = np.abs(w).max(0) / 127.0
        w_scale[w_scale == 0] = 1.0
        w_int8 = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        a_scale, a_zero = _activation_quantization(*gate_up_ranges[layer])
        name = node.name
        graph.initializer.extend([
            numpy_helper.from_array(w_int8, f"{name}/weight_int8"),
            numpy_helper.from_array(np.zeros(w.shape[1], np.int8), f"{name}/weight_zero_point"),
            numpy_helper.from_array(w_scale.astype(np.float32), f"{name}/weight_scale"),
            numpy_helper.from_array(a_scale, f"{name}/input_scale"),
            numpy_helper.from_array(a_zero, f"{name}/input_zero_point"),
        ])
        # ONNX Runtime's MatMulIntegerToFloat: the integer GEMM with the scales applied as it writes
        # its output (MatMulInteger + Cast + Mul would add two nodes and an int32 buffer per layer)
        nodes += [
            helper.make_node("QuantizeLinear", [x, f"{name}/input_scale", f"{name}/input_zero_point"],
                             [f"{name}/input_uint8"], name=f"{name}/QuantizeLinear"),
            helper.make_node("MatMulIntegerToFloat",
                             [f"{name}/input_uint8", f"{name}/weight_int8", f"{name}/input_scale",
                              f"{name}/weight_scale", f"{name}/input_zero_point", f"{name}/weight_zero_point"],
                             list(node.output), name=f"{name}/MatMulIntegerToFloat", domain="com.microsoft"),
        ]
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.save(nbits.model.model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")


def convert(source: Path, out: Path, run_builder: Callable[[Path, Path, str], None]) -> None:
    """The whole recipe: `source` (a safetensors folder) -> `out` (the builder's files, int8).

    run_builder(source, out, precision) runs the onnxruntime-genai model builder."""
    smoothed, fp32 = out.with_name(out.name + ".smoothed"), out.with_name(out.name + ".fp32")
    try:
        ranges = smooth_folder(source, smoothed)
        run_builder(smoothed, fp32, "fp32")
        out.mkdir(parents=True)
        for extra in fp32.iterdir():
            if not extra.name.startswith("model.onnx"):
                shutil.copy(extra, out / extra.name)
        quantize(fp32, out, ranges)
    finally:
        shutil.rmtree(smoothed, ignore_errors=True)
        shutil.rmtree(fp32, ignore_errors=True)


if __name__ == "__main__":
    from aigc_studio.engines.text_backends import run_builder  # the entry point wires the builder in

    convert(Path(sys.argv[1]), Path(sys.argv[2]), run_builder)
    print(json.dumps({"converted": sys.argv[2]}))
