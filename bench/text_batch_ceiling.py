"""Why 4 side-by-side columns cost more than 1.6 x one column on ONNX Runtime (CPU, 1 thread).

A batched step reads the weights once, so a memory-bound step should cost little more with
4 rows. Two kernels decide it, each measured alone here on the embedded model's shapes:
- MatMulNBits (int8 weights, blocks of 32, `accuracy_level` 4 = int8 compute): with the
  weights hot in cache, each extra row costs a fixed share of one row's time, whatever the
  number of rows (no multi-row tiling), so 4 rows pay the int8 arithmetic 4 times;
- the attention: GroupQueryAttention (the builder's op, the cache written in place) against
  the two other ways ONNX Runtime 1.31 offers with an in-place cache: TensorScatter writes
  the new position, then FusedMatMul / Softmax / MatMul with each key-value head's 3 query
  heads as one product; or TensorScatter and the ONNX Attention op (opset 24).
Timings of isolated kernels, hot in cache; bench/text_profile.py gives the same split inside
the whole model. Prints `key=value` lines last.
    python bench/text_batch_ceiling.py [--reps 60]
"""

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# SmolLM2-135M: hidden 576, 9 query heads and 3 key-value heads of 64, MLP 1536, vocabulary 49,152
SHAPES = {"qkv_proj": (576, 960), "o_proj": (576, 576), "gate_up_proj": (576, 3072), "down_proj": (1536, 576),
          "lm_head": (576, 49152)}
LAYERS, HEADS, KV_HEADS, HEAD_SIZE = 30, 9, 3, 64
CONTEXT, CAPACITY = 100, 128  # positions attended to; cache room (the studio doubles it as needed)


def session(nodes, inputs, outputs, initializers) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializers)
    model = helper.make_model(graph, ir_version=10,
                              opset_imports=[helper.make_opsetid("", 24), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def tensor(name: str, shape) -> helper.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def median_ms(run, reps: int) -> float:
    run()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


# ----- the matrix products ---------------------------------------------------------------------

def matmul_nbits(k: int, n: int) -> ort.InferenceSession:
    """One int8 MatMulNBits as the model builder writes it (symmetric, blocks of 32, int8 compute)."""
    rng = np.random.default_rng(0)
    blocks = k // 32
    weights = rng.integers(0, 256, size=(n, blocks, 32), dtype=np.uint8)
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.01)
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft", K=k, N=n, bits=8,
                            block_size=32, accuracy_level=4)
    return session([node], [tensor("A", ["M", k])], [tensor("Y", ["M", n])],
                   [numpy_helper.from_array(weights, "B"), numpy_helper.from_array(scales, "scales")])


def matmul_rows(reps: int) -> dict[str, list[float]]:
    """ms of each projection for 1, 2, 3 and 4 rows."""
    results = {}
    for name, (k, n) in SHAPES.items():
        product = matmul_nbits(k, n)
        activations = np.random.default_rng(1).standard_normal((4, k)).astype(np.float32)
        results[name] = [median_ms(lambda: product.run(None, {"A": activations[:rows]}), reps) for rows in (1, 2, 3, 4)]
    return results


# ----- the attention ----------------------------------------------------------------------------

def attention_model(kind: str) -> ort.InferenceSession:
    """30 layers' attention for one new position: `gqa`, `matmul` or `onnx_attention`."""
    packed = (HEADS + 2 * KV_HEADS) * HEAD_SIZE
    cache = ["rows", KV_HEADS, CAPACITY, HEAD_SIZE]
    rng = np.random.default_rng(0)
    constants = {"cos": rng.random((2048, HEAD_SIZE // 2), dtype=np.float32),
                 "sin": rng.random((2048, HEAD_SIZE // 2), dtype=np.float32),
                 "splits": np.array([HEADS * HEAD_SIZE, KV_HEADS * HEAD_SIZE, KV_HEADS * HEAD_SIZE], np.int64),
                 "kv_shape": np.array([0, 1, KV_HEADS, HEAD_SIZE], np.int64),
                 "grouped_q": np.array([0, KV_HEADS, HEADS // KV_HEADS, HEAD_SIZE], np.int64),
                 "heads_q": np.array([0, 1, HEADS, HEAD_SIZE], np.int64),
                 "out_shape": np.array([0, 1, HEADS * HEAD_SIZE], np.int64)}
    inputs = [tensor("qkv", ["rows", 1, packed])]
    if kind == "gqa":
        inputs += [helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["rows"]),
                   helper.make_tensor_value_info("total", TensorProto.INT32, [])]
    else:
        inputs += [helper.make_tensor_value_info("position", TensorProto.INT64, ["rows", 1]),
                   helper.make_tensor_value_info("write_at", TensorProto.INT64, ["rows"]),
                   tensor("bias", ["rows", 1, 1, CAPACITY]),
                   helper.make_tensor_value_info("kv_length", TensorProto.INT64, ["rows"])]
    nodes, outputs = [], []
    for layer in range(LAYERS):
        def n(name: str) -> str:
            return f"{name}{layer}"
        inputs += [tensor(n("past_k"), cache), tensor(n("past_v"), cache)]
        outputs += [tensor(n("out"), ["rows", 1, HEADS * HEAD_SIZE]), tensor(n("k"), cache), tensor(n("v"), cache)]
        if kind == "gqa":
            nodes.append(helper.make_node(
                "GroupQueryAttention", ["qkv", "", "", n("past_k"), n("past_v"), "seqlens_k", "total", "cos", "sin"],
                [n("out"), n("k"), n("v")], domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS,
                scale=HEAD_SIZE ** -0.5, do_rotary=1))
            continue
        nodes += [
            helper.make_node("Split", ["qkv", "splits"], [n("q_new"), n("k_new"), n("v_new")], axis=-1),
            helper.make_node("RotaryEmbedding", [n("q_new"), "position", "cos", "sin"], [n("q_rot")],
                             domain="com.microsoft", num_heads=HEADS),
            helper.make_node("RotaryEmbedding", [n("k_new"), "position", "cos", "sin"], [n("k_rot")],
                             domain="com.microsoft", num_heads=KV_HEADS),
            helper.make_node("Reshape", [n("k_rot"), "kv_shape"], [n("k_heads")]),
            helper.make_node("Transpose", [n("k_heads")], [n("k_step")], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [n("v_new"), "kv_shape"], [n("v_heads")]),
            helper.make_node("Transpose", [n("v_heads")], [n("v_step")], perm=[0, 2, 1, 3]),
            helper.make_node("TensorScatter", [n("past_k"), n("k_step"), "write_at"], [n("k")]),
            helper.make_node("TensorScatter", [n("past_v"), n("v_step"), "write_at"], [n("v")])]
        if kind == "matmul":  # each key-value head's 3 query heads as one (3 x 64) product
            nodes += [
                helper.make_node("Reshape", [n("q_rot"), "grouped_q"], [n("q")]),
                helper.make_node("FusedMatMul", [n("q"), n("k")], [n("scores")], domain="com.microsoft", transB=1,
                                 alpha=HEAD_SIZE ** -0.5),
                helper.make_node("Add", [n("scores"), "bias"], [n("masked")]),
                helper.make_node("Softmax", [n("masked")], [n("probs")], axis=-1),
                helper.make_node("MatMul", [n("probs"), n("v")], [n("mixed")]),
                helper.make_node("Reshape", [n("mixed"), "out_shape"], [n("out")])]
        else:
            nodes += [
                helper.make_node("Reshape", [n("q_rot"), "heads_q"], [n("q_heads")]),
                helper.make_node("Transpose", [n("q_heads")], [n("q")], perm=[0, 2, 1, 3]),
                helper.make_node("Attention", [n("q"), n("k"), n("v"), "", "", "", "kv_length"], [n("mixed")],
                                 scale=HEAD_SIZE ** -0.5),
                helper.make_node("Transpose", [n("mixed")], [n("mixed_t")], perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", [n("mixed_t"), "out_shape"], [n("out")])]
    return session(nodes, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in constants.items()])


def attention_ms(model: ort.InferenceSession, kind: str, rows: int, reps: int) -> float:
    """ms of one step of 30 layers' attention, the caches bound as both past and present."""
    binding = model.io_binding()
    rng = np.random.default_rng(2)
    binding.bind_cpu_input("qkv", rng.standard_normal((rows, 1, (HEADS + 2 * KV_HEADS) * HEAD_SIZE)).astype(np.float32))
    if kind == "gqa":
        binding.bind_cpu_input("seqlens_k", np.full(rows, CONTEXT - 1, np.int32))
        binding.bind_cpu_input("total", np.array(CONTEXT, np.int32))
    else:
        bias = np.zeros((rows, 1, 1, CAPACITY), np.float32)
        bias[..., CONTEXT:] = -np.inf
        binding.bind_cpu_input("position", np.full((rows, 1), CONTEXT - 1, np.int64))
        binding.bind_cpu_input("write_at", np.full(rows, CONTEXT - 1, np.int64))
        binding.bind_cpu_input("bias", bias)
        binding.bind_cpu_input("kv_length", np.full(rows, CONTEXT, np.int64))
    keep = []
    for layer in range(LAYERS):
        for past, present in ((f"past_k{layer}", f"k{layer}"), (f"past_v{layer}", f"v{layer}")):
            value = ort.OrtValue.ortvalue_from_numpy(
                rng.standard_normal((rows, KV_HEADS, CAPACITY, HEAD_SIZE)).astype(np.float32))
            keep.append(value)
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        binding.bind_output(f"out{layer}")
    return median_ms(lambda: model.run_with_iobinding(binding), reps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=60)
    args = parser.parse_args()

    print("MatMulNBits int8 (blocks of 32, int8 compute), ms for 1 / 2 / 3 / 4 rows, hot in cache:")
    products = matmul_rows(args.reps)
    for name, times in products.items():
        per_row = (times[3] - times[0]) / 3
        print(f"  {name:13s} " + " / ".join(f"{ms:.3f}" for ms in times)
              + f"   each extra row {per_row / times[0]:.2f} x one row")
    one = sum(times[0] * (1 if name == "lm_head" else LAYERS) for name, times in products.items())
    four = sum(times[3] * (1 if name == "lm_head" else LAYERS) for name, times in products.items())

    print(f"\nattention of {LAYERS} layers for one new position ({CONTEXT} positions, cache room {CAPACITY}), ms:")
    attention = {}
    for kind in ("gqa", "matmul", "onnx_attention"):
        model = attention_model(kind)
        attention[kind] = [statistics.median(attention_ms(model, kind, rows, args.reps) for _ in range(3))
                           for rows in (1, 4)]
        print(f"  {kind:15s} 1 row {attention[kind][0]:.3f}   4 rows {attention[kind][1]:.3f}")
    print(f"matmul_rows4={four / one:.2f}")
    for kind, (one_row, four_rows) in attention.items():
        print(f"{kind}_rows1_ms={one_row:.3f} {kind}_rows4_ms={four_rows:.3f}")


if __name__ == "__main__":
    main()
