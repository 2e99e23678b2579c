"""Reliability: overload, cancel and memory faults, through a real server and in the backend.

The server here is the real app (build_demo + launch, Gradio's HTTP server on
loopback) over the tiny test models, started in this process so that faults can
be injected into the engines (monkeypatch) and the loaded models observed.
Its queue is small (QUEUE_SIZE waiting, CONCURRENCY running per event) so that
overload is reached quickly.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from aigc_studio.catalog import local_spec
from aigc_studio.config import Settings
from aigc_studio.engines import audio as audio_engine
from aigc_studio.engines import image as image_engine
from aigc_studio.engines import text as text_engine
from aigc_studio.engines.image import GenerationStopped
from aigc_studio.models import ModelManager, trim_heap
from aigc_studio.studio import ModelMemoryError
from aigc_studio.ui.app import build_demo, busy_message, launch
from tests.conftest import IMAGE_ID, TEXT_ID, VITS_ID
from tests.live_server import free_port
from tests.test_ui import GENERATION, open_studio

QUEUE_SIZE, CONCURRENCY = 4, 2
RUNNING = {Status.PROCESSING, Status.PROGRESS, Status.ITERATING, Status.LOG}  # a job a worker has taken
WAIT = 300  # seconds; a hang detector on a busy shared machine, never a speed claim
PROMPT = "write a short poem about spring rain"
SMALL = {  # tiny knobs per endpoint: each request takes a fraction of a second
    "/generate_text": dict(prompt=PROMPT, max_new_tokens=4, seed=1),
    "/generate_image": dict(prompt="a red circle", steps=2, seed=1),
    "/generate_audio": dict(prompt="the quick brown fox", seed=1),
}


@pytest.fixture(scope="module")
def server(studio, tmp_path_factory):
    """(Studio, URL) of the app serving the tiny models on a free loopback port."""
    s = studio(queue_size=QUEUE_SIZE, concurrency=CONCURRENCY)
    demo = build_demo(s)
    port = free_port()
    launch(demo, s, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield s, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture
def client(server, downloads):
    return Client(server[1], verbose=False, download_files=str(downloads))


def loaded(s, model_id: str):
    """The loaded model object (fails if it is not loaded)."""
    assert s.models.is_loaded(model_id)
    return s.models.get(model_id, lambda: pytest.fail(f"{model_id} was not loaded")).value


def pixels(path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def wait_for(condition, what: str, seen=lambda: None) -> None:
    """Poll until condition() is true; a hang detector, not a timing assertion.
    seen() describes the state in the failure message."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}; seen: {seen()}"
        time.sleep(0.02)


# ===== settings ==================================================================================

def test_queue_limits_come_from_the_environment():
    settings = Settings.from_env({"AIGC_QUEUE_SIZE": "7", "AIGC_CONCURRENCY": "3"})
    assert (settings.queue_size, settings.concurrency) == (7, 3)
    assert (Settings().queue_size, Settings().concurrency) == (32, 1)


@pytest.mark.parametrize("variable, value, field", [
    ("AIGC_QUEUE_SIZE", "0", "queue_size"),
    ("AIGC_CONCURRENCY", "-1", "concurrency"),
    ("AIGC_QUEUE_SIZE", "many", "queue_size"),
    ("AIGC_MEMORY_BUDGET_GB", "0", "memory_budget_gb"),
])
def test_bad_queue_settings_name_the_setting(variable, value, field):
    with pytest.raises(ValueError) as error:
        Settings.from_env({variable: value})
    assert field in str(error.value) and variable in str(error.value)


# ===== overload ==================================================================================

@pytest.fixture
def held_image_model(server, monkeypatch):
    """Every image generation waits at its first denoising step until the returned
    event is set: the server's workers stay busy while a test looks at the queue."""
    s, _ = server
    s.load("image")
    release = threading.Event()
    entered = []
    real = image_engine.generate

    def held(*args, **kwargs):
        entered.append(1)
        assert release.wait(WAIT), "the test never released the image model"
        return real(*args, **kwargs)

    monkeypatch.setattr(image_engine, "generate", held)
    yield release, entered
    release.set()


def fill_image_workers(url: str, downloads) -> list:
    """CONCURRENCY image jobs from other clients, returned once workers have taken
    them all. Under held_image_model one is in the model; the studio's model lock
    keeps the others waiting inside their handlers."""
    jobs = [Client(url, verbose=False, download_files=str(downloads)).submit(
        api_name="/generate_image", **SMALL["/generate_image"]) for _ in range(CONCURRENCY)]
    wait_for(lambda: all(j.status().code in RUNNING for j in jobs), f"{CONCURRENCY} running",
             lambda: [j.status().code for j in jobs])
    return jobs


def test_concurrency_limit_and_queue_size_apply(server, client, held_image_model, downloads):
    """CONCURRENCY image requests run at once, QUEUE_SIZE more wait, the next one is
    refused at once with a clear "busy" message; once the model is free every
    accepted request is answered."""
    release, entered = held_image_model
    _, url = server
    # Gradio's max_size counts waiting jobs only: submitting all at once could fill
    # the queue before its workers take the first ones. So the running jobs go first.
    running = fill_image_workers(url, downloads)
    wait_for(lambda: len(entered) >= 1, "an image generation started")
    waiting = [Client(url, verbose=False, download_files=str(downloads)).submit(
        api_name="/generate_image", **SMALL["/generate_image"]) for _ in range(QUEUE_SIZE)]
    wait_for(lambda: all(j.status().code == Status.IN_QUEUE for j in waiting),
             f"{QUEUE_SIZE} queued", lambda: [j.status().code for j in running + waiting])
    assert all(j.status().code in RUNNING for j in running) and len(entered) == 1

    with pytest.raises(QueueError) as refused:
        client.predict(api_name="/generate_image", **SMALL["/generate_image"])
    assert "try again" in str(refused.value).lower()
    config = httpx.get(url + "config").json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "generate_image")
    raw = httpx.post(url + "gradio_api/queue/join", json={
        "data": ["a red circle", "", 2, 3.0, 32, 32, 1, "default", IMAGE_ID, 1],
        "fn_index": fn_index, "session_hash": "raw-http-client", "event_data": None, "trigger_id": None})
    assert raw.status_code == 503
    assert raw.json()["detail"] == busy_message(QUEUE_SIZE)
    assert raw.headers["retry-after"] == "5"

    release.set()
    for job in running + waiting:
        assert pixels(job.result(timeout=WAIT)).shape == (32, 32, 3)


def test_stop_in_the_browser_drops_an_image_job_still_waiting_in_the_queue(server, held_image_model, downloads):
    """Two other users hold the image workers; this user's Generate waits in the
    queue, and their Stop takes it out, so it never runs. Generate works again after."""
    release, entered = held_image_model
    _, url = server
    others = fill_image_workers(url, downloads)
    queued = lambda: httpx.get(url + "gradio_api/queue/status").json()["queue_size"]
    with sync_playwright() as playwright:
        page = open_studio(playwright, url)
        page.get_by_role("tab", name="Image").click()
        page.locator("#image-prompt textarea").fill("a red circle")
        page.locator("#image-generate").click()
        wait_for(lambda: queued() == 1, "the browser's job waits in the queue", queued)
        page.locator("#image-stop").click()
        wait_for(lambda: queued() == 0, "Stop took the job out of the queue", queued)

        release.set()
        for job in others:
            assert pixels(job.result(timeout=WAIT)).shape == (32, 32, 3)
        assert len(entered) == CONCURRENCY, "the stopped job ran anyway"
        page.locator("#image-generate").click()
        expect(page.locator("#image-output img")).to_be_visible(timeout=GENERATION)
        assert len(entered) == CONCURRENCY + 1


def test_many_sessions_across_every_tab_are_answered_or_refused_never_lost(server, downloads):
    """20 gradio_client sessions hammer text, image and audio for a while. Every
    request ends as an answer or a clean "queue full" refusal; no other error, no
    request left hanging, and the server answers afterwards."""
    _, url = server
    sessions, seconds = 20, 15.0  # seconds of load: a bound on the test's length, not a speed claim
    endpoints = list(SMALL)
    stop_at = time.monotonic() + seconds

    def session(index: int) -> list[tuple[str, str]]:
        c = Client(url, verbose=False, download_files=str(downloads))
        outcomes = []
        turn = index
        while time.monotonic() < stop_at:
            endpoint = endpoints[turn % len(endpoints)]
            turn += 1
            try:
                answer = c.predict(api_name=endpoint, **SMALL[endpoint])
                outcomes.append((endpoint, "answered" if answer else f"empty answer {answer!r}"))
            except QueueError:
                outcomes.append((endpoint, "refused"))
                time.sleep(0.2)  # a polite client backs off before trying again
            except Exception as error:  # anything else is a failure of the server
                outcomes.append((endpoint, f"{type(error).__name__}: {error}"))
        return outcomes

    with ThreadPoolExecutor(sessions) as pool:
        futures = [pool.submit(session, i) for i in range(sessions)]
        results = [f.result(timeout=WAIT) for f in futures]  # a hung request fails here
    outcomes = [o for r in results for o in r]
    failures = [o for o in outcomes if o[1] not in ("answered", "refused")]
    assert not failures, failures[:5]
    counts = Counter(outcomes)
    for endpoint in endpoints:
        assert counts[(endpoint, "answered")] > 0, counts
    refused = sum(counts[(e, "refused")] for e in endpoints)
    assert refused > 0, f"{sessions} sessions never filled a queue of {QUEUE_SIZE}"
    assert Client(url, verbose=False).predict(api_name="/generate_text", **SMALL["/generate_text"])


# ===== cancel ====================================================================================

def test_cancelling_a_text_job_stops_the_model_within_a_token_and_it_stays_usable(server, client, monkeypatch):
    s, _ = server
    before = client.predict(api_name="/generate_text", **SMALL["/generate_text"])
    text_model = loaded(s, TEXT_ID)
    eos = text_model.tokenizer.eos_token_id
    forwards, at_close, at_end = [], [], []

    def slow_and_endless(module, args, output):
        output.logits[..., eos] = float("-inf")  # never ends by itself: only the cancel can end it
        forwards.append(1)
        time.sleep(0.05)  # a slow model: the cancel lands mid-answer

    real = text_engine.generate

    def watched(*args, **kwargs):
        inner = real(*args, **kwargs)
        try:
            for item in inner:
                yield item
        except GeneratorExit:  # Gradio closes the handler when the job is cancelled
            at_close.append(len(forwards))
            raise
        finally:
            inner.close()  # what Python does anyway once `inner` is dropped; here, before at_end is noted
            at_end.append(len(forwards))

    monkeypatch.setattr(text_engine, "generate", watched)
    hook = text_model.model.register_forward_hook(slow_and_endless)
    try:
        job = client.submit(prompt=PROMPT, max_new_tokens=1024, seed=1, api_name="/generate_text")
        wait_for(lambda: len(job.outputs()) >= 3, "three streamed updates")
        job.cancel()
        wait_for(lambda: at_end, "the cancelled generation ended")
    finally:
        hook.remove()
    assert at_close, "the cancelled handler was never closed"
    # The token being computed when the cancel arrives is finished, then the model
    # stops (one more only if the cancel falls between a token's stop check and the next).
    assert at_end[0] - at_close[0] <= 2 and at_end[0] < 1024
    assert client.predict(api_name="/generate_text", **SMALL["/generate_text"]) == before


def test_cancelling_an_image_job_stops_between_steps_and_the_model_stays_usable(server, client, monkeypatch):
    s, _ = server
    before = client.predict(api_name="/generate_image", **SMALL["/generate_image"])
    pipe = loaded(s, IMAGE_ID)
    steps, outcome = [], []
    real = image_engine.generate

    def watched(*args, **kwargs):
        try:
            images = real(*args, **kwargs)
        except GenerationStopped:
            outcome.append("stopped")
            raise
        outcome.append("finished")
        return images

    def slow(module, args, output):
        steps.append(1)
        time.sleep(0.05)

    monkeypatch.setattr(image_engine, "generate", watched)
    hook = pipe.unet.register_forward_hook(slow)
    try:
        job = client.submit(prompt="a red circle", steps=150, seed=2, api_name="/generate_image")
        wait_for(lambda: len(steps) >= 3, "three denoising steps")
        job.cancel()
        wait_for(lambda: outcome, "the cancelled generation ended")
    finally:
        hook.remove()
    assert outcome == ["stopped"], "the worker ran on after the job was cancelled"
    assert len(steps) < 150
    after = client.predict(api_name="/generate_image", **SMALL["/generate_image"])
    assert np.array_equal(pixels(after), pixels(before))


def test_stop_event_ends_an_image_within_one_step_and_the_next_image_is_unchanged(studio):
    s = studio()
    reference = np.asarray(s.image("a red circle", steps=6, seed=3).output)
    stop = threading.Event()
    seen = []

    def press_stop_at_step_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 1:
            stop.set()

    params = s.params("image", steps=20, seed=3)
    with pytest.raises(GenerationStopped):
        s.images("a red circle", [("", params)], on_step=press_stop_at_step_two, stop=stop)
    assert seen == [0, 1]  # the step in progress when Stop came was the last one
    assert np.array_equal(np.asarray(s.image("a red circle", steps=6, seed=3).output), reference)


def test_stop_event_ends_a_grid_within_one_step_and_the_model_stays_usable(studio):
    s = studio()
    base = s.params("image", steps=5, seed=3)
    reference, _ = s.image_grid("a red circle", base, "guidance", [1, 3])
    stop = threading.Event()
    seen = []

    def press_stop_at_step_two(step: int, total: int) -> None:
        seen.append(step)
        if step == 1:
            stop.set()

    with pytest.raises(GenerationStopped):
        s.image_grid("a red circle", base, "guidance", [1, 3], on_step=press_stop_at_step_two, stop=stop)
    assert seen == [0, 1]  # the first cell's second step was the last: no other cell ran
    again, _ = s.image_grid("a red circle", base, "guidance", [1, 3])
    assert np.array_equal(np.asarray(again), np.asarray(reference))


def test_stop_event_ends_text_within_one_token_and_the_next_answer_is_unchanged(studio):
    s = studio()
    reference = s.text(PROMPT, seed=4, max_new_tokens=8).output
    s.load("text")
    forwards = []
    stop = threading.Event()

    def press_stop_after_three(*args) -> None:
        forwards.append(1)
        if len(forwards) == 3:
            stop.set()

    hook = loaded(s, TEXT_ID).model.register_forward_hook(press_stop_after_three)
    try:
        updates = list(s.text_stream(PROMPT, s.params("text", seed=4, max_new_tokens=300), stop=stop))
    finally:
        hook.remove()
    assert len(forwards) == 3 and len(updates[-1].tokens) <= 3
    assert s.text(PROMPT, seed=4, max_new_tokens=8).output == reference


# ===== memory faults =============================================================================

def test_out_of_memory_while_generating_gives_a_clear_message_and_the_next_request_succeeds(server, client,
                                                                                           monkeypatch):
    s, _ = server
    real = image_engine.generate
    faults = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")]

    def out_of_memory_once(*args, **kwargs):
        if faults:
            raise faults.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(image_engine, "generate", out_of_memory_once)
    with pytest.raises(AppError) as error:
        client.predict(api_name="/generate_image", **SMALL["/generate_image"])
    message = str(error.value)
    assert message.startswith(f"Out of memory while generating with {IMAGE_ID} on cpu")
    assert "smaller" in message and "Traceback" not in message
    assert s.models.is_loaded(IMAGE_ID)  # the model itself was fine: it stays loaded
    assert pixels(client.predict(api_name="/generate_image", **SMALL["/generate_image"])).shape == (32, 32, 3)


def test_out_of_memory_while_loading_frees_the_idle_models_says_so_and_recovers(server, client, monkeypatch):
    s, _ = server
    s.load("text")
    s.unload("audio")
    real = audio_engine.load
    attempts = []

    def never_fits(*args, **kwargs):
        attempts.append(1)
        raise MemoryError()

    monkeypatch.setattr(audio_engine, "load", never_fits)
    with pytest.raises(AppError) as error:
        client.predict(api_name="/generate_audio", **SMALL["/generate_audio"])
    message = str(error.value)
    assert message.startswith(f"Out of memory while loading {VITS_ID} on cpu") and "Traceback" not in message
    assert len(attempts) == 2  # once, then again after unloading the idle models
    assert s.models.loaded() == []
    monkeypatch.setattr(audio_engine, "load", real)
    path = client.predict(api_name="/generate_audio", **SMALL["/generate_audio"])
    assert path.endswith(".wav") and s.models.is_loaded(VITS_ID)


def test_out_of_memory_once_while_loading_is_retried_after_unloading_idle_models(studio, monkeypatch):
    s = studio()
    s.load("text")
    s.load("image")
    real = audio_engine.load
    faults = [MemoryError()]

    def out_of_memory_once(*args, **kwargs):
        if faults:
            raise faults.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(audio_engine, "load", out_of_memory_once)
    rate, samples = s.audio("hello there", seed=1).output
    assert len(samples) > 0 and not faults
    assert s.models.loaded() == [VITS_ID]


def test_out_of_memory_inside_the_text_model_is_reported_and_the_model_still_works(studio):
    s = studio()
    reference = s.text(PROMPT, seed=5, max_new_tokens=6).output
    forwards = []

    def out_of_memory_at_the_second_token(*args) -> None:
        forwards.append(1)
        if len(forwards) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = loaded(s, TEXT_ID).model.register_forward_hook(out_of_memory_at_the_second_token)
    try:
        with pytest.raises(ModelMemoryError) as error:
            s.text(PROMPT, seed=5, max_new_tokens=6)
    finally:
        hook.remove()
    assert str(error.value).startswith(f"Out of memory while generating with {TEXT_ID}")
    assert isinstance(error.value, MemoryError)
    assert s.text(PROMPT, seed=5, max_new_tokens=6).output == reference


def test_the_ui_turns_a_raw_out_of_memory_into_a_message():
    import gradio as gr

    from aigc_studio.ui.errors import user_errors

    for error in (torch.OutOfMemoryError("CUDA out of memory"), MemoryError()):
        with pytest.raises(gr.Error) as shown, user_errors():
            raise error
        assert shown.value.message.startswith("Out of memory: try a smaller size")


# ===== the model manager: one copy, memory really freed ===========================================

class Blob(torch.nn.Module):
    def __init__(self, nbytes: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(nbytes // 4))


def test_a_model_being_unloaded_is_shared_not_loaded_a_second_time():
    manager = ModelManager(10_000)
    first = manager.get("a", lambda: Blob(400))
    alive = weakref.ref(first.value)
    unloaded = threading.Event()
    first.lock.acquire()  # a generation is running on it
    try:
        unloading = threading.Thread(target=lambda: (manager.unload("a"), unloaded.set()))
        unloading.start()
        # While the unload waits for the generation, a new request gets the same model.
        again = manager.get("a", lambda: pytest.fail("a second copy was loaded"))
        assert again is first and again.value is not None and not unloaded.is_set()
    finally:
        first.lock.release()
    unloading.join(WAIT)
    assert unloaded.is_set() and first.value is None
    gc.collect()
    assert alive() is None, "the unloaded model is still referenced somewhere"
    manager.get("a", lambda: Blob(400))
    assert manager.load_count == {"a": 2}


def test_eviction_before_loading_keeps_the_peak_under_the_budget():
    manager = ModelManager(budget_bytes=1500)
    old = manager.get("old", lambda: Blob(1000))
    seen_at_load = []

    def load_new():
        seen_at_load.append(manager.loaded())
        return Blob(1000)

    manager.get("new", load_new, expected_bytes=1000)
    assert seen_at_load == [[]] and old.value is None  # evicted before, not after, the new one loaded
    assert manager.loaded() == ["new"]


def test_a_failed_load_frees_what_it_allocated():
    manager = ModelManager(10_000)
    half_built = []

    def fails_half_way():
        blob = Blob(400)
        half_built.append(weakref.ref(blob))
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        manager.get("a", fails_half_way)
    assert half_built[0]() is None, "the half-built model outlived the failed load"
    assert not manager.is_loaded("a")


def rss_bytes() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_unloading_a_model_gives_its_memory_back(studio, tiny_lm_path, tmp_path):
    """A ~130 MB Llama built from a config: loading it raises the process's resident
    memory by about its size, unloading gives (nearly) all of it back."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_lm_path)
    config.update(dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                       num_key_value_heads=8))
    big = LlamaForCausalLM(config)
    nbytes = sum(p.numel() * p.element_size() for p in big.parameters())
    assert nbytes > 100 * 2**20
    big.save_pretrained(tmp_path / "big-lm", safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_lm_path).save_pretrained(tmp_path / "big-lm")
    del big
    s = studio()
    s.catalog.add(local_spec("big-lm", "text", "causal-lm", tmp_path / "big-lm"))

    trim_heap()  # holes earlier frees left in the heap (the config model above) would absorb the load
    before = rss_bytes()
    s.load("text", "big-lm")
    assert s.models.used_bytes() >= nbytes
    assert s.text("the quick brown fox", model="big-lm", max_new_tokens=2, seed=0).output is not None
    loaded_rss = rss_bytes()
    assert loaded_rss - before > 0.7 * nbytes, "loading did not take the model's memory (is it really loaded?)"
    assert s.unload("text", "big-lm")
    after = rss_bytes()
    assert loaded_rss - after > 0.8 * nbytes, f"unloading gave back {(loaded_rss - after) / 2**20:.0f} MB " \
                                              f"of {nbytes / 2**20:.0f} MB"


# ----- disk full: the result still reaches the user, nothing kept is damaged -----------------------

def output_files(s) -> dict:
    return {p: p.read_bytes() for p in s.settings.output_dir.rglob("*") if p.is_file()}


def test_a_full_output_disk_still_answers_with_the_result_and_damages_nothing(server, client, monkeypatch, caplog):
    from aigc_studio import recipe as recipes
    from aigc_studio import storage
    from aigc_studio.recipe import read_recipe

    s, _ = server
    client.predict(api_name="/generate_image", **SMALL["/generate_image"])  # at least one kept file
    kept = output_files(s)
    assert kept

    def full_disk(path, write):
        def half_then_full(part):
            part.write_bytes(b"\x89PNG half")
            raise OSError(28, "No space left on device")  # ENOSPC
        return storage.write_atomically(path, half_then_full)

    monkeypatch.setattr(recipes, "write_atomically", full_disk)
    image = client.predict(api_name="/generate_image", prompt="a red circle", steps=2, seed=11)
    gallery = client.predict(api_name="/compare_image", prompt="a red circle", mode="Different seeds", count=2,
                             knob_name="guidance", values="1, 3", steps=2, seed=12)
    grid, cells = client.predict(api_name="/image_grid", prompt="a red circle", x_knob="seed", x_values="1, 2",
                                 y_knob="none", y_values="", steps=2)
    assert output_files(s) == kept  # no half-written file beside them, none changed
    notes = [r.getMessage() for r in caplog.records if "not kept" in r.getMessage()]
    assert notes and "disk is full" in notes[0]
    # the user got every result, and the image still carries its recipe
    assert Image.open(image).size == (s.params("image").width, s.params("image").height)
    assert read_recipe(image).params["seed"] == 11
    assert len(gallery) == 2 and all(Image.open(item["image"]).size for item in gallery)
    assert Image.open(grid).size[0] > 0 and len(cells) == 2
    monkeypatch.undo()
    client.predict(api_name="/generate_image", prompt="a red circle", steps=2, seed=13)  # the server still serves
    assert len(output_files(s)) == len(kept) + 1
