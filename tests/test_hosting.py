"""The ZeroGPU contract, checked without ZeroGPU.

On a ZeroGPU Space each `spaces.GPU` call runs in a process forked from the main one,
its arguments and results (every yielded value too) pickled across; a model loaded
inside the call is lost. `run_forked` does exactly that with
multiprocessing's fork context, so each entry point of aigc_studio/hosting.py is run
the ZeroGPU way on the tiny models and must give what it gives in-process, pickle
cleanly both ways, and load nothing inside the call. The same Studio, its runtime's
executor set to hosting.ZeroGPU with its calls forked, must answer every operation as
the plain studio does.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import pickle
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from aigc_studio import hosting
from aigc_studio.engines.image import GenerationStopped
from aigc_studio.params import AudioParams, ImageParams, TextParams
from aigc_studio.recipe import Result
from aigc_studio.services.runtime import LocalExecutor
from aigc_studio.studio import CompareUpdate, Studio
from tests.conftest import IMAGE_ID, MUSICGEN_ID, SHAPES_ID, TEXT_ID, TINY_IMAGE_SIZE, VITS_ID

OTHER_TEXT_ID = "tiny-lm-twin"  # the tiny LM again under another id: "different models" side by side
PRELOAD = [TEXT_ID, OTHER_TEXT_ID, IMAGE_ID, SHAPES_ID, VITS_ID]


def run_forked(fn, *args, **kwargs):
    """Call fn as ZeroGPU does: arguments pickled into a forked process, the result (or
    each yielded value, pickled one by one) pickled back. Returns (result or list of
    yielded values, models loaded inside the call). An unpicklable argument or result,
    or an exception in the child, fails here."""
    payload = pickle.dumps((args, kwargs))  # the main process side: arguments must pickle
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def child():
        loads = dict(hosting._runtime.models.load_count)
        try:
            a, k = pickle.loads(payload)
            out = fn(*a, **k)
            if inspect.isgenerator(out):
                for item in out:
                    sender.send_bytes(pickle.dumps(("item", item)))
            else:
                sender.send_bytes(pickle.dumps(("result", out)))
            after = hosting._runtime.models.load_count
            sender.send_bytes(pickle.dumps(("end", {m: after[m] - loads.get(m, 0) for m in after
                                                    if after[m] != loads.get(m, 0)})))
        except BaseException as error:  # reported to the parent, which fails the test
            sender.send_bytes(pickle.dumps(("error", f"{type(error).__name__}: {error}")))

    process = context.Process(target=child)
    process.start()
    items, result = [], None
    try:
        while True:
            kind, value = pickle.loads(receiver.recv_bytes())
            if kind == "item":
                items.append(value)
            elif kind == "result":
                result = value
            elif kind == "error":
                raise AssertionError(f"in the forked call: {value}")
            else:
                loaded = value
                break
    finally:
        process.join()
    return (items if inspect.isgeneratorfunction(fn) else result), loaded


def run_here(fn, *args, **kwargs):
    out = fn(*args, **kwargs)
    return list(out) if inspect.isgenerator(out) else out


@pytest.fixture(scope="module")
def preloaded(studio):
    """A studio with the preload set loaded in this (the main) thread, installed for the entry points."""
    s = studio()
    s.catalog.add(dataclasses.replace(s.model_spec("text", TEXT_ID), id=OTHER_TEXT_ID))
    hosting.preload(s, PRELOAD)
    hosting.install(s)
    yield s
    hosting.install(None)


def forked_call(entry, *args):
    """hosting.ZeroGPU's `call` as ZeroGPU makes it: in a forked process, pickled both ways;
    nothing may load inside the call. A stream comes back as a generator of its items."""
    out, loaded = run_forked(entry, *args)
    assert loaded == {}, f"{entry.__name__} loaded {loaded} inside the GPU call"
    forked_call.entries.append(entry.__name__)
    return (item for item in out) if inspect.isgeneratorfunction(entry) else out


forked_call.entries = []


@contextmanager
def on_zero_gpu(studio: Studio, call=hosting._call_here):
    """studio, its tasks run by the ZeroGPU executor (as serve() sets it) until the block ends."""
    studio.runtime.executor = hosting.ZeroGPU(call)
    try:
        yield studio
    finally:
        studio.runtime.executor = LocalExecutor()


# ----- off ZeroGPU nothing changes ----------------------------------------------------------------

def test_off_zero_gpu_the_decorator_is_the_identity(monkeypatch):
    import spaces

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def work(x: int) -> int:
        return x

    assert not hosting.zero_gpu()
    assert hosting.gpu(duration=lambda x: 1)(work) is work
    assert spaces.GPU(work) is work and spaces.GPU(duration=5)(work) is work
    for entry_point in hosting.ENTRY_POINTS:  # decorated at import, off ZeroGPU: the plain functions
        assert not hasattr(entry_point, "zerogpu") and entry_point.__module__ == "aigc_studio.hosting"
    studio = object()
    assert hosting.serve(studio) is studio  # the Studio itself, unwrapped and nothing preloaded


# ----- each entry point, forked and pickled, gives what it gives in-process -------------------------

def test_text_compare_forked_equals_in_process(preloaded):
    variants = [("seed=1", TextParams(seed=1, max_new_tokens=6)), ("seed=2", TextParams(seed=2, max_new_tokens=6))]
    here = run_here(hosting.gpu_text_compare, "Hello", variants, TEXT_ID)
    there, loaded = run_forked(hosting.gpu_text_compare, "Hello", variants, TEXT_ID)
    assert loaded == {}
    assert len(there) == len(here) > 2  # streamed: one update per token, not one blob
    assert [[c.text for c in u.columns] for u in there] == [[c.text for c in u.columns] for u in here]
    last_here, last_there = here[-1], there[-1]
    assert [[t.id for t in c.tokens] for c in last_there.columns] == [[t.id for t in c.tokens] for c in last_here.columns]
    assert [c.result.recipe.params for c in last_there.columns] == [c.result.recipe.params for c in last_here.columns]


def test_explainer_and_perplexity_forked_equal_in_process(preloaded):
    args = ("Hello", TextParams(top_k=5, temperature=0.7), TEXT_ID, "n1 n2", 1, 6)
    here = run_here(hosting.gpu_explain, *args)
    there, loaded = run_forked(hosting.gpu_explain, *args)
    assert loaded == {}
    assert dataclasses.asdict(there) == dataclasses.asdict(here)
    assert 6 <= len(here.candidates) <= 7  # the top 6, plus the answer's own token when it is not among them
    value, loaded = run_forked(hosting.gpu_perplexity, "n1 n2 n3 n4 n5", TEXT_ID)
    assert loaded == {} and value == run_here(hosting.gpu_perplexity, "n1 n2 n3 n4 n5", TEXT_ID)
    assert value[0] >= 1.0 and value[1] > 0


def test_attention_view_forked_equals_in_process(preloaded):
    args = ("the quick brown fox", TextParams(prompt_mode="completion"), TEXT_ID, "jumps over", 3, 1, None)
    here = run_here(hosting.gpu_attention, *args)
    there, loaded = run_forked(hosting.gpu_attention, *args)
    assert loaded == {} and there == here
    assert (here["position"], here["layer"], here["head"], len(here["lens"])) == (3, 1, None, 2)
    picture, loaded = run_forked(hosting.gpu_attention_overview, *args[:4], 1, None)
    assert loaded == {} and np.array_equal(np.asarray(picture), np.asarray(run_here(
        hosting.gpu_attention_overview, *args[:4], 1, None)))
    with on_zero_gpu(preloaded) as zero:  # the Studio's methods go through the entry points
        assert zero.attention(*args[:2], TEXT_ID, answer="jumps over", position=3, layer=1) == here


def test_images_forked_equal_in_process_and_stream_steps_and_previews(preloaded):
    params = ImageParams(steps=3, seed=5, width=TINY_IMAGE_SIZE, height=TINY_IMAGE_SIZE, batch_size=2)
    here = run_here(hosting.gpu_images, "a cat", [("", params)], IMAGE_ID, True)
    there, loaded = run_forked(hosting.gpu_images, "a cat", [("", params)], IMAGE_ID, True)
    assert loaded == {}
    assert [e[0] for e in there] == [e[0] for e in here]
    kinds = [e[0] for e in there]
    # one step event and one preview per sampler iteration (a scheduler may run more than `steps`)
    assert kinds.count("step") == kinds.count("preview") >= 3 and kinds[-1] == "result"
    results_here, results_there = here[-1][1], there[-1][1]
    assert len(results_there) == 2  # the batch
    for a, b in zip(results_here, results_there):
        assert np.array_equal(np.asarray(a.output), np.asarray(b.output))
        assert a.recipe.params == b.recipe.params and a.recipe.label == b.recipe.label


def test_image_grid_forked_equals_in_process(preloaded):
    base = ImageParams(steps=2, seed=1, width=TINY_IMAGE_SIZE, height=TINY_IMAGE_SIZE)
    args = ("a dog", base, "seed", ["1", "2"], "guidance", ["0", "5"], IMAGE_ID)
    here = run_here(hosting.gpu_image_grid, *args)
    there, loaded = run_forked(hosting.gpu_image_grid, *args)
    assert loaded == {}
    (picture_here, cells_here), (picture_there, cells_there) = here[-1][1], there[-1][1]
    assert np.array_equal(np.asarray(picture_here), np.asarray(picture_there))
    assert [c.label for c in cells_there] == [c.label for c in cells_here] and len(cells_there) == 4


def test_audio_forked_equals_in_process(preloaded):
    params = AudioParams(seed=3, speed=1.2)
    here = run_here(hosting.gpu_audio, "hello there", params, VITS_ID, "take one")
    there, loaded = run_forked(hosting.gpu_audio, "hello there", params, VITS_ID, "take one")
    assert loaded == {}
    assert there.output[0] == here.output[0]
    assert np.array_equal(there.output[1], here.output[1]) and len(there.output[1]) > 0
    assert there.recipe.params == here.recipe.params and there.recipe.label == "take one"


# ----- what must fail ---------------------------------------------------------------------------

def test_the_fork_harness_fails_on_anything_unpicklable(preloaded):
    """The checks above would catch an entry point that took or returned a lock, a model or the Studio."""
    with pytest.raises(TypeError):
        run_forked(hosting.gpu_perplexity, "n1 n2", threading.Lock())

    def yields_a_lock():
        yield threading.Lock()

    with pytest.raises(AssertionError, match="pickle"):
        run_forked(yields_a_lock)


def test_an_entry_point_refuses_a_model_outside_the_preload_set(preloaded):
    """A model loaded inside a GPU call would be lost with its worker: refused before loading, naming the fix."""
    with pytest.raises(AssertionError, match="AIGC_PRELOAD"):
        run_forked(hosting.gpu_audio, "hello", AudioParams(seed=1), MUSICGEN_ID)
    with pytest.raises(hosting.NotPreloaded, match=f"model: {MUSICGEN_ID} is not loaded"):
        hosting.gpu_audio("hello", AudioParams(seed=1), MUSICGEN_ID)
    assert MUSICGEN_ID not in preloaded.models.load_count


# ----- the Studio on ZeroGPU: same answers, Stop still works ------------------------------------------

def comparable(value):
    """What must agree between the plain and the ZeroGPU studio: outputs, knobs, labels
    and token ids (not timings)."""
    if isinstance(value, Result):
        return comparable(value.output), value.recipe.params, value.recipe.label, value.recipe.model_id
    if isinstance(value, CompareUpdate):
        return [(c.text, [t.id for t in c.tokens], [len(t.alternatives) for t in c.tokens],
                 comparable(c.result) if c.result else None) for c in value.columns], value.diverge_at
    if isinstance(value, Image.Image):
        return np.asarray(value).tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value):
        return comparable(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


def last(stream):
    update = None
    for update in stream:
        pass
    return update


def operations(s: Studio) -> dict:
    """The same operations, on s: every kind of model work a page or the API asks for."""
    size = dict(width=TINY_IMAGE_SIZE, height=TINY_IMAGE_SIZE)
    steps = []
    columns = [("seed=1", TextParams(seed=1, max_new_tokens=5)), ("seed=2", TextParams(seed=2, max_new_tokens=5))]
    base = ImageParams(steps=2, seed=1, **size)
    return {
        "text": s.text("Hello", seed=4, max_new_tokens=5),
        "compare, 3 alternatives": last(s.text_compare_stream("Hello", columns, TEXT_ID, alternatives=3)),
        "different models": last(s.text_models_stream("Hello", [TEXT_ID, OTHER_TEXT_ID],
                                                      TextParams(seed=3, max_new_tokens=4), alternatives=2)),
        "text grid": [(c["label"], c["text"], c["first_difference"], c["recipe"]["params"])  # not the timings
                      for c in s.text_grid("Hello", TextParams(seed=1, max_new_tokens=3), "top_k", ["1", "5"])[1]],
        "explain": s.explain_next_token("Hello", TextParams(top_k=5), TEXT_ID, "n1 n2", 1, 6),
        "perplexity": s.perplexity("n1 n2 n3 n4", TEXT_ID),
        "attention": s.attention("the quick brown fox", TextParams(prompt_mode="completion"), TEXT_ID, "jumps", 2),
        "attention overview": s.attention_overview("the quick fox", TextParams(prompt_mode="completion"), TEXT_ID),
        "images": s.images("a cat", [("", ImageParams(steps=3, seed=5, batch_size=2, **size))], IMAGE_ID,
                           on_step=lambda i, n: steps.append((i, n))),
        "image steps": steps,
        "image grid": s.image_grid("a dog", base, "seed", ["1", "2"], "guidance", ["0", "5"], IMAGE_ID),
        "models side by side": s.compare_models("a red circle", [IMAGE_ID, SHAPES_ID], seed=2, steps=2, **size),
        "audio": s.audio("hello there", VITS_ID, label="take one", seed=3, speed=1.2),
        "audio grid": s.audio_grid("hi", AudioParams(seed=1), "speed", ["1.0", "1.3"], model=VITS_ID)[1],
    }


def test_the_zero_gpu_studio_answers_every_operation_like_the_plain_one(preloaded):
    """Every operation through the ZeroGPU executor, each GPU call forked and pickled as
    ZeroGPU makes it, gives what the plain studio gives."""
    plain = operations(preloaded)
    forked_call.entries.clear()
    with on_zero_gpu(preloaded, forked_call) as zero:
        there = operations(zero)
        assert zero.describe().endswith(" · **ZeroGPU**")
    assert set(forked_call.entries) == {entry.__name__ for entry in hosting.ENTRY_POINTS}  # each was used
    for name in plain:
        assert comparable(there[name]) == comparable(plain[name]), name
    assert len(plain["image steps"]) >= 3  # callbacks run in the main process, fed by the GPU call's events
    assert preloaded.describe() == zero.describe().removesuffix(" · **ZeroGPU**")


def test_serve_returns_the_studio_with_the_plain_studios_methods(studio, monkeypatch):
    """On ZeroGPU serve() hands the UI a Studio whose every public method has the plain
    Studio's signature, and each ZeroGPU route takes its task's arguments."""
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.setattr(hosting, "_runtime", hosting._runtime)  # restored after the test
    plain = studio()
    served = hosting.serve(studio())
    assert type(served) is Studio and isinstance(served.runtime.executor, hosting.ZeroGPU)
    names = [name for name in dir(Studio) if not name.startswith("_")]
    for name in names:
        mine, theirs = getattr(served, name), getattr(plain, name)
        if callable(theirs):
            assert inspect.signature(mine) == inspect.signature(theirs), name
    executor = served.runtime.executor
    for task, route in executor.routes.items():
        wanted = list(inspect.signature(task).parameters)[1:]  # after the runtime
        assert list(inspect.signature(route).parameters) == wanted, task.__name__
    assert all(served.is_loaded(m.modality, m.id) for m in hosting.preload_specs(served, hosting.preload_ids(served)))


def test_zero_gpu_studio_stop_ends_image_and_text(preloaded):
    with on_zero_gpu(preloaded) as zero:
        stop_ends_image_and_text(zero, preloaded)


def stop_ends_image_and_text(zero, preloaded):
    stop = threading.Event()

    def stop_at_first_step(step, total):
        stop.set()

    with pytest.raises(GenerationStopped):
        zero.images("a cat", [("", preloaded.params("image", seed=1, steps=20))], on_step=stop_at_first_step, stop=stop)
    stop = threading.Event()
    updates = []
    for update in zero.text_stream("Hello", preloaded.params("text", seed=1, max_new_tokens=40), stop=stop):
        updates.append(update)
        if len(updates) == 2:
            stop.set()
    assert len(updates) == 2 and updates[-1].result is None  # ended, not run to the end


# ----- durations and the preload set ------------------------------------------------------------

def test_durations_grow_with_the_work_and_stay_within_bounds(preloaded):
    short = hosting.text_seconds("hi", [("", TextParams(max_new_tokens=16))])
    long = hosting.text_seconds("hi", [("", TextParams(max_new_tokens=1024))] * 4)
    assert hosting.OVERHEAD_S <= short < long <= hosting.MAX_SECONDS
    small = hosting.images_seconds("x", [("", ImageParams(steps=4, width=512, height=512))])
    big = hosting.images_seconds("x", [("", ImageParams(steps=30, width=1024, height=1024, batch_size=2))])
    assert small < big <= hosting.MAX_SECONDS
    assert hosting.grid_seconds("x", ImageParams(width=512, height=512), "steps", ["4", "40"], "seed", ["1", "2"]) > \
        hosting.grid_seconds("x", ImageParams(width=512, height=512), "steps", ["4"], None, None)
    assert hosting.audio_seconds("hi", AudioParams(duration=30.0), MUSICGEN_ID) > \
        hosting.audio_seconds("hi", AudioParams(duration=2.0), MUSICGEN_ID)


def test_preload_set_comes_from_the_catalog_or_aigc_preload(studio):
    from aigc_studio.catalog import Catalog

    from aigc_studio.config import Settings

    s = studio()
    assert Settings.from_env({"AIGC_PRELOAD": f"{TEXT_ID}, {VITS_ID},{TEXT_ID}"}).preload == (TEXT_ID, VITS_ID)
    assert hosting.preload_ids(studio(preload=(TEXT_ID, VITS_ID, TEXT_ID))) == [TEXT_ID, VITS_ID]
    assert hosting.preload_ids(s) == [TEXT_ID, IMAGE_ID, VITS_ID]  # no zero_gpu entries: the defaults
    hub = Catalog.for_preset("hub")
    zero_set = [spec for spec in hub.specs.values() if spec.zero_gpu]
    assert {spec.modality for spec in zero_set} == {"text", "image", "audio"}
    assert sum(spec.size_mb for spec in zero_set) <= hosting.LARGE_GPU_MB * hosting.PRELOAD_HEADROOM
    with pytest.raises(ValueError, match="AIGC_PRELOAD: 'nope' is not in the catalog"):
        hosting.preload_specs(s, ["nope"])
    s.catalog.add(dataclasses.replace(s.model_spec("text"), id="huge", size_mb=60_000))
    with pytest.raises(ValueError, match="do not fit a ZeroGPU `large` slice"):
        hosting.preload_specs(s, ["huge"])
