"""Variants side by side and sweeps: 2-4 copies of one set of knobs that differ in their
seed or in one knob, checked against what the model reads. Gradio-free: the tabs, the
typed API and the CLI share it."""

from __future__ import annotations

from aigc_studio import params as knobs
from aigc_studio.studio import Studio

SEEDS, SWEEP = "Different seeds", "Sweep one knob"


def sweep_names(params_type: type, used) -> list[str]:
    """The knobs a model reads that side by side can sweep, in the model's order."""
    sweepable = knobs.sweepable(params_type)
    return [name for name in used if name in sweepable]


def check_sweep(studio: Studio, modality: str, model: str | None, mode: str, knob_name: str) -> None:
    """Refuse to sweep a knob the model does not read, naming the ones it does."""
    if mode != SWEEP:
        return
    names = sweep_names(type(studio.params(modality, model)), studio.knobs_used(modality, model))
    if knob_name not in names:
        raise knobs.ParamError("knob_name", f"{studio.model_spec(modality, model).id} does not use {knob_name}; "
                                            f"sweep one of {', '.join(names)}")


def make_variants(base, mode: str, count: int, knob_name: str, values: str) -> list[tuple[str, object]]:
    if mode == SWEEP:
        return knobs.variants(base, knob_name, knobs.parse_values(values, type(base), knob_name))
    return knobs.seed_variants(base, int(count))


def variant_labels(base, mode: str, count: int, knob_name: str, values: str) -> list[str]:
    """Column labels known before generating; a random seed is only known after."""
    if mode == SEEDS and base.seed < 0:
        return [f"random seed {i + 1}" for i in range(int(count))]
    return [label for label, _ in make_variants(base, mode, count, knob_name, values)]
