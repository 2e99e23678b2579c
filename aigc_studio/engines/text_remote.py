"""Remote text: an OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp's server, another
studio's /v1) generates; the studio streams its tokens and probabilities.

    AIGC_TEXT_ENDPOINT=http://gpu-box:8000/v1 python app.py     # its models appear as remote:<name>

What is exact and what is approximate:
- the text, each token's log-probability and its top-20 alternatives are the server's own
  (vLLM and Ollama report raw probabilities, before temperature; so does the studio's /v1);
- the explainer applies the studio's sampling stages (`text.sampling_stages`, the one home of
  the sampling order) to the server's top-20 only: the tail beyond 20 is unknown and the
  penalties see only which of the 20 already appear in the answer, so it is labelled approximate.

Side-by-side columns run as concurrent requests (one stream each); Stop closes the streams.
Knobs map to request fields: temperature (0 = greedy), top_p, max_tokens, stop, seed, and the
studio's other knobs (top_k, min_p, repetition_penalty, typical_p, no_repeat_ngram_size) as
extra fields, sent only when they are not neutral. A field the server refuses (HTTP 400/422
naming it) is dropped and the request sent again, with a note saying so; a server that gives
no probabilities (or refuses `logprobs`) still streams text, with a note. Timeouts, refused
connections and HTTP errors become RemoteError, whose message names the endpoint.

No gradio here; `openai` (pinned in requirements.txt) is imported on first use.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from aigc_studio.catalog import REMOTE_PREFIX, Catalog, ModelSpec, remote_spec
from aigc_studio.params import ParamError, TextParams, stop_sequences

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # the most alternatives the OpenAI protocol (and vLLM, Ollama) return per token
LIST_TIMEOUT_S = 5.0  # listing /models at start-up: a dead endpoint must not hold the studio back
# extra request fields (beyond the OpenAI protocol) and the value at which each is off
EXTRA_KNOBS = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "typical_p": 1.0, "no_repeat_ngram_size": 0}
NO_PROBABILITIES = ("the server gives no token probabilities: the text is the server's, "
                    "but probability colours, alternatives and the explainer are unavailable")


class RemoteError(RuntimeError):
    """The endpoint could not answer (not running, timed out, refused the request)."""


@dataclass
class RemoteModel:
    """One model on an OpenAI-compatible endpoint, as the studio's engines use it.

    Token ids: the protocol sends token texts, not ids, so each distinct token text gets a
    small id here (stable for this studio's lifetime): side-by-side divergence compares
    them, and the explainer maps a generation's ids back to their texts.
    """

    endpoint: str
    name: str  # the server's model name
    api_key: str = ""
    timeout_s: float = 60.0
    runtime_note: str = ""
    _ids: dict[str, int] = field(default_factory=dict, repr=False)
    _texts: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def runtime(self) -> str:
        return f"remote {self.endpoint}"

    def client(self):
        import openai

        # max_retries=0: a failure is reported at once (the UI shows it) instead of silently tried thrice
        return openai.OpenAI(base_url=self.endpoint, api_key=self.api_key or "none", timeout=self.timeout_s,
                             max_retries=0)

    def token_id(self, text: str) -> int:
        with self._lock:
            if text not in self._ids:
                self._ids[text] = len(self._texts)
                self._texts.append(text)
            return self._ids[text]

    def token_text(self, token_id: int) -> str:
        with self._lock:
            if not 0 <= token_id < len(self._texts):
                raise ParamError("answer", f"token id {token_id} did not come from this remote model's generations")
            return self._texts[token_id]


_models: dict[tuple[str, str], RemoteModel] = {}
_models_lock = threading.Lock()


def connect(spec: ModelSpec, endpoint: str, api_key: str = "", timeout_s: float = 60.0) -> RemoteModel:
    """The RemoteModel for a remote spec (one per endpoint and name, so token ids persist)."""
    with _models_lock:
        key = (endpoint, spec.location)
        if key not in _models:
            _models[key] = RemoteModel(endpoint, spec.location, api_key, timeout_s)
        return _models[key]


def explain_error(endpoint: str, error: Exception, timeout_s: float | None = None) -> RemoteError:
    """A clear RemoteError (naming the endpoint) for what the openai client raised."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        limit = f" within {timeout_s:g} s (AIGC_TEXT_TIMEOUT_S)" if timeout_s else ""
        return RemoteError(f"text endpoint {endpoint} did not answer{limit}; is the server overloaded?")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return RemoteError(f"text endpoint {endpoint} could not be reached ({cause}); is the server running, "
                           f"and is AIGC_TEXT_ENDPOINT right?")
    if isinstance(error, openai.APIStatusError):
        return RemoteError(f"text endpoint {endpoint} answered HTTP {error.status_code}: {_message(error)}")
    return RemoteError(f"text endpoint {endpoint}: {error}")


def _message(error) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(body.get("detail"), str):
            return body["detail"]
    return str(getattr(error, "message", error))


# ----- the catalog ---------------------------------------------------------------------------

def list_models(endpoint: str, api_key: str = "", timeout_s: float = LIST_TIMEOUT_S) -> list[str]:
    """The model names the endpoint serves (GET /models)."""
    import openai

    client = RemoteModel(endpoint, "", api_key, timeout_s).client()
    try:
        return [model.id for model in client.models.list()]
    except openai.OpenAIError as error:
        raise explain_error(endpoint, error, timeout_s) from error


def add_models(catalog: Catalog, endpoint: str, api_key: str = "") -> list[str]:
    """Add the endpoint's models to the catalog as remote:<name> text models; return their ids.

    Policy: the operator setting AIGC_TEXT_ENDPOINT allows every model that endpoint lists
    (the operator chose the server, and the server chose its models); the allowlist, which
    is about Hub repos the studio itself downloads, does not filter them. It can add
    models the endpoint serves without listing them (`transformers serve <model>` lists
    none): AIGC_ALLOWLIST=remote:<name>. Any other model is refused like any id outside
    the catalog. An endpoint that does not answer adds only the allowlisted ones and is
    logged: the studio still starts with its own models.
    """
    try:
        names = list_models(endpoint, api_key)
    except RemoteError as error:
        log.warning("remote text models unavailable: %s", error)
        names = []
    named = [i[len(REMOTE_PREFIX):] for i in catalog.allowed("text") if i.startswith(REMOTE_PREFIX)]
    specs = [remote_spec(name, endpoint) for name in dict.fromkeys(names + named)]
    for spec in specs:
        catalog.add(spec)
    return [spec.id for spec in specs]


# ----- requests ------------------------------------------------------------------------------

def _is_sampling(params: TextParams) -> bool:
    return not params.greedy and params.temperature > 0


def request_fields(params: TextParams, top_logprobs: int = TOP_LOGPROBS) -> tuple[dict, dict]:
    """(OpenAI fields, extra fields) for params; greedy is temperature 0."""
    fields: dict[str, Any] = {"max_tokens": params.max_new_tokens}
    if params.seed >= 0:
        fields["seed"] = params.seed
    extra: dict[str, Any] = {}
    if _is_sampling(params):
        fields["temperature"] = params.temperature
        if params.top_p < 1.0:
            fields["top_p"] = params.top_p
        for name in ("top_k", "min_p", "typical_p"):
            if getattr(params, name) != EXTRA_KNOBS[name]:
                extra[name] = getattr(params, name)
    else:
        fields["temperature"] = 0.0
    for name in ("repetition_penalty", "no_repeat_ngram_size"):  # the penalties apply to greedy too
        if getattr(params, name) != EXTRA_KNOBS[name]:
            extra[name] = getattr(params, name)
    stops = stop_sequences(params.stop_sequences)
    if stops:
        fields["stop"] = stops
    if top_logprobs:
        fields["logprobs"] = True
        fields["top_logprobs"] = top_logprobs
    return fields, extra


def _messages(prompt: str, params: TextParams, continuation: str = "") -> list[dict]:
    messages = [{"role": "user", "content": prompt}]
    if params.system_prompt:
        messages.insert(0, {"role": "system", "content": params.system_prompt})
    if continuation:
        messages.append({"role": "assistant", "content": continuation})
    return messages


def _send(remote: RemoteModel, client, prompt: str, params: TextParams, fields: dict, extra: dict,
          stream: bool, continuation: str = "", echo: bool = False):
    """One request: chat (the model's template, as in the studio's chat mode) or completion."""
    extra = dict(extra)
    if params.prompt_mode == "chat":
        if continuation:  # vLLM's (and the studio's) way to continue a partial assistant message
            extra.update(continue_final_message=True, add_generation_prompt=False)
        return client.chat.completions.create(model=remote.name, messages=_messages(prompt, params, continuation),
                                              stream=stream, extra_body=extra or None, **fields)
    fields = dict(fields)
    if fields.pop("logprobs", False):  # the completions API takes the number of alternatives here
        fields["logprobs"] = fields.pop("top_logprobs", TOP_LOGPROBS)
    fields.pop("top_logprobs", None)
    if echo:
        fields["echo"] = True
    return client.completions.create(model=remote.name, prompt=prompt + continuation, stream=stream,
                                     extra_body=extra or None, **fields)


def _refused_field(error, fields: dict, extra: dict) -> str | None:
    """The field a 400/422 answer names, among those sent (longest names first: top_logprobs
    before logprobs)."""
    message = _message(error).lower()
    for name in sorted([*fields, *extra], key=len, reverse=True):
        if name != "max_tokens" and name in message:
            return name
    return None


def _open(remote: RemoteModel, client, prompt: str, params: TextParams, fields: dict, extra: dict,
          notes: list[str], stream: bool, continuation: str = "", echo: bool = False):
    """Send the request; for each field the server refuses, drop it, note it and send again."""
    import openai

    while True:
        try:
            return _send(remote, client, prompt, params, fields, extra, stream, continuation, echo)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as error:
            name = _refused_field(error, fields, extra)
            if name is None:
                raise explain_error(remote.endpoint, error, remote.timeout_s) from error
            if name in ("logprobs", "top_logprobs"):
                fields.pop("logprobs", None)
                fields.pop("top_logprobs", None)
                notes.append(f"the server refused logprobs ({_message(error)}); " + NO_PROBABILITIES)
            else:
                fields.pop(name, None)
                extra.pop(name, None)
                notes.append(f"the server refused {name} ({_message(error)}); generated without it")
        except openai.OpenAIError as error:
            raise explain_error(remote.endpoint, error, remote.timeout_s) from error


# ----- generation ----------------------------------------------------------------------------

def _entries(choice, chat: bool) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """(token text, logprob, [(alternative, logprob)]) for the tokens of one streamed choice."""
    logprobs = getattr(choice, "logprobs", None)
    if logprobs is None:
        return []
    if chat:
        return [(e.token, e.logprob, [(a.token, a.logprob) for a in (e.top_logprobs or [])])
                for e in (logprobs.content or [])]
    tokens = logprobs.tokens or []
    values = logprobs.token_logprobs or [None] * len(tokens)
    tops = logprobs.top_logprobs or [None] * len(tokens)
    return [(t, v, sorted((top or {}).items(), key=lambda item: -item[1])) for t, v, top in zip(tokens, values, tops)
            if v is not None]


def _tokens(remote: RemoteModel, content: str, entries: list, seconds: float) -> list:
    """Tokens for one chunk: its text split over the tokens the server reports."""
    from aigc_studio.engines.text import Token

    if not entries:
        return [Token(remote.token_id(content), content, math.nan, [], seconds)] if content else []
    texts = [token for token, _, _ in entries]
    if "".join(texts) != content:  # e.g. a token ending inside a character: the text rides on the last token
        texts = [""] * (len(entries) - 1) + [content]
    share = seconds / len(entries)
    return [Token(remote.token_id(token), text, float(value),
                  [(alt, math.exp(lp)) for alt, lp in alternatives], share, text == "" and token == "")
            for (token, value, alternatives), text in zip(entries, texts)]


def _column(remote: RemoteModel, prompt: str, params: TextParams, index: int, out: queue.Queue,
            halt: threading.Event, streams: dict) -> None:
    """Stream one column into `out` as ("token" | "note" | "error" | "done", index, item)."""
    try:
        notes: list[str] = []
        fields, extra = request_fields(params)
        stream = _open(remote, remote.client(), prompt, params, fields, extra, notes, stream=True)
        streams[index] = stream
        for note in notes:
            out.put(("note", index, note))
        chat = params.prompt_mode == "chat"
        probabilities, last = False, time.perf_counter()
        for chunk in stream:
            if halt.is_set():
                break
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            content = (choice.delta.content if chat else choice.text) or ""
            entries = _entries(choice, chat)
            now = time.perf_counter()
            tokens = _tokens(remote, content, entries, now - last)
            last = now
            if tokens and not entries and not probabilities and "logprobs" in fields:
                out.put(("note", index, NO_PROBABILITIES))
            probabilities = probabilities or bool(tokens)
            for token in tokens:
                out.put(("token", index, token))
    except Exception as error:  # reported to the consumer; after Stop, a closed stream's error is expected
        if not halt.is_set():
            import openai

            if isinstance(error, openai.OpenAIError):
                error = explain_error(remote.endpoint, error, remote.timeout_s)
            out.put(("error", index, error))
    finally:
        stream = streams.pop(index, None)
        if stream is not None:
            try:
                stream.close()
            except Exception:  # already closed by Stop
                pass
        out.put(("done", index, None))


def generate(remote: RemoteModel, prompt: str, columns: list[TextParams],
             stop: threading.Event | None = None, alternatives: int = TOP_LOGPROBS) -> Iterator[tuple[int, Any]]:
    """Yield (column index, Token) as the columns stream, one concurrent request each, and
    (column index, note) for what the server refused or does not give (a str). Tokens list
    the server's top-20 alternatives (`alternatives` is the local engine's knob; unused here).

    Setting `stop`, or closing this iterator, closes every stream. An error in one column
    stops the others and is raised as RemoteError.
    """
    stop = stop or threading.Event()
    halt = threading.Event()
    out: queue.Queue = queue.Queue()
    streams: dict[int, Any] = {}
    workers = [threading.Thread(target=_column, args=(remote, prompt, params, i, out, halt, streams), daemon=True,
                                name=f"remote-column-{i}") for i, params in enumerate(columns)]
    for worker in workers:
        worker.start()
    done, noted = 0, set()
    try:
        while done < len(workers):
            if stop.is_set():
                break
            try:
                kind, index, item = out.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "done":
                done += 1
            elif kind == "error":
                raise item
            elif kind == "note":
                if item not in noted:
                    noted.add(item)
                    yield index, item
            else:
                yield index, item
    finally:
        halt.set()
        for stream in list(streams.values()):  # wakes a worker blocked on a silent server
            try:
                stream.close()
            except Exception:
                pass
        for worker in workers:
            worker.join(timeout=remote.timeout_s)


# ----- the explainer (approximate) -----------------------------------------------------------

@dataclass
class RemoteExplanation:
    """text.Explanation's fields, plus `note`: why it is approximate."""

    context: str
    position: int
    candidate_ids: list[int]
    candidates: list[str]
    stages: list
    chosen_id: int | None = None
    note: str = ("approximate: the server's top-20 tokens only (the tail beyond them is unknown); "
                 "the studio's sampling stages applied to them")


def explain_next_token(remote: RemoteModel, prompt: str, params: TextParams, answer: str | list[int] = "",
                       position: int = 0, top_n: int = 10) -> RemoteExplanation:
    """The server's top-20 candidates for one token, through the studio's sampling stages.

    answer: the token ids a generation on this model returned (any position), or text
    (position 0 or -1 only: the protocol cannot split text into the server's tokens).
    """
    import torch

    from aigc_studio.engines.text import MAX_CANDIDATES, Stage, sampling_stages

    if not 1 <= top_n <= MAX_CANDIDATES:
        raise ParamError("top_n", f"must be a whole number in [1, {MAX_CANDIDATES}], got {top_n!r}")
    if isinstance(answer, str):
        pieces = [answer] if answer else []
        if position not in (0, -1):
            raise ParamError("position", "with a remote model, give the token ids a generation returned to explain "
                                         "a position inside the answer (text allows 0 or -1)")
        ids = None
    else:
        ids = [int(i) for i in answer]
        pieces = [remote.token_text(i) for i in ids]
    if position == -1:
        position = len(pieces)
    if not 0 <= position <= len(pieces):
        raise ParamError("position", f"must be -1 or a whole number in [0, {len(pieces)}] (tokens in the answer), "
                                     f"got {position!r}")
    context = "".join(pieces[:position])
    fields, extra = request_fields(dataclasses.replace(params, max_new_tokens=1))
    notes: list[str] = []
    response = _open(remote, remote.client(), prompt, params, fields, extra, notes, stream=False, continuation=context)
    entries = _entries(response.choices[0], params.prompt_mode == "chat") if response.choices else []
    if not entries or not entries[0][2]:
        raise RemoteError(f"text endpoint {remote.endpoint}: " + NO_PROBABILITIES)
    alternatives = entries[0][2]
    texts = [text for text, _ in alternatives]
    raw = [float(lp) for _, lp in alternatives]
    chosen_id = ids[position] if ids is not None and position < len(ids) else None
    chosen_text = remote.token_text(chosen_id) if chosen_id is not None else None
    if chosen_text is not None and chosen_text not in texts:  # outside the top-20: its probability is unknown
        texts.append(chosen_text)
        raw.append(-math.inf)
    # the penalties see which candidates already appear in the answer (the prompt's tokens are unknown)
    seen = [texts.index(piece) for piece in pieces[:position] if piece in texts]
    context_ids = torch.tensor([seen], dtype=torch.long) if seen else torch.zeros((1, 0), dtype=torch.long)
    with torch.inference_mode():
        scores = torch.tensor([raw], dtype=torch.float32)
        before = torch.softmax(scores, dim=-1)
        computed = []
        for name, setting, processor in sampling_stages(params):
            if processor is not None:
                scores = processor(context_ids, scores.clone())
            probs = torch.softmax(scores, dim=-1)
            kept = torch.isfinite(scores[0])
            if name == "raw":
                setting = f"server's top-{len(alternatives)} (approximate)"
            computed.append((name, setting, probs[0], kept, float(before[0][kept].sum())))
            before = probs
        ranking = computed[1][2]
        order = torch.topk(ranking, min(top_n, ranking.numel())).indices.tolist()
        if chosen_text is not None and texts.index(chosen_text) not in order:
            order.append(texts.index(chosen_text))
        index = torch.tensor(order)
        stages = [Stage(name, setting, probs[index].tolist(), kept[index].tolist(), int(kept.sum()), mass)
                  for name, setting, probs, kept, mass in computed]
    explanation = RemoteExplanation((prompt + context)[-200:], position, [remote.token_id(texts[i]) for i in order],
                                    [texts[i] for i in order], stages, chosen_id)
    if notes:
        explanation.note += "; " + "; ".join(notes)
    return explanation


# ----- perplexity ----------------------------------------------------------------------------

def perplexity(remote: RemoteModel, text: str) -> tuple[float, int]:
    """(perplexity, tokens scored) from the server's log-probabilities of the text itself
    (the completions API with echo and logprobs, as vLLM and the studio's /v1 serve it)."""
    import openai

    try:
        response = remote.client().completions.create(model=remote.name, prompt=text, max_tokens=1, echo=True,
                                                      logprobs=1, temperature=0.0)
    except openai.OpenAIError as error:
        raise explain_error(remote.endpoint, error, remote.timeout_s) from error
    logprobs = response.choices[0].logprobs if response.choices else None
    values = list(getattr(logprobs, "token_logprobs", None) or [])
    offsets = list(getattr(logprobs, "text_offset", None) or [])
    if offsets and len(offsets) == len(values):  # keep the text's own tokens, not the generated one
        values = [v for v, offset in zip(values, offsets) if offset < len(text)]
    values = [v for v in values if v is not None]
    if not values:
        raise RemoteError(f"text endpoint {remote.endpoint} gives no log-probabilities of the prompt (echo with "
                          f"logprobs), which perplexity needs; vLLM and the studio's /v1 do")
    return math.exp(-sum(values) / len(values)), len(values)
