"""The Text tab's X/Y grid: one or two knobs over their values, every cell a column of
one batched generation (actions/text.py's grid_stream), shown as a table with labelled rows
and columns, each cell's tokens/s and mean log-probability, and where it first differs from
the others. The image tab's grid (ui/image_tab.py) is its model: same pickers, same plan.
layout() builds the accordion, wire() connects it; the handlers are module-level."""

from __future__ import annotations

import dataclasses
import html

import gradio as gr

from aigc_studio import grid
from aigc_studio.actions import text as text_actions
from aigc_studio.actions.text import TextGrid
from aigc_studio.params import TextParams
from aigc_studio.studio import Studio
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.files import keep_or_cache
from aigc_studio.ui.knob_controls import GridPickers, grid_pickers, wire_grid_pickers
from aigc_studio.ui.page import busy_run, error_box
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import paced

MARK = "#818cf8"  # the side-by-side columns' "first difference" colour


def cell_html(tokens: list, text: str, first: int | None, final: bool) -> str:
    """A cell's answer; once finished, the token where it leaves the others is marked
    (⟨end⟩ when it ended where another went on)."""
    if not final or first is None:
        return html.escape(text)
    before = "".join(t.text for t in tokens[:first])
    at = tokens[first].text if first < len(tokens) else ""
    after = "".join(t.text for t in tokens[first + 1:])
    marked = html.escape(at or "⟨end⟩")
    return (f'{html.escape(before)}<mark title="first difference from the other cells" '
            f'style="background:{MARK};color:white;border-radius:2px">{marked}</mark>{html.escape(after)}')


def table_html(plan: grid.GridPlan, columns: list, status: str = "", final: bool = False) -> str:
    """The grid as a table: column labels on top, row labels on the left, each cell its
    answer (so far) and, once finished, its figures."""
    firsts = grid.cell_divergence([[t.id for t in c.tokens] for c in columns]) if final else [None] * len(columns)
    width = len(plan.x_labels)
    head = "".join(f'<th style="padding:4px 8px">{html.escape(label)}</th>' for label in plan.x_labels)
    rows = []
    for r, row_label in enumerate(plan.y_labels or [""]):
        cells = []
        for c in range(width):
            index = r * width + c
            column = columns[index]
            figures = ""
            if final:
                first = firsts[index]
                where = f"differs at token {first}" if first is not None else "same as every other cell"
                figures = (f'<div style="font-size:0.8em;opacity:0.75;margin-top:4px">{len(column.tokens)} tokens · '
                           f'{column.tokens_per_s:.1f} tok/s · mean log-prob {column.mean_logprob:.2f} · {where}</div>')
            body = cell_html(column.tokens, column.text or status, firsts[index], final)
            cells.append(f'<td style="vertical-align:top;padding:4px 8px;border:1px solid #d1d5db;'
                         f'white-space:pre-wrap;min-width:10em">{body}{figures}</td>')
        label = f'<th style="padding:4px 8px;text-align:left">{html.escape(row_label)}</th>' if plan.y_labels else ""
        rows.append(f"<tr>{label}{''.join(cells)}</tr>")
    return (f'<div style="overflow-x:auto"><table style="border-collapse:collapse">'
            f"<tr>{'<th></th>' if plan.y_labels else ''}{head}</tr>{''.join(rows)}</table></div>")


@dataclasses.dataclass
class GridLayout:
    """The grid accordion's components."""

    pickers: GridPickers
    make: gr.Button
    status: gr.Markdown
    table: gr.HTML
    files: gr.File


def layout(used) -> GridLayout:
    """The accordion (call inside the Text tab's layout): the X/Y pickers over the knobs the
    model reads, the button, the status line, the table and the export."""
    with gr.Accordion("X/Y grid: one or two knobs over their values, one batch", open=False, elem_id="text-grid"):
        pickers = grid_pickers(TextParams, used, "text", "temperature", text_actions.SWEPT_VALUES)
        make = gr.Button("Make grid", elem_id="text-grid-button")
        error_box("text-grid-button")
        status = gr.Markdown(elem_id="text-grid-status")
        table = gr.HTML(elem_id="text-grid-table")
        files = gr.File(label="Export: every cell with its recipe (JSON, CSV)", file_count="multiple",
                        elem_id="text-grid-files")
    return GridLayout(pickers, make, status, table, files)


def make_grid(studio: Studio, sessions: Sessions, request: gr.Request | None, prompt="", x_knob=None, x_text="",
              y_knob=None, y_text="", model=None, *knob_values):
    """Stream (status, table, files): the table as it fills; at the end its cells saved (JSON + CSV)
    for download. knob_values: every knob, in TextParams' order."""
    with user_errors():
        base = studio.params("text", model, **dict(zip(text_actions.knob_names(TextParams), knob_values)))
        chosen = TextGrid(prompt, base, model, x_knob, x_text, y_knob, y_text)
        plan, stream = text_actions.grid_stream(studio, chosen, sessions.fresh_stop(request))
        update = None
        for update in paced(stream):
            final = all(column.result is not None for column in update.columns)
            if not final:  # the status ("Loading …") has its own line, never inside the cells
                yield update.status, table_html(plan, update.columns), gr.skip()
        if update is None or not all(column.result is not None for column in update.columns):
            return
        results = [column.result for column in update.columns]
        sessions.keep_recipes(request, [r.recipe for r in results], [r.output for r in results])
        shown = table_html(plan, update.columns, final=True)
        cells = text_actions.grid_cells(plan, update.columns)
        paths = keep_or_cache(lambda: [str(p) for p in studio.save_text_grid(plan, cells)],
                              lambda: None, note="The grid shows; its export was not written.")
        yield "", shown, paths


def wire(ui: GridLayout, studio: Studio, sessions: Sessions, prompt, model, controls: dict):
    """Events of the grid (controls: every knob control, in TextParams' order); returns the
    running event (for the tab's Stop to cancel)."""
    pickers, knobs = ui.pickers, list(controls.values())

    def make(request: gr.Request, *inputs):  # an adapter: functools.partial would hide gr.Request from Gradio
        yield from make_grid(studio, sessions, request, *inputs)

    make_event = busy_run([ui.make.click], make, [prompt, pickers.x_knob, pickers.x_values, pickers.y_knob,
                                                  pickers.y_values, model, *knobs],
                          [ui.status, ui.table, ui.files], ui.make, label="Make grid", concurrency_id="text")
    for finished in (make_event.then, make_event.failure):
        finished(lambda: "", outputs=ui.status, queue=False, api_visibility="private")
    wire_grid_pickers(pickers, studio, "text", model, knobs)
    return make_event
