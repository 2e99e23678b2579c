"""The Audio tab's X/Y grid: one or two knobs the model reads over their values, one
generation per cell (Studio.audio_grid), played at one loudness like side by side; a
labelled table of the cells' loudness, a player per cell, and a zip of every cell's file
with its recipe. The Text tab's grid (ui/text_grid.py) and the image grid are its models."""

from __future__ import annotations

import html

import gradio as gr

from aigc_studio import audio_views, grid
from aigc_studio.params import AudioParams
from aigc_studio.studio import Studio
from aigc_studio.ui.text_grid import NONE, axis_values
from aigc_studio.actions.variants import sweep_names
from aigc_studio.ui.components import SweepDropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import knob_choices_for, sweep_values
from aigc_studio.ui.page import busy, error_box, ready
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.files import keep_or_cache

PLAYERS_PER_ROW = 4


def table_html(plan: grid.GridPlan, labels: list[str]) -> str:
    """The grid's cells as a table: column labels on top, row labels on the left, each
    cell the text given (its loudness and gain)."""
    width = len(plan.x_labels)
    head = "".join(f'<th style="padding:4px 8px">{html.escape(x)}</th>' for x in plan.x_labels)
    rows = []
    for r, row_label in enumerate(plan.y_labels or [""]):
        cells = "".join(f'<td style="padding:4px 8px;border:1px solid #d1d5db">{html.escape(labels[r * width + c])}</td>'
                        for c in range(width))
        label = f'<th style="padding:4px 8px;text-align:left">{html.escape(row_label)}</th>' if plan.y_labels else ""
        rows.append(f"<tr>{label}{cells}</tr>")
    corner = "<th></th>" if plan.y_labels else ""  # no Y axis: no column of row labels
    return (f'<div style="overflow-x:auto"><table style="border-collapse:collapse"><tr>{corner}{head}</tr>'
            f"{''.join(rows)}</table></div>")


def cell_note(result) -> str:
    """'−18 LUFS · gain +2.1 dB' for a cell's result."""
    rate, samples = result.output
    level = audio_views.loudness_lufs(samples, rate)
    gain = float(result.recipe.params.get("gain_db", 0.0))
    return f"{audio_views.lufs_label(level)} · gain {gain:+.1f} dB"


def build(studio: Studio, used) -> dict:
    """The grid's components (call inside the Audio tab's layout); wire() connects them."""
    axes = sweep_names(AudioParams, used)
    every_axis = tuple(sweep_names(AudioParams, list(AudioParams.__dataclass_fields__)))
    with gr.Accordion("X/Y grid: one or two knobs over their values, loudness-matched", open=False,
                      elem_id="audio-grid"):
        with gr.Row():
            x_knob = SweepDropdown(knob_choices_for(axes), value="speed" if "speed" in axes else axes[0], label="X knob",
                                   info="The knob that varies across columns (the seed stays fixed unless it is an axis).",
                                   knob_name="x_knob", sweepable=every_axis, elem_id="audio-grid-x-knob")
            x_values = gr.Textbox(value="0.8, 1.0, 1.4" if "speed" in axes else "", label="X values (1-6, comma-separated)",
                                  elem_id="audio-grid-x-values")
            y_knob = SweepDropdown([(NONE, NONE), *knob_choices_for(axes)], value=NONE, label="Y knob",
                                   info="The knob that varies down rows (none: one row). At most 16 cells.",
                                   knob_name="y_knob", sweepable=(NONE, *every_axis), elem_id="audio-grid-y-knob")
            y_values = gr.Textbox(value="", label="Y values", elem_id="audio-grid-y-values")
        make = gr.Button("Make grid", elem_id="audio-grid-button")
        error_box("audio-grid-button")
        table = gr.HTML(elem_id="audio-grid-table")
        players = []
        for start in range(0, grid.MAX_AUDIO_CELLS, PLAYERS_PER_ROW):
            with gr.Row():
                players += [gr.Audio(type="filepath", format=None, visible=False, elem_id=f"audio-grid-cell-{i}")
                            for i in range(start, start + PLAYERS_PER_ROW)]
        archive = gr.File(label="Export: every cell's file with its recipe (zip)", elem_id="audio-grid-zip")
    return {"x_knob": x_knob, "x_values": x_values, "y_knob": y_knob, "y_values": y_values, "make": make,
            "table": table, "players": players, "zip": archive}


def wire(studio: Studio, sessions: Sessions, parts: dict, prompt, model, controls: dict) -> None:
    names, inputs = list(controls), list(controls.values())
    players = parts["players"]

    def make_audio_grid(request: gr.Request, prompt_text="", x_knob=None, x_text="", y_knob=None, y_text="",
                        model_id=None, *knob_values):
        """Every cell's audio at one loudness, labelled by its knobs and loudness; the zip of them all."""
        with user_errors():
            base = studio.params("audio", model_id, **dict(zip(names, knob_values)))
            use_y = bool(y_knob) and y_knob != NONE
            plan, cells = studio.audio_grid(prompt_text, base, x_knob, axis_values(x_text),
                                            y_knob if use_y else None, axis_values(y_text) if use_y else None,
                                            model_id, stop=sessions.fresh_stop(request, "audio"))
        sessions.keep_recipes(request, [c.recipe for c in cells])
        notes = [cell_note(c) for c in cells]
        def kept() -> tuple[list, str]:
            paths, zipped = studio.save_audio_grid(plan, cells)
            return [str(p) for p in paths], str(zipped)

        shown, zipped = keep_or_cache(kept, lambda: ([c.output for c in cells], None),
                                      note="The cells play, but were not kept.")
        updates = [gr.update(value=v, visible=True, label=f"{c.label} · {n}") for v, c, n in zip(shown, cells, notes)]
        updates += [gr.update(value=None, visible=False)] * (len(players) - len(updates))
        return table_html(plan, notes), *updates, zipped

    def values_for(knob, model_id, *knob_values):
        if knob == NONE:
            return ""
        with user_errors():
            return sweep_values(studio.params("audio", model_id, **dict(zip(names, knob_values))), knob)

    def pickers(model_id, x, y):
        with user_errors():
            axes = sweep_names(AudioParams, studio.knobs_used("audio", model_id))
        choices = knob_choices_for(axes)
        return (gr.update(choices=choices, value=x if x in axes else axes[0]),
                gr.update(choices=[(NONE, NONE), *choices], value=y if y in axes else NONE))

    event = parts["make"].click(lambda: busy(), outputs=parts["make"], queue=False, api_visibility="private").then(
        make_audio_grid, inputs=[prompt, parts["x_knob"], parts["x_values"], parts["y_knob"], parts["y_values"], model,
                                 *inputs],
        outputs=[parts["table"], *players, parts["zip"]], api_visibility="private", concurrency_id="audio")
    for done in (event.then, event.failure):
        done(lambda: ready("Make grid"), outputs=parts["make"], queue=False, api_visibility="private")
    parts["x_knob"].input(values_for, [parts["x_knob"], model, *inputs], parts["x_values"], api_visibility="private")
    parts["y_knob"].input(values_for, [parts["y_knob"], model, *inputs], parts["y_values"], api_visibility="private")
    # change, not input: a recipe restore sets the model too, and the pickers follow it
    model.change(pickers, [model, parts["x_knob"], parts["y_knob"]], [parts["x_knob"], parts["y_knob"]],
                 api_visibility="private", queue=False)
