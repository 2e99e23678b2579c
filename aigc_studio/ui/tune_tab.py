"""Tune tab: fine-tune the text model on your own writing (LoRA, or every weight of a small
model), watch the loss curve and the held-out perplexity, then run base and tuned side by side
with one seed (here, and in the Text tab's "Different models" mode).

Training runs in its own concurrency group ("tune", one at a time), so the other tabs keep
serving while it runs. Stop ends training after the current step and keeps that adapter.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import gradio as gr
import pandas as pd

from aigc_studio import params as knobs
from aigc_studio.actions import text as text_actions
from aigc_studio.actions.text import ADAPTER_FILES, FULL_FILES, FineTuneText
from aigc_studio.catalog import TUNE_RECIPE
from aigc_studio.params import TuneParams
from aigc_studio.studio import Studio
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import run_in_worker

KNOB_SLIDERS = ("rank", "alpha", "steps", "batch_size", "sequence_length", "eval_every")
# AdamW step sizes that suit each method: LoRA's small matrices take large steps, every weight small ones
LEARNING_RATES = {"lora": 1e-3, "full": 3e-5}


def _slider(name: str, high: float | None = None) -> gr.Slider:
    meta = knobs.spec(TuneParams, name)
    return gr.Slider(meta["low"], high or meta["high"], value=meta["default"], step=1, label=name.replace("_", " "),
                     info=meta["help"])


def _number(name: str, **kwargs) -> gr.Number:
    meta = knobs.spec(TuneParams, name)
    return gr.Number(meta["default"], label=name.replace("_", " "), info=meta["help"], minimum=meta["low"],
                     maximum=meta["high"], **kwargs)


def curve(rows: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows or [], columns=["step", "loss"]).astype({"step": int, "loss": float})


def base_models(studio: Studio) -> list[str]:
    return [m for m in studio.catalog.choices("text") if studio.model_spec("text", m).source != "adapter"]


def adapters(studio: Studio) -> list[str]:
    return [m for m in studio.catalog.choices("text") if studio.model_spec("text", m).source == "adapter"]


async def train(studio: Studio, sessions: Sessions, request: gr.Request | None, text, files, model, rank, alpha,
                learning_rate, steps, batch_size, sequence_length, seed, eval_every, name, method="lora",
                progress=None):
    """Stream (status, loss curve, result, tuned-model picker) while the adapter trains
    (method: "lora" or "full", see TuneParams)."""
    with user_errors():
        chosen = knobs.make(TuneParams, rank=rank, alpha=alpha, learning_rate=learning_rate, steps=steps,
                            batch_size=batch_size, sequence_length=sequence_length, seed=seed, eval_every=eval_every,
                            method=method)
        tune = FineTuneText(text, chosen, model, name, [getattr(f, "name", f) for f in (files or [])])
        stop = sessions.fresh_stop(request, "tune")
        rows: list[tuple[int, float]] = []
        before = None
        yield f"Loading {model} and tokenising the text...", curve(rows), "", gr.update()

        async for kind, value in run_in_worker(lambda emit: text_actions.fine_tune(studio, tune, emit, stop), stop):
            if kind == "update":
                if value.loss is not None:
                    rows.append((value.step, value.loss))
                if value.step == 0:
                    before = value.perplexity
                if progress is not None:
                    progress((value.step, value.steps), desc="training")
                line = f"Step {value.step}/{value.steps} · {value.seconds:.0f} s"
                if value.loss is not None:
                    line += f" · loss {value.loss:.3f}"
                if before is not None:
                    line += f" · held-out perplexity before {before:.2f}"
                if value.perplexity is not None and value.step:
                    line += f", now {value.perplexity:.2f}"
                yield line, curve(rows), "", gr.update()
            else:
                result = value
                stopped = f" (stopped after step {result.steps_done})" if result.stopped else ""
                kind = "every weight tuned" if chosen.method == "full" else "LoRA"
                summary = (f"**{result.adapter}** ({kind}){stopped}: held-out perplexity **{result.perplexity_before:.2f} → "
                           f"{result.perplexity_after:.2f}** ({result.perplexity_after / result.perplexity_before:.2f}×) · "
                           f"{result.train_tokens:,} training tokens, {result.heldout_tokens:,} held out · "
                           f"{result.seconds / 60:.1f} min · runs on torch · saved in `{result.folder}`")
                record_tune(sessions, request, model, tune.name, chosen, result)
                yield "Done.", curve(rows), summary, gr.update(choices=adapters(studio), value=result.adapter)


def record_tune(sessions: Sessions, request: gr.Request | None, model: str, name: str, chosen: TuneParams,
                result) -> None:
    """The tune joins the browser's history: its base, name and knobs (what Restore brings back), with
    the tuned model's recipe file and its perplexities in the entry's text."""
    if sessions.history is None:
        return
    recipe = {"modality": "tune", "model_id": model, "prompt": name, "label": result.adapter,
              "params": dataclasses.asdict(chosen)}
    text = (f"{result.adapter}: held-out perplexity {result.perplexity_before:.2f} -> {result.perplexity_after:.2f}"
            f"{' (stopped)' if result.stopped else ''}")
    entry = sessions.history.add(Sessions.key(request), recipe, text)
    entry.path = str(Path(result.folder) / TUNE_RECIPE)


def restore_tune(studio: Studio, hook: dict, recipe: dict) -> list:
    """Base model, name and every knob of a tune entry (the text it was tuned on is not kept)."""
    with user_errors():
        chosen = knobs.make(TuneParams, **recipe.get("params", {}))
        model = studio.model_spec("text", recipe.get("model_id")).id
    gr.Info("Restored the knobs of a tune; paste or upload the text again to train.")
    return [model, recipe.get("prompt", ""), chosen.method, *[getattr(chosen, k) for k in hook["knobs"]]]


def load_adapter(studio: Studio, files):
    """Restore an adapter from its three files (safetensors weights, config, recipe), or a
    full fine-tune from its two (model.safetensors, recipe)."""
    with user_errors():
        adapter = text_actions.restore_adapter(studio, [getattr(f, "name", f) for f in (files or [])])
        return f"Restored **{adapter}**.", gr.update(choices=adapters(studio), value=adapter)


def compare(studio: Studio, prompt, adapter, seed, max_new_tokens):
    """The same prompt and seed on the base model and its tuned adapter (completion mode)."""
    with user_errors():
        return text_actions.compare_tuned(studio, prompt, adapter, seed, max_new_tokens)


def use_method(chosen):
    """LoRA's knobs show only for LoRA; the learning rate moves to one that suits the method."""
    lora = chosen == "lora"
    return gr.update(visible=lora), gr.update(visible=lora), LEARNING_RATES.get(chosen, LEARNING_RATES["lora"])


@dataclasses.dataclass
class TuneLayout:
    """The Tune tab's components (layout() builds them; wire() connects them)."""

    text: gr.Textbox
    files: gr.File
    model: gr.Dropdown
    name: gr.Textbox
    method: gr.Radio
    sliders: dict  # KNOB_SLIDERS name -> slider
    learning_rate: gr.Number
    seed: gr.Number
    start: gr.Button
    stop: gr.Button
    status: gr.Markdown
    loss_plot: gr.LinePlot
    summary: gr.Markdown
    prompt: gr.Textbox
    tuned: gr.Dropdown
    compare_seed: gr.Number
    length: gr.Slider
    run: gr.Button
    base_out: gr.Textbox
    tuned_out: gr.Textbox
    upload: gr.File
    restore: gr.Button
    restored: gr.Markdown


def layout(studio: Studio) -> TuneLayout:
    choices = base_models(studio)
    default = studio.catalog.defaults.get("text")
    with gr.Tab("Tune", id="tune"):
        gr.Markdown("Fine-tune the text model on your own writing (LoRA, or every weight of a small model): 10% of the "
                    "text is held out to measure perplexity before and after. The tuned model joins the model list as "
                    "`<base>+<name>`, runs on torch, is listed again after a restart, and the Text tab's side by side "
                    "(mode *Different models*) runs it beside its base.")
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label="Text to tune on", lines=8, max_length=1_000_000,
                                  placeholder="Paste a few kB of prose (more is better), or upload .txt/.md files.")
                files = gr.File(label="Or upload .txt / .md files (UTF-8)", file_count="multiple",
                                file_types=[".txt", ".md"], type="filepath")
            with gr.Column(scale=2):
                model = gr.Dropdown(choices, value=default if default in choices else (choices[0] if choices else None),
                                    label="Base model")
                name = gr.Textbox("mine", label="Adapter name", info="The tuned model is listed as <base>+<name>.")
                method = gr.Radio(list(knobs.spec(TuneParams, "method")["choices"]), value="lora", label="method",
                                  info=knobs.spec(TuneParams, "method")["help"])
                with gr.Accordion("Knobs", open=False):
                    sliders = {k: _slider(k, 64 if k == "rank" else (200 if k in ("steps", "eval_every") else None))
                               for k in KNOB_SLIDERS}
                    learning_rate = _number("learning_rate", step=0.0001)
                    seed = _number("seed", precision=0)
                with gr.Row():
                    start = gr.Button("Train", variant="primary", elem_id="tune-train")
                    stop = gr.Button("Stop", variant="stop", elem_id="tune-stop")
        status = gr.Markdown()
        loss_plot = gr.LinePlot(curve([]), x="step", y="loss", title="Training loss", height=260)
        summary = gr.Markdown()
        with gr.Accordion("Base vs tuned, side by side", open=True):
            with gr.Row():
                prompt = gr.Textbox("It is a truth universally acknowledged", label="Prompt (continued as written)")
                tuned = gr.Dropdown(adapters(studio), label="Tuned model", allow_custom_value=False)
                compare_seed = gr.Number(1, label="seed", precision=0, minimum=0, maximum=knobs.MAX_SEED)
                length = gr.Slider(1, 256, value=60, step=1, label="max new tokens")
            run = gr.Button("Generate both")
            with gr.Row():
                base_out = gr.Textbox(label="Base", lines=6)
                tuned_out = gr.Textbox(label="Tuned", lines=6)
        with gr.Accordion("Restore an adapter", open=False):
            upload = gr.File(label=f"Upload {', '.join(ADAPTER_FILES)} (LoRA) or {', '.join(FULL_FILES)} (full)",
                             file_count="multiple", type="filepath")
            restore = gr.Button("Restore")
            restored = gr.Markdown()
    return TuneLayout(text, files, model, name, method, sliders, learning_rate, seed, start, stop, status, loss_plot,
                      summary, prompt, tuned, compare_seed, length, run, base_out, tuned_out, upload, restore, restored)


def wire(ui: TuneLayout, studio: Studio, sessions: Sessions) -> None:
    """Connect the Tune tab's events (all private: the public endpoint is ui/text_api.py's fine_tune_text)."""

    # an adapter: Gradio hands gr.Request and gr.Progress to the parameters annotated or defaulted so
    async def on_train(text_, files_, model_, rank, alpha, lr, steps, batch, length_, seed_, every, name_, method_,
                       request: gr.Request, progress=gr.Progress()):
        async for update in train(studio, sessions, request, text_, files_, model_, rank, alpha, lr, steps, batch,
                                  length_, seed_, every, name_, method_, progress):
            yield update

    def on_stop(request: gr.Request):
        sessions.stop(request, "tune")

    ui.method.change(use_method, ui.method, [ui.sliders["rank"], ui.sliders["alpha"], ui.learning_rate],
                     api_visibility="private", queue=False)
    inputs = [ui.text, ui.files, ui.model, ui.sliders["rank"], ui.sliders["alpha"], ui.learning_rate,
              ui.sliders["steps"], ui.sliders["batch_size"], ui.sliders["sequence_length"], ui.seed,
              ui.sliders["eval_every"], ui.name, ui.method]
    ui.start.click(on_train, inputs, [ui.status, ui.loss_plot, ui.summary, ui.tuned], concurrency_id="tune",
                   concurrency_limit=1, api_visibility="private")
    ui.stop.click(on_stop, None, None, api_visibility="private", queue=False)
    ui.run.click(functools.partial(compare, studio), [ui.prompt, ui.tuned, ui.compare_seed, ui.length],
                 [ui.base_out, ui.tuned_out], api_visibility="private")
    ui.restore.click(functools.partial(load_adapter, studio), ui.upload, [ui.restored, ui.tuned],
                     api_visibility="private")


def build(studio: Studio, sessions: Sessions) -> dict:
    """The Tune tab: layout + wire. Returns what the History tab restores, in this order after
    model, name and method: the knobs."""
    ui = layout(studio)
    wire(ui, studio, sessions)
    return {"knobs": [*KNOB_SLIDERS, "learning_rate", "seed"],
            "outputs": [ui.model, ui.name, ui.method, *[ui.sliders[k] for k in KNOB_SLIDERS], ui.learning_rate,
                        ui.seed]}
