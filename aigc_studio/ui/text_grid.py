"""The Text tab's X/Y grid: one or two knobs over their values, every cell a column of
one batched generation (Studio.text_grid_stream), shown as a table with labelled rows and
columns, each cell's tokens/s and mean log-probability, and where it first differs from
the others. The image tab's grid (ui/image_tab.py) is its model: same pickers, same plan."""

from __future__ import annotations

import html

import gradio as gr

from aigc_studio import grid
from aigc_studio.params import TextParams
from aigc_studio.studio import Studio
from aigc_studio.actions.variants import sweep_names
from aigc_studio.ui.components import SweepDropdown
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.knob_controls import knob_choices_for, sweep_values
from aigc_studio.ui.page import busy, error_box, ready
from aigc_studio.ui.session import Sessions
from aigc_studio.ui.streaming import paced
from aigc_studio.ui.files import keep_or_cache

NONE = "none"  # no Y axis: one row
MARK = "#818cf8"  # the side-by-side columns' "first difference" colour


def axis_values(text) -> list[str]:
    """'0.3, 0.8' -> ['0.3', '0.8']; grid.plan coerces, range-checks and counts them (1-6)."""
    return [v.strip() for v in str(text or "").split(",") if v.strip()]


def grid_axes(studio: Studio, model: str | None) -> list[str]:
    """The knobs a text grid can vary for this model: those it reads that can be swept."""
    return sweep_names(TextParams, studio.knobs_used("text", model))


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


def build(studio: Studio, sessions: Sessions, used) -> dict:
    """The accordion's components (call inside the Text tab's layout); wire() connects them."""
    axes = sweep_names(TextParams, used)
    every_axis = tuple(sweep_names(TextParams, [f for f in TextParams.__dataclass_fields__]))
    with gr.Accordion("X/Y grid: one or two knobs over their values, one batch", open=False, elem_id="text-grid"):
        with gr.Row():
            x_knob = SweepDropdown(knob_choices_for(axes), value="temperature" if "temperature" in axes else axes[0],
                                   label="X knob", info="The knob that varies across columns (the seed stays fixed unless it is an axis).",
                                   knob_name="x_knob", sweepable=every_axis, elem_id="text-grid-x-knob")
            x_values = gr.Textbox(value="0.3, 0.8, 1.4", label="X values (1-6, comma-separated)",
                                  elem_id="text-grid-x-values")
            y_knob = SweepDropdown([(NONE, NONE), *knob_choices_for(axes)], value=NONE, label="Y knob",
                                   info="The knob that varies down rows (none: one row). At most 16 cells.",
                                   knob_name="y_knob", sweepable=(NONE, *every_axis), elem_id="text-grid-y-knob")
            y_values = gr.Textbox(value="", label="Y values", elem_id="text-grid-y-values")
        make = gr.Button("Make grid", elem_id="text-grid-button")
        error_box("text-grid-button")
        status = gr.Markdown(elem_id="text-grid-status")
        table = gr.HTML(elem_id="text-grid-table")
        files = gr.File(label="Export: every cell with its recipe (JSON, CSV)", file_count="multiple",
                        elem_id="text-grid-files")
    return {"x_knob": x_knob, "x_values": x_values, "y_knob": y_knob, "y_values": y_values, "make": make,
            "status": status, "table": table, "files": files}


def wire(studio: Studio, sessions: Sessions, parts: dict, prompt, model, controls: dict):
    """Events of the grid; returns the running event (for the tab's Stop to cancel)."""
    names, inputs = list(controls), list(controls.values())

    def make_grid(request: gr.Request, prompt_text="", x_knob=None, x_text="", y_knob=None, y_text="", model_id=None,
                  *knob_values):
        """Stream the grid's table; at the end save its cells (JSON + CSV) for download."""
        with user_errors():
            base = studio.params("text", model_id, **dict(zip(names, knob_values)))
            use_y = bool(y_knob) and y_knob != NONE
            plan, stream = studio.text_grid_stream(prompt_text, base, x_knob, axis_values(x_text),
                                                   y_knob if use_y else None, axis_values(y_text) if use_y else None,
                                                   model_id, stop=sessions.fresh_stop(request))
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
            paths = keep_or_cache(lambda: [str(p) for p in studio.save_text_grid(plan, grid.text_cells(plan, update.columns))],
                                  lambda: None, note="The grid shows; its export was not written.")
            yield "", shown, paths

    def values_for(knob, model_id, *knob_values):
        if knob == NONE:
            return ""
        with user_errors():
            return sweep_values(studio.params("text", model_id, **dict(zip(names, knob_values))), knob)

    make_event = parts["make"].click(lambda: busy(), outputs=parts["make"], queue=False, api_visibility="private").then(
        make_grid, inputs=[prompt, parts["x_knob"], parts["x_values"], parts["y_knob"], parts["y_values"], model,
                           *inputs],
        outputs=[parts["status"], parts["table"], parts["files"]], api_visibility="private", concurrency_id="text")
    for done in (make_event.then, make_event.failure):
        done(lambda: (ready("Make grid"), ""), outputs=[parts["make"], parts["status"]], queue=False,
             api_visibility="private")
    parts["x_knob"].input(values_for, [parts["x_knob"], model, *inputs], parts["x_values"], api_visibility="private")
    parts["y_knob"].input(values_for, [parts["y_knob"], model, *inputs], parts["y_values"], api_visibility="private")
    # change, not input: a restore (History) sets the model too, and the pickers follow it
    model.change(lambda m, x, y: picker_updates(studio, m, x, y), [model, parts["x_knob"], parts["y_knob"]],
                 [parts["x_knob"], parts["y_knob"]], api_visibility="private", queue=False)
    return make_event


def picker_updates(studio: Studio, model: str | None, x: str | None, y: str | None) -> tuple:
    """(X picker, Y picker) updates for a model: its own knobs, the chosen ones kept
    where it reads them."""
    with user_errors():
        axes = grid_axes(studio, model)
    choices = knob_choices_for(axes)
    return (gr.update(choices=choices, value=x if x in axes else axes[0]),
            gr.update(choices=[(NONE, NONE), *choices], value=y if y in axes else NONE))
