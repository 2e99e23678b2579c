"""ModelManager: lazy, thread-safe model loading with LRU eviction under a memory budget.

Engines say *how* to load a model (a loader function); the manager decides
*when*: on first use, once even when two requests race for it, evicting the
least recently used models when the budget would be exceeded.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def pick_device(preference: str = "auto") -> str:
    """'auto' picks cuda, then mps, then cpu."""
    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, preference: str = "auto") -> torch.dtype:
    """Half precision on accelerators (bf16 where CUDA supports it), fp32 on CPU."""
    if preference != "auto":
        return getattr(torch, preference)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def module_bytes(obj: Any) -> int:
    """Bytes of parameters and buffers of every torch module reachable from obj."""
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
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.load_count: dict[str, int] = {}

    def get(self, model_id: str, loader: Callable[[], Any], size_of: Callable[[Any], int] = module_bytes) -> LoadedModel:
        """The loaded model for model_id, calling loader() once on first use."""
        with self._lock:
            if model_id in self._models:
                self._models.move_to_end(model_id)
                return self._models[model_id]
            load_lock = self._loading.setdefault(model_id, threading.Lock())
        with load_lock:  # a second request for the same model waits here, then finds it loaded
            with self._lock:
                if model_id in self._models:
                    self._models.move_to_end(model_id)
                    return self._models[model_id]
            log.info("loading %s", model_id)
            value = loader()
            loaded = LoadedModel(model_id, value, size_of(value))
            with self._lock:
                self.load_count[model_id] = self.load_count.get(model_id, 0) + 1
                self._models[model_id] = loaded
                self._evict_over_budget(keep=model_id)
            return loaded

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._models

    def loaded(self) -> list[str]:
        """Loaded model ids, least recently used first."""
        with self._lock:
            return list(self._models)

    def unload(self, model_id: str) -> bool:
        """Drop a model and free its memory; True if it was loaded."""
        with self._lock:
            loaded = self._models.pop(model_id, None)
        if loaded is None:
            return False
        with loaded.lock:  # wait for a running generation to finish
            loaded.value = None
        _free_memory()
        return True

    def unload_all(self) -> None:
        for model_id in self.loaded():
            self.unload(model_id)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.nbytes for m in self._models.values())

    def _evict_over_budget(self, keep: str) -> None:
        # Called with self._lock held; the model just loaded is never evicted.
        # A model that is generating right now (its lock is held) is never pulled away.
        for victim_id in [i for i in self._models if i != keep]:
            if sum(m.nbytes for m in self._models.values()) <= self.budget_bytes:
                break
            victim = self._models[victim_id]
            if not victim.lock.acquire(blocking=False):
                continue
            try:
                del self._models[victim_id]
                log.info("evicting %s (%.0f MB) to stay under budget", victim_id, victim.nbytes / 2**20)
                victim.value = None
            finally:
                victim.lock.release()
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
