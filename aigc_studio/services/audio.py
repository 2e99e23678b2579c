"""Audio: speech and music, variants side by side, X/Y grids of audio, and the chorale
model's notes (MIDI, the note explainer).

The module-level functions taking a runtime first are tasks (runtime.run sends them where
models run); `AudioService` holds what the Studio's audio methods do around them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

from aigc_studio import audio_views, grid
from aigc_studio import params as knobs
from aigc_studio import recipe as recipes
from aigc_studio.catalog import ModelSpec
from aigc_studio.engines import audio as audio_engine
from aigc_studio.params import AudioParams
from aigc_studio.recipe import Result
from aigc_studio.services.runtime import Runtime


# ----- tasks ---------------------------------------------------------------------------------------

def speak(runtime: Runtime, prompt: str, model: str | None, params: AudioParams, label: str,
          on_step: Callable[[int, int], None] | None, stop: threading.Event | None) -> Result:
    """Speech (or music) for prompt with these knobs, its seed drawn if it is -1 (Studio.audio)."""
    prompt = knobs.check_prompt(prompt)
    spec = runtime.model_spec("audio", model)
    chosen = knobs.resolve_seed(knobs.validate(params))
    started = time.perf_counter()
    with runtime.use(spec) as audio_model:
        output = audio_engine.generate(audio_model, prompt, chosen, on_step, stop)
    return Result(output, runtime.recipe(spec, prompt, chosen, label, started))


def compose(runtime: Runtime, spec: ModelSpec, chosen: AudioParams):
    """The piece a chorale model composes for these knobs (music.compose)."""
    from aigc_studio import music

    with runtime.use(spec) as loaded:
        return music.compose(loaded, chosen)


def explain_note(runtime: Runtime, spec: ModelSpec, piece, position: int, chosen: AudioParams, top_n: int):
    """Why grid token `position` of piece is what it is (music.explain)."""
    from aigc_studio import music

    with runtime.use(spec) as loaded:
        return music.explain(loaded, piece, position, chosen, top_n)


# ----- the service ---------------------------------------------------------------------------------

class AudioService:
    """The Studio's audio operations; model work goes through runtime.run."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def audio(self, prompt: str, model: str | None, label: str, params: AudioParams | None, on_step,
              stop: threading.Event | None, values: dict[str, Any]) -> Result:
        prompt = knobs.check_prompt(prompt)
        spec = self.runtime.model_spec("audio", model)
        chosen = knobs.resolve_seed(knobs.validate(params) if params else self.runtime.params("audio", spec.id, **values))
        return self.runtime.run(speak, prompt, spec.id, chosen, label, on_step, stop)

    def variants(self, prompt: str, variants: list[tuple[str, AudioParams]], model: str | None,
                 match_loudness: bool, stop: threading.Event | None) -> list[Result]:
        used = self.runtime.knobs_used("audio", model)
        swept = {name for _, p in variants for name, value in dataclasses.asdict(p).items()
                 if value != getattr(variants[0][1], name)}
        ignored = sorted(swept - set(used))
        if ignored:
            raise knobs.ParamError("knob_name", f"{self.runtime.model_spec('audio', model).id} does not use "
                                                f"{', '.join(ignored)}; sweep one of {', '.join(used)}")
        results = [self.audio(prompt, model, label, p, None, stop, {}) for label, p in variants]
        if match_loudness and swept != {"gain_db"}:
            results = audio_views.match_loudness(results)
        return results

    # ----- music (the chorale model: notes as well as audio) ----------------------------------------
    def chorale(self, title: str, model: str | None, params: AudioParams | None,
                values: dict[str, Any]) -> tuple[Any, AudioParams, ModelSpec]:
        knobs.check_prompt(title)
        spec = self.runtime.model_spec("audio", model)
        if spec.kind != "chorales":
            symbolic = ", ".join(s.id for s in self.runtime.catalog.specs.values() if s.kind == "chorales")
            raise knobs.ParamError("model", f"{spec.id} makes audio, not notes; choose a symbolic music model "
                                            f"({symbolic})")
        chosen = knobs.resolve_seed(knobs.validate(params) if params else self.runtime.params("audio", spec.id, **values))
        return self.runtime.run(compose, spec, chosen), chosen, spec

    def music_midi(self, title: str, model: str | None, params: AudioParams | None,
                   values: dict[str, Any]) -> tuple[bytes, AudioParams]:
        from aigc_studio import music

        piece, chosen, spec = self.chorale(title, model, params, values)
        title = knobs.check_prompt(title)
        return music.midi(piece, music.recipe_fields(spec.id, title, chosen), title), chosen

    def explain_note(self, title: str, position: int, model: str | None, params: AudioParams | None, top_n: int,
                     values: dict[str, Any]):
        piece, chosen, spec = self.chorale(title, model, params, values)
        return self.runtime.run(explain_note, spec, piece, position, chosen, top_n)

    def save_midi_beside(self, result: Result, path: Path) -> None:
        """A chorale model's audio gets its MIDI file beside it (same name, .mid); others nothing."""
        spec = self.runtime.catalog.specs.get(result.recipe.model_id)
        if result.recipe.modality != "audio" or spec is None or spec.kind != "chorales":
            return
        from aigc_studio.storage import write_atomically

        midi, _ = self.music_midi(result.recipe.prompt, spec.id, None, result.recipe.params)
        write_atomically(path.with_suffix(".mid"), lambda part: part.write_bytes(midi))

    # ----- X/Y grids --------------------------------------------------------------------------------
    def grid(self, prompt: str, base: AudioParams, x_knob: str, x_values: list, y_knob: str | None,
             y_values: list | None, model: str | None, match_loudness: bool,
             stop: threading.Event | None) -> tuple[grid.GridPlan, list[Result]]:
        plan = self.runtime.grid_plan("audio", base, x_knob, x_values, y_knob, y_values, model)
        results = [self.audio(prompt, model, label, p, None, stop, {}) for label, p in plan.cells]
        if match_loudness and "gain_db" not in (x_knob, y_knob) and len(results) > 1:
            results = audio_views.match_loudness(results)
        return plan, results

    def save_grid(self, plan: grid.GridPlan, cells: list[Result], save: Callable[[Result], Path]) -> tuple[list[Path], Path]:
        from aigc_studio.storage import write_atomically

        paths = [save(cell) for cell in cells]
        archive = grid.audio_zip([(c.label, str(p)) for c, p in zip(cells, paths)], plan,
                                 [json.loads(c.recipe.to_json()) for c in cells])
        return paths, write_atomically(recipes._new_path(self.runtime.settings.output_dir, "audio-grid", ".zip"),
                                       lambda part: part.write_bytes(archive))
