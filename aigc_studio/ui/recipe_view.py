"""Recipes for people: the model card, the recipe card (label, model, seed, time, knobs) and
the recipe JSON beside it."""

from __future__ import annotations

import html

import gradio as gr

from aigc_studio.studio import Recipe
from aigc_studio.ui.knob_controls import CHOICE_LABELS, knob_label

def model_card(spec) -> str:
    size = f" · {spec.size_mb} MB" if spec.size_mb else ""
    return f"**{spec.id}** ({spec.source}) · license: {spec.license}{size} — {spec.description}"


# ----- the recipe card --------------------------------------------------------------------

def _knob_text(name: str, value) -> str:
    if isinstance(value, bool):
        return f"{knob_label(name)} {'on' if value else 'off'}"
    if isinstance(value, (list, tuple)):  # image to image: the start picture's size
        return f"{knob_label(name)} **{'×'.join(str(v) for v in value)}**"
    if name.endswith("_sha256") and isinstance(value, str):  # the full digest is in the JSON below
        return f"{knob_label(name)} `{value[:12]}…`"
    if isinstance(value, str) and value in CHOICE_LABELS:
        return f"{knob_label(name)} **{CHOICE_LABELS[value]}**"
    if isinstance(value, str):
        return f"{knob_label(name)} “{html.escape(value)}”" if value else ""
    return f"{knob_label(name)} **{value:g}**"


def recipe_card(recipes: list) -> str:
    """Recipes for people: per result its label, model, seed and time, then the knobs
    it used in one line (empty texts left out). The full JSON sits collapsed below."""
    cards = []
    for recipe in recipes:
        recipe = recipe if isinstance(recipe, Recipe) else Recipe(**recipe)
        params = dict(recipe.params)
        seed = params.pop("seed", None)
        head = f"**{html.escape(recipe.label)}** · " if recipe.label else ""
        head += f"`{recipe.model_id}` · seed **{seed}** · {recipe.elapsed_s:.1f} s on {recipe.device}"
        if recipe.runtime:
            head += f" ({recipe.runtime})"
        shown_knobs = " · ".join(t for t in (_knob_text(n, v) for n, v in params.items()) if t)
        cards.append(f"{head}  \n{shown_knobs}")
    return "\n\n".join(cards)


def recipe_json(recipes: list) -> list[dict]:
    return [r.__dict__ if isinstance(r, Recipe) else r for r in recipes]


def recipe_view(label: str = "Recipe") -> tuple[gr.Markdown, gr.JSON]:
    """A readable recipe card and, collapsed, the recipe JSON."""
    card = gr.Markdown(elem_classes=["studio-recipe"])
    with gr.Accordion(f"{label} as JSON", open=False):
        raw = gr.JSON(show_label=False)
    return card, raw
