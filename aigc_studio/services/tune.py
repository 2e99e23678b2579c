"""Fine-tuning a text model (the work is in aigc_studio/tune.py) and the adapters it
leaves, listed in the catalog as `<base>+<name>`."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from aigc_studio import params as knobs
from aigc_studio.catalog import ModelSpec, UnknownModelError
from aigc_studio.services.runtime import Runtime, text_engine

log = logging.getLogger(__name__)


class TuneService:
    """The Studio's fine-tuning operations. Training runs in the caller's process: it
    loads its own fresh copy of the base model, never a shared one."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def fine_tune(self, text: str, model: str | None, params: knobs.TuneParams | None, name: str,
                  on_progress: Callable | None, stop: threading.Event | None, files: list | None):
        import torch

        from aigc_studio import tune

        runtime = self.runtime
        spec = runtime.model_spec("text", model)
        if spec.source == "adapter":
            raise knobs.ParamError("model", f"{spec.id} is already tuned; tune its base {spec.base.id} instead")
        name = tune.check_name(name)
        chosen = tune.draw_seed(params or knobs.TuneParams())
        data_text = tune.read_texts(text, files)
        base = text_engine().load(spec, runtime.device, torch.float32, runtime.settings.cache_dir, log.info, "torch",
                                  runtime.threads)  # a fresh copy: training changes it
        if chosen.method == "full":
            tune.check_full_fits(sum(p.numel() for p in base.model.parameters()),
                                 int(runtime.settings.memory_budget_gb * 2**30))
        data = tune.split(data_text, base.tokenizer, chosen)
        folder = runtime.settings.output_dir / "adapters" / f"{spec.id}+{name}"
        result = tune.train(base, spec, data, chosen, folder, name, on_progress, stop, runtime.threads)
        self._add_adapter(spec, name, folder, result.recipe)
        return result

    def load_adapter(self, folder: str | Path, recipe: dict | None) -> str:
        from aigc_studio import tune

        recipe = recipe or tune.read_adapter_recipe(Path(folder))
        base = self.runtime.model_spec("text", recipe["base_model"])  # UnknownModelError names the catalog
        if base.source == "adapter":
            raise knobs.ParamError("adapter", f"its base {base.id} is itself an adapter")
        return self._add_adapter(base, recipe["name"], Path(folder), recipe)

    def restore_adapters(self) -> None:
        """List again the adapters that fine_tune saved under the output folder (a restart
        keeps them); one whose base is not in this catalog, or that cannot be read, is
        skipped with one log line."""
        from aigc_studio import tune

        for folder, recipe in tune.saved_adapters(self.runtime.settings.output_dir / "adapters"):
            try:
                self.load_adapter(folder, recipe)
            except (knobs.ParamError, UnknownModelError) as error:
                log.warning("skipped the adapter folder %s: %s", folder, error)

    def _add_adapter(self, base: ModelSpec, name: str, folder: Path, recipe: dict) -> str:
        from aigc_studio import tune

        spec = tune.adapter_spec(base, name, folder, recipe)
        self.runtime.models.unload(spec.id)  # a retrained adapter of the same name loads afresh
        self.runtime.catalog.add(spec)
        return spec.id
