"""ModelManager: lazy, thread-safe model loading with LRU eviction under a memory budget.

Engines say *how* to load a model (a loader function); the manager decides
*when*: on first use, once even when two requests race for it, evicting the
least recently used models when the budget would be exceeded. Loads run one at
a time: transformers, diffusers and accelerate patch process-wide state while
they build a model (the default dtype, torch.linspace, Module.register_parameter
for meta-device init), so two loads in two threads corrupt each other (measured:
a VITS built beside a diffusers pipeline came out on the meta device).

It never holds two copies of one model: a model being unloaded stays listed (and
is handed out) until its running generation ends, so nobody loads it again
meanwhile. Running out of memory while loading unloads the idle models and tries
once more; every failed load frees what it allocated.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """What an allocation raises when memory runs out: MemoryError on the CPU,
    torch.OutOfMemoryError (a RuntimeError) on CUDA and MPS.

    A function, so that `except out_of_memory_errors():` looks torch up only when an
    exception is raised: importing the studio does not import torch (seconds at start-up)."""
    cuda_error = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)  # None until torch has loaded
    return (MemoryError, cuda_error) if cuda_error is not None else (MemoryError,)


def pick_device(preference: str = "auto") -> str:
    """'auto' picks cuda, then mps, then cpu."""
    if preference != "auto":
        return preference
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, preference: str = "auto") -> torch.dtype:
    """Half precision on accelerators (bf16 where CUDA supports it), fp32 on CPU."""
    import torch

    if preference != "auto":
        return getattr(torch, preference)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


# Generation events that may run at once in the app: text, image and audio, each up to
# AIGC_CONCURRENCY at a time. Their CPU threads share the machine's cores.
CONCURRENT_EVENTS = 3


def pick_threads(preference: int = 0, concurrency: int = 1, cores: int | None = None) -> int:
    """CPU threads per generation (torch intra-op and ONNX Runtime sessions).

    0 (auto): the cores divided among the generations that may run at once, at least 1.
    On a 2-core machine that is 1: more threads than free cores stall each other when
    another process is busy (measured 8x slower, bench/threads.py), and 1 thread is as
    fast as 2 when the machine is idle for the studio's small models. A positive
    preference (AIGC_THREADS) is kept as it is."""
    if preference > 0:
        return preference
    if cores is None:  # the cores this process may run on (a container may allow fewer than the machine has)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // (CONCURRENT_EVENTS * max(1, concurrency)))


def apply_threads(threads: int) -> None:
    """Give torch `threads` intra-op threads, waiting passively between parallel regions.

    Before torch is imported this goes through OMP_NUM_THREADS and OMP_WAIT_POLICY,
    which torch's OpenMP reads once at import (so start-up need not import torch);
    afterwards through torch.set_num_threads."""
    if "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep instead of spinning on busy cores
    else:
        import torch  # waits for an import another thread may have under way

        torch.set_num_threads(threads)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let glibc keep at most `arenas` malloc arenas; True if it took effect.

    glibc gives every thread that allocates its own arena (up to 8 per core) and seldom
    hands their memory back, so a server whose worker threads take turns on requests
    grows by each arena's peak (measured by bench/soak.py: +160 MB over the first 100
    requests). A server calls this at start, before its worker threads exist; elsewhere
    (macOS, musl) it does nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-8, arenas))  # -8 = M_ARENA_MAX


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def huge_pages_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start this process again in so that glibc's malloc asks the kernel
    for transparent huge pages (madvise) for its large blocks; None where it already does,
    where GLIBC_TUNABLES already says (glibc.malloc.hugetlb=0 opts out), or off Linux.

    A token of the int8 text model reads ~150 MB of weights: with 4 kB pages the TLB misses
    on every one of them. Measured back to back: ONNX int8 82 -> 94 tok/s, transformers
    generate() 15 -> 17 tok/s (README). glibc reads tunables only at start, hence the restart."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "glibc.malloc.hugetlb" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGES_TUNABLE]))}


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere
    nothing). A generation frees its activations, but glibc keeps the holes they leave
    in its heaps; without this a server's resident memory creeps up over its first few
    hundred requests (bench/soak.py) though nothing is kept."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def module_bytes(obj: Any) -> int:
    """Bytes of parameters and buffers of every torch module reachable from obj."""
    import torch

    modules = []
    if isinstance(obj, torch.nn.Module):
        modules = [obj]
    elif hasattr(obj, "components"):  # a diffusers pipeline
        modules = [m for m in obj.components.values() if isinstance(m, torch.nn.Module)]
    elif hasattr(obj, "__dict__"):
        modules = [m for m in vars(obj).values() if isinstance(m, torch.nn.Module)]
    total = 0
    for module in modules:
        total += sum(t.numel() * t.element_size() for t in module.parameters())
        total += sum(t.numel() * t.element_size() for t in module.buffers())
    return total


@dataclass
class LoadedModel:
    """A loaded model with its own lock: generation on one model is serialised
    because schedulers and RNG state are not thread-safe."""

    model_id: str
    value: Any
    nbytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelManager:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards _models; never held while loading or generating
        self._load_lock = threading.Lock()  # one load at a time (see the module docstring)
        self.load_count: dict[str, int] = {}

    def get(self, model_id: str, loader: Callable[[], Any], size_of: Callable[[Any], int] = module_bytes,
            expected_bytes: int = 0) -> LoadedModel:
        """The loaded model for model_id, calling loader() once on first use.

        expected_bytes (0 = unknown): the model's size, so that least recently used
        models are evicted *before* loading it rather than after (a lower peak).
        """
        with self._lock:
            if model_id in self._models:
                self._models.move_to_end(model_id)
                return self._models[model_id]
        with self._load_lock:  # a second request for the same model waits here, then finds it loaded
            with self._lock:
                if model_id in self._models:
                    self._models.move_to_end(model_id)
                    return self._models[model_id]
                if expected_bytes:
                    self._evict_over_budget(keep=None, incoming=expected_bytes)
            log.info("loading %s", model_id)
            value = self._call_loader(model_id, loader)
            loaded = LoadedModel(model_id, value, size_of(value))
            with self._lock:
                self.load_count[model_id] = self.load_count.get(model_id, 0) + 1
                self._models[model_id] = loaded
                self._evict_over_budget(keep=model_id)
            return loaded

    def _call_loader(self, model_id: str, loader: Callable[[], Any]) -> Any:
        """loader(); out of memory, unload the idle models and try once more. A failed
        load leaves nothing behind: the half-built tensors its frames hold are freed."""
        for attempt in (1, 2):
            try:
                return loader()
            except out_of_memory_errors() as error:
                traceback.clear_frames(error.__traceback__)
                if attempt == 2 or not self.unload_idle(keep=model_id):
                    free_memory()
                    raise
                log.warning("out of memory loading %s: unloaded the idle models, trying once more", model_id)
            except BaseException as error:
                traceback.clear_frames(error.__traceback__)
                free_memory()
                raise

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._models

    def loaded(self) -> list[str]:
        """Loaded model ids, least recently used first."""
        with self._lock:
            return list(self._models)

    def unload(self, model_id: str) -> bool:
        """Drop a model and free its memory; True if it was loaded.

        Waits for a running generation to finish; until then the model stays listed,
        so a request arriving meanwhile uses it instead of loading a second copy."""
        with self._lock:
            loaded = self._models.get(model_id)
        if loaded is None:
            return False
        with loaded.lock:
            with self._lock:
                if self._models.get(model_id) is loaded:
                    del self._models[model_id]
            loaded.value = None
        free_memory()
        return True

    def unload_idle(self, keep: str | None = None) -> list[str]:
        """Unload every model that is not generating right now, except keep; returns their ids."""
        with self._lock:
            dropped = [model_id for model_id in list(self._models) if model_id != keep and self._drop_if_idle(model_id)]
        if dropped:
            free_memory()
        return dropped

    def unload_all(self) -> None:
        for model_id in self.loaded():
            self.unload(model_id)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.nbytes for m in self._models.values())

    def _evict_over_budget(self, keep: str | None, incoming: int = 0) -> None:
        # Called with self._lock held: evict least recently used models until the
        # loaded ones (plus `incoming` bytes about to load) fit the budget. The model
        # just loaded (keep) is never evicted, nor one that is generating right now.
        for victim_id in [i for i in self._models if i != keep]:
            if sum(m.nbytes for m in self._models.values()) + incoming <= self.budget_bytes:
                break
            nbytes = self._models[victim_id].nbytes
            if self._drop_if_idle(victim_id):
                log.info("evicting %s (%.0f MB) to stay under budget", victim_id, nbytes / 2**20)
        free_memory()

    def _drop_if_idle(self, model_id: str) -> bool:
        # Called with self._lock held; a model whose lock is taken is generating: keep it.
        victim = self._models[model_id]
        if not victim.lock.acquire(blocking=False):
            return False
        try:
            del self._models[model_id]
            victim.value = None
        finally:
            victim.lock.release()
        return True


def free_memory() -> None:
    """Collect garbage now and hand cached accelerator memory back (after unloading,
    or after an out-of-memory error)."""
    gc.collect()
    # nothing to hand back if torch never ran; another thread may be importing it right
    # now (the module is listed before it is complete), so look for what is needed
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    if cuda is not None and cuda.is_available():
        cuda.empty_cache()

