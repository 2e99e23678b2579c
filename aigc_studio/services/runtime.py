"""The runtime every service shares: settings, catalog, loaded models, device, history,
and the one place where a model runs.

A service operation that runs a model is a *task*: a module-level function
`task(runtime, *args)` (services/text.py, image.py, audio.py). Services never call a task
themselves; they ask `runtime.run(task, *args)`, and the runtime's executor decides where
it runs. `LocalExecutor` (the default) calls it here, in this thread; hosting.ZeroGPU sends
the GPU tasks through its `spaces.GPU` entry points. Inside a task a model is reached
with `runtime.use(spec)`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator

from safetensors import SafetensorError

from aigc_studio import grid
from aigc_studio import params as knobs
from aigc_studio.catalog import Catalog, ModelSpec, resolve_preset
from aigc_studio.config import Settings
from aigc_studio.engines import audio as audio_engine
from aigc_studio.engines import image as image_engine
from aigc_studio.engines import text_remote
from aigc_studio.history import History
from aigc_studio.models import (
    LoadedModel, ModelManager, apply_threads, free_memory, module_bytes, out_of_memory_errors, pick_device, pick_dtype,
    pick_threads, trim_heap,
)
from aigc_studio.params import AudioParams, ImageParams, TextParams
from aigc_studio.recipe import Recipe

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PARAMS_TYPES = {"text": TextParams, "image": ImageParams, "audio": AudioParams}


def text_engine():
    """engines/text.py, imported on first use: it imports torch (seconds), and a studio
    should answer its first page before any model is asked for."""
    from aigc_studio.engines import text

    return text


class ModelLoadError(ValueError):
    """A model could not be loaded (no network for a Hub model, missing files)."""


class ModelMemoryError(MemoryError):
    """Memory ran out while loading or running a model. By the time it is raised the
    failed step's memory is freed and the studio can serve the next request."""


class LocalExecutor:
    """Runs every task here, in the caller's process and thread."""

    label = ""  # what the page header adds after the device ("" says nothing)

    def run(self, runtime: "Runtime", task: Callable, *args: Any) -> Any:
        return task(runtime, *args)


class Runtime:
    """What the text, image, audio and tune services share (one per Studio)."""

    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None):
        self.settings = settings or Settings.from_env()
        self.settings.check()
        self.preset = resolve_preset(self.settings.preset)
        # 'auto' has just asked whether the Hub answers; an explicit preset leaves it to the catalog
        hub_online = (self.preset == "hub") if self.settings.preset == "auto" else None
        self.catalog = catalog or Catalog.for_preset(self.preset, self.settings.allowlist, hub_online)
        if self.settings.text_endpoint:  # an OpenAI-compatible server's models join as remote:<name>
            text_remote.add_models(self.catalog, self.settings.text_endpoint, self.settings.text_api_key)
        self.threads = pick_threads(self.settings.threads, self.settings.concurrency)
        apply_threads(self.threads)
        self.models = ModelManager(int(self.settings.memory_budget_gb * 2**30))
        self.global_rng_lock = threading.Lock()
        self.history = History()  # every browser's results, newest first (the History tab, /history)
        self.executor: Any = LocalExecutor()  # where tasks run (hosting.ZeroGPU on a ZeroGPU Space)

    def run(self, task: Callable, *args: Any) -> Any:
        """task(self, *args), run where the executor runs model work: the one door to a model
        for the services (a generator task returns its generator)."""
        return self.executor.run(self, task, *args)

    def with_executor(self, executor) -> "Runtime":
        """This runtime (the same settings, catalog, models and history) with its tasks run
        by executor: e.g. the local view a ZeroGPU worker runs its tasks with."""
        twin = copy.copy(self)
        twin.executor = executor
        return twin

    # ----- device, models, knobs ---------------------------------------------------------
    @functools.cached_property
    def device(self) -> str:
        """cuda, mps or cpu (AIGC_DEVICE, or the best one present); asking imports torch."""
        return pick_device(self.settings.device)

    @functools.cached_property
    def dtype(self) -> "torch.dtype":
        """fp32 on CPU, bf16/fp16 on accelerators (AIGC_DTYPE overrides)."""
        return pick_dtype(self.device, self.settings.dtype)

    def describe(self) -> str:
        """One line for the page header: preset, device, dtype, text runtime, executor."""
        dtype = str(self.dtype).replace("torch.", "")
        line = f"preset **{self.preset}** · device **{self.device}** ({dtype})"
        text = self.catalog.defaults.get("text")
        if text:
            runtime = text_engine().resolve_runtime(self.settings.text_runtime, self.model_spec("text", text), self.device)
            line += f" · text runtime **{runtime}**"
        if self.executor.label:
            line += f" · **{self.executor.label}**"
        return line

    def model_spec(self, modality: str, model: str | None = None) -> ModelSpec:
        """The catalog's spec for model (None: the preset's default); ModelUnavailableError at once
        for a hub model the studio cannot load now (no Hub and not in the local Hub cache)."""
        return self.catalog.require_runnable(self.catalog.get(model, modality))

    def params(self, modality: str, model: str | None = None, **values: Any):
        """Validated knobs for a model: the catalog's recommended defaults under
        the given values (None means 'use the default')."""
        spec = self.model_spec(modality, model)
        given = {k: v for k, v in values.items() if v is not None}
        chosen = knobs.make(PARAMS_TYPES[modality], **{**spec.defaults, **given})
        if modality == "image":
            check_scheduler(spec, chosen)
        return chosen

    def knobs_used(self, modality: str, model: str | None = None) -> tuple[str, ...]:
        """The knobs a model reads, in their dataclass order: the UI shows only these and
        side by side sweeps only these."""
        spec = self.model_spec(modality, model)
        if spec.knobs is not None:
            return spec.knobs
        if modality == "audio":
            return audio_engine.knobs_used(spec.kind)
        if modality == "image":
            return image_engine.knobs_used(spec.kind)
        return tuple(f.name for f in dataclasses.fields(PARAMS_TYPES[modality]))

    @functools.cached_property
    def forward_cache(self):
        """The text model's forward passes the inside views read again (inside.ForwardCache)."""
        from aigc_studio import inside

        return inside.ForwardCache()

    def is_loaded(self, modality: str, model: str | None = None) -> bool:
        return self.models.is_loaded(self.model_spec(modality, model).id)

    def load(self, spec: ModelSpec, report: Callable[[str], None] = log.info) -> LoadedModel:
        """The loaded model of spec (loaded now if it is not), its errors made plain."""
        try:
            size_of = (lambda text_model: text_model.memory_bytes()) if spec.modality == "text" else module_bytes
            return self.models.get(spec.id, self._loader(spec, report), size_of,
                                   expected_bytes=spec.size_mb * 2**20)
        except out_of_memory_errors():  # the manager has freed the half-loaded model and tried again without idle models
            raise ModelMemoryError(f"Out of memory while loading {spec.id} on {self.device}: close other programs, "
                                   f"pick a smaller model, or lower AIGC_MEMORY_BUDGET_GB. "
                                   f"The studio is still running.") from None
        except (OSError, SafetensorError) as error:  # SafetensorError: a truncated or damaged weights file
            where = "the Hugging Face Hub (is the network up?)" if spec.source == "hub" else spec.location
            hint = " (the studio loads safetensors weights only, never pickle .bin/.pt/.ckpt files)" \
                if ".safetensors" in str(error) else ""
            raise ModelLoadError(f"model: could not load {spec.id} from {where}: {error}{hint}") from error

    def _loader(self, spec: ModelSpec, report: Callable[[str], None]) -> Callable[[], Any]:
        if spec.modality == "text":
            return lambda: text_engine().load(spec, self.device, self.dtype, self.settings.cache_dir, report,
                                              self.settings.text_runtime, self.threads)
        if spec.modality == "image":
            memory = image_engine.MemoryOptions(self.settings.attention_slicing, self.settings.vae_tiling,
                                                self.settings.cpu_offload)
            return lambda: image_engine.load(spec, self.device, self.dtype, memory)
        return lambda: audio_engine.load(spec, self.device, self.dtype)

    @contextmanager
    def use(self, spec: ModelSpec) -> Iterator[Any]:
        """The loaded model, held for one generation (loaded again if it was evicted
        between loading and locking).

        Transformers audio engines seed torch's process-wide RNG (their generate()
        takes no generator), so they also hold one studio-wide lock: two of them at
        once would draw from each other's seeds. Text columns and images draw from
        their own generators, and Piper's noise comes from the request's seed as graph
        inputs, so none of them waits for another request.

        Out of memory during the generation: the step's tensors are freed, idle
        models are unloaded, this one stays loaded, and ModelMemoryError says so.
        """
        seeds_torch = spec.modality == "audio" and audio_engine.seeds_torch(spec.kind)
        rng_lock = self.global_rng_lock if seeds_torch else nullcontext()
        with rng_lock:
            try:
                while True:
                    loaded = self.load(spec)
                    with loaded.lock:
                        if loaded.value is not None:
                            try:
                                yield loaded.value
                            finally:
                                trim_heap()  # the generation's freed activations go back to the system
                            return
            except out_of_memory_errors() as error:
                if isinstance(error, ModelMemoryError):
                    raise
                traceback.clear_frames(error.__traceback__)  # the failed step's activations become garbage
        self.models.unload_idle(keep=spec.id)
        free_memory()
        raise ModelMemoryError(f"Out of memory while generating with {spec.id} on {self.device}: try a smaller "
                               f"size, fewer steps, variants or tokens, or a smaller model. "
                               f"The studio is still running.") from None

    def grid_plan(self, modality: str, base, x_knob: str, x_values: list, y_knob: str | None = None,
                  y_values: list | None = None, model: str | None = None) -> grid.GridPlan:
        """A text or audio grid's cells (grid.plan): 1-6 values per axis, at most 16 cells, the
        seed fixed unless it is an axis. An axis the model does not read is refused, naming
        the knobs it does."""
        readable = [name for name in self.knobs_used(modality, model) if name in knobs.sweepable(type(base))]
        most = grid.MAX_TEXT_CELLS if modality == "text" else grid.MAX_AUDIO_CELLS
        count = len(x_values or []) * (len(y_values or []) if y_knob else 1)
        grid.check_axes(self.model_spec(modality, model).id, readable, x_knob, y_knob, most, count)
        return grid.plan(base, x_knob, x_values, y_knob, y_values)

    def recipe(self, spec: ModelSpec, prompt: str, chosen, label: str, started: float, runtime: str = "") -> Recipe:
        """The recipe of one result; started: time.perf_counter() when its work began."""
        used = self.knobs_used(spec.modality, spec.id)  # a recipe lists only the knobs its model read
        return Recipe(
            modality=spec.modality, model_id=spec.id, revision=spec.revision, prompt=prompt,
            params={k: v for k, v in dataclasses.asdict(chosen).items() if k in used},
            device=self.device, dtype=str(self.dtype).replace("torch.", ""),
            label=label, elapsed_s=round(time.perf_counter() - started, 3), runtime=runtime,
        )


def check_scheduler(spec: ModelSpec, params: ImageParams) -> None:
    """Refuse a scheduler the model cannot sample with, naming the ones it can."""
    allowed = spec.schedulers or tuple(name for name in knobs.spec(ImageParams, "scheduler")["choices"] if name != "lcm")
    if params.scheduler not in allowed:
        hint = " (lcm needs a consistency-distilled model, e.g. lcm-dreamshaper-v7)" if params.scheduler == "lcm" else ""
        raise knobs.ParamError("scheduler", f"{spec.id} samples with {', '.join(allowed)}; "
                                            f"got {params.scheduler}{hint}")
