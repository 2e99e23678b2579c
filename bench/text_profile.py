"""Where one decoding step of the embedded text model spends its time (ONNX int8, 1 thread).

Measures, side by side in one run:
- the raw ONNX Runtime session alone (IO binding, no studio loop): the ceiling of this runtime,
  and the same for 4 rows (the batch side by side runs);
- the studio's loop per token: session run, input binding, logits copy, pick (the sampling
  stages), append (log-probabilities, alternatives, detokenising);
- ONNX Runtime's own profile: time per operator type (the matrix products split by the
  projection they compute), for one row and for 4 rows, so the extra cost of a side-by-side
  batch shows where it comes from;
- transformers fp32 generate() in the same run, so the ceiling reads as a ratio.
Prints `key=value` lines last.
    python bench/text_profile.py [--steps 100]
"""

import argparse
import collections
import copy
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from aigc_studio.catalog import Catalog
from aigc_studio.config import Settings
from aigc_studio.engines import text as text_engine
from aigc_studio.params import TextParams

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def raw_step_ms(backend, prompt_ids: torch.Tensor, rows: int, steps: int) -> float:
    """Median ms of one session run with `rows` rows, with nothing of the studio's loop around it."""
    decoder = backend.decoder()
    decoder.prefill(prompt_ids, rows)
    tokens = np.full((rows, 1), 28, np.int64)
    times = []
    for _ in range(min(steps, decoder.ROOM)):
        decoder.binding.bind_cpu_input("input_ids", tokens)
        decoder.binding.bind_cpu_input("attention_mask", np.ones((rows, decoder.length + 1), np.int64))
        started = time.perf_counter()
        backend.session.run_with_iobinding(decoder.binding)
        times.append(time.perf_counter() - started)
        decoder.length += 1
    return 1e3 * statistics.median(times)


def loop_parts_ms(text_model, prompt_ids: torch.Tensor, params: TextParams, steps: int) -> dict[str, float]:
    """Median ms per token of each part of the studio's loop (one column)."""
    decoder = text_model.backend.decoder()
    logits = decoder.prefill(prompt_ids, 1)
    column = text_engine.Column(params, prompt_ids, text_model)
    parts = collections.defaultdict(list)
    for _ in range(min(steps, decoder.ROOM)):
        started = time.perf_counter()
        token_id = column.pick(logits[0])
        picked = time.perf_counter()
        (logprob, likeliest), = text_engine.raw_statistics(logits, [token_id], column.alternatives)
        column.record(token_id, logprob, likeliest, 0.0)
        appended = time.perf_counter()
        logits = decoder.step(torch.tensor([token_id]))
        stepped = time.perf_counter()
        parts["pick"].append(picked - started)
        parts["append"].append(appended - picked)
        parts["step"].append(stepped - appended)
    return {name: 1e3 * statistics.median(values) for name, values in parts.items()}


def operator_kind(event: dict) -> str:
    """An operator type, or for a matrix product the projection it computes (from the node's
    name, e.g. /model/layers.3/mlp/down_proj/MatMul_Q8 -> MatMulNBits down_proj)."""
    op = event["args"]["op_name"]
    if op == "MatMulNBits":
        return f"{op} {event['name'].split('/')[-2]}"
    return op


def operator_profile(backend, prompt_ids: torch.Tensor, steps: int, rows: int = 1) -> list[tuple[str, float, int]]:
    """(operator kind, ms per step, nodes) from ONNX Runtime's own profiler, on a second
    session of the same model file with profiling on, decoding `rows` rows."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    model_file = str(backend.folder / backend.filename)
    profiled = copy.copy(backend)
    profiled.session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
    raw_step_ms(profiled, prompt_ids, rows, steps)
    events = json.load(open(profiled.session.end_profiling()))
    runs = max(1, sum(1 for e in events if e.get("name") == "model_run"))
    total, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[operator_kind(event)] += event["dur"]
            count[operator_kind(event)] += 1
    return [(name, micros / runs / 1e3, count[name] // runs) for name, micros in total.most_common()]


def generate_tok_s(reference, prompt_ids: torch.Tensor, tokens: int) -> float:
    with torch.inference_mode():
        started = time.perf_counter()
        out = reference.model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=tokens,
                                       min_new_tokens=tokens, do_sample=False,
                                       pad_token_id=reference.tokenizer.pad_token_id)
    return (out.shape[1] - prompt_ids.shape[1]) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings.from_env()
    spec = Catalog.for_preset("offline", hub_online=False).get(None, "text")
    onnx = text_engine.load(spec, "cpu", torch.float32, settings.cache_dir, print, runtime="onnx-int8", threads=1)
    reference = text_engine.load(spec, "cpu", torch.float32, settings.cache_dir, print, runtime="torch", threads=1)
    prompt_ids = text_engine.encode_prompt(onnx, PROMPT)
    greedy = TextParams(greedy=True, max_new_tokens=1000, repetition_penalty=1.0)
    sampled = TextParams(**{**TextParams().__dict__, **spec.defaults, "seed": 1, "max_new_tokens": 1000})

    rounds = collections.defaultdict(list)
    for _ in range(args.rounds):  # paired within each round: the machine's load drifts between rounds
        generate = generate_tok_s(reference, prompt_ids, args.steps)
        one = raw_step_ms(onnx.backend, prompt_ids, 1, args.steps)
        four = raw_step_ms(onnx.backend, prompt_ids, 4, args.steps)
        rounds["raw_ratio"].append(1e3 / one / generate)
        rounds["raw_columns4"].append(four / one)
        rounds["raw_tok_s"].append(1e3 / one)
        rounds["generate_tok_s"].append(generate)
        for name, params in (("greedy", greedy), ("sampled", sampled)):
            for part, ms in loop_parts_ms(onnx, prompt_ids, params, args.steps).items():
                rounds[f"{name}_{part}_ms"].append(ms)
    median = {key: statistics.median(values) for key, values in rounds.items()}

    print("\nper token, one column (median ms):")
    for name in ("greedy", "sampled"):
        parts = {part: median[f"{name}_{part}_ms"] for part in ("step", "pick", "append")}
        whole = sum(parts.values())
        print(f"  {name:8s} " + "  ".join(f"{part} {ms:.2f} ({ms / whole:.0%})" for part, ms in parts.items())
              + f"  = {whole:.2f} ms ({1e3 / whole:.0f} tok/s)")
    print("\nONNX Runtime operators, per step: 1 row, 4 rows, 4 rows / 1 row")
    four_rows = {name: ms for name, ms, _ in operator_profile(onnx.backend, prompt_ids, args.steps, rows=4)}
    for name, ms, nodes in operator_profile(onnx.backend, prompt_ids, args.steps):
        four = four_rows.get(name, 0.0)
        print(f"  {name:36s} {ms:6.2f} ms  {four:6.2f} ms  x{four / ms:4.2f}  ({nodes} nodes)")
    for key in ("generate_tok_s", "raw_tok_s", "raw_ratio", "raw_columns4", "greedy_step_ms", "greedy_pick_ms",
                "greedy_append_ms", "sampled_pick_ms", "sampled_append_ms"):
        print(f"{key}={median[key]:.3f}")


if __name__ == "__main__":
    main()
