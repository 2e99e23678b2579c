"""Text engine: causal language models, decoded by the studio's own loop.

    text_model = load(spec, "cpu", torch.float32, cache_dir)          # tokenizer + a step backend
    for column, token in generate(text_model, "Write a haiku", [TextParams(seed=1)]):
        print(token.text, end="")

The loop reads like nanoGPT's `generate()`: prefill the prompt, then per step take
the next-token logits, run them through one list of transformers' own logits
processors (`sampling_stages`: the only place that knows the sampling order; the
explainer reads the same list), pick greedily or sample with the column's own
`torch.Generator`, append, and check EOS / stop sequences / Stop. Side-by-side
columns run as one batch: one forward pass per step for all of them, each with its
own knobs and generator, so a column equals a lone generation with its knobs and seed.

A step backend (engines/text_backends.py) only turns token ids into logits:
transformers on any device, or ONNX Runtime (int8 by default for the embedded model
on CPU, ~4-5x faster), converted once into the studio's cache. Loading a model (the
embedded GGUF, a Hub or local folder, a tuned adapter) is engines/text_loading.py;
`load` and `TextModel` are imported here so callers need only this module.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from aigc_studio.engines.text_backends import ONNX_RUNTIMES
# loading lives in its own module; these names are part of this engine's API
from aigc_studio.engines.text_loading import TextModel, converted_folder, load, resolve_runtime
from aigc_studio.params import ParamError, TextParams, stop_sequences

__all__ = [
    "ALTERNATIVES", "MAX_CANDIDATES", "ONNX_RUNTIMES", "Column", "Explanation", "Stage", "TextModel", "Token",
    "converted_folder", "distributions", "encode_prompt", "explain_next_token", "generate", "is_sampling", "load",
    "mean_logprob", "next_token_logits", "perplexity", "pick_tokens", "raw_statistics", "resolve_runtime",
    "sampling_stages", "tokens_per_second", "visible_text",
]

LOGITS_CACHE_SIZE = 32  # next-token logits rows kept per model (one row: vocabulary x 4 bytes, ~200 kB for SmolLM2)
ALTERNATIVES = 5  # likeliest tokens kept beside each generated token
MAX_CANDIDATES = 50  # tokens the explainer can show


@dataclass
class Token:
    """One generated token.

    text: what it adds to the answer ("" for special tokens, and for a token that
    ends inside a multi-byte character: the next token then carries the character);
    logprob: natural log of the model's own probability of it (before penalties,
    temperature and the other knobs); alternatives: the likeliest tokens at this
    position as (text, probability); seconds: compute time of this step.
    """

    id: int
    text: str
    logprob: float
    alternatives: list[tuple[str, float]]
    seconds: float = 0.0
    special: bool = False

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


# ----- prompts and knobs -----------------------------------------------------------------

def encode_prompt(text_model: TextModel, prompt: str, params: TextParams | None = None) -> torch.Tensor:
    """Token ids (1 x length, on the CPU) for prompt.

    Chat mode (the default) wraps it, after the system prompt if one is given, in the
    model's chat template; completion mode, or a model without a template, continues
    the plain text.
    """
    tokenizer = text_model.tokenizer
    params = params or TextParams()
    if params.prompt_mode == "chat" and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        if params.system_prompt:
            messages.insert(0, {"role": "system", "content": params.system_prompt})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)["input_ids"]
    return tokenizer(prompt, return_tensors="pt").input_ids


# Below this temperature sampling is greedy: the limit of softmax(logits / t) as t -> 0 is the
# likeliest token, and logits / 5e-324 overflow to inf and NaN probabilities.
GREEDY_BELOW_TEMPERATURE = 1e-4


def is_sampling(params: TextParams) -> bool:
    """Temperature 0 (or below 1e-4) means greedy, like the greedy box."""
    return not params.greedy and params.temperature >= GREEDY_BELOW_TEMPERATURE


def sampling_stages(params: TextParams) -> list[tuple[str, str, Any]]:
    """(name, setting, processor or None when off): the sampling order, in one place.

    Raw logits -> penalties (repetition, no-repeat n-gram) -> temperature -> top-k ->
    top-p -> min-p -> typical-p, as transformers' generate() applies them; greedy keeps
    the likeliest token after the penalties. The decoding loop runs these processors
    and the explainer shows each stage's distribution from the very same list.
    """
    from transformers.generation.logits_process import (
        MinPLogitsWarper, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
        TopKLogitsWarper, TopPLogitsWarper, TypicalLogitsWarper,
    )

    penalties = []
    if params.repetition_penalty != 1.0:
        penalties.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.no_repeat_ngram_size > 0:
        penalties.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    penalty_setting = f"repetition {params.repetition_penalty}, no-repeat {params.no_repeat_ngram_size}"
    stages = [("raw", "model", None), ("penalties", penalty_setting if penalties else "off", _Chain(penalties) if penalties else None)]
    if not is_sampling(params):
        off = "off (greedy)"
        stages += [(name, off, None) for name in ("temperature", "top-k", "top-p", "min-p", "typical-p")]
        return stages + [("greedy", "likeliest only", TopKLogitsWarper(1))]
    t, k, p, m, typical = params.temperature, params.top_k, params.top_p, params.min_p, params.typical_p
    warpers = [("temperature", t, TemperatureLogitsWarper(t) if t != 1.0 else None),
               ("top-k", k, TopKLogitsWarper(k) if k > 0 else None),
               ("top-p", p, TopPLogitsWarper(p) if p < 1.0 else None),
               ("min-p", m, MinPLogitsWarper(m) if m > 0 else None),
               ("typical-p", typical, TypicalLogitsWarper(typical) if typical < 1.0 else None)]
    return stages + [(name, str(value) if warper else f"{value} (off)", warper) for name, value, warper in warpers]


class _Chain:
    """Several processors applied as one stage (the penalties)."""

    def __init__(self, processors: list):
        self.processors = processors

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores


def visible_text(text: str, stops: list[str], final: bool) -> str:
    """The answer as shown: cut before the first stop sequence. While streaming
    (final=False) a tail that may be the start of a stop sequence is held back,
    so a stop sequence never flashes on screen."""
    found = [text.find(s) for s in stops if s in text]
    if found:
        return text[:min(found)]
    if final:
        return text
    held = 0
    for s in stops:
        held = max([held] + [k for k in range(1, len(s)) if text.endswith(s[:k])])
    return text[:len(text) - held]


# ----- the decoding loop ---------------------------------------------------------------------

class Column:
    """One answer being generated: its knobs, its own random generator, its ids so far.

    `distribution()` applies the sampling stages to one step's logits. With top-k on,
    the stages after top-k (top-p, min-p, typical-p) run on the k survivors only: the
    same distribution as the full chain (the cut tokens have probability 0 either way)
    for a fraction of the cost over a 49,152-token vocabulary. Columns whose knobs are
    alike (`stages`: every knob but the seed) pick together, as one batch of rows
    (`pick_tokens`), each drawing with its own generator.
    """

    def __init__(self, params: TextParams, prompt_ids: torch.Tensor, text_model: TextModel,
                 alternatives: int = ALTERNATIVES):
        self.params = params
        self.alternatives = alternatives
        self.ids = prompt_ids.reshape(1, -1).cpu()
        self.prompt_length = self.ids.shape[1]
        self.tokenizer = text_model.tokenizer
        self.piece = text_model.piece
        self.answer_ids: list[int] = []
        self.prefix_offset = self.read_offset = 0  # the decoding window (see _decode_new)
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.eos_ids = text_model.eos_ids
        self.stops = stop_sequences(params.stop_sequences)
        self.generator = torch.Generator().manual_seed(params.seed)
        self.sampling = is_sampling(params)
        all_stages = sampling_stages(params)
        self.stages = tuple((name, setting) for name, setting, _ in all_stages)
        stages = [(name, processor) for name, _, processor in all_stages if processor is not None]
        names = [name for name, _ in stages]
        split = names.index("top-k") if "top-k" in names else (names.index("greedy") if "greedy" in names else len(names))
        self.before_top_k = [processor for _, processor in stages[:split]]
        self.after_top_k = [processor for _, processor in stages[split + 1:]]
        self.top_k = params.top_k if "top-k" in names else (1 if "greedy" in names else 0)
        self.tokens: list[Token] = []
        self.text = ""
        self.finished = False

    def distribution(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, probabilities) that this step can draw from, after every stage."""
        candidates, probs = distributions([self], logits.reshape(1, -1))
        return candidates[0], probs[0]

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from one step's logits (vocabulary,): greedy or drawn with this column's generator."""
        return pick_tokens([self], logits.reshape(1, -1))[0]

    def _decode_new(self) -> str:
        """The text the newest token adds. Tokens are decoded in a window that starts a
        few tokens back (not the token alone), which keeps spaces and multi-byte characters
        right, and costs the same at token 1000 as at token 10 (decoding the whole answer
        each step grows with its length). A trailing U+FFFD is half a character: nothing
        is added until the next token completes it. (The incremental detokeniser of vLLM
        and transformers' TextStreamer work this way.)"""
        ids = self.answer_ids
        before = self.tokenizer.decode(ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        after = self.tokenizer.decode(ids[self.prefix_offset:], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(ids)
        return after[len(before):]

    def record(self, token_id: int, logprob: float, alternatives: list[tuple[int, float]], seconds: float) -> Token:
        """Record the picked token, its raw log-probability and the likeliest (id, log-probability)
        pairs; finish the column at EOS, at its length limit or once a stop sequence appears."""
        self.ids = torch.cat([self.ids, torch.tensor([[token_id]])], dim=1)
        self.answer_ids.append(token_id)
        piece = self._decode_new()
        self.text += piece
        shown = [(self.piece(i), math.exp(value)) for i, value in alternatives]
        token = Token(token_id, piece, logprob, shown, seconds, token_id in self.special_ids)
        self.tokens.append(token)
        self.finished = (token_id in self.eos_ids or len(self.tokens) >= self.params.max_new_tokens
                         or any(stop in self.text for stop in self.stops))
        return token


def _scores_before_top_k(columns: list[Column], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the columns' ids, rows x length; their scores after the stages before top-k, rows x vocabulary)."""
    ids = columns[0].ids if len(columns) == 1 else torch.cat([column.ids for column in columns])
    scores = logits.float()
    for processor in columns[0].before_top_k:
        scores = processor(ids, scores)
    return ids, scores


def distributions(columns: list[Column], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, probabilities), rows x candidates: what each column can draw from.

    columns share their stages (Column.stages) and their number of ids; logits holds one
    row per column (rows x vocabulary). Every stage is one of transformers' batched
    processors, so a row comes out as it would alone."""
    first = columns[0]
    ids, scores = _scores_before_top_k(columns, logits)
    if first.top_k:
        scores, candidates = torch.topk(scores, min(first.top_k, scores.shape[-1]))
    else:
        candidates = torch.arange(scores.shape[-1]).expand(len(columns), -1)
    for processor in first.after_top_k:
        scores = processor(ids, scores)
    return candidates, torch.softmax(scores, dim=-1)


def pick_tokens(columns: list[Column], logits: torch.Tensor) -> list[int]:
    """One token per column from its row of logits (rows x vocabulary), the columns sharing
    their stages: the stages run once over all rows, then each column draws with its own
    generator (greedy columns take their row's likeliest token after the penalties)."""
    if not columns[0].sampling:
        # the first likeliest token, as transformers' argmax picks it; numpy's argmax over the
        # 49,152 logits takes ~5 us, torch.topk(1) ~100 us
        _, scores = _scores_before_top_k(columns, logits)
        return np.argmax(scores.numpy(), axis=-1).tolist()
    candidates, probs = distributions(columns, logits)
    return [int(candidates[row, int(torch.multinomial(probs[row], 1, generator=column.generator))])
            for row, column in enumerate(columns)]


def raw_statistics(logits: torch.Tensor, token_ids: list[int],
                   alternatives: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per row of logits (rows x vocabulary): the model's own log-probability of token_ids[row]
    (before any knob) and its `alternatives` likeliest (id, log-probability), from one
    log-softmax and one top-k over every row."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top = torch.topk(logprobs, alternatives, dim=-1)
    chosen = logprobs.gather(1, torch.tensor(token_ids).reshape(-1, 1))[:, 0].tolist()
    return [(logprob, list(zip(indices, values)))
            for logprob, indices, values in zip(chosen, top.indices.tolist(), top.values.tolist())]


def _step_tokens(state: list[Column], members: list[int], logits: torch.Tensor,
                 rows_of: list[int]) -> dict[int, tuple[int, float, list]]:
    """column index -> (token id, raw log-probability, alternatives) for the unfinished
    members of one batch (rows_of: each member's row of logits): columns with the same
    stages pick as one group."""
    active = [(row, index) for row, index in zip(rows_of, members) if not state[index].finished]
    wanted = [row for row, _ in active]
    rows = logits if wanted == list(range(len(logits))) else logits[wanted]  # indexing copies the rows
    groups: dict[tuple, list[int]] = {}
    for position, (_, index) in enumerate(active):
        groups.setdefault(state[index].stages, []).append(position)
    picked = [0] * len(active)
    for positions in groups.values():
        group_rows = rows if len(positions) == len(active) else rows[positions]
        tokens = pick_tokens([state[active[p][1]] for p in positions], group_rows)
        for position, token_id in zip(positions, tokens):
            picked[position] = token_id
    statistics = raw_statistics(rows, picked, state[active[0][1]].alternatives)
    return {index: (token_id, *stats) for (_, index), token_id, stats in zip(active, picked, statistics)}


def _part_rows(decoder, state: list[Column], members: list[int], rows_of: list[int],
               chosen: dict[int, tuple]) -> list[int]:
    """The next token of each row of a batch's decoder. Columns whose tokens are still the
    same share one row (one cache, one forward pass: 4 seeds at a low temperature agree for
    their first ~6-16 tokens); columns whose picks part get rows of their own, copies of
    the shared cache (decoder.select_rows), numbered in the members' order so that once
    every column has its own row, row i is member i's. rows_of (member -> row) is updated
    in place. A finished column stays on its row, its output ignored."""
    keys = [(rows_of[p], chosen[i][0]) if i in chosen else None for p, i in enumerate(members)]
    for p, index in enumerate(members):  # finished: on its row's continuing token, or its own last one
        if keys[p] is None:
            keys[p] = next((k for k in keys if k and k[0] == rows_of[p]), (rows_of[p], state[index].ids[0, -1].item()))
    new_rows = {key: row for row, key in enumerate(dict.fromkeys(keys))}  # (old row, next token) -> new row
    if len(new_rows) != max(rows_of) + 1 or any(row != old for (old, _), row in new_rows.items()):
        decoder.select_rows([old for old, _ in new_rows])
    rows_of[:] = [new_rows[key] for key in keys]
    return [token_id for _, token_id in new_rows]


def generate(text_model: TextModel, prompt: str, columns: list[TextParams],
             on_step: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None, alternatives: int = ALTERNATIVES) -> Iterator[tuple[int, Token]]:
    """Yield (column index, Token) as 1-4 columns of one prompt generate, one token each per step.

    Columns with the same prompt ids (all of them, unless their prompt mode or system
    prompt differ) run as one batch: the prompt is computed once, then one forward pass
    per step serves every column (columns whose tokens are still the same share one row
    of it), and columns with the same knobs but their seed pick together. Every
    params.seed must be >= 0. on_step(step, most new tokens) follows each step. Setting
    `stop`, or closing this iterator, ends every column within one token.
    alternatives: how many likeliest tokens each Token lists.
    """
    stop = stop or threading.Event()
    state = [Column(params, encode_prompt(text_model, prompt, params), text_model, alternatives) for params in columns]
    groups: dict[tuple, list[int]] = {}
    for index, column in enumerate(state):
        groups.setdefault(tuple(column.ids[0].tolist()), []).append(index)
    batches = []
    for members in groups.values():
        started = time.perf_counter()
        decoder = text_model.backend.decoder()
        logits = decoder.prefill(state[members[0]].ids)  # one row until the columns' tokens part
        batches.append([decoder, members, [0] * len(members), logits, time.perf_counter() - started])
    limit = text_model.backend.max_length
    most_tokens, step = max(params.max_new_tokens for params in columns), 0
    while not stop.is_set() and not all(column.finished for column in state):
        if on_step is not None:
            on_step(step, most_tokens)
        step += 1
        for batch in batches:
            decoder, members, rows_of, logits, forward_seconds = batch
            if all(state[i].finished for i in members):
                continue
            started = time.perf_counter()
            chosen = _step_tokens(state, members, logits, rows_of)
            seconds = forward_seconds + time.perf_counter() - started  # the step every column of the batch waited for
            for index, (token_id, logprob, likeliest) in chosen.items():
                column = state[index]
                token = column.record(token_id, logprob, likeliest, seconds)
                column.finished = column.finished or column.ids.shape[1] >= limit
                yield index, token
            if stop.is_set() or all(state[i].finished for i in members):
                continue
            started = time.perf_counter()
            tokens = _part_rows(decoder, state, members, rows_of, chosen)
            batch[3] = decoder.step(torch.tensor(tokens))
            batch[4] = time.perf_counter() - started


def tokens_per_second(tokens: list[Token]) -> float:
    """Tokens per second of compute (for a batched column: the steps it shared)."""
    seconds = sum(t.seconds for t in tokens)
    return len(tokens) / seconds if seconds > 0 else 0.0


def mean_logprob(tokens: list[Token]) -> float:
    """Mean log-probability of the tokens under the model (0 = certain; lower = more surprising)."""
    return sum(t.logprob for t in tokens) / len(tokens) if tokens else 0.0


# ----- next-token explainer ------------------------------------------------------------------

@dataclass
class Stage:
    """The next-token distribution after one sampling step.

    probs: probability of each candidate after this stage; kept: whether it can still
    be drawn; kept_tokens: tokens of the whole vocabulary that can; mass_kept: the
    probability (before this stage) of the tokens it keeps, 1.0 when it cuts nothing.
    """

    name: str
    setting: str  # the knob value, or "off"
    probs: list[float]
    kept: list[bool]
    kept_tokens: int
    mass_kept: float


@dataclass
class Explanation:
    """Why the next token is what it is: candidates and their probability at each stage.

    candidates are the likeliest tokens after the penalties (the distribution the
    sampling knobs act on), plus the token actually generated here when it is not
    among them (chosen_id). context: the end of the text being continued.
    """

    context: str
    position: int
    candidate_ids: list[int]
    candidates: list[str]
    stages: list[Stage]
    chosen_id: int | None = None


def next_token_logits(text_model: TextModel, context_ids: torch.Tensor) -> torch.Tensor:
    """The model's raw logits (float32, CPU) for the token after context_ids: one
    forward pass, cached per context, so moving a knob never runs the model again."""
    key = tuple(context_ids.reshape(-1).tolist())
    cache = text_model.logits_cache
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    row = text_model.backend.decoder().prefill(context_ids.reshape(1, -1), 1)[0]
    cache[key] = row
    while len(cache) > LOGITS_CACHE_SIZE:
        cache.popitem(last=False)
    return row


def explain_next_token(text_model: TextModel, context_ids: torch.Tensor, params: TextParams, top_n: int = 10,
                       chosen_id: int | None = None, position: int = 0) -> Explanation:
    """The top_n candidates for the token after context_ids and their probability at
    every sampling stage, over the whole vocabulary, from `sampling_stages`."""
    if not 1 <= top_n <= MAX_CANDIDATES:
        raise ParamError("top_n", f"must be a whole number in [1, {MAX_CANDIDATES}], got {top_n!r}")
    raw = next_token_logits(text_model, context_ids)
    ids = context_ids.reshape(1, -1).cpu()
    with torch.inference_mode():
        scores = raw.unsqueeze(0).clone()
        before = torch.softmax(scores, dim=-1)
        computed = []
        for name, setting, processor in sampling_stages(params):
            if processor is not None:
                scores = processor(ids, scores.clone())  # some processors write in place
            probs = torch.softmax(scores, dim=-1)
            kept = torch.isfinite(scores[0])
            computed.append((name, setting, probs[0], kept, float(before[0][kept].sum())))
            before = probs
        ranking = computed[1][2]  # after the penalties: the order every later filter keeps
        candidate_ids = torch.topk(ranking, min(top_n, ranking.numel())).indices.tolist()
        if chosen_id is not None and chosen_id not in candidate_ids:
            candidate_ids.append(chosen_id)
        index = torch.tensor(candidate_ids)
        stages = [Stage(name, setting, probs[index].tolist(), kept[index].tolist(), int(kept.sum()), mass)
                  for name, setting, probs, kept, mass in computed]
    tokenizer = text_model.tokenizer
    context = tokenizer.decode(ids[0, -24:].tolist())
    return Explanation(context, position, candidate_ids, [tokenizer.decode([i]) for i in candidate_ids], stages, chosen_id)


# ----- perplexity ----------------------------------------------------------------------------

def perplexity(text_model: TextModel, text: str) -> tuple[float, int]:
    """(perplexity, tokens scored) of text under the model: exp of the mean negative
    log-likelihood of each token given the ones before it (the first token has no
    context and is not scored). Lower means the model finds the text more natural."""
    ids = text_model.tokenizer(text, return_tensors="pt").input_ids
    if ids.shape[1] < 2:
        raise ParamError("text", "needs at least 2 tokens to score")
    limit = text_model.backend.max_length
    if ids.shape[1] > limit:
        raise ParamError("text", f"must be at most {limit} tokens for this model, got {ids.shape[1]}")
    logits = text_model.backend.logits(ids)
    loss = torch.nn.functional.cross_entropy(logits[:-1].float(), ids[0, 1:])
    return math.exp(float(loss)), ids.shape[1] - 1
