"""Checks of the inputs that are not knobs (text fields, the model id, the side-by-side mode,
count and swept knob, a grid's axes), written once for the actions, the typed API and the
CLI. Knobs are checked by params.validate. Each refusal names the field, as the API's
callers match on "field: ..."."""

from __future__ import annotations

from typing import Any

from aigc_studio import params as knobs
from aigc_studio.actions.variants import SEEDS, SWEEP

NO_AXIS = "none"  # a grid's absent Y axis: one row


def text_input(name: str, value: Any, default: str = "") -> str:
    """value as text (None: default); anything else is refused naming the field."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise knobs.ParamError(name, f"must be text, got {type(value).__name__}")
    return value


def model_input(value: Any) -> str | None:
    """A catalog id or None (the preset's model); the Studio refuses an unknown id."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise knobs.ParamError("model", f"must be a model id (text), got {type(value).__name__}")
    return value


def choice_input(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """One of `allowed` (None: the first)."""
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise knobs.ParamError(name, f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def mode_input(value: Any, extra: tuple[str, ...] = ()) -> str:
    """The side-by-side mode: Different seeds (None), Sweep one knob, or one of `extra`."""
    return choice_input("mode", value, (SEEDS, SWEEP, *extra))


def count_input(value: Any) -> int:
    """2-4 variants (None: 3)."""
    count = knobs.whole_number("count", value, 3)
    if not 2 <= count <= 4:
        raise knobs.ParamError("count", f"must be a number in [2, 4], got {value!r}")
    return count


def top_n_input(value: Any) -> int:
    """How many candidates an explainer lists: 1-50 (None: 10)."""
    top_n = knobs.whole_number("top_n", value, 10)
    if not 1 <= top_n <= 50:
        raise knobs.ParamError("top_n", f"must be a number in [1, 50], got {top_n}")
    return top_n


def knob_name_input(name: str, value: Any, params_type: type, default: str) -> str:
    """A knob of params_type that can be swept (None: default); whether the model reads it is
    the Studio's check (variants.check_sweep)."""
    sweepable = knobs.sweepable(params_type)
    if value is None:
        return default
    if not isinstance(value, str) or value not in sweepable:
        raise knobs.ParamError(name, f"must be one of {', '.join(sweepable)}, got {value!r}")
    return value


def axes_input(x_knob: Any, y_knob: Any, default_x: str) -> tuple[str, str | None]:
    """(x knob, y knob or None for one row): names only; the Studio refuses those the model
    does not read."""
    x_knob = default_x if x_knob is None else x_knob
    if not isinstance(x_knob, str) or not x_knob:
        raise knobs.ParamError("x_knob", f"must be a knob name, got {x_knob!r}")
    if y_knob is not None and not isinstance(y_knob, str):
        raise knobs.ParamError("y_knob", f"must be a knob name or none, got {y_knob!r}")
    return x_knob, (None if y_knob in (None, "", NO_AXIS) else y_knob)
