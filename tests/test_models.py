"""ModelManager: lazy loading once under concurrency, LRU eviction under a budget, unloading."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aigc_studio import models as models_module
from aigc_studio.models import ModelManager, module_bytes, pick_device, pick_dtype

WAIT = 30  # seconds; only a safety net so that a deadlock fails instead of hanging


class Blob(torch.nn.Module):
    """A module of exactly `nbytes` bytes of float32 parameters."""

    def __init__(self, nbytes: int):
        super().__init__()
        assert nbytes % 4 == 0
        self.weight = torch.nn.Parameter(torch.zeros(nbytes // 4))


def run_threads(count: int, target) -> list:
    """Run target(i) in `count` threads released at the same moment; return their results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def work(i: int) -> None:
        try:
            barrier.wait(WAIT)
            results[i] = target(i)
        except BaseException as error:  # reported in the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert not errors, errors
    return results


# ----- sizes -----------------------------------------------------------------------------------

def test_module_bytes_counts_parameters_and_buffers():
    module = Blob(400)
    module.register_buffer("stats", torch.zeros(10, dtype=torch.float64))  # 80 bytes
    assert module_bytes(module) == 480
    half = Blob(400).to(torch.float16)
    assert module_bytes(half) == 200


def test_module_bytes_of_pipelines_and_wrappers():
    pipeline = SimpleNamespace(components={"unet": Blob(400), "vae": Blob(800), "tokenizer": object(), "scheduler": None})
    assert module_bytes(pipeline) == 1200
    wrapper = SimpleNamespace(model=Blob(1200), tokenizer=object(), device="cpu")
    assert module_bytes(wrapper) == 1200
    assert module_bytes(b"onnx bytes") == 0


# ----- lazy loading -------------------------------------------------------------------------------

def test_nothing_loads_until_asked():
    manager = ModelManager(10_000)
    calls = []
    assert not manager.is_loaded("a") and manager.loaded() == [] and manager.used_bytes() == 0
    loaded = manager.get("a", lambda: calls.append(1) or Blob(400))
    assert calls == [1]
    assert manager.is_loaded("a") and manager.loaded() == ["a"]
    assert loaded.model_id == "a" and loaded.nbytes == 400 and manager.used_bytes() == 400
    again = manager.get("a", lambda: pytest.fail("loaded twice"))
    assert again is loaded
    assert manager.load_count == {"a": 1}


def test_concurrent_requests_for_one_model_load_it_once():
    manager = ModelManager(10_000)
    calls = []
    entered, release = threading.Event(), threading.Event()

    def slow_loader():
        calls.append(threading.get_ident())
        entered.set()
        assert release.wait(WAIT)
        return Blob(400)

    def request(i):
        return manager.get("shared", slow_loader)

    def releaser():
        assert entered.wait(WAIT)
        time.sleep(0.2)  # let the other requests pile up behind the first load
        release.set()

    helper = threading.Thread(target=releaser)
    helper.start()
    results = run_threads(6, request)
    helper.join(WAIT)
    assert len(calls) == 1
    assert all(result is results[0] for result in results)
    assert manager.load_count == {"shared": 1}


def test_loads_of_different_models_run_one_at_a_time_and_status_does_not_block():
    """transformers/diffusers/accelerate patch process-wide state while building a
    model, so two loads must never overlap; status queries still answer meanwhile."""
    manager = ModelManager(10_000)
    running, overlaps, a_started, release_a = [], [], threading.Event(), threading.Event()

    def loader(name: str):
        def load():
            running.append(name)
            overlaps.append(len(running) > 1)
            if name == "a":
                a_started.set()
                assert release_a.wait(WAIT)
            running.remove(name)
            return Blob(400)
        return load

    thread_a = threading.Thread(target=lambda: manager.get("a", loader("a")))
    thread_a.start()
    assert a_started.wait(WAIT)
    thread_b = threading.Thread(target=lambda: manager.get("b", loader("b")))
    thread_b.start()
    # While "a" loads (and "b" waits for it), status queries answer and list neither.
    assert not manager.is_loaded("a") and manager.loaded() == [] and manager.used_bytes() == 0
    release_a.set()
    thread_a.join(WAIT)
    thread_b.join(WAIT)
    assert overlaps == [False, False]
    assert sorted(manager.loaded()) == ["a", "b"]


def test_a_failed_load_is_not_cached_and_can_be_retried():
    manager = ModelManager(10_000)

    def broken():
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        manager.get("a", broken)
    assert not manager.is_loaded("a")
    assert manager.get("a", lambda: Blob(400)).nbytes == 400
    assert manager.load_count == {"a": 1}


def test_custom_size_function():
    manager = ModelManager(1000)
    loaded = manager.get("onnx", lambda: b"x" * 10, size_of=len)
    assert loaded.nbytes == 10


# ----- LRU eviction ---------------------------------------------------------------------------------

def test_least_recently_used_model_is_evicted_over_budget():
    manager = ModelManager(budget_bytes=2500)
    a = manager.get("a", lambda: Blob(1000))
    b = manager.get("b", lambda: Blob(1000))
    manager.get("a", lambda: pytest.fail("a was still loaded"))  # a is now the most recent
    assert manager.loaded() == ["b", "a"]
    manager.get("c", lambda: Blob(1000))
    assert manager.loaded() == ["a", "c"]
    assert manager.used_bytes() == 2000 <= manager.budget_bytes
    assert b.value is None and a.value is not None
    # Asking for b again loads it again and evicts the now least recent, a.
    manager.get("b", lambda: Blob(1000))
    assert manager.loaded() == ["c", "b"]
    assert manager.load_count == {"a": 1, "b": 2, "c": 1}


def test_eviction_frees_as_many_models_as_needed():
    manager = ModelManager(budget_bytes=3000)
    for name in "abc":
        manager.get(name, lambda: Blob(1000))
    manager.get("big", lambda: Blob(2400))
    assert manager.loaded() == ["big"]
    assert manager.used_bytes() == 2400


def test_a_model_larger_than_the_budget_is_still_served():
    manager = ModelManager(budget_bytes=500)
    manager.get("small", lambda: Blob(400))
    huge = manager.get("huge", lambda: Blob(4000))
    assert huge.value is not None
    assert manager.loaded() == ["huge"]


def test_eviction_does_not_pull_a_model_out_from_under_a_running_generation():
    """A generation holds its model's lock (Studio does `with loaded.lock: ...loaded.value...`,
    once per group of image variants). Loading another model over budget meanwhile must
    not set the busy model's value to None; unload() waits for the lock, eviction should too
    (or skip busy models)."""
    manager = ModelManager(budget_bytes=1500)
    busy = manager.get("busy", lambda: Blob(1000))
    with busy.lock:  # a generation is running on "busy"
        manager.get("other", lambda: Blob(1000))
        assert busy.value is not None, "the model was evicted while a generation was using it"


# ----- unloading ----------------------------------------------------------------------------------------

def test_unload_frees_the_model_and_reports_whether_it_was_loaded():
    manager = ModelManager(10_000)
    loaded = manager.get("a", lambda: Blob(400))
    assert manager.unload("a") is True
    assert loaded.value is None
    assert not manager.is_loaded("a") and manager.used_bytes() == 0
    assert manager.unload("a") is False
    assert manager.unload("never-loaded") is False
    manager.get("a", lambda: Blob(400))
    assert manager.load_count == {"a": 2}


def test_unload_waits_for_a_running_generation():
    manager = ModelManager(10_000)
    loaded = manager.get("a", lambda: Blob(400))
    done = threading.Event()
    loaded.lock.acquire()  # a generation is running
    try:
        worker = threading.Thread(target=lambda: (manager.unload("a"), done.set()))
        worker.start()
        assert not done.wait(0.3)
        assert loaded.value is not None, "unloaded while the generation was running"
    finally:
        loaded.lock.release()
    assert done.wait(WAIT)
    worker.join(WAIT)
    assert loaded.value is None


def test_unload_all():
    manager = ModelManager(10_000)
    handles = [manager.get(name, lambda: Blob(400)) for name in "abc"]
    manager.unload_all()
    assert manager.loaded() == [] and manager.used_bytes() == 0
    assert all(handle.value is None for handle in handles)


# ----- devices and dtypes --------------------------------------------------------------------------------

@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_pick_device_auto_on_a_cpu_machine(cpu_only):
    assert pick_device() == "cpu"
    assert pick_device("auto") == "cpu"


def test_pick_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == "mps"


@pytest.mark.parametrize("preference", ["cpu", "cuda", "mps"])
def test_pick_device_keeps_an_explicit_choice(cpu_only, preference):
    assert pick_device(preference) == preference


def test_pick_dtype_is_fp32_on_cpu():
    assert pick_dtype("cpu") is torch.float32
    assert pick_dtype("cpu", "auto") is torch.float32


@pytest.mark.parametrize("preference, dtype", [("float32", torch.float32), ("float16", torch.float16),
                                               ("bfloat16", torch.bfloat16)])
def test_pick_dtype_keeps_an_explicit_choice(preference, dtype):
    assert pick_dtype("cpu", preference) is dtype
    assert pick_dtype("cuda", preference) is dtype


def test_pick_dtype_half_precision_on_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("cuda") is torch.float16
    assert pick_dtype("mps") is torch.float16


def test_studio_uses_cpu_fp32_and_the_memory_budget(studio):
    s = studio(memory_budget_gb=0.5)
    assert s.device == "cpu" and s.dtype is torch.float32
    assert s.models.budget_bytes == 2**29
    assert "cpu" in s.describe() and "float32" in s.describe()


def test_free_memory_runs_without_cuda(cpu_only):
    models_module.free_memory()  # must not touch CUDA when there is none


def test_memory_helpers_bear_a_torch_still_being_imported(monkeypatch):
    """The page's first load imports torch in one thread while a request may free memory
    in another: torch is then listed in sys.modules before it has its attributes."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # listed, not yet complete
    models_module.free_memory()
    assert models_module.out_of_memory_errors() == (MemoryError,)


def test_trim_heap_gives_the_holes_a_generation_leaves_back_to_the_system():
    """A request frees most of what it allocated, leaving holes between what stays;
    glibc keeps those pages until malloc_trim (measured on the server: +19% resident
    memory over 280 requests without it, +5% with it)."""
    import ctypes

    import psutil

    from aigc_studio.models import trim_heap

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block = 64 * 1024  # below glibc's mmap threshold: these come from the heap
    blocks = [libc.malloc(block) for _ in range(2000)]
    for address in blocks:
        ctypes.memset(address, 1, block)  # touched: resident
    for address in blocks[::2]:  # every other one freed: 64 MB of holes between live blocks
        libc.free(address)
    before = psutil.Process().memory_info().rss
    trim_heap()
    after = psutil.Process().memory_info().rss
    for address in blocks[1::2]:
        libc.free(address)
    assert before - after >= 32 * 2**20, f"trim gave back {(before - after) / 2**20:.0f} MB"


def test_huge_pages_are_asked_for_once_and_a_users_own_tunables_are_kept(monkeypatch):
    monkeypatch.setattr(models_module.sys, "platform", "linux")
    environment = models_module.huge_pages_environment({"PATH": "/bin"})
    assert environment == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert models_module.huge_pages_environment(environment) is None  # the restarted process goes on
    kept = models_module.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert models_module.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # opted out
    monkeypatch.setattr(models_module.sys, "platform", "darwin")
    assert models_module.huge_pages_environment({}) is None


def test_the_app_restarts_itself_on_huge_pages_before_loading_anything():
    """app.py as users start it: the process that answers runs with the tunable (it restarts in place)."""
    root = Path(__file__).resolve().parents[1]
    probe = ("import os, runpy, sys; sys.argv = ['app.py']; "
             "os.execve = lambda exe, argv, env: print('restart', env['GLIBC_TUNABLES'], 'gradio' in sys.modules) "
             "or sys.exit(0); "
             "runpy.run_path('app.py', run_name='__main__')")
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "restart glibc.malloc.hugetlb=1 False", done.stderr[-2000:]
