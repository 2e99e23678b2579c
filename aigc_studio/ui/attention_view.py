"""Text tab, "Inside the model": the attention view and the logit lens.

A head view (select a token: shading shows how much it attends to each earlier token, for
one layer and head or the average of the heads), that layer and head's whole causal matrix,
a layer x head grid of small heat maps, and the logit lens (each layer's top 5 next tokens).
Every picture comes from Studio.attention / attention_overview, which run the model once per
prompt + answer; selecting a token, a layer or a head reads that pass again.

The view and the explainer meet at one position: the explainer's answer token k was chosen
at the token before it (context index prompt_tokens + k - 1), whose lens's last layer is the
explainer's raw column. "Show attention" goes from the explainer to that token; "Explain the
next token" goes back.
"""

from __future__ import annotations

import functools
import html

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from aigc_studio.actions import text as text_actions
from aigc_studio.studio import Studio
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.page import error_box

AVERAGE = "average of heads"
SELECTED = "selected token"
WEIGHT_BINS = ((0.3, "≥ 30%"), (0.1, "10–30%"), (0.03, "3–10%"), (0.01, "1–3%"))  # below 1%: unshaded
COLOR_MAP = {SELECTED: "#fca5a5", "≥ 30%": "#4338ca", "10–30%": "#818cf8", "3–10%": "#c7d2fe", "1–3%": "#e0e7ff"}
INK = np.array((67, 56, 202), dtype=np.float32)  # the backend's heat-map colour (inside.INK)
LENS_NOTE = ("**Logit lens**: each layer's output put through the model's final norm and output head, as if the "
             "model stopped there: what that layer \"thinks\" comes next. The last layer equals the model's own "
             "next-token distribution (the explainer's *raw* column).")


# ----- pure helpers: a view dict -> what the components show (tested without a browser) -----

def token_label(token: dict) -> str:
    """A token's text as the head view shows it: spaces and line breaks visible, the chat
    template's own tokens in ⟨ ⟩."""
    text = token["text"].replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"
    return f"⟨{text}⟩" if token["kind"] == "template" else text


def head_row(view: dict, layer: int, head: int | None) -> list[float]:
    """What the view's position attends to in layer, head (None: the mean of the heads)."""
    rows = view["weights"][layer]
    if head is not None:
        return rows[head]
    return [sum(column) / len(rows) for column in zip(*rows)]


def weight_label(weight: float) -> str | None:
    return next((label for low, label in WEIGHT_BINS if weight >= low), None)


def head_view_pairs(view: dict, layer: int, head: int | None) -> list[tuple[str, str | None]]:
    """(text, category) per context token for gr.HighlightedText: the selected token, and
    every other token shaded by how much the selected one attends to it."""
    row = head_row(view, layer, head)
    return [(token_label(t), SELECTED if t["index"] == view["position"] else weight_label(w))
            for t, w in zip(view["tokens"], row)]


def head_name(head: int | None) -> str:
    return AVERAGE if head is None else f"head {head}"


def summary_markdown(view: dict, layer: int, head: int | None, top: int = 5) -> str:
    """The selected token, what it attends to most, and where the explainer takes over."""
    position = view["position"]
    token = view["tokens"][position]
    row = head_row(view, layer, head)
    best = sorted(range(position + 1), key=lambda i: -row[i])[:top]
    listed = ", ".join(f"`{token_label(view['tokens'][i])}` ({i}) {100 * row[i]:.1f}%" for i in best)
    explain = view["explain_position"]
    follows = (f" Its next token is answer token {explain}: **Explain the next token** shows how it was chosen."
               if explain is not None else " It is inside the prompt: the explainer starts at the prompt's last token.")
    return (f"**Token {position}: `{token_label(token)}`** ({token['kind']}) · layer {layer} · {head_name(head)} · "
            f"attends most to {listed}.{follows}")


def lens_html(view: dict) -> str:
    """The logit lens as a table: a row per layer (the last one is the model's output), its
    top tokens with their probabilities, shaded by probability."""
    rows = []
    for entry in view["lens"]:
        last = entry["layer"] == view["layers"] - 1
        name = f"{entry['layer']}" + (" · the model's output" if last else "")
        cells = "".join(
            f'<td style="padding:1px 6px;background:rgba(67,56,202,{0.08 + 0.6 * p:.2f})">'
            f'<code>{html.escape(token_label({"text": text, "kind": "answer"}))}</code> {100 * p:.1f}%</td>'
            for text, p in zip(entry["tokens"], entry["probs"]))
        style = "font-weight:bold;border-top:2px solid #4338ca" if last else ""
        rows.append(f'<tr style="{style}"><td style="padding:1px 6px">{name}</td>{cells}</tr>')
    token = view["tokens"][view["position"]]
    return (f'<div style="overflow-x:auto"><p>Next token after token {view["position"]} '
            f'<code>{html.escape(token_label(token))}</code>, layer by layer</p>'
            f'<table style="border-collapse:collapse;font-size:0.85em"><tr><th>layer</th>'
            f'<th colspan="5" style="text-align:left">top 5 next tokens</th></tr>{"".join(rows)}</table></div>')


def matrix_picture(matrix: list[list[float]], position: int, size: int = 360) -> Image.Image:
    """A causal matrix (rows: query tokens, columns: the tokens they attend to) as a heat map,
    square-rooted so that weights of a few % show, the selected token's row framed in red."""
    weights = np.sqrt(np.clip(np.asarray(matrix, dtype=np.float32), 0.0, 1.0))
    pixels = (255 - weights[..., None] * (255 - INK)).round().astype(np.uint8)
    count = weights.shape[0]
    picture = Image.fromarray(pixels, "RGB").resize((size, size), Image.NEAREST if count <= size else Image.BOX)
    top, bottom = position * size / count, (position + 1) * size / count
    ImageDraw.Draw(picture).rectangle((0, top - 1, size - 1, bottom), outline=(220, 38, 38), width=2)
    return picture


def head_choice(value) -> int | None:
    """The head picker's value as a head index (None: the average)."""
    return None if value in (None, "", AVERAGE) else int(str(value).removeprefix("head "))


def query_for_answer_token(prompt_tokens: int, k: int, count: int) -> int:
    """The context index whose attention chose answer token k (the token before it); k = -1:
    the last token."""
    return count - 1 if k == -1 else max(0, min(count - 1, prompt_tokens + k - 1))


# ----- the section ------------------------------------------------------------------------------

class View:
    """The attention section's components, for text_tab to wire to its own (the explainer)."""

    def __init__(self):
        gr.Markdown("Every token looks back at the earlier ones through each layer's attention heads. "
                    "**Show attention** reads the prompt and answer above once (the model's eager attention, on "
                    "torch: the fast ONNX runtime has no weights); then select a token to see what it attends to. "
                    "⟨ ⟩ marks the chat template's tokens.")
        with gr.Row():
            self.layer = gr.Slider(0, 1, value=0, step=1, label="layer", elem_id="text-attention-layer",
                                   info="0 = next to the input; the last is next to the output.")
            self.head = gr.Dropdown([AVERAGE], value=AVERAGE, label="head", elem_id="text-attention-head")
            with gr.Column(min_width=160):
                self.show = gr.Button("Show attention", elem_id="text-attention-show")
                self.back = gr.Button("Explain the next token", elem_id="text-attention-explain", size="sm")
        error_box("text-attention-show")
        self.tokens = gr.HighlightedText(label="Head view: select a token; shading = how much it attends to each token",
                                         color_map=COLOR_MAP, show_legend=True, show_inline_category=False,
                                         elem_id="text-attention-tokens")
        self.summary = gr.Markdown(elem_id="text-attention-summary")
        with gr.Row():
            self.matrix = gr.Image(label="Causal matrix: each row attends to columns (red: the token)",
                                   type="pil", height=360, interactive=False, elem_id="text-attention-matrix")
            with gr.Column():
                gr.Markdown(LENS_NOTE)
                self.lens = gr.HTML(elem_id="text-lens")
        with gr.Accordion("Every layer and head at once (columns: layers, rows: heads)", open=False):
            self.overview = gr.Image(type="pil", show_label=False, interactive=False, elem_id="text-attention-overview")
        self.state = gr.State(None)  # {"request": the context's arguments, "view": the last view dict}

    @property
    def outputs(self) -> list:
        return [self.state, self.tokens, self.summary, self.matrix, self.lens, self.layer, self.head, self.overview]


def shown(studio: Studio, request: dict, position: int | None, layer: int | None, head: int | None) -> tuple:
    """Read the view at position, layer, head (the context's pass is cached) and fill the section."""
    view = studio.attention(**request, position=position, layer=layer, head=head)
    picture = studio.attention_overview(**request, layer=view["layer"], head=view["head"])
    layer, head = view["layer"], view["head"]
    return ({"request": request, "view": {k: v for k, v in view.items() if k != "matrix"}},
            head_view_pairs(view, layer, head), summary_markdown(view, layer, head),
            matrix_picture(view["matrix"], view["position"]), lens_html(view),
            gr.update(maximum=view["layers"] - 1, value=layer),
            gr.update(choices=[AVERAGE, *(head_name(h) for h in range(view["heads"]))], value=head_name(head)),
            picture)


def show_attention(studio: Studio, request: dict, explain_position, layer, head, state) -> tuple:
    """The section for a new context, at the token that chose the explainer's answer token."""
    with user_errors():
        same_model = state is not None and state["request"].get("model") == request.get("model")
        layer = int(layer) if same_model and layer is not None and layer < state["view"]["layers"] else None
        head = head_choice(head) if same_model else None
        first = studio.attention(**request, layer=layer, head=head)  # runs the model once; the next call reads it
        k = int(explain_position) if explain_position not in (None, "") else -1
        position = query_for_answer_token(first["prompt_tokens"], k, len(first["tokens"]))
        return shown(studio, request, position, layer, head)


def move(studio: Studio, state, position, layer, head) -> tuple:
    """Another token, layer or head of the context on show (no model run)."""
    if not state:
        return (gr.skip(),) * 8
    with user_errors():
        position = state["view"]["position"] if position is None else position
        return shown(studio, state["request"], position, int(layer), head_choice(head))


def select_token(studio: Studio, state, layer, head, evt: gr.SelectData) -> tuple:
    if not state or evt.index is None:
        return (gr.skip(),) * 8
    index = evt.index if isinstance(evt.index, int) else evt.index[0]
    return move(studio, state, index, layer, head)


def explain_position(state):
    """The explainer position of the token after the selected one (the way back)."""
    if not state:
        raise gr.Error("Show attention first.")
    position = state["view"]["explain_position"]
    if position is None:
        raise gr.Error("The selected token is inside the prompt: the explainer starts at the prompt's last token.")
    return position


def context(studio: Studio, prompt, answer, answer_state, system_prompt, prompt_mode, model) -> dict:
    """The arguments of Studio.attention for the tab's prompt and answer (the generated ids when
    the answer is the one generated)."""
    params = studio.params("text", model, system_prompt=system_prompt, prompt_mode=prompt_mode)
    return {"prompt": prompt, "params": params, "model": model or None,
            "answer": text_actions.answer_ids(answer, answer_state)}


def show(studio: Studio, prompt, answer, answer_state, explain_at, layer, head, system_prompt, prompt_mode, model,
         state) -> tuple:
    """Show attention: the section for the tab's prompt and answer, at the explainer's token."""
    with user_errors():
        request = context(studio, prompt, answer, answer_state, system_prompt, prompt_mode, model)
    return show_attention(studio, request, explain_at, layer, head, state)


def follow(studio: Studio, state, prompt, answer, answer_state, explain_at, layer, head, system_prompt, prompt_mode,
           model) -> tuple:
    """An answer token was selected: the view on show follows it, if it shows this answer."""
    if not state or explain_at is None:
        return (gr.skip(),) * 8
    with user_errors():
        request = context(studio, prompt, answer, answer_state, system_prompt, prompt_mode, model)
    if request != state["request"]:
        return (gr.skip(),) * 8
    view = state["view"]
    position = query_for_answer_token(view["prompt_tokens"], int(explain_at), len(view["tokens"]))
    return move(studio, state, position, layer, head)


def again(studio: Studio, state, layer, head) -> tuple:
    """Another layer or head of the token on show."""
    return move(studio, state, None, layer, head)


def wire(view: View, studio: Studio, prompt, answer, answer_state, explainer_position, system_prompt, prompt_mode,
         model):
    """Wire the section to the tab's prompt, answer and knobs; returns the "Explain the next token"
    event, which has set the explainer's position (the tab chains its explainer to it), and
    (handler, inputs, outputs) for the tab to make the view follow a selected answer token."""

    def pick(state, layer, head, evt: gr.SelectData):  # functools.partial would hide gr.SelectData from Gradio
        return select_token(studio, state, layer, head, evt)

    view.show.click(functools.partial(show, studio),
                    inputs=[prompt, answer, answer_state, explainer_position, view.layer, view.head,
                            system_prompt, prompt_mode, model, view.state],
                    outputs=view.outputs, api_visibility="private", concurrency_id="text")  # public: ui/text_api.py
    view.tokens.select(pick, inputs=[view.state, view.layer, view.head], outputs=view.outputs,
                       api_visibility="private")
    gr.on([view.layer.release, view.head.input], functools.partial(again, studio),
          inputs=[view.state, view.layer, view.head], outputs=view.outputs, api_visibility="private")
    follow_inputs = [view.state, prompt, answer, answer_state, explainer_position, view.layer, view.head,
                     system_prompt, prompt_mode, model]
    return view.back.click(explain_position, inputs=view.state, outputs=explainer_position,
                           api_visibility="private"), (functools.partial(follow, studio), follow_inputs, view.outputs)
