"""Studio: the one API that the UI, the Gradio API, the CLI and tests all call.

    from aigc_studio import Studio
    studio = Studio()                      # settings from the environment
    print(studio.text("Write a haiku about rain").output)
    image = studio.image("a red circle", steps=20, seed=1).output

The Studio is a facade: each method hands its work to one service (aigc_studio/services/:
text, image, audio, tune), and the services share one Runtime (settings, catalog, loaded
models, device, history) whose `run` is the one place a model runs. Where it runs is the
runtime's executor: here by default, through ZeroGPU's entry points on a ZeroGPU Space
(hosting.serve).
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from PIL import Image

from aigc_studio import grid
from aigc_studio import params as knobs
from aigc_studio import recipe as recipes
from aigc_studio.audio_views import file_view
from aigc_studio.catalog import Catalog, ModelSpec, UnknownModelError
from aigc_studio.config import Settings
from aigc_studio.engines import GenerationStopped
from aigc_studio.engines import image as image_engine
from aigc_studio.models import LoadedModel, free_memory, out_of_memory_errors
from aigc_studio.params import AudioParams, ImageParams, TextParams
from aigc_studio.recipe import RECIPE_KEY, Recipe, Result, read_recipe
from aigc_studio.services import image as image_service
from aigc_studio.services.audio import AudioService
from aigc_studio.services.image import ImageService
from aigc_studio.services.runtime import (
    PARAMS_TYPES, ModelLoadError, ModelMemoryError, Runtime, check_scheduler, text_engine,
)
from aigc_studio.services.text import CompareUpdate, TextService, TextUpdate
from aigc_studio.services.tune import TuneService
from aigc_studio.shapes import UnknownPromptError
from aigc_studio.storage import NotKept

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The facade that front ends (ui/, the CLI) import, with params: the Studio and what its
# calls return or raise. They reach the rest of the backend through these names only.
__all__ = ["Studio", "TextUpdate", "CompareUpdate", "Result", "Recipe", "ModelLoadError", "ModelMemoryError",
           "GenerationStopped", "NotKept", "UnknownModelError", "UnknownPromptError", "out_of_memory_errors",
           "free_memory", "read_recipe", "RECIPE_KEY", "file_view", "PARAMS_TYPES", "check_scheduler",
           "text_engine"]


class Studio:
    """Text, images and audio with their recipes; each method delegates to one service."""

    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None):
        self.runtime = Runtime(settings, catalog)
        self.text_service = TextService(self.runtime)
        self.image_service = ImageService(self.runtime)
        self.audio_service = AudioService(self.runtime)
        self.tune_service = TuneService(self.runtime)
        self.tune_service.restore_adapters()

    # ----- what the services share -------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def preset(self) -> str:
        """hub or offline ('auto' resolved at start)."""
        return self.runtime.preset

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    @property
    def models(self):
        """The ModelManager: loaded models under the memory budget."""
        return self.runtime.models

    @property
    def threads(self) -> int:
        return self.runtime.threads

    @property
    def history(self):
        """Every browser's results, newest first (the History tab, /history)."""
        return self.runtime.history

    # ----- settings and models -------------------------------------------------
    @property
    def device(self) -> str:
        """cuda, mps or cpu (AIGC_DEVICE, or the best one present); asking imports torch."""
        return self.runtime.device

    @property
    def dtype(self) -> "torch.dtype":
        """fp32 on CPU, bf16/fp16 on accelerators (AIGC_DTYPE overrides)."""
        return self.runtime.dtype

    def describe(self) -> str:
        """One line for the page header: preset, device, dtype, text runtime (and ZeroGPU there)."""
        return self.runtime.describe()

    def model_spec(self, modality: str, model: str | None = None) -> ModelSpec:
        """The catalog's spec for model (None: the preset's default); ModelUnavailableError at once
        for a hub model the studio cannot load now (no Hub and not in the local Hub cache)."""
        return self.runtime.model_spec(modality, model)

    def params(self, modality: str, model: str | None = None, **values: Any):
        """Validated knobs for a model: the catalog's recommended defaults under
        the given values (None means 'use the default')."""
        return self.runtime.params(modality, model, **values)

    def sampling_style(self, name: str, model: str | None = None) -> dict[str, Any]:
        """A sampling style's knobs (Precise, Balanced, Creative) around the model's
        recommended ones (Balanced = the recommendation)."""
        return knobs.sampling_style(name, self.params("text", model))

    def is_loaded(self, modality: str, model: str | None = None) -> bool:
        return self.runtime.is_loaded(modality, model)

    def _load(self, spec: ModelSpec, report: Callable[[str], None] = log.info) -> LoadedModel:
        return self.runtime.load(spec, report)

    def _use(self, spec: ModelSpec) -> AbstractContextManager[Any]:
        """The loaded model, held for one generation (Runtime.use: the locks, out of memory)."""
        return self.runtime.use(spec)

    def load(self, modality: str, model: str | None = None) -> None:
        """Load a model now instead of on first use (e.g. to warm a demo)."""
        self.runtime.load(self.model_spec(modality, model))

    def unload(self, modality: str, model: str | None = None) -> bool:
        return self.models.unload(self.model_spec(modality, model).id)

    # ----- text ------------------------------------------------------------------
    def text_stream(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                    stop: threading.Event | None = None, label: str = "") -> Iterator[TextUpdate]:
        """Stream an answer: TextUpdates with the text so far; the last carries the Result."""
        return self.text_service.stream(prompt, params, model, stop, label)

    def text(self, prompt: str, model: str | None = None, **values: Any) -> Result:
        """Generate an answer at once; values are TextParams knobs."""
        return self.text_service.text(prompt, model, values)

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
        return self.text_service.compare_stream(prompt, variants, model, stop, alternatives, most)

    def explain_next_token(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                           answer: str | list[int] = "", position: int = 0, top_n: int = 10):
        """The candidates for one token and their probability at each sampling stage.

        position 0 explains the first token after the prompt; k explains the token
        after the first k tokens of `answer` (text, or the token ids a generation
        returned); -1 explains the token after the whole answer. The model runs once
        per context; moving a knob afterwards only re-applies the processors.
        """
        return self.text_service.explain_next_token(prompt, params, model, answer, position, top_n)

    def perplexity(self, text: str, model: str | None = None) -> tuple[float, int]:
        """(perplexity, tokens scored) of text under the text model: lower = more natural to it."""
        return self.text_service.perplexity(text, model)

    # ----- inside the text model (the work is in aigc_studio/inside.py) -------------
    def attention(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                  answer: str | list[int] = "", position: int | None = None, layer: int | None = None,
                  head: int | None = None) -> dict:
        """What one token of prompt + answer attends to in every layer and head, the causal
        matrix of one layer and head (head None: their average), and the logit lens (each
        layer's top 5 next tokens). position indexes the context tokens (None or -1: the
        last). Keys: see inside.attention. The model runs once per context (cached)."""
        return self.text_service.attention(prompt, params, model, answer, position, layer, head)

    def attention_overview(self, prompt: str, params: TextParams | None = None, model: str | None = None,
                           answer: str | list[int] = "", layer: int | None = None, head: int | None = None) -> Image.Image:
        """Every layer x head causal matrix of prompt + answer as small heat maps (rows:
        layers, columns: heads), the chosen layer and head framed; from the same cached pass."""
        return self.text_service.attention_overview(prompt, params, model, answer, layer, head)

    # ----- fine-tuning (the work is in aigc_studio/tune.py) -----------------
    def fine_tune(self, text: str, model: str | None = None, params: knobs.TuneParams | None = None,
                  name: str = "tuned", on_progress: Callable | None = None, stop: threading.Event | None = None,
                  files: list | None = None):
        """Fine-tune a text model on text (and .txt/.md files): LoRA, or every weight with
        params.method "full" (refused, naming `method`, when the model is too big for the memory
        budget: tune.check_full_fits). The result joins the catalog as `<base>+<name>` (source
        "adapter", runs on torch). Returns a tune.TuneResult with the held-out perplexity before
        and after; on_progress gets tune.TuneProgress reports; setting stop ends training and
        keeps the weights of the last finished step."""
        return self.tune_service.fine_tune(text, model, params, name, on_progress, stop, files)

    def load_adapter(self, folder: str | Path, recipe: dict | None = None) -> str:
        """Restore an adapter folder that fine_tune wrote (safetensors only); its base must be
        in the catalog. Returns its model id, `<base>+<name>`. recipe: the folder's, when
        already read (tune.read_adapter_recipe)."""
        return self.tune_service.load_adapter(folder, recipe)

    def text_models_stream(self, prompt: str, models: list[str], params: TextParams | None = None,
                           stop: threading.Event | None = None, alternatives: int = 5) -> Iterator[CompareUpdate]:
        """Stream 2-4 text models (e.g. a base and its tuned adapters) answering one prompt with
        the same knobs and seed, side by side: each model runs alone (models cannot share a
        batch), one column after another, each column streaming as it goes. Columns are
        labelled by model id; diverge_at compares token ids, meaningful for models that
        share a tokenizer (a base and its adapters)."""
        return self.text_service.models_stream(prompt, models, params, stop, alternatives)

    def text_by_model(self, prompt: str, models: list[str], params: TextParams | None = None) -> list[Result]:
        """One answer per model (e.g. a base and its tuned adapter) with the same knobs and seed."""
        return self.text_service.by_model(prompt, models, params)

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
        return self.image_service.images(prompt, variants, model, on_step, on_preview, stop, init_image)

    def _start_picture(self, spec: ModelSpec, init_image: Any, chosen: list[ImageParams]) -> Image.Image | None:
        """The checked start picture of image to image (RGB), or None; refuses a model
        without image to image, and a strength sweep with no picture to start from."""
        return image_service.start_picture(spec, init_image, chosen)

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
        return self.image_service.noise_image(image, steps, scheduler, model, seed)

    def prompt_map(self, prompt: str, model: str | None = None, stop: threading.Event | None = None,
                   **values: Any) -> tuple[Result, list, str]:
        """What each prompt word drew: (the image with its recipe, one WordMap per word the model
        reads, the method): condition contrast on shapes-diffusion, cross-attention (DAAM) on
        Stable Diffusion. values are ImageParams knobs (steps, guidance, seed, ...)."""
        return self.image_service.prompt_map(prompt, model, stop, values)

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
        return self.image_service.image_grid(prompt, base, x_knob, x_values, y_knob, y_values, model, on_step, stop,
                                              init_image)

    # ----- model families side by side, latent walks -----------------------
    def images_by_model(self, prompt: str, variants: list[tuple[str, ImageParams]], models: list[str],
                        on_step: image_engine.StepCallback | None = None,
                        stop: threading.Event | None = None) -> list[Result]:
        """Like images(), one image per variant, each on its own model (one batched call
        per model). Every model id is checked before any model runs."""
        return self.image_service.images_by_model(prompt, variants, models, on_step, stop)

    def compare_models(self, prompt: str, models: list[str], params: ImageParams | None = None,
                       on_step: image_engine.StepCallback | None = None,
                       stop: threading.Event | None = None, **values: Any) -> list[Result]:
        """Side by side by model: one prompt and one seed on 2-4 image models (e.g.
        shapes-diffusion, shapes-vae, shapes-gan), columns labelled model=<id>. Without
        params each model uses its own recommended knobs under `values` (e.g. seed=3,
        width=64; None keeps the recommendation); with params every column gets them
        (each model reads only its own knobs). A seed of -1 is drawn once for all."""
        return self.image_service.compare_models(prompt, models, params, on_step, stop, values)

    def latent_walk(self, prompt: str, seed_a: int, seed_b: int, frames: int = 8, model: str | None = None,
                    params: ImageParams | None = None, on_step: image_engine.StepCallback | None = None,
                    stop: threading.Event | None = None, image_format: str = "GIF") -> tuple[list[Result], bytes]:
        """Interpolate between two seeds: the starting noise (diffusion) or latent (VAE,
        GAN) slerped in `frames` (2-32) steps. Returns each frame's Result (the first and
        last equal the two seeds' own images) and an animated GIF or WebP of the walk
        whose comment (GIF) or XMP (WebP) holds its recipe (params: seed = seed_a plus
        walk_to_seed and walk_frames)."""
        return self.image_service.latent_walk(prompt, seed_a, seed_b, frames, model, params, on_step, stop,
                                               image_format)

    def save_walk(self, animation: bytes, image_format: str = "GIF") -> Path:
        """Write a latent walk's animation (its recipe inside) into the output folder."""
        return self.image_service.save_walk(animation, image_format)

    def family_views(self, model: str) -> list[tuple[str, Image.Image]]:
        """What a VAE or GAN learned, as (caption, image) pairs: the per-epoch terms its
        training logged and, for the VAE, a reference render beside its reconstruction."""
        return self.image_service.family_views(model)

    # ----- audio -----------------------------------------------------------------
    def audio_knobs(self, model: str | None = None) -> tuple[str, ...]:
        """The audio knobs the model reads (Piper ignores the music knobs, MusicGen the speech ones)."""
        return self.knobs_used("audio", model)

    def knobs_used(self, modality: str, model: str | None = None) -> tuple[str, ...]:
        """The knobs a model reads, in their dataclass order: the UI shows only these and
        side by side sweeps only these."""
        return self.runtime.knobs_used(modality, model)

    def audio(self, prompt: str, model: str | None = None, label: str = "", params: AudioParams | None = None,
              on_step: Callable[[int, int], None] | None = None, stop: threading.Event | None = None,
              **values: Any) -> Result:
        """Speak (or compose, for music models) prompt; values are AudioParams knobs.
        Setting stop ends speech after the current sentence (GenerationStopped)."""
        return self.audio_service.audio(prompt, model, label, params, on_step, stop, values)

    def audio_variants(self, prompt: str, variants: list[tuple[str, AudioParams]], model: str | None = None,
                       match_loudness: bool = True, stop: threading.Event | None = None) -> list[Result]:
        """2-4 labelled variants of one text side by side. Played at one loudness
        (match_loudness, unless the variants differ by gain_db itself): louder never
        sounds better; each recipe records the gain its file got. A knob the model does
        not read is refused, naming the ones it does."""
        return self.audio_service.variants(prompt, variants, model, match_loudness, stop)

    # ----- music (the chorale model: notes as well as audio) ----------------------
    def chorale(self, title: str, model: str | None = None, params: AudioParams | None = None,
                **values: Any) -> tuple[Any, AudioParams, ModelSpec]:
        """(piece, knobs with the seed drawn, spec): the notes a chorale model composes for
        these knobs, the very notes `audio` plays (composed once, then cached)."""
        return self.audio_service.chorale(title, model, params, values)

    def music_midi(self, title: str, model: str | None = None, params: AudioParams | None = None,
                   **values: Any) -> tuple[bytes, AudioParams]:
        """(Standard MIDI File bytes carrying the recipe, knobs used) of a chorale model's piece:
        the same seed and knobs give the same bytes."""
        return self.audio_service.music_midi(title, model, params, values)

    def explain_note(self, title: str, position: int, model: str | None = None, params: AudioParams | None = None,
                     top_n: int = 10, **values: Any):
        """Why grid token `position` of the piece these knobs compose is what it is: the
        text engine's next-token explanation over the chorale model, stage by stage."""
        return self.audio_service.explain_note(title, position, model, params, top_n, values)

    # ----- X/Y grids of text and audio -----------------------
    def grid_plan(self, modality: str, base, x_knob: str, x_values: list, y_knob: str | None = None,
                  y_values: list | None = None, model: str | None = None) -> grid.GridPlan:
        """A text or audio grid's cells (grid.plan): 1-6 values per axis, at most 16
        cells, the seed fixed unless it is an axis. An axis the model does not read is
        refused, naming the knobs it does."""
        return self.runtime.grid_plan(modality, base, x_knob, x_values, y_knob, y_values, model)

    def text_grid_stream(self, prompt: str, base: TextParams, x_knob: str, x_values: list,
                         y_knob: str | None = None, y_values: list | None = None, model: str | None = None,
                         stop: threading.Event | None = None) -> tuple[grid.GridPlan, Iterator[CompareUpdate]]:
        """(plan, stream) of a text X/Y grid: every cell is a column of one batched
        generation (text_compare_stream), row-major; a bad axis is refused before it starts."""
        return self.text_service.grid_stream(prompt, base, x_knob, x_values, y_knob, y_values, model, stop)

    def text_grid(self, prompt: str, base: TextParams, x_knob: str, x_values: list, y_knob: str | None = None,
                  y_values: list | None = None, model: str | None = None,
                  stop: threading.Event | None = None) -> tuple[grid.GridPlan, list[dict]]:
        """A text X/Y grid at once: (plan, cells as grid.text_cells: answer, tokens/s,
        mean log-probability, first divergence from the others, recipe)."""
        return self.text_service.grid(prompt, base, x_knob, x_values, y_knob, y_values, model, stop)

    def save_text_grid(self, plan: grid.GridPlan, cells: list[dict]) -> tuple[Path, Path]:
        """Write a text grid's cells with their recipes as JSON and CSV (same name) into
        the output folder; storage.NotKept when it cannot be written."""
        return self.text_service.save_grid(plan, cells)

    def audio_grid(self, prompt: str, base: AudioParams, x_knob: str, x_values: list, y_knob: str | None = None,
                   y_values: list | None = None, model: str | None = None, match_loudness: bool = True,
                   stop: threading.Event | None = None) -> tuple[grid.GridPlan, list[Result]]:
        """An audio X/Y grid: (plan, each cell's Result, row-major), one generation per
        cell, played at one loudness like side by side (unless gain_db is an axis)."""
        return self.audio_service.grid(prompt, base, x_knob, x_values, y_knob, y_values, model, match_loudness,
                                       stop)

    def save_audio_grid(self, plan: grid.GridPlan, cells: list[Result]) -> tuple[list[Path], Path]:
        """Write every cell's file (with its recipe) and a zip of them all (with grid.json)."""
        return self.audio_service.save_grid(plan, cells, self.save)

    # ----- files -----------------------------------------------------------------
    def save(self, result: Result, audio_format: str = "wav") -> Path:
        """Write a result with its recipe into the output folder (generated name); a chorale
        model's audio gets its MIDI file beside it (same name, .mid)."""
        path = recipes.save(result, self.settings.output_dir, audio_format)
        self.history.attach(result.recipe, path)  # the History entry of this result shows its file
        self.audio_service.save_midi_beside(result, path)
        return path

    def save_grid(self, picture: Image.Image, cells: list[Result]) -> Path:
        """Write an X/Y grid image with every cell's recipe into the output folder."""
        return recipes.save_grid(picture, [c.recipe for c in cells], self.settings.output_dir)
