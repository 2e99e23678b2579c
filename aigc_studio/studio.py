"""Studio: the one API that the UI, the Gradio API, the CLI and tests all call.

    from aigc_studio import Studio
    studio = Studio()                      # settings from the environment
    print(studio.text("Write a haiku about rain").output)
    image = studio.image("a red circle", steps=20, seed=1).output
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from PIL import Image
from safetensors import SafetensorError

from aigc_studio import audio_views, grid
from aigc_studio import params as knobs
from aigc_studio import recipe as recipes
from aigc_studio.audio_views import file_view
from aigc_studio.history import History
from aigc_studio.catalog import Catalog, ModelSpec, UnknownModelError, resolve_preset
from aigc_studio.config import Settings
from aigc_studio.engines import GenerationStopped
from aigc_studio.engines import audio as audio_engine
from aigc_studio.engines import image as image_engine
from aigc_studio.engines import text_remote
from aigc_studio.models import (
    LoadedModel, ModelManager, apply_threads, free_memory, module_bytes, out_of_memory_errors, pick_device, pick_dtype,
    pick_threads, trim_heap,
)
from aigc_studio.params import AudioParams, ImageParams, TextParams
from aigc_studio.recipe import RECIPE_KEY, Recipe, Result, read_recipe
from aigc_studio.shapes import UnknownPromptError
from aigc_studio.storage import NotKept

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The facade that front ends (ui/, the CLI) import, with params: the Studio and what its
# calls return or raise. They reach the rest of the backend through these names only.
__all__ = ["Studio", "TextUpdate", "CompareUpdate", "Result", "Recipe", "ModelLoadError", "ModelMemoryError",
           "GenerationStopped", "NotKept", "UnknownModelError", "UnknownPromptError", "out_of_memory_errors",
           "free_memory", "read_recipe", "RECIPE_KEY", "file_view"]

PARAMS_TYPES = {"text": TextParams, "image": ImageParams, "audio": AudioParams}


def image_inside():
    """engines/image_inside.py (image to image inputs, the forward process, prompt maps), on first use."""
    from aigc_studio.engines import image_inside as inside

    return inside


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


@dataclass
class TextUpdate:
    """One step of a streamed text generation.

    text: the answer so far; status: a progress note (e.g. while loading);
    result: set on the last update only; tokens: the generated tokens so far, each
    with its probability and alternatives (text_engine.Token).
    """

    text: str = ""
    status: str = ""
    result: Result | None = None
    tokens: list = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return text_engine().tokens_per_second(self.tokens)

    @property
    def mean_logprob(self) -> float:
        return text_engine().mean_logprob(self.tokens)


@dataclass
class CompareUpdate:
    """One step of side-by-side text columns streaming together.

    columns: one TextUpdate per variant (each result set on the last update);
    diverge_at: index of the first token where the columns differ (None while they agree).
    """

    columns: list[TextUpdate]
    status: str = ""
    diverge_at: int | None = None


class Studio:
    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None):
        self.settings = settings or Settings.from_env()
        self.settings.check()
        self.preset = resolve_preset(self.settings.preset)
        # 'auto' has just asked whether the Hub answers; an explicit preset leaves it to the catalog
        hub_online = (self.preset == "hub") if self.settings.preset == "auto" else None
        self.catalog = catalog or Catalog.for_preset(self.preset, self.settings.allowlist, hub_online)
        if self.settings.text_endpoint:  # an OpenAI-compatible server's models join as remote:<name> (issue 18)
            text_remote.add_models(self.catalog, self.settings.text_endpoint, self.settings.text_api_key)
        self.threads = pick_threads(self.settings.threads, self.settings.concurrency)
        apply_threads(self.threads)
        self.models = ModelManager(int(self.settings.memory_budget_gb * 2**30))
        self._global_rng_lock = threading.Lock()
        self.history = History()  # every browser's results, newest first (the History tab, /history)
        self._restore_adapters()

    # ----- settings and models -------------------------------------------------
    @functools.cached_property
    def device(self) -> str:
        """cuda, mps or cpu (AIGC_DEVICE, or the best one present); asking imports torch."""
        return pick_device(self.settings.device)

    @functools.cached_property
    def dtype(self) -> "torch.dtype":
        """fp32 on CPU, bf16/fp16 on accelerators (AIGC_DTYPE overrides)."""
        return pick_dtype(self.device, self.settings.dtype)

    def describe(self) -> str:
        """One line for the page header: preset, device, dtype."""
        dtype = str(self.dtype).replace("torch.", "")
        line = f"preset **{self.preset}** · device **{self.device}** ({dtype})"
        text = self.catalog.defaults.get("text")
        if text:
            runtime = text_engine().resolve_runtime(self.settings.text_runtime, self.model_spec("text", text), self.device)
            line += f" · text runtime **{runtime}**"
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

    def sampling_style(self, name: str, model: str | None = None) -> dict[str, Any]:
        """A sampling style's knobs (Precise, Balanced, Creative) around the model's
        recommended ones (Balanced = the recommendation)."""
        return knobs.sampling_style(name, self.params("text", model))

    def is_loaded(self, modality: str, model: str | None = None) -> bool:
        return self.models.is_loaded(self.model_spec(modality, model).id)

    def _load(self, spec: ModelSpec, report: Callable[[str], None] = log.info) -> LoadedModel:
        if spec.modality == "text":
            loader = lambda: text_engine().load(spec, self.device, self.dtype, self.settings.cache_dir, report,
                                                self.settings.text_runtime, self.threads)
        elif spec.modality == "image":
            memory = image_engine.MemoryOptions(self.settings.attention_slicing, self.settings.vae_tiling,
                                                self.settings.cpu_offload)
            loader = lambda: image_engine.load(spec, self.device, self.dtype, memory)
        else:
            loader = lambda: audio_engine.load(spec, self.device, self.dtype)
        try:
            size_of = (lambda text_model: text_model.memory_bytes()) if spec.modality == "text" else module_bytes
            return self.models.get(spec.id, loader, size_of, expected_bytes=spec.size_mb * 2**20)
        except out_of_memory_errors():  # the manager has freed the half-loaded model and tried again without idle models
            raise ModelMemoryError(f"Out of memory while loading {spec.id} on {self.device}: close other programs, "
                                   f"pick a smaller model, or lower AIGC_MEMORY_BUDGET_GB. "
                                   f"The studio is still running.") from None
        except (OSError, SafetensorError) as error:  # SafetensorError: a truncated or damaged weights file
            where = "the Hugging Face Hub (is the network up?)" if spec.source == "hub" else spec.location
            hint = " (the studio loads safetensors weights only, never pickle .bin/.pt/.ckpt files)" \
                if ".safetensors" in str(error) else ""
            raise ModelLoadError(f"model: could not load {spec.id} from {where}: {error}{hint}") from error

    @contextmanager
    def _use(self, spec: ModelSpec) -> Iterator[Any]:
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
        if spec.source == "remote":  # a server generates: nothing loads here, requests run concurrently
            try:
                yield text_remote.connect(spec, self.settings.text_endpoint, self.settings.text_api_key,
                                          self.settings.text_timeout_s)
            except text_remote.RemoteError as error:
                raise ModelLoadError(str(error)) from error
            return
        seeds_torch = spec.modality == "audio" and audio_engine.seeds_torch(spec.kind)
        rng_lock = self._global_rng_lock if seeds_torch else nullcontext()
        with rng_lock:
            try:
                while True:
                    loaded = self._load(spec)
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

    def load(self, modality: str, model: str | None = None) -> None:
        """Load a model now instead of on first use (e.g. to warm a demo)."""
        self._load(self.model_spec(modality, model))

    def unload(self, modality: str, model: str | None = None) -> bool:
        return self.models.unload(self.model_spec(modality, model).id)

    def _recipe(self, spec: ModelSpec, prompt: str, chosen, label: str, started: float, runtime: str = "") -> Recipe:
        used = self.knobs_used(spec.modality, spec.id)  # a recipe lists only the knobs its model read
        return Recipe(
            modality=spec.modality, model_id=spec.id, revision=spec.revision, prompt=prompt,
            params={k: v for k, v in dataclasses.asdict(chosen).items() if k in used},
            device=self.device, dtype=str(self.dtype).replace("torch.", ""),
            label=label, elapsed_s=round(time.perf_counter() - started, 3), runtime=runtime,
        )

    # ----- text ------------------------------------------------------------------
    def text_stream(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                    stop: threading.Event | None = None, label: str = "") -> Iterator[TextUpdate]:
        """Stream an answer: TextUpdates with the text so far; the last carries the Result."""
        chosen = params or self.params("text", model)
        for update in self.text_compare_stream(prompt, [(label, chosen)], model, stop):
            column = update.columns[0]
            yield TextUpdate(text=column.text, status=update.status, result=column.result, tokens=column.tokens)

    def text(self, prompt: str, model: str | None = None, **values: Any) -> Result:
        """Generate an answer at once; values are TextParams knobs."""
        chosen = self.params("text", model, **values)
        update = TextUpdate()
        for update in self.text_stream(prompt, chosen, model):
            pass
        return update.result

    def text_compare_stream(self, prompt: str, variants: list[tuple[str, TextParams]], model: str | None = None,
                            stop: threading.Event | None = None, alternatives: int = 5,
                            most: int = 4) -> Iterator[CompareUpdate]:
        """Stream 1-4 labelled variants of one prompt together: one batched step gives
        every column its next token (a remote model: one concurrent request per column).
        alternatives: the likeliest tokens each token lists (a remote server sends its top-20).
        most: the most variants taken (an X/Y grid takes up to grid.MAX_TEXT_CELLS).

        Variants whose seed is -1 share one drawn seed, so columns differ only by their
        knobs; each column's text equals a lone generation with its knobs and seed.
        """
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("text", model)
        if not 1 <= len(variants) <= most:
            raise knobs.ParamError("values", f"give 1 to {most} variants, got {len(variants)}")
        shared_seed = knobs.resolve_seed(TextParams()).seed
        chosen = []
        for label, params in variants:
            checked = knobs.validate(params)
            chosen.append((label, checked if checked.seed >= 0 else dataclasses.replace(checked, seed=shared_seed)))
        stops = [knobs.stop_sequences(p.stop_sequences) for _, p in chosen]
        if spec.source != "remote" and not self.models.is_loaded(spec.id):
            yield CompareUpdate([TextUpdate() for _ in chosen],
                                status=f"Loading {spec.id} (first use; the embedded model is converted once)...")
        started = time.perf_counter()
        tokens: list[list] = [[] for _ in chosen]
        raw = [""] * len(chosen)

        def columns(final: bool) -> list[TextUpdate]:
            return [TextUpdate(text=text_engine().visible_text(raw[i], stops[i], final), tokens=tokens[i])
                    for i in range(len(chosen))]

        with self._use(spec) as text_model:
            runtime = text_model.runtime
            if text_model.runtime_note:
                yield CompareUpdate(columns(final=False), status=f"Note: {text_model.runtime_note}")
            engine = text_remote if spec.source == "remote" else text_engine()
            notes: list[str] = []  # a remote server's: a knob it refused, no probabilities
            for i, token in engine.generate(text_model, prompt, [p for _, p in chosen], stop=stop,
                                            alternatives=alternatives):
                if isinstance(token, str):
                    notes.append(token)
                    yield CompareUpdate(columns(final=False), status="Note: " + "; ".join(notes))
                    continue
                tokens[i].append(token)
                raw[i] += token.text
                yield CompareUpdate(columns(final=False), status="Note: " + "; ".join(notes) if notes else "",
                                    diverge_at=_first_divergence(tokens, finished=False))
        final = columns(final=True)
        for column, (label, params) in zip(final, chosen):
            column.result = Result(column.text, self._recipe(spec, prompt, params, label, started, runtime))
        yield CompareUpdate(final, status="Note: " + "; ".join(notes) if notes else "",
                            diverge_at=_first_divergence(tokens, finished=True))

    def explain_next_token(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                           answer: str | list[int] = "", position: int = 0, top_n: int = 10):
        """The candidates for one token and their probability at each sampling stage.

        position 0 explains the first token after the prompt; k explains the token
        after the first k tokens of `answer` (text, or the token ids a generation
        returned); -1 explains the token after the whole answer. The model runs once
        per context; moving a knob afterwards only re-applies the processors.
        """
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("text", model)
        chosen = knobs.validate(params or self.params("text", spec.id))
        if spec.source == "remote":  # the server's top-20 through the studio's stages: approximate, and says so
            with self._use(spec) as remote:
                return text_remote.explain_next_token(remote, prompt, chosen, answer, position, top_n)
        with self._use(spec) as text_model:
            import torch

            prompt_ids = text_engine().encode_prompt(text_model, prompt, chosen).reshape(-1)
            if isinstance(answer, str):
                answer_ids = text_model.tokenizer.encode(answer, add_special_tokens=False) if answer else []
            else:
                answer_ids = [int(i) for i in answer]
            if position == -1:
                position = len(answer_ids)
            if not 0 <= position <= len(answer_ids):
                raise knobs.ParamError("position", f"must be -1 or a whole number in [0, {len(answer_ids)}] "
                                                   f"(tokens in the answer), got {position!r}")
            context = torch.cat([prompt_ids, torch.tensor(answer_ids[:position], dtype=prompt_ids.dtype)])
            chosen_id = answer_ids[position] if position < len(answer_ids) else None
            return text_engine().explain_next_token(text_model, context, chosen, top_n, chosen_id, position)

    def perplexity(self, text: str, model: str | None = None) -> tuple[float, int]:
        """(perplexity, tokens scored) of text under the text model: lower = more natural to it."""
        text = knobs.check_prompt(text, "text")
        spec = self.model_spec("text", model)
        with self._use(spec) as text_model:
            return (text_remote if spec.source == "remote" else text_engine()).perplexity(text_model, text)

    # ----- inside the text model (issue 23; the work is in aigc_studio/inside.py) -------------
    def attention(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                  answer: str | list[int] = "", position: int | None = None, layer: int | None = None,
                  head: int | None = None) -> dict:
        """What one token of prompt + answer attends to in every layer and head, the causal
        matrix of one layer and head (head None: their average), and the logit lens (each
        layer's top 5 next tokens). position indexes the context tokens (None or -1: the
        last). Keys: see inside.attention. The model runs once per context (cached)."""
        return self._inside(prompt, params, model, answer, lambda inside, text_model, tokens, prompt_length: (
            inside.attention(text_model.model, text_model.tokenizer, tokens, prompt_length, position, layer, head,
                             self._forward_cache)))

    def attention_overview(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                           answer: str | list[int] = "", layer: int | None = None, head: int | None = None) -> Image.Image:
        """Every layer x head causal matrix of prompt + answer as small heat maps (rows:
        layers, columns: heads), the chosen layer and head framed; from the same cached pass."""
        return self._inside(prompt, params, model, answer, lambda inside, text_model, tokens, prompt_length: (
            inside.overview_of(text_model.model, tokens, layer, head, self._forward_cache)))

    @functools.cached_property
    def _forward_cache(self):
        from aigc_studio import inside

        return inside.ForwardCache()

    def _inside(self, prompt: str, params: TextParams | None, model: str | None, answer: str | list[int], read):
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("text", model)
        chosen = knobs.validate(params or self.params("text", spec.id))
        if spec.source == "remote":
            raise knobs.ParamError("model", f"{spec.id} runs on a server that sends no attention weights; "
                                            f"pick a text model that runs here")
        from aigc_studio import inside

        with self._torch_text(spec) as text_model:
            tokens, prompt_length = inside.context(text_model, prompt, chosen, answer)
            return read(inside, text_model, tokens, prompt_length)

    @contextmanager
    def _torch_text(self, spec: ModelSpec) -> Iterator[Any]:
        """The text model on torch, for views that read its weights. ONNX Runtime has none:
        a model that runs there gets a torch copy of the same safetensors, loaded once as
        '<id>@torch' and evicted like any model; one already on torch is used as it is."""
        engine = text_engine()
        on_onnx = engine.resolve_runtime(self.settings.text_runtime, spec, self.device) in engine.ONNX_RUNTIMES
        if not on_onnx or spec.source == "adapter":
            with self._use(spec) as text_model:
                yield text_model
            return
        copy = dataclasses.replace(spec, id=f"{spec.id}@torch")
        load = lambda: engine.load(spec, self.device, self.dtype, self.settings.cache_dir, log.info, "torch", self.threads)
        while True:
            loaded = self.models.get(copy.id, load, lambda text_model: text_model.memory_bytes(),
                                     expected_bytes=spec.size_mb * 2**20)
            with loaded.lock:
                if loaded.value is not None:
                    yield loaded.value
                    return

    # ----- fine-tuning (issue 16; the work is in aigc_studio/tune.py) -----------------
    def fine_tune(self, text: str, model: str | None = None, params: knobs.TuneParams | None = None,
                  name: str = "tuned", on_progress: Callable | None = None, stop: threading.Event | None = None,
                  files: list | None = None):
        """Fine-tune a text model on text (and .txt/.md files): LoRA, or every weight with
        params.method "full" (refused, naming `method`, when the model is too big for the memory
        budget: tune.check_full_fits). The result joins the catalog as `<base>+<name>` (source
        "adapter", runs on torch). Returns a tune.TuneResult with the held-out perplexity before
        and after; on_progress gets tune.TuneProgress reports; setting stop ends training and
        keeps the weights of the last finished step."""
        import torch

        from aigc_studio import tune

        spec = self.model_spec("text", model)
        if spec.source == "adapter":
            raise knobs.ParamError("model", f"{spec.id} is already tuned; tune its base {spec.base.id} instead")
        name = tune.check_name(name)
        chosen = tune.draw_seed(params or knobs.TuneParams())
        data_text = tune.read_texts(text, files)
        base = text_engine().load(spec, self.device, torch.float32, self.settings.cache_dir, log.info, "torch",
                                  self.threads)  # a fresh copy: training changes it
        if chosen.method == "full":
            tune.check_full_fits(sum(p.numel() for p in base.model.parameters()),
                                 int(self.settings.memory_budget_gb * 2**30))
        data = tune.split(data_text, base.tokenizer, chosen)
        folder = self.settings.output_dir / "adapters" / f"{spec.id}+{name}"
        result = tune.train(base, spec, data, chosen, folder, name, on_progress, stop, self.threads)
        self._add_adapter(spec, name, folder, result.recipe)
        return result

    def load_adapter(self, folder: str | Path, recipe: dict | None = None) -> str:
        """Restore an adapter folder that fine_tune wrote (safetensors only); its base must be
        in the catalog. Returns its model id, `<base>+<name>`. recipe: the folder's, when
        already read (tune.read_adapter_recipe)."""
        from aigc_studio import tune

        recipe = recipe or tune.read_adapter_recipe(Path(folder))
        base = self.model_spec("text", recipe["base_model"])  # UnknownModelError names the catalog
        if base.source == "adapter":
            raise knobs.ParamError("adapter", f"its base {base.id} is itself an adapter")
        return self._add_adapter(base, recipe["name"], Path(folder), recipe)

    def _restore_adapters(self) -> None:
        """List again the adapters that fine_tune saved under the output folder (a restart
        keeps them); one whose base is not in this catalog, or that cannot be read, is
        skipped with one log line."""
        from aigc_studio import tune

        for folder, recipe in tune.saved_adapters(self.settings.output_dir / "adapters"):
            try:
                self.load_adapter(folder, recipe)
            except (knobs.ParamError, UnknownModelError) as error:
                log.warning("skipped the adapter folder %s: %s", folder, error)

    def _add_adapter(self, base: ModelSpec, name: str, folder: Path, recipe: dict) -> str:
        from aigc_studio import tune

        spec = tune.adapter_spec(base, name, folder, recipe)
        self.models.unload(spec.id)  # a retrained adapter of the same name loads afresh
        self.catalog.add(spec)
        return spec.id

    def text_models_stream(self, prompt: str, models: list[str], params: TextParams | None = None,
                           stop: threading.Event | None = None, alternatives: int = 5) -> Iterator[CompareUpdate]:
        """Stream 2-4 text models (e.g. a base and its tuned adapters) answering one prompt with
        the same knobs and seed, side by side: each model runs alone (models cannot share a
        batch), one column after another, each column streaming as it goes. Columns are
        labelled by model id; diverge_at compares token ids, meaningful for models that
        share a tokenizer (a base and its adapters)."""
        if not isinstance(models, (list, tuple)) or not 2 <= len(models) <= 4:
            raise knobs.ParamError("models", f"give 2 to 4 text models, got {models!r}")
        specs = [self.model_spec("text", m) for m in models]  # every id is checked before anything runs
        chosen = knobs.resolve_seed(knobs.validate(params or self.params("text", specs[0].id)))
        done: list[TextUpdate] = [TextUpdate() for _ in specs]
        status = ""
        for index, spec in enumerate(specs):
            for update in self.text_compare_stream(prompt, [(spec.id, chosen)], spec.id, stop, alternatives):
                done[index] = update.columns[0]
                status = update.status
                finished = index == len(specs) - 1 and done[index].result is not None
                yield CompareUpdate(list(done), status=status,
                                    diverge_at=_first_divergence([c.tokens for c in done[:index + 1]], finished))
            if stop is not None and stop.is_set():
                return

    def text_by_model(self, prompt: str, models: list[str], params: TextParams | None = None) -> list[Result]:
        """One answer per model (e.g. a base and its tuned adapter) with the same knobs and seed."""
        update = CompareUpdate([])
        for update in self.text_models_stream(prompt, models, params):
            pass
        return [column.result for column in update.columns]

    # ----- image -----------------------------------------------------------------
    def images(self, prompt: str, variants: list[tuple[str, ImageParams]], model: str | None = None,
               on_step: image_engine.StepCallback | None = None,
               on_preview: image_engine.PreviewCallback | None = None,
               stop: threading.Event | None = None, init_image: Image.Image | None = None) -> list[Result]:
        """One image per labelled variant (batch_size images for a variant with
        batch_size > 1, at consecutive seeds). Variants that differ only by seed
        share one batched pipeline call. on_preview gets the first image's denoising
        trajectory (one preview per step). With init_image every variant is image to
        image (SDEdit) at its `strength`; the trajectory then starts with the noised
        picture (step -1), and each recipe records the picture's SHA-256 and size."""
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("image", model)
        for _, p in variants:  # sweeps and grid axes set the scheduler too
            check_scheduler(spec, p)
        start = self._start_picture(spec, init_image, [p for _, p in variants])
        chosen = _expand_batches([(label, knobs.resolve_seed(knobs.validate(p))) for label, p in variants])
        results: list[Result | None] = [None] * len(chosen)
        for indices in _indices_by_all_but_seed([p for _, p in chosen]):
            started = time.perf_counter()
            shared = chosen[indices[0]][1]
            seeds = [chosen[i][1].seed for i in indices]
            with self._use(spec) as pipe:
                pictures = image_engine.generate(pipe, [prompt] * len(indices), shared, seeds, on_step,
                                                 on_preview if indices[0] == 0 else None, stop, start)
            for i, picture in zip(indices, pictures):
                label, p = chosen[i]
                results[i] = Result(picture, self._recipe(spec, prompt, p, label, started))
                if start is None:  # text to image: strength is read only from a start picture
                    results[i].recipe.params.pop("strength", None)
                else:
                    results[i].recipe.params.update(init_image_sha256=image_inside().fingerprint(start),
                                                    init_image_size=list(start.size))
        return results

    def _start_picture(self, spec: ModelSpec, init_image: Any, chosen: list[ImageParams]) -> Image.Image | None:
        """The checked start picture of image to image (RGB), or None; refuses a model
        without image to image, and a strength sweep with no picture to start from."""
        if init_image is None:
            if len({p.strength for p in chosen}) > 1:
                raise knobs.ParamError("strength", "only image to image reads it: give a start picture to vary it")
            return None
        if spec.kind in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} is a {spec.kind.upper()}: it draws in one pass from a latent "
                                            f"and has no image to image; use a diffusion model (e.g. shapes-diffusion)")
        return image_inside().check_input(init_image)

    def image_to_image(self, prompt: str, image: Image.Image, model: str | None = None, on_step=None,
                       on_preview=None, stop: threading.Event | None = None, **values: Any) -> Result:
        """Image to image (SDEdit): `image` noised to the timestep `strength` (0-1) selects, then
        denoised with the prompt; 0 returns the image, 1 ignores it. values are ImageParams knobs."""
        chosen = self.params("image", model, **values)
        return self.images(prompt, [("", chosen)], model, on_step, on_preview, stop, init_image=image)[0]

    def noise_image(self, image: Image.Image, steps: int | None = None, scheduler: str | None = None,
                    model: str | None = None, seed: int = 0) -> list:
        """The forward (noising) process of a picture: `steps` (1-50, default 10) frames x_t at
        the timesteps the scheduler visits, cleanest first, each with its signal and noise
        weights (engines.image_inside.NoiseFrame), on the model's working space."""
        inside = image_inside()
        spec = self.model_spec("image", model)
        steps = 10 if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= inside.MAX_FRAMES:
            raise knobs.ParamError("steps", f"must be a whole number in [1, {inside.MAX_FRAMES}], got {steps!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= knobs.MAX_SEED:
            raise knobs.ParamError("seed", f"must be a whole number in [0, {knobs.MAX_SEED}], got {seed!r}")
        if spec.kind in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} is a {spec.kind.upper()}: it has no noising process")
        chosen = self.params("image", spec.id, scheduler=scheduler)
        picture = inside.check_input(image)
        with self._use(spec) as pipe:
            return inside.noise_frames(pipe, picture, steps, chosen.scheduler, seed, (chosen.width, chosen.height))

    def prompt_map(self, prompt: str, model: str | None = None, stop: threading.Event | None = None,
                   **values: Any) -> tuple[Result, list, str]:
        """What each prompt word drew: (the image with its recipe, one WordMap per word the model
        reads, the method): condition contrast on shapes-diffusion, cross-attention (DAAM) on
        Stable Diffusion. values are ImageParams knobs (steps, guidance, seed, ...)."""
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("image", model)
        if spec.kind in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} is a {spec.kind.upper()}: prompt maps need a diffusion model")
        chosen = knobs.resolve_seed(dataclasses.replace(self.params("image", spec.id, **values), batch_size=1))
        started = time.perf_counter()
        with self._use(spec) as pipe:
            picture, words, method = image_inside().prompt_maps(pipe, prompt, chosen, chosen.seed, stop)
        recipe = self._recipe(spec, prompt, chosen, f"prompt map ({method})", started)
        recipe.params.pop("strength", None)
        return Result(picture, recipe), words, method

    def image(self, prompt: str, model: str | None = None, on_step=None, on_preview=None, **values: Any) -> Result:
        """Generate one image; values are ImageParams knobs."""
        return self.images(prompt, [("", self.params("image", model, **values))], model, on_step, on_preview)[0]

    def image_grid(self, prompt: str, base: ImageParams, x_knob: str, x_values: list, y_knob: str | None = None,
                   y_values: list | None = None, model: str | None = None,
                   on_step: image_engine.StepCallback | None = None,
                   stop: threading.Event | None = None,
                   init_image: Image.Image | None = None) -> tuple[Image.Image, list[Result]]:
        """An X/Y grid: one or two knobs over their values, the seed fixed unless it
        is an axis. Returns the labelled grid image and each cell's Result
        (row-major). Cells that differ only by seed run as one batched call.
        Setting stop ends the grid within one denoising step (GenerationStopped).
        With init_image every cell is image to image from it (strength can be an axis)."""
        plan = grid.plan(base, x_knob, x_values, y_knob, y_values)
        if plan.models and init_image is not None:
            raise knobs.ParamError("x_knob", "a model axis draws from the prompt only: start from nothing, "
                                             "or vary knobs of one model")
        if plan.models:  # `model` is an axis: each cell runs on its own model
            cells = self.images_by_model(prompt, plan.cells, plan.models, on_step, stop)
        else:
            cells = self.images(prompt, plan.cells, model, on_step, stop=stop, init_image=init_image)
        return grid.render([cell.output for cell in cells], plan), cells

    # ----- model families side by side, latent walks (issue 17) -----------------------
    def images_by_model(self, prompt: str, variants: list[tuple[str, ImageParams]], models: list[str],
                        on_step: image_engine.StepCallback | None = None,
                        stop: threading.Event | None = None) -> list[Result]:
        """Like images(), one image per variant, each on its own model (one batched call
        per model). Every model id is checked before any model runs."""
        for model_id in models:
            self.model_spec("image", model_id)
        variants = [(label, dataclasses.replace(p, batch_size=1)) for label, p in variants]
        results: list[Result | None] = [None] * len(variants)
        for model_id in dict.fromkeys(models):
            indices = [i for i, m in enumerate(models) if m == model_id]
            for i, result in zip(indices, self.images(prompt, [variants[i] for i in indices], model_id, on_step, stop=stop)):
                results[i] = result
        return results

    def compare_models(self, prompt: str, models: list[str], params: ImageParams | None = None,
                       on_step: image_engine.StepCallback | None = None,
                       stop: threading.Event | None = None, **values: Any) -> list[Result]:
        """Side by side by model: one prompt and one seed on 2-4 image models (e.g.
        shapes-diffusion, shapes-vae, shapes-gan), columns labelled model=<id>. Without
        params each model uses its own recommended knobs under `values` (e.g. seed=3,
        width=64; None keeps the recommendation); with params every column gets them
        (each model reads only its own knobs). A seed of -1 is drawn once for all."""
        if not 2 <= len(models) <= 4:
            raise knobs.ParamError("models", f"give 2 to 4 models to compare, got {len(models)}")
        if params is not None:
            chosen = {m: params for m in models}
        else:  # each model's own recommendations: a turbo model keeps its 1 step beside a 30-step one
            chosen = {m: self.params("image", m, **values) for m in models}
        seed = knobs.resolve_seed(params or chosen[models[0]]).seed
        variants = [(f"model={m}", dataclasses.replace(chosen[m], seed=seed)) for m in models]
        return self.images_by_model(prompt, variants, list(models), on_step, stop)

    def latent_walk(self, prompt: str, seed_a: int, seed_b: int, frames: int = 8, model: str | None = None,
                    params: ImageParams | None = None, on_step: image_engine.StepCallback | None = None,
                    stop: threading.Event | None = None, image_format: str = "GIF") -> tuple[list[Result], bytes]:
        """Interpolate between two seeds: the starting noise (diffusion) or latent (VAE,
        GAN) slerped in `frames` (2-32) steps. Returns each frame's Result (the first and
        last equal the two seeds' own images) and an animated GIF or WebP of the walk
        whose comment (GIF) or XMP (WebP) holds its recipe (params: seed = seed_a plus
        walk_to_seed and walk_frames)."""
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("image", model)
        for name, value in (("seed_a", seed_a), ("seed_b", seed_b)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= knobs.MAX_SEED:
                raise knobs.ParamError(name, f"must be a whole number in [0, {knobs.MAX_SEED}], got {value!r}")
        if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= 32:
            raise knobs.ParamError("frames", f"must be a whole number in [2, 32], got {frames!r}")
        if image_format not in ("GIF", "WEBP"):
            raise knobs.ParamError("image_format", f"must be GIF or WEBP, got {image_format!r}")
        chosen = dataclasses.replace(knobs.validate(params or self.params("image", spec.id)), seed=seed_a, batch_size=1)
        check_scheduler(spec, chosen)
        started = time.perf_counter()
        with self._use(spec) as pipe:
            pictures = image_engine.walk(pipe, prompt, chosen, seed_a, seed_b, frames, on_step, stop)
        walk = {"walk_to_seed": seed_b, "walk_frames": frames}
        results = []
        for i, picture in enumerate(pictures):
            recipe = self._recipe(spec, prompt, chosen, f"walk frame {i + 1}/{frames}: seed {seed_a} -> {seed_b}", started)
            recipe.params.update(walk, walk_t=round(i / (frames - 1), 6))
            results.append(Result(picture, recipe))
        whole = self._recipe(spec, prompt, chosen, f"latent walk: seed {seed_a} -> {seed_b}, {frames} frames (slerp)", started)
        whole.params.update(walk)
        return results, grid.animate(pictures, whole.to_json(), image_format=image_format)

    def save_walk(self, animation: bytes, image_format: str = "GIF") -> Path:
        """Write a latent walk's animation (its recipe inside) into the output folder."""
        from aigc_studio.storage import write_atomically

        path = self.settings.output_dir / f"walk-{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6:06d}.{image_format.lower()}"
        return write_atomically(path, lambda part: part.write_bytes(animation))

    def family_views(self, model: str) -> list[tuple[str, Image.Image]]:
        """What a VAE or GAN learned, as (caption, image) pairs: the per-epoch terms its
        training logged and, for the VAE, a reference render beside its reconstruction."""
        from aigc_studio import families

        spec = self.model_spec("image", model)
        if spec.kind not in image_engine.FAMILY_KINDS:
            raise knobs.ParamError("model", f"{spec.id} has no training views; shapes-vae and shapes-gan do")
        log = families.training_log(Path(spec.location))
        if spec.kind == "gan":
            views = [("discriminator and generator hinge losses per epoch", families.curve_view(log, ("d_loss", "g_loss")))]
            if "shipped_epoch" in log:  # logged since the GAN keeps its best epoch
                views.append((f"adherence on held-out seeds per epoch (epoch {log['shipped_epoch']} ships)",
                              families.curve_view(log, ("held_out_adherence",))))
            return views
        with self._use(spec) as vae:
            reconstruction = families.reconstruction_view(vae)
        return [("reference render | its reconstruction", reconstruction),
                ("ELBO: reconstruction term per epoch", families.curve_view(log, ("reconstruction",))),
                ("ELBO: KL term per epoch", families.curve_view(log, ("kl",)))]

    # ----- audio -----------------------------------------------------------------
    def audio_knobs(self, model: str | None = None) -> tuple[str, ...]:
        """The audio knobs the model reads (Piper ignores the music knobs, MusicGen the speech ones)."""
        return self.knobs_used("audio", model)

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

    def audio(self, prompt: str, model: str | None = None, label: str = "", params: AudioParams | None = None,
              on_step: Callable[[int, int], None] | None = None, stop: threading.Event | None = None,
              **values: Any) -> Result:
        """Speak (or compose, for music models) prompt; values are AudioParams knobs.
        Setting stop ends speech after the current sentence (GenerationStopped)."""
        prompt = knobs.check_prompt(prompt)
        spec = self.model_spec("audio", model)
        chosen = knobs.resolve_seed(knobs.validate(params) if params else self.params("audio", spec.id, **values))
        started = time.perf_counter()
        with self._use(spec) as audio_model:
            output = audio_engine.generate(audio_model, prompt, chosen, on_step, stop)
        return Result(output, self._recipe(spec, prompt, chosen, label, started))

    def audio_variants(self, prompt: str, variants: list[tuple[str, AudioParams]], model: str | None = None,
                       match_loudness: bool = True, stop: threading.Event | None = None) -> list[Result]:
        """2-4 labelled variants of one text side by side. Played at one loudness
        (match_loudness, unless the variants differ by gain_db itself): louder never
        sounds better; each recipe records the gain its file got. A knob the model does
        not read is refused, naming the ones it does."""
        used = self.knobs_used("audio", model)
        swept = {name for _, p in variants for name, value in dataclasses.asdict(p).items()
                 if value != getattr(variants[0][1], name)}
        ignored = sorted(swept - set(used))
        if ignored:
            raise knobs.ParamError("knob_name", f"{self.model_spec('audio', model).id} does not use "
                                                f"{', '.join(ignored)}; sweep one of {', '.join(used)}")
        results = [self.audio(prompt, model, label=label, params=p, stop=stop) for label, p in variants]
        if match_loudness and swept != {"gain_db"}:
            results = audio_views.match_loudness(results)
        return results

    # ----- music (the chorale model: notes as well as audio) ----------------------
    def chorale(self, title: str, model: str | None = None, params: AudioParams | None = None,
                **values: Any) -> tuple[Any, AudioParams, ModelSpec]:
        """(piece, knobs with the seed drawn, spec): the notes a chorale model composes for
        these knobs, the very notes `audio` plays (composed once, then cached)."""
        from aigc_studio import music

        knobs.check_prompt(title)
        spec = self.model_spec("audio", model)
        if spec.kind != "chorales":
            raise knobs.ParamError("model", f"{spec.id} makes audio, not notes; choose a symbolic music model "
                                            f"({', '.join(s.id for s in self.catalog.specs.values() if s.kind == 'chorales')})")
        chosen = knobs.resolve_seed(knobs.validate(params) if params else self.params("audio", spec.id, **values))
        with self._use(spec) as loaded:
            return music.compose(loaded, chosen), chosen, spec

    def music_midi(self, title: str, model: str | None = None, params: AudioParams | None = None,
                   **values: Any) -> tuple[bytes, AudioParams]:
        """(Standard MIDI File bytes carrying the recipe, knobs used) of a chorale model's piece:
        the same seed and knobs give the same bytes."""
        from aigc_studio import music

        piece, chosen, spec = self.chorale(title, model, params, **values)
        title = knobs.check_prompt(title)
        return music.midi(piece, music.recipe_fields(spec.id, title, chosen), title), chosen

    def explain_note(self, title: str, position: int, model: str | None = None, params: AudioParams | None = None,
                     top_n: int = 10, **values: Any):
        """Why grid token `position` of the piece these knobs compose is what it is: the
        text engine's next-token explanation over the chorale model, stage by stage."""
        from aigc_studio import music

        piece, chosen, spec = self.chorale(title, model, params, **values)
        with self._use(spec) as loaded:
            return music.explain(loaded, piece, position, chosen, top_n)

    # ----- X/Y grids of text and audio (issue 25) ----------------------------------
    def grid_plan(self, modality: str, base, x_knob: str, x_values: list, y_knob: str | None = None,
                  y_values: list | None = None, model: str | None = None) -> grid.GridPlan:
        """A text or audio grid's cells (grid.plan): 1-6 values per axis, at most 16
        cells, the seed fixed unless it is an axis. An axis the model does not read is
        refused, naming the knobs it does."""
        readable = [name for name in self.knobs_used(modality, model) if name in knobs.sweepable(type(base))]
        most = grid.MAX_TEXT_CELLS if modality == "text" else grid.MAX_AUDIO_CELLS
        count = len(x_values or []) * (len(y_values or []) if y_knob else 1)
        grid.check_axes(self.model_spec(modality, model).id, readable, x_knob, y_knob, most, count)
        return grid.plan(base, x_knob, x_values, y_knob, y_values)

    def text_grid_stream(self, prompt: str, base: TextParams, x_knob: str, x_values: list,
                         y_knob: str | None = None, y_values: list | None = None, model: str | None = None,
                         stop: threading.Event | None = None) -> tuple[grid.GridPlan, Iterator[CompareUpdate]]:
        """(plan, stream) of a text X/Y grid: every cell is a column of one batched
        generation (text_compare_stream), row-major; a bad axis is refused before it starts."""
        plan = self.grid_plan("text", base, x_knob, x_values, y_knob, y_values, model)
        return plan, self.text_compare_stream(prompt, plan.cells, model, stop, most=grid.MAX_TEXT_CELLS)

    def text_grid(self, prompt: str, base: TextParams, x_knob: str, x_values: list, y_knob: str | None = None,
                  y_values: list | None = None, model: str | None = None,
                  stop: threading.Event | None = None) -> tuple[grid.GridPlan, list[dict]]:
        """A text X/Y grid at once: (plan, cells as grid.text_cells: answer, tokens/s,
        mean log-probability, first divergence from the others, recipe)."""
        plan, stream = self.text_grid_stream(prompt, base, x_knob, x_values, y_knob, y_values, model, stop)
        update = None
        for update in stream:
            pass
        return plan, grid.text_cells(plan, update.columns)

    def save_text_grid(self, plan: grid.GridPlan, cells: list[dict]) -> tuple[Path, Path]:
        """Write a text grid's cells with their recipes as JSON and CSV (same name) into
        the output folder; storage.NotKept when it cannot be written."""
        from aigc_studio.storage import write_atomically

        document, table = grid.text_export(plan, cells)
        path = write_atomically(recipes._new_path(self.settings.output_dir, "text-grid", ".json"),
                                lambda part: part.write_text(document))
        return path, write_atomically(path.with_suffix(".csv"), lambda part: part.write_text(table))

    def audio_grid(self, prompt: str, base: AudioParams, x_knob: str, x_values: list, y_knob: str | None = None,
                   y_values: list | None = None, model: str | None = None, match_loudness: bool = True,
                   stop: threading.Event | None = None) -> tuple[grid.GridPlan, list[Result]]:
        """An audio X/Y grid: (plan, each cell's Result, row-major), one generation per
        cell, played at one loudness like side by side (unless gain_db is an axis)."""
        plan = self.grid_plan("audio", base, x_knob, x_values, y_knob, y_values, model)
        results = [self.audio(prompt, model, label=label, params=p, stop=stop) for label, p in plan.cells]
        if match_loudness and "gain_db" not in (x_knob, y_knob) and len(results) > 1:
            results = audio_views.match_loudness(results)
        return plan, results

    def save_audio_grid(self, plan: grid.GridPlan, cells: list[Result]) -> tuple[list[Path], Path]:
        """Write every cell's file (with its recipe) and a zip of them all (with grid.json)."""
        from aigc_studio.storage import write_atomically

        paths = [self.save(cell) for cell in cells]
        archive = grid.audio_zip([(c.label, str(p)) for c, p in zip(cells, paths)], plan,
                                 [json.loads(c.recipe.to_json()) for c in cells])
        return paths, write_atomically(recipes._new_path(self.settings.output_dir, "audio-grid", ".zip"),
                                       lambda part: part.write_bytes(archive))

    # ----- files -----------------------------------------------------------------
    def save(self, result: Result, audio_format: str = "wav") -> Path:
        """Write a result with its recipe into the output folder (generated name); a chorale
        model's audio gets its MIDI file beside it (same name, .mid)."""
        path = recipes.save(result, self.settings.output_dir, audio_format)
        self.history.attach(result.recipe, path)  # the History entry of this result shows its file
        spec = self.catalog.specs.get(result.recipe.model_id)
        if result.recipe.modality == "audio" and spec is not None and spec.kind == "chorales":
            from aigc_studio.storage import write_atomically

            midi, _ = self.music_midi(result.recipe.prompt, spec.id, **result.recipe.params)
            write_atomically(path.with_suffix(".mid"), lambda part: part.write_bytes(midi))
        return path

    def save_grid(self, picture: Image.Image, cells: list[Result]) -> Path:
        """Write an X/Y grid image with every cell's recipe into the output folder."""
        return recipes.save_grid(picture, [c.recipe for c in cells], self.settings.output_dir)


def _first_divergence(columns: list[list], finished: bool) -> int | None:
    """Index of the first token where the columns' token ids differ. While they stream,
    only the tokens every column already has are compared; once finished, a column
    that ended earlier than another diverges where it ended."""
    if len(columns) < 2:
        return None
    common = min(len(c) for c in columns)
    for index in range(common):
        if len({c[index].id for c in columns}) > 1:
            return index
    if finished and any(len(c) != common for c in columns):
        return common
    return None


def check_scheduler(spec: ModelSpec, params: ImageParams) -> None:
    """Refuse a scheduler the model cannot sample with, naming the ones it can."""
    allowed = spec.schedulers or tuple(name for name in knobs.spec(ImageParams, "scheduler")["choices"] if name != "lcm")
    if params.scheduler not in allowed:
        hint = " (lcm needs a consistency-distilled model, e.g. lcm-dreamshaper-v7)" if params.scheduler == "lcm" else ""
        raise knobs.ParamError("scheduler", f"{spec.id} samples with {', '.join(allowed)}; "
                                            f"got {params.scheduler}{hint}")


def _expand_batches(chosen: list[tuple[str, ImageParams]]) -> list[tuple[str, ImageParams]]:
    """A variant with batch_size n becomes n variants at seeds seed .. seed+n-1."""
    expanded = []
    for label, p in chosen:
        if p.batch_size == 1:
            expanded.append((label, p))
            continue
        for k in range(p.batch_size):
            seed = (p.seed + k) % (knobs.MAX_SEED + 1)
            expanded.append((f"{label}, seed={seed}" if label else f"seed={seed}", dataclasses.replace(p, seed=seed)))
    return expanded


def _indices_by_all_but_seed(chosen: list[ImageParams]) -> list[list[int]]:
    """Indices of params grouped by every knob except the seed."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(chosen):
        key = tuple(v for k, v in dataclasses.asdict(p).items() if k != "seed")
        groups.setdefault(key, []).append(i)
    return list(groups.values())
