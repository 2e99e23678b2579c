"""The Audio tab's X/Y grid: one or two knobs the model reads over their values, one
generation per cell (actions/audio.py's make_grid, the one /audio_grid runs), played at one
loudness like side by side; a labelled table of the cells' loudness, a player per cell, and a
zip of every cell's file with its recipe. layout() builds it inside the tab, wire() connects it."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from aigc_studio import audio_views, grid
from aigc_studio.actions import audio as actions
from aigc_studio.actions.variants import sweep_names
from aigc_studio.params import AudioParams
from aigc_studio.studio import Studio
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.files import keep_or_cache
from aigc_studio.ui.knob_controls import GridPickers, grid_pickers, wire_grid_pickers
from aigc_studio.ui.page import busy_run, error_box
from aigc_studio.ui.session import Sessions, bind

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


@dataclass
class GridLayout:
    """The grid's components: its axis pickers, button, table, a player per cell and the zip."""

    pickers: GridPickers
    make: gr.Button
    table: gr.HTML
    players: list
    archive: gr.File


def layout(used) -> GridLayout:
    """The grid's accordion (call inside the Audio tab's layout), closed."""
    with gr.Accordion("X/Y grid: one or two knobs over their values, loudness-matched", open=False,
                      elem_id="audio-grid"):
        pickers = grid_pickers(AudioParams, used, "audio", "speed",
                               "0.8, 1.0, 1.4" if "speed" in sweep_names(AudioParams, used) else "")
        make = gr.Button("Make grid", elem_id="audio-grid-button")
        error_box("audio-grid-button")
        table = gr.HTML(elem_id="audio-grid-table")
        players = []
        for start in range(0, grid.MAX_AUDIO_CELLS, PLAYERS_PER_ROW):
            with gr.Row():
                players += [gr.Audio(type="filepath", format=None, visible=False, elem_id=f"audio-grid-cell-{i}")
                            for i in range(start, start + PLAYERS_PER_ROW)]
        archive = gr.File(label="Export: every cell's file with its recipe (zip)", elem_id="audio-grid-zip")
    return GridLayout(pickers, make, table, players, archive)


# ----- handlers: knobs come last, in actions.KNOBS order -----------------------------------------------

def make_audio_grid(studio: Studio, sessions: Sessions, request: gr.Request | None, prompt: str, x_knob: str,
                    x_values: str, y_knob: str, y_values: str, model: str | None, *knob_values) -> tuple:
    """Every cell's audio at one loudness, labelled by its knobs and loudness; the table; the zip of them all."""
    with user_errors():
        asked = actions.AudioGrid(prompt, x_knob, x_values, y_knob, y_values, model,
                                  dict(zip(actions.KNOBS, knob_values)))
        plan, cells = actions.make_grid(studio, asked, stop=sessions.fresh_stop(request, "audio"))
    sessions.keep_recipes(request, [c.recipe for c in cells])
    notes = [cell_note(c) for c in cells]

    def kept() -> tuple[list, str]:
        paths, zipped = studio.save_audio_grid(plan, cells)
        return [str(p) for p in paths], str(zipped)

    shown, zipped = keep_or_cache(kept, lambda: ([c.output for c in cells], None),
                                  note="The cells play, but were not kept.")
    updates = [gr.update(value=v, visible=True, label=f"{c.label} · {n}") for v, c, n in zip(shown, cells, notes)]
    updates += [gr.update(value=None, visible=False)] * (grid.MAX_AUDIO_CELLS - len(updates))
    return table_html(plan, notes), *updates, zipped


def wire(parts: GridLayout, studio: Studio, sessions: Sessions, prompt, model, knob_inputs: list) -> None:
    """The grid's events; knob_inputs: the tab's knob controls in actions.KNOBS order."""
    p = parts.pickers
    busy_run([parts.make.click], bind(make_audio_grid, studio, sessions),
             [prompt, p.x_knob, p.x_values, p.y_knob, p.y_values, model, *knob_inputs],
             [parts.table, *parts.players, parts.archive], parts.make, label="Make grid", concurrency_id="audio")
    wire_grid_pickers(p, studio, "audio", model, knob_inputs)
