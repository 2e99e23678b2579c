"""Knob controls built from the knob dataclasses (params.py): one control per field, with
its range, tooltip and the chosen model's recommendation, and the side-by-side pickers."""

from __future__ import annotations

import dataclasses
import functools
import re

import gradio as gr

from aigc_studio import params as knobs
from aigc_studio.studio import PARAMS_TYPES, Studio
from aigc_studio.actions.checks import NO_AXIS
from aigc_studio.actions.variants import SEEDS, SWEEP, sweep_names
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.components import KnobDropdown, KnobNumber, KnobRadio, KnobSlider, SweepDropdown

# Names people read; the API keeps the knobs' own names (the values behind these labels).
LABELS = {"top_k": "top-k", "top_p": "top-p", "min_p": "min-p", "typical_p": "typical-p",
          "max_new_tokens": "max new tokens", "no_repeat_ngram_size": "no-repeat n-gram size",
          "noise_w": "noise w (rhythm)", "gain_db": "gain (dB)", "duration": "duration (s)",
          "sentence_silence": "sentence silence (s)", "negative_prompt": "negative prompt"}


CHOICE_LABELS = {"default": "model default", "ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM-Solver++",
                 "euler": "Euler", "euler_a": "Euler ancestral", "lcm": "LCM"}


# Help text that names models ("(SD-Turbo wants 0)", "Music: ...") is left out of the
# tooltip; the chosen model's own recommendation is said instead.
_MODEL_NOTE = re.compile(r"\s*\([^()]*(?:shapes model|SD-Turbo|Piper|MMS-TTS|MusicGen|Bark)[^()]*\)|"
                         r"^(?:Speech|Music|Bark|VAE|GAN)(?: \([^)]*\))?: ")


def knob_label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def knob_choices(names) -> list[tuple[str, str]]:
    return [(CHOICE_LABELS.get(n, n), n) for n in names]


def knob_help(params_type: type, name: str, recommended=None) -> str:
    text = _MODEL_NOTE.sub("", knobs.spec(params_type, name)["help"])
    text = text[:1].upper() + text[1:]
    if recommended is not None:
        text += f" This model recommends {CHOICE_LABELS.get(recommended, recommended)}."
    return text


def suggested_range(name: str, meta: dict, recommended) -> tuple:
    """The slider's range for a model, from its recommended value: a turbo model's
    steps go to 8 (not 150), a 256 px model's size to 512 (not 1536). Typed values
    are still checked against the knob's own range."""
    low, high = meta["low"], meta["high"]
    if recommended is None or isinstance(recommended, bool):
        return low, high
    if name == "steps" and recommended <= 8:
        return low, min(high, 8 if recommended <= 4 else 16)
    if name in ("width", "height"):
        return low, min(high, max(512, 2 * recommended))
    return low, high


def control(params_type: type, name: str, value=None, choices=None, **kwargs) -> gr.components.Component:
    """A slider, checkbox, dropdown or number for one knob, with its range and tooltip
    (value: the model's recommendation; choices: the ones the model takes)."""
    meta = knobs.spec(params_type, name)
    default = meta["default"] if value is None else value
    label = kwargs.pop("label", knob_label(name))
    info = kwargs.pop("info", knob_help(params_type, name, value))
    if isinstance(meta["default"], bool):
        return gr.Checkbox(value=default, label=label, info=info, **kwargs)
    if meta["choices"]:
        return KnobDropdown(knob_choices(choices or meta["choices"]), value=default, label=label, info=info,
                            knob_name=name, **kwargs)
    if isinstance(meta["default"], str):
        return gr.Textbox(value=default, label=label, info=info, **kwargs)
    if name == "seed":
        return KnobNumber(value=default, label=label, info=info, precision=0,
                          minimum=meta["low"], maximum=meta["high"], knob_name=name, **kwargs)
    step = 1 if isinstance(meta["default"], int) else 0.01
    if name in ("width", "height"):
        step = 8
    low, high = suggested_range(name, meta, value)
    return KnobSlider(low, high, value=default, step=step, label=label, info=info, knob_name=name,
                      knob_range=(meta["low"], meta["high"]), **kwargs)


def knob_controls(params_type: type, names=None, recommended: dict | None = None, used=None, prefix: str = "",
                  **kwargs) -> dict[str, gr.components.Component]:
    """One control per knob, keyed by field name: every field of params_type in its order (or
    `names`), at the model's `recommended` values, shown when `used` lists it (None: all),
    with elem_id "<prefix>-<name>" when a prefix is given. Adding a field to the dataclass
    adds its control."""
    names = [f.name for f in dataclasses.fields(params_type)] if names is None else list(names)
    recommended = recommended or {}
    controls = {}
    for name in names:
        extra = dict(kwargs)
        if prefix:
            extra["elem_id"] = f"{prefix}-{name}"
        if used is not None:
            extra["visible"] = name in used
        controls[name] = control(params_type, name, recommended.get(name), **extra)
    return controls


def knob_updates(studio: Studio, modality: str, model: str | None, controls: dict) -> list:
    """gr.update per control (in controls' order) for a newly chosen model: shown only
    when the model reads the knob, at its recommended value, range and tooltip."""
    params_type = type(studio.params(modality, model))
    spec = studio.model_spec(modality, model)
    used = studio.knobs_used(modality, model)
    updates = []
    for name, component in controls.items():
        recommended = spec.defaults.get(name)
        update = {"visible": name in used, "info": knob_help(params_type, name, recommended)}
        if recommended is not None:
            update["value"] = recommended
        if isinstance(component, KnobSlider):
            update["minimum"], update["maximum"] = suggested_range(name, knobs.spec(params_type, name), recommended)
            if recommended is None:  # keep the value, within the new range
                update["value"] = None
        if isinstance(component, KnobDropdown) and name == "scheduler" and spec.schedulers:
            update["choices"] = knob_choices(spec.schedulers)
        updates.append(gr.update(**{k: v for k, v in update.items() if not (k == "value" and v is None)}))
    return updates


def sweep_values(params, name: str) -> str:
    """Sensible values to sweep a knob over, around its current value: half, as is,
    double (within range); both states of a switch; three choices; three seeds."""
    meta = knobs.spec(type(params), name)
    current = getattr(params, name)
    if meta["choices"]:
        return ", ".join(meta["choices"][:3])
    if isinstance(meta["default"], bool):
        return "false, true"
    if name == "seed":
        return "1, 2, 3"
    low, high = meta["low"], meta["high"]
    if current == 0 or current is None:
        values = [low + (high - low) * f for f in (0.1, 0.25, 0.5)] if low >= 0 else [-6, 0, 6]
    else:
        values = [current / 2, current, current * 2]
    values = sorted({min(max(v, low), high) for v in values})
    if isinstance(meta["default"], int) and not isinstance(meta["default"], bool):
        values = sorted({int(round(v)) for v in values})
        if name in ("width", "height"):
            values = sorted({max(16, v // 8 * 8) for v in values})
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@dataclasses.dataclass
class VariantControls:
    """Side by side's controls: the mode, how many seeds, the knob to sweep and its values."""

    mode: gr.Radio
    count: gr.Slider
    knob_name: gr.Dropdown
    values: gr.Textbox

    def inputs(self) -> list:
        """The four, in the order the compare handlers take them."""
        return [self.mode, self.count, self.knob_name, self.values]


def variant_controls(params_type: type, used, tab: str, extra_modes: tuple[str, ...] = (),
                     info: str = "What differs between the columns.") -> VariantControls:
    """Controls for 2-4 variants side by side: seeds, or one of the model's knobs swept
    over values (plus extra_modes). "How many" shows in seeds mode, the knob and its
    values in sweep mode. Their elem_ids start with `tab` ("image-variants-mode", ...)."""
    names = sweep_names(params_type, used)
    with gr.Row():
        # API users see these names in error messages: they are the endpoints' keywords.
        mode = KnobRadio([SEEDS, SWEEP, *extra_modes], value=SEEDS, label="Variants", info=info, knob_name="mode",
                         elem_id=f"{tab}-variants-mode")
        count = KnobSlider(2, 4, value=3, step=1, label="How many (seeds)", knob_name="count")
        knob_name = SweepDropdown(knob_choices_for(names), value=names[0], label="Knob to sweep", visible=False,
                                  knob_name="knob_name", elem_id=f"{tab}-sweep-knob")
        values = gr.Textbox(value="0.3, 0.8, 1.4", label="Values (2-4, comma-separated)", visible=False,
                            elem_id=f"{tab}-sweep-values")
    mode.change(lambda m: (gr.update(visible=m == SEEDS), gr.update(visible=m == SWEEP), gr.update(visible=m == SWEEP)),
                mode, [count, knob_name, values], api_visibility="private", queue=False)
    return VariantControls(mode, count, knob_name, values)


def knob_choices_for(names) -> list[tuple[str, str]]:
    return [(knob_label(n), n) for n in names]


def sweep_updates(studio: Studio, modality: str, model: str | None, current: str | None = None) -> tuple:
    """(picker update, values update) for a model: its sweepable knobs, the current
    one kept when the model reads it, and values to sweep it over."""
    params = studio.params(modality, model)
    names = sweep_names(type(params), studio.knobs_used(modality, model))
    chosen = current if current in names else names[0]
    return gr.update(choices=knob_choices_for(names), value=chosen), sweep_values(params, chosen)


def column_updates(labels: list[str], slots: int, clear: bool) -> list:
    """Show one labelled column per variant and hide the rest; clear empties them
    before a compare runs."""
    values = {"value": None} if clear else {}
    shown = [gr.update(label=label, visible=True, **values) for label in labels]
    return shown + [gr.update(visible=False, **values)] * (slots - len(labels))


@dataclasses.dataclass
class GridPickers:
    """A grid's axis pickers: the X and Y knob and their comma-separated values."""

    x_knob: SweepDropdown
    x_values: gr.Textbox
    y_knob: SweepDropdown
    y_values: gr.Textbox


def grid_pickers(params_type: type, used, tab: str, x_default: str, x_values: str = "", y_default: str = NO_AXIS,
                 y_values: str = "", extra_axes: tuple[str, ...] = (), what: str = "knob",
                 most_cells: int | None = 16) -> GridPickers:
    """The X/Y knob pickers of a tab's grid, in one row: the model's sweepable knobs (and
    extra_axes, e.g. "model") on X, the same or none on Y. Every knob of the dataclass is
    accepted (the model changes; the handler refuses those the model does not read). elem_ids:
    "<tab>-grid-x-knob", "<tab>-grid-x-values", "<tab>-grid-y-knob", "<tab>-grid-y-values".
    most_cells: the grid's cap, said in the Y picker's help (None: no cap to say)."""
    axes = [*sweep_names(params_type, used), *extra_axes]
    every_axis = (*sweep_names(params_type, [f.name for f in dataclasses.fields(params_type)]), *extra_axes)
    with gr.Row():
        x_knob = SweepDropdown(knob_choices_for(axes), value=x_default if x_default in axes else axes[0],
                               label="X knob", info=f"The {what} that varies across columns (the seed stays fixed "
                                                    "unless it is an axis).",
                               knob_name="x_knob", sweepable=every_axis, elem_id=f"{tab}-grid-x-knob")
        x_box = gr.Textbox(value=x_values, label="X values (1-6, comma-separated)", elem_id=f"{tab}-grid-x-values")
        y_knob = SweepDropdown([(NO_AXIS, NO_AXIS), *knob_choices_for(axes)],
                               value=y_default if y_default in axes else NO_AXIS, label="Y knob",
                               info=f"The {what} that varies down rows (none: one row)."
                                    + (f" At most {most_cells} cells." if most_cells else ""),
                               knob_name="y_knob", sweepable=(NO_AXIS, *every_axis), elem_id=f"{tab}-grid-y-knob")
        y_box = gr.Textbox(value=y_values, label="Y values", elem_id=f"{tab}-grid-y-values")
    return GridPickers(x_knob, x_box, y_knob, y_box)


def grid_axis_values(studio: Studio, modality: str, knob: str, model: str | None, *knob_values) -> str:
    """Values for a grid axis whose knob was just picked, around the knob's current value
    (knob_values: every knob control's value, in the dataclass's order); none for no axis."""
    if knob == NO_AXIS:
        return ""
    names = (f.name for f in dataclasses.fields(PARAMS_TYPES[modality]))
    with user_errors():
        return sweep_values(studio.params(modality, model, **dict(zip(names, knob_values))), knob)


def grid_picker_updates(studio: Studio, modality: str, model: str | None, x: str | None, y: str | None) -> tuple:
    """(X picker, Y picker) updates for a newly chosen model: the knobs it reads, the picked
    ones kept where it reads them."""
    with user_errors():
        axes = sweep_names(PARAMS_TYPES[modality], studio.knobs_used(modality, model))
    choices = knob_choices_for(axes)
    return (gr.update(choices=choices, value=x if x in axes else axes[0]),
            gr.update(choices=[(NO_AXIS, NO_AXIS), *choices], value=y if y in axes else NO_AXIS))


def wire_grid_pickers(pickers: GridPickers, studio: Studio, modality: str, model, knob_inputs: list) -> None:
    """A grid's picker events: a picked knob fills its values box; a model change (a pick, or a
    restore from History) offers that model's knobs."""
    for knob, values in ((pickers.x_knob, pickers.x_values), (pickers.y_knob, pickers.y_values)):
        knob.input(functools.partial(grid_axis_values, studio, modality), [knob, model, *knob_inputs], values,
                   api_visibility="private")
    model.change(functools.partial(grid_picker_updates, studio, modality), [model, pickers.x_knob, pickers.y_knob],
                 [pickers.x_knob, pickers.y_knob], api_visibility="private", queue=False)
