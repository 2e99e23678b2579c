"""Where the studio runs: ZeroGPU on Hugging Face Spaces, or anywhere else as is.

On a ZeroGPU Space (`SPACES_ZERO_GPU` set) no process owns a GPU. `import spaces`
patches torch so that models moved to `cuda` at import time are packed at launch and
copied into a worker; each call of a function decorated with `spaces.GPU` runs in a
worker process forked from the main one, its arguments and results (and every value
a generator yields) pickled across. So:

- the ZeroGPU set of models (catalog `zero_gpu`, or `AIGC_PRELOAD=id,id`) loads at
  import time, in the main thread, onto `cuda` (`preload`);
- every GPU call is one of the module-level entry points below (`gpu_*`), which take
  and return plain picklable data (prompts, knob dataclasses, Results, Explanations)
  and run a service task (aigc_studio/services/) on the module's runtime, inherited by
  the fork (never pickled); each says how many seconds it needs from its arguments
  (`*_seconds`);
- `ZeroGPU` is the executor the studio's runtime runs its tasks with on ZeroGPU
  (`Runtime.run`, the one place a model runs): a task with an entry point goes through
  it, callbacks and Stop kept in the main process (a stopped generator is closed; spaces
  then closes it in the worker); any other task runs here, as it would anywhere.
  The Studio itself, and so every method the UI and the API call, stays the same.

Off ZeroGPU `gpu()` returns the very function it decorates and nothing here is used:
lazy loading and the LRU budget work as before. `spaces` (which imports gradio) is
imported only on ZeroGPU, so the backend stays free of gradio.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Any, Callable, Iterator

from aigc_studio.catalog import ModelSpec
from aigc_studio.config import zero_gpu
from aigc_studio.engines import GenerationStopped
from aigc_studio.params import AudioParams, ImageParams, TextParams
from aigc_studio.recipe import Result
from aigc_studio.services import audio as audio_tasks
from aigc_studio.services import image as image_tasks
from aigc_studio.services import text as text_tasks
from aigc_studio.services.runtime import LocalExecutor, Runtime
from aigc_studio.services.text import CompareUpdate
from aigc_studio.studio import Studio

log = logging.getLogger(__name__)

# ZeroGPU's `large` slice (half an H200); the preload set must fit in it with room to run.
LARGE_GPU_MB = 48 * 1024
PRELOAD_HEADROOM = 0.8  # the models may fill at most this share; activations need the rest
MAX_SECONDS = 300  # the longest call we ask ZeroGPU for (quota is counted per requested second)
# Seconds per unit of work on a ZeroGPU slice; generous, since an under-estimate aborts the call.
SECONDS_PER_TOKEN = 0.05  # a small LM on an H200 slice, one column
SECONDS_PER_STEP_512 = 0.15  # one denoising step of one 512x512 image (SD-class UNet, fp16)
SECONDS_PER_AUDIO_SECOND = 3.0  # MusicGen-small: audio seconds -> compute seconds
SECONDS_PER_CHAR = 0.05  # speech: characters of text -> compute seconds (Bark is ~10x)
OVERHEAD_S = 10  # worker start, tensors copied onto the GPU

if zero_gpu():
    import spaces  # noqa: F401  before any Studio touches CUDA: spaces must patch torch first


def gpu(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=duration)` on ZeroGPU; elsewhere the identity decorator."""
    if not zero_gpu():
        return lambda fn: fn
    import spaces  # only here: it patches torch and imports gradio

    return spaces.GPU(duration=duration)


# ----- the ZeroGPU set ----------------------------------------------------------------------

def preload_ids(studio: Studio) -> list[str]:
    """The models to load at import: the settings' preload (AIGC_PRELOAD=id,id,...) or the
    catalog's ZeroGPU set plus the preset's defaults (what a page opens with), each id once."""
    if studio.settings.preload:
        return list(dict.fromkeys(studio.settings.preload))
    ids = [s.id for s in studio.catalog.specs.values() if s.zero_gpu]
    ids += [i for i in studio.catalog.defaults.values() if i]
    return list(dict.fromkeys(ids))


def preload_specs(studio: Studio, ids: list[str]) -> list[ModelSpec]:
    """The specs of ids (any modality), refused when they would not fit a `large` slice."""
    specs = []
    for model_id in ids:
        spec = studio.catalog.specs.get(model_id)
        if spec is None:
            raise ValueError(f"AIGC_PRELOAD: {model_id!r} is not in the catalog; "
                             f"choose from {', '.join(studio.catalog.specs)}")
        specs.append(spec)
    total = sum(s.size_mb for s in specs)
    if total > LARGE_GPU_MB * PRELOAD_HEADROOM:
        raise ValueError(f"AIGC_PRELOAD: {total} MB of models do not fit a ZeroGPU `large` slice "
                         f"({LARGE_GPU_MB} MB, at most {PRELOAD_HEADROOM:.0%} for weights); preload fewer")
    return specs


def preload(studio: Studio, ids: list[str]) -> None:
    """Load ids now, in this (the main) thread: on ZeroGPU this is the only time a model
    can be placed on `cuda`; a model loaded inside a GPU call is lost with its worker."""
    for spec in preload_specs(studio, ids):
        log.info("preloading %s (%s) on %s", spec.id, spec.modality, studio.device)
        studio.load(spec.modality, spec.id)


# ----- entry points: module-level, plain data in and out ------------------------------------

# set by install(); a forked worker inherits it, nobody pickles it. It runs its tasks here:
# inside a GPU call every task (a grid's images too) runs in the worker.
_runtime: Runtime | None = None


def install(studio: Studio | None) -> None:
    """Make studio's runtime the one the entry points use (its preloaded models travel by fork)."""
    global _runtime
    _runtime = None if studio is None else studio.runtime.with_executor(LocalExecutor())


class NotPreloaded(ValueError):
    """A GPU call asked for a model outside the preload set (it would load in a worker and be lost)."""


def _ready(modality: str, model: str | None) -> Runtime:
    if _runtime is None:
        raise RuntimeError("hosting.install(studio) was not called")
    spec = _runtime.model_spec(modality, model)
    if not _runtime.is_loaded(modality, spec.id):
        raise NotPreloaded(f"model: {spec.id} is not loaded on this ZeroGPU Space (a model loaded inside a GPU "
                           f"call is lost); add it to AIGC_PRELOAD and restart")
    return _runtime


def _clip(seconds: float) -> int:
    return int(min(MAX_SECONDS, max(OVERHEAD_S, round(seconds))))


def text_seconds(prompt: str, variants: list[tuple[str, TextParams]], model: str | None = None,
                 alternatives: int = 5, most: int = 4) -> int:
    """Estimated GPU seconds: the longest column's tokens (columns run as one batch)."""
    tokens = max((p.max_new_tokens for _, p in variants), default=0)
    return _clip(OVERHEAD_S + tokens * SECONDS_PER_TOKEN * (1 + 0.1 * (len(variants) - 1)))


def explain_seconds(prompt: str, params: TextParams, model: str | None = None, answer: str | list[int] = "",
                    position: int = 0, top_n: int = 10) -> int:
    """One forward pass over prompt and answer."""
    return _clip(OVERHEAD_S + 5)


def attention_seconds(prompt: str, params: TextParams, model: str | None = None, answer: str | list[int] = "",
                      *views) -> int:
    """One forward pass with eager attention over prompt and answer (at most 512 tokens)."""
    return _clip(OVERHEAD_S + 5)


def perplexity_seconds(text: str, model: str | None = None) -> int:
    """One forward pass over the text."""
    return _clip(OVERHEAD_S + len(text) / 2000)


def _image_work(params: ImageParams) -> float:
    return params.steps * params.width * params.height / 512**2 * params.batch_size * SECONDS_PER_STEP_512


def images_seconds(prompt: str, variants: list[tuple[str, ImageParams]], model: str | None = None,
                   previews: bool = False, init_image=None) -> int:
    """Steps x size x batch, summed over the variants."""
    return _clip(OVERHEAD_S + sum(_image_work(p) for _, p in variants))


def grid_seconds(prompt: str, base: ImageParams, x_knob: str, x_values: list, y_knob: str | None = None,
                 y_values: list | None = None, model: str | None = None, init_image=None) -> int:
    """Every cell at the base size; a swept steps/width/height axis counts at its largest value."""
    cells = len(x_values) * (len(y_values) if y_knob and y_values else 1)
    largest = {}
    for knob, values in ((x_knob, x_values), (y_knob, y_values or [])):
        if knob in ("steps", "width", "height"):
            try:
                largest[knob] = max(int(float(v)) for v in values)
            except ValueError:
                pass  # the studio refuses such a value with a clear message before any step
    one = dataclasses.replace(base, batch_size=1, **largest)
    return _clip(OVERHEAD_S + cells * _image_work(one))


def audio_seconds(prompt: str, params: AudioParams, model: str | None = None, label: str = "") -> int:
    """Music: seconds of audio; speech: characters of text (Bark ~10x slower)."""
    kind = _runtime.model_spec("audio", model).kind if _runtime else "piper"
    if kind == "musicgen":
        return _clip(OVERHEAD_S + params.duration * SECONDS_PER_AUDIO_SECOND)
    return _clip(OVERHEAD_S + len(prompt) * SECONDS_PER_CHAR * (10 if kind == "bark" else 1))


@gpu(duration=text_seconds)
def gpu_text_compare(prompt: str, variants: list[tuple[str, TextParams]], model: str | None = None,
                     alternatives: int = 5, most: int = 4) -> Iterator[CompareUpdate]:
    """Stream 1-`most` text columns (a lone answer is one column): CompareUpdates as the task yields them."""
    runtime = _ready("text", model)
    yield from text_tasks.compare_stream(runtime, prompt, variants, model, None, alternatives, most)


@gpu(duration=explain_seconds)
def gpu_explain(prompt: str, params: TextParams | None, model: str | None = None, answer: str | list[int] = "",
                position: int = 0, top_n: int = 10):
    """The next-token explainer (text_engine.Explanation)."""
    return text_tasks.explain_next_token(_ready("text", model), prompt, params, model, answer, position, top_n)


@gpu(duration=attention_seconds)
def gpu_attention(prompt: str, params: TextParams | None, model: str | None = None, answer: str | list[int] = "",
                  position: int | None = None, layer: int | None = None, head: int | None = None) -> dict:
    """The attention view and logit lens (aigc_studio/inside.py; a dict of lists)."""
    return text_tasks.attention(_ready("text", model), prompt, params, model, answer, position, layer, head)


@gpu(duration=attention_seconds)
def gpu_attention_overview(prompt: str, params: TextParams | None, model: str | None = None,
                           answer: str | list[int] = "", layer: int | None = None, head: int | None = None):
    """Every layer x head attention matrix as small heat maps (a PIL image)."""
    return text_tasks.attention_overview(_ready("text", model), prompt, params, model, answer, layer, head)


@gpu(duration=perplexity_seconds)
def gpu_perplexity(text: str, model: str | None = None) -> tuple[float, int]:
    """(perplexity, tokens scored)."""
    return text_tasks.perplexity(_ready("text", model), text, model)


def _events(work: Callable[[Callable[[tuple], None], threading.Event], Any]) -> Iterator[tuple]:
    """Run work(emit, stop) in a thread of this (worker) process; yield what it emits,
    then ("result", value). Closing the generator sets stop, so the studio call ends
    at its next step instead of running on."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def target():
        try:
            events.put(("result", work(events.put, stop)))
        except BaseException as error:  # re-raised in the generator's thread
            events.put(("error", error))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        while True:
            event = events.get()
            if event[0] == "error":
                raise event[1]
            yield event
            if event[0] == "result":
                return
    finally:
        stop.set()
        thread.join()  # the model is free again before the next call starts


@gpu(duration=images_seconds)
def gpu_images(prompt: str, variants: list[tuple[str, ImageParams]], model: str | None = None,
               previews: bool = False, init_image=None) -> Iterator[tuple]:
    """Images for labelled variants: yields ("step", i, total) after each denoising step,
    ("preview", i, picture) when previews are asked for, then ("result", [Result, ...])."""
    runtime = _ready("image", model)

    def work(emit, stop):
        on_preview = (lambda step, picture: emit(("preview", step, picture))) if previews else None
        return image_tasks.images(runtime, prompt, variants, model, lambda i, n: emit(("step", i, n)), on_preview,
                                  stop, init_image)

    yield from _events(work)


@gpu(duration=grid_seconds)
def gpu_image_grid(prompt: str, base: ImageParams, x_knob: str, x_values: list, y_knob: str | None = None,
                   y_values: list | None = None, model: str | None = None, init_image=None) -> Iterator[tuple]:
    """An X/Y grid: ("step", i, total) per denoising step, then ("result", (grid picture, cells))."""
    runtime = _ready("image", model)

    def work(emit, stop):
        return image_tasks.image_grid(runtime, prompt, base, x_knob, x_values, y_knob, y_values, model,
                                      lambda i, n: emit(("step", i, n)), stop, init_image)

    yield from _events(work)


@gpu(duration=audio_seconds)
def gpu_audio(prompt: str, params: AudioParams, model: str | None = None, label: str = "") -> Result:
    """Speech or music for prompt with these knobs: a Result ((rate, samples), recipe)."""
    return audio_tasks.speak(_ready("audio", model), prompt, model, params, label, None, None)


ENTRY_POINTS = (gpu_text_compare, gpu_explain, gpu_perplexity, gpu_attention, gpu_attention_overview, gpu_images,
                gpu_image_grid, gpu_audio)


# ----- the executor on ZeroGPU --------------------------------------------------------------

def _call_here(entry: Callable, *args: Any) -> Any:
    """Call an entry point as is: on ZeroGPU, spaces sends the call to a worker."""
    return entry(*args)


class ZeroGPU:
    """Runs the studio's GPU tasks through the entry points above. Each route takes the
    task's own arguments (after the runtime), sends plain data to its entry point, and
    keeps callbacks and Stop here; a task without a route runs here, in this process.

    call(entry, *args) makes the call: the entry point itself on ZeroGPU, or a harness
    (the tests run it in a forked process, pickling both ways, as ZeroGPU does)."""

    label = "ZeroGPU"

    def __init__(self, call: Callable[..., Any] = _call_here):
        self.call = call
        self.routes: dict[Callable, Callable] = {
            text_tasks.compare_stream: self.text_compare, text_tasks.explain_next_token: self.explain,
            text_tasks.perplexity: self.perplexity, text_tasks.attention: self.attention,
            text_tasks.attention_overview: self.attention_overview, image_tasks.images: self.images,
            image_tasks.image_grid: self.image_grid, audio_tasks.speak: self.speak,
        }

    def run(self, runtime: Runtime, task: Callable, *args: Any) -> Any:
        route = self.routes.get(task)
        return task(runtime, *args) if route is None else route(*args)

    def text_compare(self, prompt: str, variants: list[tuple[str, TextParams]], model: str | None,
                     stop: threading.Event | None, alternatives: int, most: int) -> Iterator[CompareUpdate]:
        stream = self.call(gpu_text_compare, prompt, [(label, _plain(p)) for label, p in variants], model,
                           alternatives, most)
        try:
            for update in stream:
                yield update
                if stop is not None and stop.is_set():
                    return  # closing the stream closes it in the worker (spaces' stop event)
        finally:
            stream.close()

    def explain(self, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int],
                position: int, top_n: int):
        return self.call(gpu_explain, prompt, _plain(params), model, _plain_answer(answer), position, top_n)

    def perplexity(self, text: str, model: str | None) -> tuple[float, int]:
        return self.call(gpu_perplexity, text, model)

    def attention(self, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int],
                  position: int | None, layer: int | None, head: int | None) -> dict:
        return self.call(gpu_attention, prompt, _plain(params), model, _plain_answer(answer), position, layer, head)

    def attention_overview(self, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int],
                           layer: int | None, head: int | None):
        return self.call(gpu_attention_overview, prompt, _plain(params), model, _plain_answer(answer), layer, head)

    def images(self, prompt: str, variants: list[tuple[str, ImageParams]], model: str | None, on_step, on_preview,
               stop: threading.Event | None, init_image) -> list[Result]:
        stream = self.call(gpu_images, prompt, [(label, _plain(p)) for label, p in variants], model,
                           on_preview is not None, init_image)
        return _drive(stream, on_step, on_preview, stop)

    def image_grid(self, prompt: str, base: ImageParams, x_knob: str, x_values: list, y_knob: str | None,
                   y_values: list | None, model: str | None, on_step, stop: threading.Event | None, init_image):
        stream = self.call(gpu_image_grid, prompt, _plain(base), x_knob, list(x_values), y_knob,
                           list(y_values) if y_values is not None else None, model, init_image)
        return _drive(stream, on_step, None, stop)

    def speak(self, prompt: str, model: str | None, params: AudioParams, label: str, on_step,
              stop: threading.Event | None) -> Result:
        if stop is not None and stop.is_set():
            raise GenerationStopped("before the first sentence")
        return self.call(gpu_audio, prompt, _plain(params), model, label)


def _plain(params):
    """A fresh copy of the knobs (the dataclass itself pickles; this drops any subclass)."""
    return type(params)(**dataclasses.asdict(params)) if dataclasses.is_dataclass(params) else params


def _plain_answer(answer):
    """Text as is, token ids as a plain list."""
    return answer if isinstance(answer, str) else [int(i) for i in answer]


def _drive(stream: Iterator[tuple], on_step, on_preview, stop: threading.Event | None):
    """Hand a GPU stream's events to the caller's callbacks (in this process) and return its result."""
    try:
        for event in stream:
            if stop is not None and stop.is_set():
                raise GenerationStopped("stopped between two steps")
            kind = event[0]
            if kind == "step" and on_step is not None:
                on_step(event[1], event[2])
            elif kind == "preview" and on_preview is not None:
                on_preview(event[1], event[2])
            elif kind == "result":
                return event[1]
    finally:
        stream.close()
    raise GenerationStopped("the GPU call ended without a result")


def serve(studio: Studio) -> Studio:
    """The studio to build the UI over. On ZeroGPU: the ZeroGPU set preloaded, and the
    studio's runtime running its GPU tasks through the entry points (the same Studio,
    the same methods); elsewhere studio itself, unchanged."""
    if not zero_gpu():
        return studio
    if not studio.settings.memory_budget_given:  # the preload set stays loaded: budget it as the slice
        studio.models.budget_bytes = int(LARGE_GPU_MB * 2**20 * PRELOAD_HEADROOM)
    preload(studio, preload_ids(studio))
    install(studio)
    studio.runtime.executor = ZeroGPU()
    return studio
