"""The studio speaks the OpenAI protocol: /v1/models, /v1/chat/completions, /v1/completions.

    AIGC_OPENAI_API=1 python app.py          # then, from anywhere:
    client = openai.OpenAI(base_url="http://localhost:7860/v1", api_key="-")
    client.chat.completions.create(model="smollm2-135m-instruct", messages=[...], logprobs=True, top_logprobs=5)

Served on the Gradio server itself (ui/app.py mounts `router(studio)`), off unless the
operator sets AIGC_OPENAI_API=1; with AIGC_OPENAI_API_KEY set, requests need
`Authorization: Bearer <key>`. Every request goes through `Studio.text_compare_stream`,
so its probabilities are the studio's own engine's (exact): `logprobs` are the model's raw
log-probabilities (before penalties and temperature, as vLLM reports them) and
`top_logprobs` (0-20) its likeliest tokens at each position.

Fields: temperature (default 1, 0 = greedy), top_p (default 1), max_tokens /
max_completion_tokens (default 128, at most 1024), seed, stop (at most 4, no commas),
logprobs, top_logprobs, stream (+ stream_options.include_usage), n = 1; the studio's other
knobs as extra fields: top_k, min_p, repetition_penalty, typical_p, no_repeat_ngram_size,
greedy (all off unless given). A chat of one user message (after an optional system message)
runs in the studio's chat mode; longer chats and `continue_final_message` (vLLM's field: go
on from a partial assistant message) are rendered with the model's chat template. An unknown
field, a knob out of range, or a field the studio does not implement (frequency_penalty,
presence_penalty, logit_bias, n > 1) is refused with HTTP 400 naming it. /v1/completions
also takes `echo` (without streaming): the prompt's own log-probabilities, which perplexity
needs. At most settings.concurrency requests run and settings.queue_size wait; beyond that
HTTP 503 with Retry-After, like the Gradio queue. Only the studio's own text models are
served (not remote ones).

No gradio here: a FastAPI router over a Studio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import itertools
import logging
import math
import secrets
import threading
import time
import uuid
from typing import Any, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from aigc_studio import params as knobs
from aigc_studio.catalog import UnknownModelError
from aigc_studio.params import ParamError, TextParams
from aigc_studio.studio import ModelLoadError, ModelMemoryError, Studio

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20
RETRY_AFTER_S = 5
# field -> the value it takes when absent or null
DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
STUDIO_KNOBS = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "typical_p": 1.0, "no_repeat_ngram_size": 0,
                "greedy": False}
# OpenAI fields the studio accepts only at their neutral value (it has no such knob)
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "logit_bias": None, "n": 1}
COMMON = {"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
          "seed", "stop", "logprobs", "top_logprobs", "user", *NEUTRAL, *STUDIO_KNOBS}
CHAT_FIELDS = COMMON | {"messages", "continue_final_message", "add_generation_prompt"}
COMPLETION_FIELDS = COMMON | {"prompt", "echo"}


class RequestError(Exception):
    """An answer other than 200: HTTP status, OpenAI error type, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": None}}


def as_request_error(error: Exception) -> RequestError:
    """The HTTP answer for what the studio raised."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, ParamError):
        return RequestError(400, str(error), error.field)
    if isinstance(error, UnknownModelError):
        return RequestError(404, str(error), "model", "model_not_found")
    if isinstance(error, (ModelLoadError, ModelMemoryError)):
        return RequestError(503, str(error), None, "server_error")
    log.exception("OpenAI API request failed")
    return RequestError(500, f"the studio failed: {type(error).__name__}: {error}", None, "server_error")


class Gate:
    """At most `running` requests generate and `waiting` more wait; the rest are refused at once."""

    def __init__(self, running: int, waiting: int):
        self.slots = threading.Semaphore(running)
        self.capacity = running + waiting
        self.admitted = 0
        self.lock = threading.Lock()

    def admit(self) -> None:
        with self.lock:
            if self.admitted >= self.capacity:
                raise RequestError(503, f"busy: the studio is serving others and {self.capacity} requests are "
                                        f"already admitted; please try again in a few seconds.", None, "server_error")
            self.admitted += 1

    def leave(self) -> None:
        with self.lock:
            self.admitted -= 1


# ----- requests -> studio calls --------------------------------------------------------------

@dataclasses.dataclass
class Job:
    model: str
    prompt: str
    params: TextParams
    top_logprobs: int  # 0 = no logprobs
    stream: bool
    usage_in_stream: bool
    echo: bool = False


def _check_fields(body: Any, allowed: set[str]) -> dict:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    for name in body:
        if name not in allowed:
            raise RequestError(400, f"{name}: unknown field; the studio accepts {', '.join(sorted(allowed))}", name)
    for name, neutral in NEUTRAL.items():
        if body.get(name, neutral) not in (neutral, None):
            hint = "; use repetition_penalty" if name.endswith("penalty") else ""
            raise RequestError(400, f"{name}: not supported by the studio (only {neutral!r}){hint}", name)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise RequestError(400, "model: required (GET /v1/models lists them)", "model")
    return body


def _stop_text(stop: Any) -> str:
    """The OpenAI stop field as the studio's comma-separated stop_sequences knob."""
    if stop is None:
        return ""
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError(400, "stop: must be a string or a list of strings", "stop")
    if any("," in s for s in stops):
        raise RequestError(400, "stop: sequences containing a comma are not supported by the studio", "stop")
    return ", ".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stops if s)


def _params(body: dict, prompt_mode: str, system_prompt: str = "") -> TextParams:
    values: dict[str, Any] = {"stop_sequences": _stop_text(body.get("stop")), "prompt_mode": prompt_mode,
                              "system_prompt": system_prompt}
    length = body.get("max_completion_tokens", body.get("max_tokens"))
    if length is not None:
        values["max_new_tokens"] = length
    if body.get("seed") is not None:
        values["seed"] = body["seed"]
    for name, default in {**DEFAULTS, **STUDIO_KNOBS}.items():
        values[name] = default if body.get(name) is None else body[name]
    return knobs.make(TextParams, **values)


def _top_logprobs(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise RequestError(400, f"{name}: must be a whole number in [0, {MAX_TOP_LOGPROBS}], got {value!r}", name)
    return value


def _content(message: dict, index: int) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content blocks: the text ones
        content = "".join(block.get("text", "") for block in content if isinstance(block, dict)
                          and block.get("type") == "text")
    if not isinstance(content, str):
        raise RequestError(400, f"messages[{index}].content: must be text", "messages")
    return content


def chat_job(studio: Studio, body: dict) -> Job:
    body = _check_fields(body, CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise RequestError(400, "messages: must be a non-empty list of {role, content} objects", "messages")
    roles = [m.get("role") for m in messages]
    texts = [_content(m, i) for i, m in enumerate(messages)]
    continuing = bool(body.get("continue_final_message"))
    if not continuing and roles in (["user"], ["system", "user"]):
        prompt, params = texts[-1], _params(body, "chat", texts[0] if len(texts) == 2 else "")
    else:
        prompt, params = _render_chat(studio, body["model"], messages, texts, continuing), _params(body, "completion")
    if body.get("top_logprobs") and not body.get("logprobs"):
        raise RequestError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
    # -1: logprobs without alternatives
    top = (_top_logprobs(body.get("top_logprobs") or 0, "top_logprobs") or -1) if body.get("logprobs") else 0
    return Job(body["model"], prompt, params, top, bool(body.get("stream")),
               bool((body.get("stream_options") or {}).get("include_usage")))


def completion_job(studio: Studio, body: dict) -> Job:
    body = _check_fields(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(400, "prompt: must be one string", "prompt")
    logprobs = body.get("logprobs")
    top = 0 if logprobs is None else (_top_logprobs(logprobs, "logprobs") or -1)
    echo = bool(body.get("echo"))
    if echo and body.get("stream"):
        raise RequestError(400, "echo: not supported with stream", "echo")
    return Job(body["model"], prompt, _params(body, "completion"), top, bool(body.get("stream")),
               bool((body.get("stream_options") or {}).get("include_usage")), echo)


def _own_spec(studio: Studio, model: str):
    """The model's spec; a remote model is refused (the studio's /v1 serves its own)."""
    spec = studio.model_spec("text", model)
    if spec.source == "remote":
        raise RequestError(404, f"model: {spec.id} is served by another endpoint; the studio's /v1 serves its own "
                                f"models (GET /v1/models)", "model", "model_not_found")
    return spec


def _render_chat(studio: Studio, model: str, messages: list[dict], texts: list[str], continuing: bool) -> str:
    """A whole chat as text through the model's chat template (continued in completion mode)."""
    spec = _own_spec(studio, model)
    with studio._use(spec) as text_model:
        tokenizer = text_model.tokenizer
        if not tokenizer.chat_template:
            raise RequestError(400, f"messages: {spec.id} has no chat template; send one user message or use "
                                    f"/v1/completions", "messages")
        chat = [{"role": m.get("role"), "content": t} for m, t in zip(messages, texts)]
        if continuing and chat[-1]["role"] != "assistant":
            raise RequestError(400, "continue_final_message: the last message must be the assistant's",
                               "continue_final_message")
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=not continuing,
                                             continue_final_message=continuing)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
            text = text[len(bos):]  # the tokenizer adds it again in completion mode
        return text


# ----- running a job -----------------------------------------------------------------------

def _entry(text_model, token, top: int) -> dict:
    text = text_model.tokenizer.decode([token.id])
    entry = {"token": text, "logprob": token.logprob, "bytes": list(text.encode())}
    entry["top_logprobs"] = [{"token": alt, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(alt.encode())}
                             for alt, p in token.alternatives[:max(top, 0)]]
    return entry


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _finish_reason(tokens: list, params: TextParams) -> str:
    return "length" if tokens and len(tokens) >= params.max_new_tokens and not tokens[-1].special else "stop"


def run(studio: Studio, job: Job, stop: threading.Event) -> Iterator[tuple[str, Any, Any]]:
    """Yield ("start", the text model, prompt tokens), then ("token", visible text piece, Token)
    per generated token, then ("end", the last CompareUpdate, text held back until the end)."""
    spec = _own_spec(studio, job.model)
    with studio._use(spec) as text_model:  # the tokenizer: prompt counts and token strings
        from aigc_studio.engines import text as text_engine

        prompt_tokens = int(text_engine.encode_prompt(text_model, knobs.check_prompt(job.prompt), job.params).shape[-1])
    yield "start", text_model, prompt_tokens
    sent_text, sent_tokens = "", 0
    for update in studio.text_compare_stream(job.prompt, [("", job.params)], spec.id, stop,
                                             alternatives=max(job.top_logprobs, 1)):
        column = update.columns[0]
        for token in column.tokens[sent_tokens:]:
            piece = column.text[len(sent_text):] if column.text.startswith(sent_text) else ""
            sent_text += piece
            sent_tokens += 1
            yield "token", piece, token
        if column.result is not None:
            yield "end", update, column.text[len(sent_text):] if column.text.startswith(sent_text) else ""


def _prompt_logprobs(studio: Studio, job: Job) -> dict:
    """echo: the prompt's tokens with their log-probabilities (the first has no context: None)."""
    import torch

    spec = studio.model_spec("text", job.model)
    with studio._use(spec) as text_model:
        ids = text_model.tokenizer(knobs.check_prompt(job.prompt), return_tensors="pt").input_ids
        limit = text_model.backend.max_length
        if ids.shape[1] > limit:
            raise RequestError(400, f"prompt: at most {limit} tokens for this model, got {ids.shape[1]}", "prompt")
        logprobs = torch.log_softmax(text_model.backend.logits(ids).float(), dim=-1)
        tokens = [text_model.tokenizer.decode([int(i)]) for i in ids[0]]
        values = [None] + [float(logprobs[k, int(ids[0, k + 1])]) for k in range(ids.shape[1] - 1)]
        tops = [None] + [{text_model.tokenizer.decode([int(i)]): float(v)
                          for v, i in zip(*torch.topk(logprobs[k], max(job.top_logprobs, 1)))}
                         for k in range(ids.shape[1] - 1)]
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": _offsets(tokens, 0)}


def _offsets(pieces: list[str], start: int) -> list[int]:
    """Where each piece begins (in characters) in a text that has `start` characters before them."""
    return list(itertools.accumulate(map(len, pieces), initial=start))[:-1]


def _completion_logprobs(entries: list[dict], start: int) -> dict:
    tokens = [e["token"] for e in entries]
    return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in entries],
            "text_offset": _offsets(tokens, start)}


def answer(studio: Studio, job: Job, chat: bool) -> dict:
    """A whole (non-streamed) response."""
    text, tokens, entries, prompt_tokens, seed = "", [], [], 0, None
    for kind, first, second in run(studio, job, threading.Event()):
        if kind == "start":
            text_model, prompt_tokens = first, second
        elif kind == "token":
            text += first
            tokens.append(second)
            if job.top_logprobs:
                entries.append(_entry(text_model, second, job.top_logprobs))
        else:
            text += second
            seed = first.columns[0].result.recipe.params.get("seed")
    finish = _finish_reason(tokens, job.params)
    base = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()), "model": job.model,
            "usage": _usage(prompt_tokens, len(tokens)), "system_fingerprint": f"aigc-studio seed={seed}"}
    if chat:
        logprobs = {"content": entries} if job.top_logprobs else None
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                             "finish_reason": finish}]}
    logprobs = _completion_logprobs(entries, len(job.prompt)) if job.top_logprobs else None
    if job.echo:
        text = job.prompt + text
        if logprobs is not None:
            echoed = _prompt_logprobs(studio, job)
            logprobs = {key: echoed[key] + logprobs[key] for key in echoed}
    return {**base, "object": "text_completion",
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]}


def chunks(studio: Studio, job: Job, chat: bool, stop: threading.Event, gate: "Gate | None" = None) -> Iterator[str]:
    """The streamed response as server-sent events, ending with data: [DONE]. With a gate,
    waits for a free slot first and holds it until the generator ends (or is closed)."""
    base = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()), "model": job.model,
            "object": "chat.completion.chunk" if chat else "text_completion"}

    def event(choice: dict | None, **more) -> str:
        return "data: " + json.dumps({**base, "choices": [] if choice is None else [{"index": 0, **choice}], **more}) + "\n\n"

    text_model, tokens, at, prompt_tokens = None, [], len(job.prompt), 0
    with gate.slots if gate is not None else contextlib.nullcontext():
        try:
            if chat:
                yield event({"delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None})
            for kind, first, second in run(studio, job, stop):
                if kind == "start":
                    text_model, prompt_tokens = first, second
                elif kind == "token":
                    tokens.append(second)
                    entry = _entry(text_model, second, job.top_logprobs) if job.top_logprobs else None
                    if chat:
                        yield event({"delta": {"content": first}, "logprobs": {"content": [entry]} if entry else None,
                                     "finish_reason": None})
                    else:
                        yield event({"text": first, "logprobs": _completion_logprobs([entry], at) if entry else None,
                                     "finish_reason": None})
                        at += len(entry["token"]) if entry else 0
                else:
                    finish = _finish_reason(tokens, job.params)
                    if chat:
                        yield event({"delta": {"content": second} if second else {}, "logprobs": None,
                                     "finish_reason": finish})
                    else:
                        yield event({"text": second, "logprobs": None, "finish_reason": finish})
                    if job.usage_in_stream:
                        yield event(None, usage=_usage(prompt_tokens, len(tokens)))
        except Exception as error:  # the status line is sent already: the error travels as an event
            yield "data: " + json.dumps(as_request_error(error).body()) + "\n\n"
        yield "data: [DONE]\n\n"


# ----- the router ----------------------------------------------------------------------------

def router(studio: Studio) -> APIRouter:
    """/v1/models, /v1/chat/completions and /v1/completions over studio (see the module docstring)."""
    api = APIRouter(prefix="/v1")
    settings = studio.settings
    gate = Gate(settings.concurrency, settings.queue_size)

    def refused(request: Request) -> JSONResponse | None:
        key = settings.openai_api_key
        if not key:
            return None
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {key}".encode()):
            return RequestError(401, "a valid API key is needed: Authorization: Bearer <AIGC_OPENAI_API_KEY>", None,
                                "authentication_error").response()
        return None

    @api.get("/models")
    def models(request: Request):
        if (no := refused(request)) is not None:
            return no
        ids = [i for i in studio.catalog.choices("text") if studio.model_spec("text", i).source != "remote"]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "aigc-studio"}
                                           for i in ids]}

    async def serve(request: Request, chat: bool):
        if (no := refused(request)) is not None:
            return no
        try:
            body = await request.json()
        except ValueError:
            return RequestError(400, "the request body must be JSON").response()
        try:
            job = await run_in_threadpool(chat_job if chat else completion_job, studio, body)
            studio.model_spec("text", job.model)  # an unknown model: 404 before anything runs
            gate.admit()
        except Exception as error:
            return as_request_error(error).response()
        if not job.stream:
            try:
                return JSONResponse(await run_in_threadpool(_gated, gate, lambda: answer(studio, job, chat)))
            except Exception as error:
                return as_request_error(error).response()
        return EventStream(_stream(gate, studio, job, chat), media_type="text/event-stream")

    @api.post("/chat/completions")
    async def chat_completions(request: Request):
        return await serve(request, chat=True)

    @api.post("/completions")
    async def completions(request: Request):
        return await serve(request, chat=False)

    return api


def _gated(gate: Gate, work):
    try:
        with gate.slots:
            return work()
    finally:
        gate.leave()


async def _stream(gate: Gate, studio: Studio, job: Job, chat: bool):
    """Events from worker threads. A client that goes away sets `stop` and closes the event
    generator, which ends the generation and releases the model and the slot."""
    stop = threading.Event()
    events = chunks(studio, job, chat, stop, gate)
    try:
        while True:
            chunk = await run_in_threadpool(next, events, None)
            if chunk is None:
                break
            yield chunk
    finally:
        stop.set()
        gate.leave()
        threading.Thread(target=_close, args=(events,), daemon=True).start()


def _close(events: Iterator[str]) -> None:
    """Close a generator that a worker thread may still be running (it ends within a token, stop being set)."""
    for _ in range(12000):
        try:
            events.close()
            return
        except ValueError:  # "generator already executing"
            time.sleep(0.01)


class EventStream(StreamingResponse):
    """A StreamingResponse that closes its events when the client goes away (Starlette leaves
    the iterator suspended, and with it the model a generation holds)."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()
