"""Remote text, against real servers started here.

- A second studio (app.py with AIGC_OPENAI_API=1) serves /v1; a Studio in this process uses it
  as its remote backend and is compared token by token with its own local engine (both on
  torch, so the numbers are comparable).
- The `openai` client against that /v1: streaming chat with logprobs, seeds, refused knobs.
- A strict stand-in for servers that refuse fields and give no probabilities (as
  `transformers serve` refuses `logprobs`): a stdlib HTTP server speaking the protocol.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

from aigc_studio.catalog import remote_spec
from aigc_studio.config import Settings
from aigc_studio.studio import ModelLoadError, Studio, UnknownModelError
from tests.live_server import free_port, running_app

LOCAL = "smollm2-135m-instruct"
REMOTE = "remote:" + LOCAL
PROMPT = "Name three colours."


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """The second studio's /v1 URL (its own process, torch runtime, the embedded model)."""
    with running_app(tmp_path_factory.mktemp("v1-server"), AIGC_OPENAI_API="1", AIGC_TEXT_RUNTIME="torch",
                     AIGC_CONCURRENCY="2", AIGC_TEXT_ENDPOINT="") as url:
        yield url + "v1"


@pytest.fixture(scope="module")
def studio(v1, tmp_path_factory):
    """One studio with both: its own SmolLM2 (local) and the second studio's (remote:...)."""
    settings = Settings(preset="offline", text_runtime="torch", threads=1, text_endpoint=v1,
                        output_dir=tmp_path_factory.mktemp("remote-out"))
    return Studio(settings)


@pytest.fixture(scope="module")
def client(v1):
    return openai.OpenAI(base_url=v1, api_key="unused", max_retries=0, timeout=300)


def run(studio, model, params, stop=None):
    """(tokens in each update as it arrived, the final column)."""
    counts, update = [], None
    for update in studio.text_compare_stream(PROMPT, [("", params)], model, stop):
        counts.append(len(update.columns[0].tokens))
    return counts, update.columns[0]


# ----- the remote backend ------------------------------------------------------------------

def test_endpoint_models_join_the_catalog_marked_remote(studio, tmp_path):
    assert REMOTE in studio.catalog.choices("text")
    spec = studio.model_spec("text", REMOTE)
    assert spec.source == "remote" and spec.location == LOCAL
    assert "Remote" in spec.description and studio.settings.text_endpoint in spec.description
    with pytest.raises(UnknownModelError):
        studio.model_spec("text", "remote:not-served-there")
    # an endpoint that does not answer adds nothing, and the studio still starts
    dead = Studio(Settings(preset="offline", text_endpoint=f"http://127.0.0.1:{free_port()}/v1", output_dir=tmp_path))
    assert not [i for i in dead.catalog.choices("text") if i.startswith("remote:")]
    assert LOCAL in dead.catalog.choices("text")


def test_remote_tokens_and_probabilities_equal_the_local_engine(studio):
    params = studio.params("text", LOCAL, greedy=True, max_new_tokens=12, seed=1)
    _, local = run(studio, LOCAL, params)
    counts, remote = run(studio, REMOTE, params)
    assert remote.text == local.text and remote.text
    assert len(remote.tokens) == len(local.tokens)
    for mine, theirs in zip(local.tokens, remote.tokens):
        assert theirs.text == mine.text
        assert abs(theirs.logprob - mine.logprob) < 1e-4, (mine, theirs)
        assert len(theirs.alternatives) == 20  # the server's top-20
        assert theirs.alternatives[0][0] == mine.alternatives[0][0]
        assert abs(theirs.alternatives[0][1] - mine.alternatives[0][1]) < 1e-4
    # streamed: the tokens arrived one update at a time
    assert counts[:-1] == list(range(1, len(remote.tokens) + 1))
    assert remote.result.recipe.runtime == f"remote {studio.settings.text_endpoint}"
    assert remote.result.recipe.model_id == REMOTE


def test_stop_closes_the_remote_stream(studio):
    stop = threading.Event()
    params = studio.params("text", REMOTE, temperature=1.0, max_new_tokens=200, seed=3)
    seen = []
    for update in studio.text_compare_stream(PROMPT, [("", params)], REMOTE, stop):
        seen = update.columns[0].tokens
        if len(seen) == 3:
            stop.set()
    assert len(seen) == 3
    assert update.columns[0].result is not None  # the stopped answer still ends with its recipe
    # the server stopped that generation: the next request is answered
    _, after = run(studio, REMOTE, studio.params("text", REMOTE, greedy=True, max_new_tokens=3, seed=1))
    assert len(after.tokens) == 3


def test_side_by_side_columns_are_concurrent_requests_equal_to_lone_runs(studio):
    base = studio.params("text", REMOTE, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=10)
    a, b = dataclasses.replace(base, seed=11), dataclasses.replace(base, seed=12)
    final = list(studio.text_compare_stream(PROMPT, [("seed=11", a), ("seed=12", b)], REMOTE))[-1]
    for column, params in zip(final.columns, (a, b)):
        _, lone = run(studio, REMOTE, params)
        assert column.text == lone.text
        assert [t.logprob for t in column.tokens] == pytest.approx([t.logprob for t in lone.tokens], abs=1e-4)
        assert column.result.recipe.params["seed"] == params.seed
    if final.columns[0].text != final.columns[1].text:  # token ids are comparable across columns
        assert final.diverge_at is not None


def test_remote_explainer_is_the_servers_top20_through_the_studios_stages(studio):
    params = studio.params("text", LOCAL, greedy=True, max_new_tokens=4, seed=1)
    remote = studio.explain_next_token(PROMPT, params, REMOTE, top_n=20)
    local = studio.explain_next_token(PROMPT, params, LOCAL, top_n=20)
    assert "approximate" in remote.note and "approximate" in remote.stages[0].setting
    assert len(remote.candidates) == 20
    assert [s.name for s in remote.stages] == [s.name for s in local.stages]
    assert remote.candidates[0] == local.candidates[0]
    assert remote.stages[-1].probs[0] == pytest.approx(1.0)  # greedy keeps the likeliest only
    # raw probabilities over the top-20 only: renormalised, so ratios match the exact ones
    ratio = lambda e: e.stages[0].probs[1] / e.stages[0].probs[0]  # noqa: E731
    assert remote.candidates[1] == local.candidates[1]
    assert ratio(remote) == pytest.approx(ratio(local), rel=1e-3)
    assert sum(remote.stages[0].probs) == pytest.approx(1.0, abs=1e-5)
    # a position inside a generated answer, given as the token ids the generation returned
    _, answer = run(studio, REMOTE, params)
    ids = [t.id for t in answer.tokens]
    inside = studio.explain_next_token(PROMPT, params, REMOTE, answer=ids, position=2)
    assert inside.chosen_id == ids[2] and inside.candidates[0] == answer.tokens[2].text


def test_remote_perplexity_equals_local(studio):
    text = "The quick brown fox jumps over the lazy dog."
    local, n = studio.perplexity(text, LOCAL)
    remote, m = studio.perplexity(text, REMOTE)
    assert m == n and remote == pytest.approx(local, rel=1e-4)


# ----- the openai client against the studio's /v1 --------------------------------------------

def test_openai_client_streams_chat_with_logprobs(client):
    models = [m.id for m in client.models.list()]
    assert LOCAL in models
    stream = client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": PROMPT}], max_tokens=8,
                                            temperature=0, logprobs=True, top_logprobs=5, stream=True)
    pieces, entries, reasons = [], [], []
    for chunk in stream:
        choice = chunk.choices[0]
        pieces.append(choice.delta.content or "")
        entries += choice.logprobs.content if choice.logprobs else []
        reasons.append(choice.finish_reason)
    whole = client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": PROMPT}], max_tokens=8,
                                           temperature=0, logprobs=True, top_logprobs=5)
    assert "".join(pieces) == whole.choices[0].message.content != ""
    assert len(entries) == 8 and reasons[-1] == "length" == whole.choices[0].finish_reason
    for entry in entries:
        assert len(entry.top_logprobs) == 5 and entry.logprob <= 0
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    greedy = entries[0]
    assert greedy.token == greedy.top_logprobs[0].token and greedy.logprob == pytest.approx(greedy.top_logprobs[0].logprob)
    assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in whole.choices[0].logprobs.content], abs=1e-4)
    assert whole.usage.completion_tokens == 8 and whole.usage.prompt_tokens > 5


def test_openai_client_seed_reproduces_and_knobs_apply(client):
    def sample(seed, **extra):
        return client.chat.completions.create(
            model=LOCAL, messages=[{"role": "user", "content": "Write a word."}], max_tokens=12, temperature=1.0,
            seed=seed, extra_body={"top_k": 0, **extra}).choices[0].message.content

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    # stop: the answer ends before the stop sequence, which is left out
    text = client.completions.create(model=LOCAL, prompt="1, 2, 3, 4, 5, 6", max_tokens=20, temperature=0,
                                     stop=[" 9"]).choices[0].text
    assert " 9" not in text and "8" in text


def test_openai_client_gets_clear_errors(client, v1):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "x"}], temperature=5)
    assert "temperature" in str(refused.value) and "[0.0, 2.0]" in str(refused.value)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mirostat": 2})
    assert "mirostat: unknown field" in str(unknown.value)
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "x"}], presence_penalty=1.0)
    assert "presence_penalty" in str(unsupported.value) and "repetition_penalty" in str(unsupported.value)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert "not in the catalog" in str(missing.value)


# ----- servers that refuse fields, give no probabilities, fail ---------------------------------

class StrictServer(BaseHTTPRequestHandler):
    """Refuses top_k and logprobs with HTTP 400 naming them (like servers that implement
    neither), then streams plain text without probabilities. Model "broken" answers 500;
    model "silent" never answers."""

    requests: list = []

    def log_message(self, *args):
        pass

    def _json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._json(200, {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "t"}
                                                    for name in ("plain", "broken", "silent")]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if body["model"] == "silent":
            threading.Event().wait(30)
            return
        if body["model"] == "broken":
            return self._json(500, {"error": {"message": "the GPU fell over", "type": "server_error"}})
        for field in ("top_k", "logprobs"):
            if field in body:
                return self._json(400, {"error": {"message": f"Unrecognized request argument supplied: {field}",
                                                  "type": "invalid_request_error"}})
        if not body.get("stream"):
            return self._json(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "plain",
                                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Red"},
                                                 "finish_reason": "length"}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Red", ",", " green"):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "plain",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StrictServer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1"
    settings = Settings(preset="offline", text_endpoint=endpoint, text_timeout_s=1.0,
                        output_dir=tmp_path_factory.mktemp("strict-out"))
    yield Studio(settings)
    server.shutdown()


def test_refused_knobs_and_missing_probabilities_are_notes_not_failures(strict):
    params = strict.params("text", "remote:plain", temperature=0.8, top_k=40, max_new_tokens=5, seed=2)
    updates = list(strict.text_compare_stream("hi", [("", params)], "remote:plain"))
    final = updates[-1]
    assert final.columns[0].text == "Red, green"
    assert "refused top_k" in final.status and "refused logprobs" in final.status
    assert "no token probabilities" in final.status
    tokens = final.columns[0].tokens
    assert [t.text for t in tokens] == ["Red", ",", " green"]
    assert all(math.isnan(t.logprob) and t.alternatives == [] for t in tokens)
    sent = StrictServer.requests[-1]
    assert sent["temperature"] == 0.8 and sent["seed"] == 2 and sent["max_tokens"] == 5
    assert "top_k" not in sent and "logprobs" not in sent


def test_endpoint_failures_are_clear_messages_naming_the_endpoint(strict, tmp_path):
    endpoint = strict.settings.text_endpoint
    with pytest.raises(ModelLoadError, match=r"answered HTTP 500: the GPU fell over") as broken:
        strict.text("hi", "remote:broken", max_new_tokens=3)
    assert endpoint in str(broken.value)
    with pytest.raises(ModelLoadError, match=r"did not answer within 1 s") as silent:
        strict.text("hi", "remote:silent", max_new_tokens=3)
    assert endpoint in str(silent.value)
    dead_endpoint = f"http://127.0.0.1:{free_port()}/v1"
    dead = Studio(Settings(preset="offline", text_endpoint=dead_endpoint, output_dir=tmp_path))
    dead.catalog.add(remote_spec("gone", dead_endpoint))
    with pytest.raises(ModelLoadError, match="could not be reached") as refused:
        dead.text("hi", "remote:gone", max_new_tokens=3)
    assert dead_endpoint in str(refused.value)
    with pytest.raises(ModelLoadError, match="no token probabilities"):
        strict.explain_next_token("hi", strict.params("text", "remote:plain", top_k=0), "remote:plain")


# ----- /v1 with a key and a full queue ---------------------------------------------------------

def test_v1_checks_the_key_and_answers_busy_when_the_queue_is_full(tmp_path):
    with running_app(tmp_path, AIGC_OPENAI_API="1", AIGC_OPENAI_API_KEY="sesame", AIGC_TEXT_RUNTIME="torch",
                     AIGC_CONCURRENCY="1", AIGC_QUEUE_SIZE="1", AIGC_TEXT_ENDPOINT="") as url:
        with pytest.raises(openai.AuthenticationError, match="AIGC_OPENAI_API_KEY"):
            openai.OpenAI(base_url=url + "v1", api_key="wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=url + "v1", api_key="sesame", max_retries=0, timeout=300)
        assert LOCAL in [m.id for m in client.models.list()]

        def long_stream():
            return client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": PROMPT}],
                                                  max_tokens=1024, temperature=1.0, seed=1, stream=True)

        running = long_stream()
        next(iter(running))  # generating: holds the one slot
        waiting = long_stream()  # admitted: waits for the slot (the queue's one place)
        with pytest.raises(openai.InternalServerError, match="busy") as busy:
            long_stream()
        assert busy.value.status_code == 503 and busy.value.response.headers["Retry-After"] == "5"
        running.close()
        waiting.close()
        # closed streams give their places back (the server notices at its next token)
        for _ in range(600):  # polls until then, not a timing assertion
            try:
                answer = client.chat.completions.create(model=LOCAL, messages=[{"role": "user", "content": "Hi"}],
                                                        max_tokens=2, temperature=0)
                break
            except openai.InternalServerError:
                threading.Event().wait(0.5)
        else:
            pytest.fail("the closed streams never gave their places back")
        assert answer.usage.completion_tokens == 2


# ----- transformers serve: a real third-party server without probabilities ------------------------

@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory):
    """`transformers serve` (the pinned transformers) serving the embedded SmolLM2's converted
    folder. It lists no models for a forced one, so the allowlist names it (remote:<name>)."""
    import os
    import subprocess
    import sys
    import urllib.request

    from aigc_studio.engines import text as text_engine

    folder = Path(tmp_path_factory.mktemp("serve-cache"))
    local = Studio(Settings(preset="offline", text_runtime="torch", threads=1, output_dir=folder))
    local.load("text", LOCAL)  # converts the embedded GGUF once, if no test did yet
    model = str(text_engine.converted_folder(local.model_spec("text", LOCAL), local.settings.cache_dir))
    port = free_port()
    (folder / "hub").mkdir()
    env = {**os.environ, "HF_HUB_CACHE": str(folder / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log_path = folder / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", model, "--port", str(port)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):  # polls, not a timing assertion: a dead process fails at once
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited:\n{log_path.read_text()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                threading.Event().wait(0.5)
        else:
            raise RuntimeError(f"transformers serve never answered:\n{log_path.read_text()}")
        endpoint = f"http://127.0.0.1:{port}/v1"
        yield Studio(Settings(preset="offline", text_endpoint=endpoint, allowlist=("remote:" + model,),
                              output_dir=folder)), "remote:" + model
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.server  # a real third-party server process, running the embedded model
def test_transformers_serve_streams_text_and_the_studio_says_it_gives_no_probabilities(transformers_serve):
    studio, model = transformers_serve
    assert model in studio.catalog.choices("text")
    params = studio.params("text", model, temperature=0.7, top_k=40, max_new_tokens=6, seed=1)
    final = list(studio.text_compare_stream("Say hello.", [("", params)], model))[-1]
    column = final.columns[0]
    assert column.text.strip() and len(column.tokens) >= 2
    assert "refused top_k" in final.status  # its 422: "Unexpected fields in the request: {'top_k'}"
    assert "no token probabilities" in final.status  # it ignores logprobs
    assert all(math.isnan(t.logprob) and t.alternatives == [] for t in column.tokens)
    assert column.result.recipe.runtime.startswith("remote http://127.0.0.1:")


def test_settings_for_remote_text_and_the_v1_api():
    default = Settings.from_env({})
    assert default.openai_api is False and default.text_endpoint == ""  # /v1 is off unless the operator opts in
    on = Settings.from_env({"AIGC_OPENAI_API": "1", "AIGC_OPENAI_API_KEY": "k", "AIGC_TEXT_ENDPOINT": "http://h:8000/v1/",
                            "AIGC_TEXT_API_KEY": "t", "AIGC_TEXT_TIMEOUT_S": "5"})
    assert (on.openai_api, on.openai_api_key, on.text_endpoint, on.text_api_key, on.text_timeout_s) == \
        (True, "k", "http://h:8000/v1", "t", 5.0)
    with pytest.raises(ValueError, match="AIGC_TEXT_ENDPOINT"):
        Settings.from_env({"AIGC_TEXT_ENDPOINT": "gpu-box:8000"})
    with pytest.raises(ValueError, match="AIGC_TEXT_TIMEOUT_S"):
        Settings.from_env({"AIGC_TEXT_TIMEOUT_S": "0"})


# ----- /v1/models lists only what can run --------------------------------------------------------

def test_v1_models_offline_lists_only_loadable_models_and_each_answers(tmp_path, tiny_lm_path):
    """Offline (HF_HUB_OFFLINE=1, as in every test), a hub model is listed only once the local
    Hub cache holds it: here a tiny random model placed under SmolLM2-360M's repo id."""
    import shutil

    from aigc_studio.catalog import HUB_MODELS

    hub = tmp_path / "hub"
    repo = hub / "models--HuggingFaceTB--SmolLM2-360M-Instruct"
    shutil.copytree(tiny_lm_path, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    with running_app(tmp_path / "out", AIGC_OPENAI_API="1", AIGC_TEXT_ENDPOINT="", HF_HUB_OFFLINE="1",
                     HF_HUB_CACHE=str(hub)) as url:
        client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0, timeout=300)
        listed = [m.id for m in client.models.list()]
        assert listed == ["smollm2-360m-instruct", LOCAL]
        for model in listed:
            answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                                    max_tokens=3, temperature=0)
            assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
        missing = next(s for s in HUB_MODELS if s.modality == "text" and s.id not in listed)
        with pytest.raises(openai.NotFoundError, match="needs the Hub"):  # refused at once: no load is tried
            client.chat.completions.create(model=missing.id, messages=[{"role": "user", "content": PROMPT}],
                                           max_tokens=3)
