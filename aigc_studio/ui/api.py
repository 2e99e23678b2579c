"""The public API: one typed function per endpoint, shared by the HTTP API
(gradio_client), the MCP tools and, through the Studio, the ZeroGPU entry points.

Each function's keywords are the knob dataclasses' fields (aigc_studio/params.py),
in the order the endpoints have always had (the knobs shipped first, then `model`,
then the knobs added later), so positional callers keep working. A knob left out
(None) takes the model's recommended value. Functions call only the Studio's public
methods; `register(studio)` wires them with `gr.api` inside the Blocks. The tabs keep
their own (private) events for the page.

Results: text as str; images and audio as files carrying their recipe (PNG text
chunk, WAV/FLAC tag), which gradio_client downloads and MCP clients get as image
content plus a URL of the original file.
"""

import asyncio
import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Literal

import gradio as gr

from aigc_studio import audio_views
from aigc_studio import params as knobs
from aigc_studio.engines.image import GenerationStopped
from aigc_studio.params import ImageParams, TextParams
from aigc_studio.studio import Studio
from aigc_studio.ui.audio_tab import MAX_PLAYERS, check_format
from aigc_studio.recipe import RECIPE_KEY
from aigc_studio.ui.image_tab import MODELS, axis_values, compare_choices, keep_walk, preview_steps, whole
from aigc_studio.ui.text_tab import (
    LEGACY_STYLES, MAX_COLUMNS, STYLES, column_numbers, compare_stream, token_dicts, whole_number,
)
from aigc_studio.ui.text_tab import MODELS as TEXT_MODELS
from aigc_studio.actions.variants import SEEDS, SWEEP, make_variants
from aigc_studio.ui.errors import user_error, user_errors
from aigc_studio.ui.streaming import paced, run_in_worker
from aigc_studio.ui.endpoint import REQUIRED, Arg, endpoint, knob_args, split_knobs
from aigc_studio.ui.files import cached_png, keep_or_cache, with_recipe

File = dict  # a gradio FileData dict: gradio_client downloads it, MCP turns an image into image content
VariantMode = Literal["Different seeds", "Sweep one knob"]

log = logging.getLogger(__name__)
_studio: Studio | None = None


def studio() -> Studio:
    if _studio is None:
        raise RuntimeError("aigc_studio.ui.api.register(studio) was not called")
    return _studio


# ----- checks for the inputs that are not knobs (knobs are checked by params.validate) --------

def _text(name: str, value: Any, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise knobs.ParamError(name, f"must be text, got {type(value).__name__}")
    return value


def _model(value: Any) -> str | None:
    """A catalog id or None (the preset's model); anything else is refused naming `model`."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise knobs.ParamError("model", f"must be a model id (text), got {type(value).__name__}")
    return value


def _mode(value: Any, extra: tuple[str, ...] = ()) -> str:
    allowed = (SEEDS, SWEEP, *extra)
    if value is None:
        return SEEDS
    if value not in allowed:
        raise knobs.ParamError("mode", f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _count(value: Any) -> int:
    count = whole_number("count", value, 3)
    if not 2 <= count <= 4:
        raise knobs.ParamError("count", f"must be a number in [2, 4], got {value!r}")
    return count


def _knob_name(name: str, value: Any, params_type: type, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in knobs.sweepable(params_type):
        raise knobs.ParamError(name, f"must be one of {', '.join(knobs.sweepable(params_type))}, got {value!r}")
    return value


def _file(path: str | Path) -> File:
    return gr.FileData(path=str(path), orig_name=Path(path).name).model_dump()


def uploaded_bytes(path: str, field: str) -> bytes:
    """A file under Gradio's upload folder (where uploads land); any other path is refused."""
    folder = Path(gr.utils.get_upload_folder()).resolve()
    target = Path(path).resolve()
    if folder not in target.parents:
        raise knobs.ParamError(field, "must be a file uploaded to this server (gradio_client.handle_file)")
    if not target.is_file():
        raise knobs.ParamError(field, "the uploaded file is gone; upload it again")
    return target.read_bytes()


def _picture_file(save, result) -> File:
    """A studio PNG in the output folder; when the disk is full, the picture with its
    recipe in Gradio's cache instead (the tabs do the same), with a warning."""
    return keep_or_cache(lambda: _file(save(result)), lambda: _file(cached_png(with_recipe(result))))


# ----- text -----------------------------------------------------------------------------------

def _generate_text(prompt: str, model: str | None, **values: Any) -> Iterator[str]:
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = s.params("text", model, **values)
        stop = threading.Event()
        try:
            for update in paced(s.text_stream(prompt, chosen, model, stop=stop)):
                yield update.text or update.status
        finally:
            stop.set()  # a cancelled request (Stop, a vanished client) ends the generation


TEXT_FIRST, TEXT_LATER = split_knobs(TextParams, 7)  # the knobs generate_text shipped with come before `model`
PROMPT = Arg("prompt", str, "what to answer (chat mode) or continue (completion mode), at most 4000 characters.",
             REQUIRED)
TEXT_MODEL = Arg("model", str | None, "a text model id of the catalog (None: the preset's default).")

generate_text = endpoint(
    "generate_text", "Generate text for a prompt with the studio's text model, streamed token by token. A knob "
                     "left out (None) takes the model's recommended value.",
    [PROMPT, *knob_args(TextParams, TEXT_FIRST), TEXT_MODEL, *knob_args(TextParams, TEXT_LATER)],
    "The answer so far (each update); the last one is the whole answer.", _generate_text, Iterator[str])


def compare_text(prompt: str, mode: Literal["Different seeds", "Sweep one knob", "Styles side by side", "Different models",
                                             "Presets side by side"] | None = None,
                 count: int | None = None, knob_name: str | None = None, values: str | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 max_new_tokens: int | None = None, repetition_penalty: float | None = None,
                 seed: int | None = None, greedy: bool | None = None, model: str | None = None,
                 min_p: float | None = None, typical_p: float | None = None,
                 no_repeat_ngram_size: int | None = None, stop_sequences: str | None = None,
                 system_prompt: str | None = None, prompt_mode: Literal["chat", "completion"] | None = None,
                 models: list[str] | str | None = None) -> Iterator[tuple[str, str, str, str, dict | None]]:
    """Generate 2-4 variants of one prompt side by side, streamed together (one batched step per token),
    or the same prompt, knobs and seed on 2-4 text models (one model after another).

    Args:
        prompt: the prompt every column answers.
        mode: "Different seeds" (count consecutive seeds), "Sweep one knob" (knob_name over values)
            "Styles side by side" (the sampling styles Precise, Balanced, Creative with one seed;
            "Presets side by side", its earlier name, still works) or "Different models" (the
            models in `models`, each column labelled by its model id).
        count: 2-4 columns for "Different seeds" (default 3).
        knob_name: the text knob to sweep, e.g. "temperature".
        values: 2-4 comma-separated values for the swept knob, e.g. "0.3, 0.8, 1.4".
        temperature: 0-2 (see generate_text); the other knobs are as in generate_text.
        top_k: 0-1000.
        top_p: 0.01-1.
        max_new_tokens: 1-1024 tokens per column.
        repetition_penalty: 1-2.
        seed: -1 to 2147483647; columns swept or preset share it.
        greedy: always take the likeliest token.
        model: a text model id of the catalog.
        min_p: 0-1.
        typical_p: 0.01-1.
        no_repeat_ngram_size: 0-10.
        stop_sequences: up to 4 comma-separated texts.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
        models: for "Different models", 2-4 text model ids (a list or comma-separated), e.g.
            ["smollm2-135m-instruct", "smollm2-135m-instruct+mine"]; None: `model` (or the
            preset's default) and its tuned versions "<model>+<name>" (fine_tune_text).
    Returns:
        Four column texts (unused columns are ""), then, on the last update only, the numbers:
        {"first_difference": token index or null, "columns": [{"label", "tokens", "tokens_per_s", "mean_logprob"}]}.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        mode = _mode(mode, (STYLES, TEXT_MODELS, LEGACY_STYLES))
        base = s.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p,
                        max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, seed=seed,
                        greedy=greedy, min_p=min_p, typical_p=typical_p, no_repeat_ngram_size=no_repeat_ngram_size,
                        stop_sequences=stop_sequences, system_prompt=system_prompt, prompt_mode=prompt_mode)
        count = _count(count) if mode == SEEDS else 3
        knob_name = _knob_name("knob_name", knob_name, type(base), "temperature") if mode == SWEEP else "temperature"
        stop = threading.Event()
        labels, stream = compare_stream(s, prompt, base, model, mode, count, knob_name,
                                        _text("values", values, "0.3, 0.8, 1.4"), models, stop)
        texts = [""] * MAX_COLUMNS
        try:
            for update in paced(stream):
                for i, column in enumerate(update.columns):
                    texts[i] = column.text or update.status
                numbers = None
                if all(column.result is not None for column in update.columns):
                    numbers = column_numbers({"labels": labels,
                                              "diverge_at": update.diverge_at,
                                              "columns": [token_dicts(c.tokens) for c in update.columns],
                                              "rates": [c.tokens_per_s for c in update.columns]})
                yield (*texts, numbers)
        finally:
            stop.set()


def explain_next_token(prompt: str, answer: str | None = None, position: int | None = None,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       min_p: float | None = None, typical_p: float | None = None,
                       repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
                       greedy: bool | None = None, system_prompt: str | None = None,
                       prompt_mode: Literal["chat", "completion"] | None = None, top_n: int | None = None,
                       model: str | None = None) -> dict:
    """Explain one next token: the likeliest candidates and their probability at each sampling stage
    (raw, penalties, temperature, top-k, top-p, min-p, typical-p), and which ones each stage cuts.

    Args:
        prompt: the prompt the answer follows.
        answer: an answer to the prompt (e.g. from generate_text); "" explains the first token.
        position: 0 = the first token after the prompt; k = the token after the first k answer
            tokens; -1 = the token after the whole answer.
        temperature: 0-2.
        top_k: 0-1000 (0 = off).
        top_p: 0.01-1.
        min_p: 0-1 (0 = off).
        typical_p: 0.01-1 (1 = off).
        repetition_penalty: 1-2 (1 = off).
        no_repeat_ngram_size: 0-10 (0 = off).
        greedy: always take the likeliest token.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
        top_n: 1-50 candidates listed (default 10).
        model: a text model id of the catalog.
    Returns:
        {"context", "position", "candidate_ids", "candidates", "chosen_id",
        "stages": [{"name", "setting", "probs", "kept", "kept_tokens", "mass_kept"}]}.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = s.params("text", model, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          typical_p=typical_p, repetition_penalty=repetition_penalty,
                          no_repeat_ngram_size=no_repeat_ngram_size, greedy=greedy, system_prompt=system_prompt,
                          prompt_mode=prompt_mode)
        top_n = whole_number("top_n", top_n, 10)
        if not 1 <= top_n <= 50:
            raise knobs.ParamError("top_n", f"must be a number in [1, 50], got {top_n}")
        result = s.explain_next_token(prompt, chosen, model, answer=_text("answer", answer),
                                      position=whole_number("position", position, 0), top_n=top_n)
        return dataclasses.asdict(result)


def perplexity(text: str, model: str | None = None) -> float:
    """Perplexity of a text under the text model: exp of the mean negative log-likelihood per token.
    Lower = more natural to the model (fluent text scores far below shuffled words).

    Args:
        text: the passage to score, at most 4000 characters.
        model: a text model id of the catalog (None: the preset's default).
    Returns:
        The perplexity (>= 1), rounded to 3 decimals.
    """
    with user_errors():
        value, _ = studio().perplexity(text, _model(model))
        return round(value, 3)


def attention(prompt: str, answer: str | None = None, position: int | None = None, layer: int | None = None,
              head: int | None = None, system_prompt: str | None = None,
              prompt_mode: Literal["chat", "completion"] | None = None, model: str | None = None) -> dict:
    """What one token attends to in every layer and head of the text model, one layer and head's whole
    causal attention matrix, and the logit lens (what each layer would predict next). Computed with the
    model's eager attention on torch, once per context (prompt + answer).

    Args:
        prompt: the prompt, encoded as generation encodes it (chat template or plain).
        answer: an answer to the prompt (e.g. from generate_text); its tokens follow the prompt's.
        position: index into tokens of the token whose attention is shown; None or -1 = the last.
        layer: 0 to layers - 1 (None = the last layer): the layer of `matrix`.
        head: 0 to heads - 1; None = the average of the layer's heads, for `matrix`.
        system_prompt: chat mode instructions.
        prompt_mode: "chat" or "completion".
        model: a text model id of the catalog that runs here (a remote server sends no attention weights).
    Returns:
        {"tokens": [{"index", "id", "text", "kind": "template" | "system" | "prompt" | "answer"}],
        "position", "layers", "heads", "layer", "head",
        "weights": [layer][head][token] (the position's attention: each row sums to 1, 0 on later tokens),
        "matrix": [query][token] for layer and head,
        "lens": [{"layer", "ids", "tokens", "probs"}] per layer, the top 5 next tokens after position
        (the last layer is the model's own next-token distribution),
        "prompt_tokens", "explain_position" (the explain_next_token position of the token after this one)}.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = s.params("text", model, system_prompt=system_prompt, prompt_mode=prompt_mode)
        return s.attention(prompt, chosen, model, answer=_text("answer", answer),
                           position=None if position is None else whole_number("position", position, -1),
                           layer=None if layer is None else whole_number("layer", layer, 0),
                           head=None if head is None else whole_number("head", head, 0))


# ----- fine-tuning (issue 16) -------------------------------------------------------------------

async def fine_tune_text(text: str, model: str | None = None, rank: int | None = None, alpha: int | None = None,
                         learning_rate: float | None = None, steps: int | None = None, seed: int | None = None,
                         name: str | None = None, method: Literal["lora", "full"] | None = None
                         ) -> AsyncIterator[dict]:
    """Fine-tune a text model on your own text (LoRA, or every weight of a small model); streams
    progress, then the result.
    The tuned model joins the catalog as "<model>+<name>" (runs on torch): pass it as `model`
    to generate_text, compare_text, explain_next_token or perplexity.

    Args:
        text: the writing to tune on (up to 1,000,000 characters); 10% of its blocks are held out.
        model: the base text model id (None: the preset's default).
        rank: 1-256 LoRA rank (default 8).
        alpha: 1-1024 LoRA alpha; the update is scaled by alpha / rank (default 16).
        learning_rate: 1e-6 to 0.1 (default 0.001).
        steps: 1-5000 optimizer steps of 4 blocks of 128 tokens (default 20).
        seed: -1 to 2147483647; the same seed, text and knobs give the same adapter (default 0).
        name: the adapter's name: 1-40 letters, digits, '-', '_' or '.' (default "tuned").
        method: "lora" (default) or "full": every weight trains and is saved (fp32, ~540 MB for
            SmolLM2-135M); refused for models above 500M parameters or the memory budget.
            Full fine-tuning wants a far lower learning_rate, around 3e-5.
    Returns:
        Progress as {"step", "steps", "loss", "perplexity"} (perplexity when measured), then
        {"adapter", "method", "perplexity_before", "perplexity_after", "train_tokens", "heldout_tokens"}.
    """
    with user_errors():
        s = studio()
        chosen = knobs.make(knobs.TuneParams, rank=rank, alpha=alpha, learning_rate=learning_rate, steps=steps, seed=seed,
                            method=method)
        stop = threading.Event()

        def work(emit):
            return s.fine_tune(_text("text", text), _model(model), chosen, _text("name", name, "tuned"),
                               on_progress=emit, stop=stop)

        async for kind, value in run_in_worker(work, stop):
            if kind == "update":
                yield {"step": value.step, "steps": value.steps, "loss": value.loss, "perplexity": value.perplexity}
            else:
                yield {"adapter": value.adapter, "method": value.recipe["kind"], "perplexity_before": round(value.perplexity_before, 4),
                       "perplexity_after": round(value.perplexity_after, 4), "train_tokens": value.train_tokens,
                       "heldout_tokens": value.heldout_tokens}


# ----- image ----------------------------------------------------------------------------------

def _image_params(model: str | None, **values: Any) -> ImageParams:
    return studio().params("image", model, **values)


async def generate_image(prompt: str, negative_prompt: str | None = None, steps: int | None = None,
                         guidance: float | None = None, width: int | None = None, height: int | None = None,
                         seed: int | None = None,
                         scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
                         model: str | None = None, batch_size: int | None = None) -> AsyncIterator[File]:
    """Generate an image for a prompt; streams up to 3 denoising previews, then the final PNG,
    whose recipe (model, every knob, seed, versions) is embedded in its text chunk `aigc-studio-recipe`.

    Args:
        prompt: what to draw (the embedded shapes model understands e.g. "a small red circle").
        negative_prompt: what to steer away from.
        steps: 1-150 denoising steps (None: the model's recommendation).
        guidance: 0-20 classifier-free guidance (how strongly the image follows the prompt).
        width: 16-1536 pixels, a multiple of 8.
        height: 16-1536 pixels, a multiple of 8.
        seed: -1 to 2147483647; -1 draws one (the recipe records it).
        scheduler: the sampler; "lcm" only for consistency models.
        model: an image model id of the catalog.
        batch_size: 1-8 images at seeds seed, seed+1, ...; the result is the first.
    Returns:
        Previews, then the PNG file.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                               height=height, seed=seed, scheduler=scheduler, batch_size=batch_size)
        stop = threading.Event()
        streamed = preview_steps(chosen.steps)

        def work(emit):
            def on_step(step, total):
                nonlocal streamed
                streamed = preview_steps(total)  # some schedulers run more iterations than steps

            def on_preview(step, picture):
                if step in streamed:
                    emit(picture)

            return s.images(prompt, [("", chosen)], model, on_step, on_preview, stop)

        try:
            async for kind, value in run_in_worker(work, stop):
                if kind == "update":
                    yield _file(await asyncio.to_thread(gr.processing_utils.save_pil_to_cache, value,
                                                        gr.utils.get_upload_folder(), format="png"))
                else:
                    yield await asyncio.to_thread(_picture_file, s.save, value[0])
        except GenerationStopped as stopped:
            gr.Info(f"Stopped ({stopped}).")


def compare_image(prompt: str, mode: Literal["Different seeds", "Sweep one knob", "Different models"] | None = None,
                  count: int | None = None,
                  knob_name: str | None = None, values: str | None = None, negative_prompt: str | None = None,
                  steps: int | None = None, guidance: float | None = None, width: int | None = None,
                  height: int | None = None, seed: int | None = None,
                  scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
                  model: str | None = None, models: str | None = None) -> list[dict]:
    """2-4 labelled image variants of one prompt (seed variants share one batched call), or one
    prompt and seed on 2-4 image models side by side.

    Args:
        prompt: what to draw.
        mode: "Different seeds" (count consecutive seeds), "Sweep one knob" (knob_name over values)
            or "Different models" (the models, one seed; each at its recommended knobs under the knobs given).
        count: 2-4 images for "Different seeds" (default 3).
        knob_name: the image knob to sweep, e.g. "guidance" or "steps".
        values: 2-4 comma-separated values, e.g. "1, 3, 7".
        negative_prompt: what to steer away from.
        steps: 1-150.
        guidance: 0-20.
        width: 16-1536, a multiple of 8.
        height: 16-1536, a multiple of 8.
        seed: -1 to 2147483647.
        scheduler: the sampler.
        model: an image model id of the catalog.
        models: "Different models": 2-4 comma-separated image model ids (default: the embedded
            shapes-diffusion, shapes-vae, shapes-gan); columns are labelled model=<id>.
    Returns:
        A gallery: [{"image": PNG file with its recipe, "caption": the variant's label}].
    """
    with user_errors():
        s = studio()
        model = _model(model)
        mode = _mode(mode, (MODELS,))
        if mode == MODELS:
            ids = [m.strip() for m in _text("models", models, ", ".join(compare_choices(s))).split(",") if m.strip()]
            given = dict(negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width, height=height,
                         seed=seed, scheduler=scheduler)
            results = s.compare_models(prompt, ids, stop=threading.Event(), **given)
            return [{"image": _picture_file(s.save, r), "caption": r.label} for r in results]
        base = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                             height=height, seed=seed, scheduler=scheduler)
        count = _count(count) if mode == SEEDS else 3
        knob_name = _knob_name("knob_name", knob_name, ImageParams, "guidance") if mode == SWEEP else "guidance"
        variants = make_variants(base, mode, count, knob_name, _text("values", values, "1, 3, 7"))
        results = s.images(prompt, variants, model, stop=threading.Event())
        return [{"image": _picture_file(s.save, r), "caption": r.label} for r in results]


def image_grid(prompt: str, x_knob: str | None = None, x_values: str | None = None, y_knob: str | None = None,
               y_values: str | None = None, negative_prompt: str | None = None, steps: int | None = None,
               guidance: float | None = None, width: int | None = None, height: int | None = None,
               seed: int | None = None,
               scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
               model: str | None = None) -> tuple[File, list[dict]]:
    """An X/Y grid: one or two image knobs over their values, the seed fixed unless it is an axis.
    An axis may also be "model": its values are image model ids (e.g. "shapes-diffusion, shapes-vae, shapes-gan").

    Args:
        prompt: what to draw.
        x_knob: the knob (or "model") across columns, e.g. "steps" (default "steps").
        x_values: 1-6 comma-separated values (default "4, 8, 16, 32"), or model ids for "model".
        y_knob: the knob (or "model") down rows, or "none" for one row (default "guidance").
        y_values: 1-6 comma-separated values (default "1, 3, 7").
        negative_prompt: what to steer away from.
        steps: 1-150.
        guidance: 0-20.
        width: 16-1536 per cell, a multiple of 8.
        height: 16-1536 per cell, a multiple of 8.
        seed: -1 to 2147483647.
        scheduler: the sampler.
        model: an image model id of the catalog.
    Returns:
        The labelled grid PNG (every cell's recipe embedded) and a gallery of the cells.
    """
    with user_errors():
        s = studio()
        model = _model(model)
        base = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                             height=height, seed=seed, scheduler=scheduler)
        axes = [name for name in knobs.sweepable(ImageParams) if name != "batch_size"] + ["model"]
        x_knob = x_knob if x_knob is not None else "steps"
        if not isinstance(x_knob, str) or x_knob not in axes:
            raise knobs.ParamError("x_knob", f"must be one of {', '.join(axes)}, got {x_knob!r}")
        y_knob = y_knob if y_knob is not None else "guidance"
        if not isinstance(y_knob, str) or y_knob not in ("none", *axes):
            raise knobs.ParamError("y_knob", f"must be one of none, {', '.join(axes)}, got {y_knob!r}")
        xs = axis_values(_text("x_values", x_values, "4, 8, 16, 32"), x_knob, "x_values")
        use_y = y_knob != "none"
        ys = axis_values(_text("y_values", y_values, "1, 3, 7"), y_knob, "y_values") if use_y else None
        picture, cells = s.image_grid(prompt, base, x_knob, xs, y_knob if use_y else None, ys, model,
                                      stop=threading.Event())
        grid_file = keep_or_cache(lambda: _file(s.save_grid(picture, cells)), lambda: _file(cached_png(picture)))
        return grid_file, [{"image": _picture_file(s.save, c), "caption": c.label} for c in cells]


def latent_walk(prompt: str, seed_a: int | None = None, seed_b: int | None = None, frames: int | None = None,
                model: str | None = None, negative_prompt: str | None = None, steps: int | None = None,
                guidance: float | None = None, width: int | None = None, height: int | None = None,
                scheduler: Literal["default", "ddpm", "ddim", "dpm++", "euler", "euler_a", "lcm"] | None = None,
                latent_temperature: float | None = None, truncation: float | None = None) -> tuple[File, list[dict]]:
    """A latent walk: images from seed A's to seed B's, the starting noise (diffusion) or latent
    (VAE, GAN) slerped between them; the first and last frames are the two seeds' own images.

    Args:
        prompt: what to draw (e.g. "a blue triangle").
        seed_a: 0-2147483647, where the walk starts (default 3).
        seed_b: 0-2147483647, where it ends (default 7).
        frames: 2-32 images along the walk (default 8).
        model: an image model id of the catalog (e.g. shapes-diffusion, shapes-vae, shapes-gan).
        negative_prompt: what to steer away from.
        steps: 1-150 (diffusion).
        guidance: 0-20 (diffusion).
        width: 16-1536, a multiple of 8.
        height: 16-1536, a multiple of 8.
        scheduler: the sampler (diffusion).
        latent_temperature: 0-2 (VAE): how far from the mean latent.
        truncation: 0-1 (GAN): 1 = as trained, lower = less varied.
    Returns:
        The animated GIF (there and back; its recipe, with walk_to_seed and walk_frames, in the GIF
        comment) and a gallery of the frames: [{"image": PNG with its recipe, "caption"}].
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen = _image_params(model, negative_prompt=negative_prompt, steps=steps, guidance=guidance, width=width,
                               height=height, scheduler=scheduler, latent_temperature=latent_temperature,
                               truncation=truncation)
        # whole() turns a client's 8.0 into 8; the studio checks the ranges and names the field
        seed_a, seed_b, frames = (whole(default if value is None else value)
                                  for value, default in ((seed_a, 3), (seed_b, 7), (frames, 8)))
        results, animation = s.latent_walk(prompt, seed_a, seed_b, frames, model, chosen, stop=threading.Event())
        return _file(keep_walk(s, animation)), [{"image": _cached_picture(r), "caption": r.label} for r in results]


def _cached_picture(result) -> File:
    """A frame as a PNG in Gradio's cache (not the output folder: a walk's GIF keeps it), its recipe inside."""
    picture = result.output.copy()
    picture.info[RECIPE_KEY] = result.recipe.to_json()
    return _file(gr.processing_utils.save_pil_to_cache(picture, gr.utils.get_upload_folder(), format="png"))


# ----- audio ----------------------------------------------------------------------------------

def generate_audio(prompt: str, speed: float | None = None, seed: int | None = None,
                   noise_scale: float | None = None, noise_w: float | None = None,
                   sentence_silence: float | None = None, temperature: float | None = None,
                   top_k: int | None = None, top_p: float | None = None, guidance: float | None = None,
                   duration: float | None = None, model: str | None = None,
                   semantic_temperature: float | None = None, coarse_temperature: float | None = None,
                   fine_temperature: float | None = None, gain_db: float | None = None,
                   file_format: Literal["wav", "flac"] = "wav", bars: int | None = None,
                   tempo: float | None = None, key: str | None = None, metre: Literal["4/4", "3/4"] | None = None,
                   timbre: Literal["organ", "strings", "flute", "choir"] | None = None, start: str | None = None) -> File:
    """Speech (Piper, MMS-TTS, Bark) or music (MusicGen; bach-chorales, the studio's own chorale
    model) for a text, as a WAV or FLAC file carrying its recipe (bach-chorales: stereo, with its
    MIDI saved beside it; /generate_music_midi returns the MIDI).

    Args:
        prompt: what the voice says (or, for MusicGen, the music to make).
        speed: 0.25-4 speaking rate (speech).
        seed: -1 to 2147483647; -1 draws one (the recipe records it).
        noise_scale: 0-1.5 variation in timbre and intonation (speech).
        noise_w: 0-1.5 variation in phoneme durations (speech).
        sentence_silence: 0-2 seconds of silence between sentences (speech).
        temperature: 0.05-2 (music).
        top_k: 0-2048 (music).
        top_p: 0.01-1 (music).
        guidance: 1-10 classifier-free guidance (music).
        duration: 0.5-30 seconds of music.
        model: an audio model id of the catalog.
        semantic_temperature: 0.05-1.5 (Bark).
        coarse_temperature: 0.05-1.5 (Bark).
        fine_temperature: 0.05-1.5 (Bark).
        gain_db: -40 to 40 dB applied to the finished audio.
        file_format: "wav" or "flac" (lossless, smaller); both carry the recipe.
        bars: 1-32 bars (bach-chorales).
        tempo: 30-240 quarter notes per minute (bach-chorales).
        key: e.g. "D minor", "Bb major": C, C#, D, Eb, E, F, F#, G, Ab, A, Bb or B, major or minor (bach-chorales).
        metre: "4/4" or "3/4" (bach-chorales).
        timbre: the synthesiser's instrument (bach-chorales).
        start: notes to begin from (bach-chorales): one line = a soprano melody to harmonise, four lines (S, A, T, B) = first bars to continue; one item per eighth note: C5, F#4, Bb3, '-' holds, 'r' rests, '|' optional bar lines. /start_from_midi reads it from a MIDI file.
    Returns:
        The audio file.
    """
    with user_errors():
        s = studio()
        chosen_format = check_format(file_format)
        result = s.audio(prompt, _model(model), speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                         sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                         guidance=guidance, duration=duration, semantic_temperature=semantic_temperature,
                         coarse_temperature=coarse_temperature, fine_temperature=fine_temperature, gain_db=gain_db,
                         bars=bars, tempo=tempo, key=key, metre=metre, timbre=timbre,
                         start=start)
        return _file(s.save(result, chosen_format))


def compare_audio(prompt: str, mode: VariantMode | None = None, count: int | None = None,
                  knob_name: str | None = None, values: str | None = None, speed: float | None = None,
                  seed: int | None = None, noise_scale: float | None = None, noise_w: float | None = None,
                  sentence_silence: float | None = None, temperature: float | None = None,
                  top_k: int | None = None, top_p: float | None = None, guidance: float | None = None,
                  duration: float | None = None, model: str | None = None,
                  semantic_temperature: float | None = None, coarse_temperature: float | None = None,
                  fine_temperature: float | None = None, gain_db: float | None = None,
                  file_format: Literal["wav", "flac"] = "wav", bars: int | None = None,
                  tempo: float | None = None, key: str | None = None, metre: Literal["4/4", "3/4"] | None = None,
                  timbre: Literal["organ", "strings", "flute", "choir"] | None = None, start: str | None = None,
                  ) -> tuple[File | None, File | None, File | None, File | None]:
    """2-4 labelled audio variants of one text, played at one loudness (unless gain_db itself is swept);
    each file's recipe records the gain it got.

    Args:
        prompt: what the voice says (or the music to make).
        mode: "Different seeds" or "Sweep one knob".
        count: 2-4 variants for "Different seeds" (default 3).
        knob_name: the audio knob to sweep (one the model reads), e.g. "speed".
        values: 2-4 comma-separated values, e.g. "0.8, 1.0, 1.4".
        speed: 0.25-4 (speech); the other knobs are as in generate_audio.
        seed: -1 to 2147483647.
        noise_scale: 0-1.5.
        noise_w: 0-1.5.
        sentence_silence: 0-2 seconds.
        temperature: 0.05-2 (music).
        top_k: 0-2048 (music).
        top_p: 0.01-1 (music).
        guidance: 1-10 (music).
        duration: 0.5-30 seconds (music).
        model: an audio model id of the catalog.
        semantic_temperature: 0.05-1.5 (Bark).
        coarse_temperature: 0.05-1.5 (Bark).
        fine_temperature: 0.05-1.5 (Bark).
        gain_db: -40 to 40 dB.
        file_format: "wav" or "flac".
        bars: 1-32 (bach-chorales); tempo, key, metre and timbre as in generate_audio.
        tempo: 30-240 BPM (bach-chorales).
        key: e.g. "D minor" (bach-chorales).
        metre: "4/4" or "3/4" (bach-chorales).
        timbre: the synthesiser's instrument (bach-chorales).
        start: notes to begin from (bach-chorales): one line = a soprano melody to harmonise, four lines (S, A, T, B) = first bars to continue; one item per eighth note: C5, F#4, Bb3, '-' holds, 'r' rests, '|' optional bar lines. /start_from_midi reads it from a MIDI file.
    Returns:
        Four audio files (unused slots are null).
    """
    with user_errors():
        s = studio()
        model = _model(model)
        chosen_format = check_format(file_format)
        base = s.params("audio", model, speed=speed, seed=seed, noise_scale=noise_scale, noise_w=noise_w,
                        sentence_silence=sentence_silence, temperature=temperature, top_k=top_k, top_p=top_p,
                        guidance=guidance, duration=duration, semantic_temperature=semantic_temperature,
                        coarse_temperature=coarse_temperature, fine_temperature=fine_temperature, gain_db=gain_db,
                        bars=bars, tempo=tempo, key=key, metre=metre, timbre=timbre,
                         start=start)
        mode = _mode(mode)
        count = _count(count) if mode == SEEDS else 3
        if mode == SWEEP:
            knob_name = _knob_name("knob_name", knob_name, type(base), "speed")
            used = s.audio_knobs(model)
            if knob_name not in used:  # before parsing values meant for a knob it ignores
                raise user_error(f"knob_name: {s.model_spec('audio', model).id} does not use {knob_name}; "
                                 f"sweep one of {', '.join(used)}")
        variants = make_variants(base, mode, count, knob_name or "speed", _text("values", values, "0.8, 1.0, 1.4"))
        results = [s.audio(prompt, model, label=label, params=p) for label, p in variants]
        if not (mode == SWEEP and knob_name == "gain_db"):
            results = audio_views.match_loudness(results)
        files = [_file(s.save(r, chosen_format)) for r in results]
        return tuple(files + [None] * (MAX_PLAYERS - len(files)))


def history(request: gr.Request = None) -> list[dict]:
    """This session's results, newest first (at most 100): what the History tab lists.

    Each entry is a dict: id (int), tab (text | image | audio), model, label (a short
    label of the knobs), recipe (the whole recipe: prompt, model_id, params with every
    knob and the seed), path (the output file, or None for text), file_state (kept,
    pruned by the retention policy, or none), text and first_line (text answers),
    created (seconds since the epoch) and created_iso. A page's session is linked to its
    browser, so a browser's results from before a reload are included."""
    return [entry.describe() for entry in _studio.history.entries(request.session_hash if request else None)]


# Endpoint -> its concurrency group. A tab's button and its public endpoint share the
# group, so AIGC_CONCURRENCY bounds the generations of a modality however they arrive.
ENDPOINTS = {generate_text: "text", compare_text: "text", explain_next_token: "text", perplexity: "text",
             attention: "text",
             generate_image: "image", compare_image: "image", image_grid: "image", latent_walk: "image",
             generate_audio: "audio", compare_audio: "audio"}


def register(studio_: Studio) -> None:
    """Serve every endpoint over studio_. Call inside the Blocks before the tabs: their
    private events of the same names then get suffixed names, these keep the public ones."""
    global _studio
    _studio = studio_
    from aigc_studio.ui import image_api  # image to image, the forward process, prompt maps (issue 23)
    from aigc_studio.ui import music_api  # the chorale model's MIDI and next-note explainer (issue 24)
    from aigc_studio.ui import grid_api  # the text and audio X/Y grids (issue 25)

    for fn, group in {**ENDPOINTS, **image_api.ENDPOINTS, **music_api.ENDPOINTS, **grid_api.ENDPOINTS}.items():
        gr.api(fn, api_name=fn.__name__, concurrency_id=group)
    gr.api(fine_tune_text, api_name="fine_tune_text", concurrency_id="tune", concurrency_limit=1)  # one at a time, beside the rest
    gr.api(history, api_name="history", queue=False)  # a listing: no generation to wait behind
