"""Fine-tune a text model on your own writing: LoRA (peft) or, for small models, every
weight ("full"), judged by held-out perplexity.

    data = read_texts(pasted_text, ["notes.md"])                 # TuneError names what is wrong
    base = engines.text.load(spec, "cpu", torch.float32, cache_dir, runtime="torch")
    result = train(base, spec, data, TuneParams(steps=30), out_folder, "mine", on_progress=print)
    print(result.perplexity_before, "->", result.perplexity_after)

Read it top to bottom like nanoGPT's train.py: the text is tokenised and cut into blocks
of `sequence_length` tokens; a fixed fraction of the blocks (chosen by the seed) is held
out; LoRA matrices are added to every linear layer (method "full": every weight trains
instead); each step reads `batch_size` random training blocks (the seed's own generator) and
takes one AdamW step; the held-out perplexity is measured at the start, every `eval_every`
steps and at the end. The adapter (or the full weights) is saved as safetensors with a recipe
(tune_recipe.json). On the CPU with the same thread count, the same seed, text and knobs give
the same weights, bit for bit.

torch is imported inside the functions: the Studio lists saved adapters at start-up (their
recipes are JSON) before any model library is needed.

No gradio here: the Studio, the UI, the API and bench/fine_tune.py all call this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from aigc_studio.catalog import ADAPTER_CONFIG, ADAPTER_WEIGHTS, FULL_WEIGHTS, TUNE_RECIPE
from aigc_studio.params import FULL_MAX_PARAMETERS, MAX_SEED, ParamError, TuneParams, resolve_seed, validate
from aigc_studio.recipe import library_versions

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.1  # of the blocks, at least one
MAX_TEXT_CHARS = 1_000_000  # pasted and uploaded text together
MAX_FILE_BYTES = 1_000_000  # one uploaded file
MAX_FILES = 10
MIN_BLOCKS = 2  # one to train on, one held out
FILE_TYPES = (".txt", ".md")
# Full fine-tuning keeps, per parameter, fp32 weights, gradients, AdamW's two moments and the
# last good step's copy (Stop and a non-finite loss go back to it): 5 x 4 bytes. It is refused
# above the studio's memory budget (AIGC_MEMORY_BUDGET_GB) or above FULL_MAX_PARAMETERS, the
# small models it is meant for (SmolLM2-135M and -360M); LoRA has no such limit.
FULL_BYTES_PER_PARAMETER = 20
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


class TuneError(ParamError):
    """The text to tune on cannot be used (too long, too short, not UTF-8...); names the input."""


@dataclass
class TuneData:
    """The text to tune on, split into blocks of token ids (each a row)."""

    text: str
    data_hash: str  # sha256 of the text (UTF-8)
    train: torch.Tensor  # blocks x sequence_length
    heldout: torch.Tensor

    @property
    def train_tokens(self) -> int:
        return self.train.numel()

    @property
    def heldout_tokens(self) -> int:
        return self.heldout.numel()


@dataclass
class TuneProgress:
    """One report while training: step (0 = before the first), the step's training loss
    (None at step 0), and the held-out perplexity when it was measured at this step."""

    step: int
    steps: int
    loss: float | None = None
    perplexity: float | None = None
    seconds: float = 0.0


@dataclass
class TuneResult:
    adapter: str  # the catalog id, "<base>+<name>"
    folder: Path
    perplexity_before: float
    perplexity_after: float
    train_tokens: int
    heldout_tokens: int
    steps_done: int
    stopped: bool
    seconds: float
    recipe: dict = field(default_factory=dict)
    history: list[TuneProgress] = field(default_factory=list)


# ----- the data ----------------------------------------------------------------------------------

def read_texts(pasted: str | None = None, files: list[str | Path] | None = None) -> str:
    """The pasted text and the uploaded .txt/.md files (UTF-8), joined by blank lines.
    Raises TuneError naming the file (and the byte) that cannot be used."""
    parts = []
    if pasted is not None and not isinstance(pasted, str):
        raise TuneError("text", f"must be text, got {type(pasted).__name__}")
    if pasted and pasted.strip():
        parts.append(pasted)
    files = list(files or [])
    if len(files) > MAX_FILES:
        raise TuneError("files", f"upload at most {MAX_FILES} files, got {len(files)}")
    for path in map(Path, files):
        if path.suffix.lower() not in FILE_TYPES:
            raise TuneError("files", f"{path.name}: only {' and '.join(FILE_TYPES)} files can be used")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TuneError("files", f"{path.name}: {size:,} bytes; at most {MAX_FILE_BYTES:,} per file")
        raw = path.read_bytes()
        try:
            parts.append(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as error:
            raise TuneError("files", f"{path.name}: not UTF-8 text (byte {error.start}: {raw[error.start:error.start + 1]!r}); "
                                     "save it as UTF-8 and upload it again") from None
    text = "\n\n".join(p.strip().replace("\r\n", "\n") for p in parts)
    if not text:
        raise TuneError("text", "paste some text or upload a .txt/.md file to tune on")
    if len(text) > MAX_TEXT_CHARS:
        raise TuneError("text", f"{len(text):,} characters; at most {MAX_TEXT_CHARS:,} in all")
    if "\x00" in text:
        raise TuneError("text", "contains NUL characters: not a plain text file")
    return text


def split(text: str, tokenizer: Any, params: TuneParams) -> TuneData:
    """Tokenise text, cut it into blocks of params.sequence_length tokens (a shorter tail is
    dropped) and hold out HELDOUT_FRACTION of them (at least one), chosen by params.seed."""
    import torch

    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    length = params.sequence_length
    count = ids.numel() // length
    if count < MIN_BLOCKS:
        raise TuneError("text", f"too short: {ids.numel()} tokens make {count} blocks of {length} tokens; needs at least "
                                f"{MIN_BLOCKS * length} tokens (paste more text or lower sequence_length)")
    blocks = ids[:count * length].reshape(count, length)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(params.seed))
    held = max(1, round(HELDOUT_FRACTION * count))
    heldout, train = order[:held].sort().values, order[held:].sort().values
    return TuneData(text, hashlib.sha256(text.encode("utf-8")).hexdigest(), blocks[train], blocks[heldout])


# ----- measuring ---------------------------------------------------------------------------------

def heldout_perplexity(model: Any, blocks: torch.Tensor, batch_size: int, device: str) -> float:
    """exp of the mean negative log-likelihood of every held-out token after the first of its block."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, blocks.shape[0], batch_size):
            batch = blocks[start:start + batch_size].to(device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             batch[:, 1:].reshape(-1), reduction="sum"))
            count += batch[:, 1:].numel()
    model.train(was_training)
    return math.exp(total / count)


# ----- training ----------------------------------------------------------------------------------

def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ParamError("name", f"must be 1-40 letters, digits, '-', '_' or '.', starting with a letter or digit; got {name!r}")
    return name


def check_full_fits(parameters: int, budget_bytes: int) -> None:
    """Refuse full fine-tuning (naming `method`) when the model is too big for it."""
    need = parameters * FULL_BYTES_PER_PARAMETER
    if parameters > FULL_MAX_PARAMETERS or need > budget_bytes:
        raise ParamError("method", f"full fine-tuning of {parameters / 1e6:,.0f}M parameters needs about "
                                   f"{need / 2**30:.1f} GiB ({FULL_BYTES_PER_PARAMETER} bytes per parameter) and is "
                                   f"allowed up to {FULL_MAX_PARAMETERS / 1e6:,.0f}M parameters within the memory "
                                   f"budget of {budget_bytes / 2**30:.1f} GiB (AIGC_MEMORY_BUDGET_GB); use method "
                                   "'lora' or a smaller model")


def train(text_model: Any, spec: Any, data: TuneData, params: TuneParams, folder: Path, name: str,
          on_progress: Callable[[TuneProgress], None] | None = None, stop: threading.Event | None = None,
          threads: int = 1) -> TuneResult:
    """Tune text_model (a torch TextModel that this call changes: load a fresh one) on data and
    save the result into folder (replaced atomically): a LoRA adapter, or with method "full"
    every weight (check_full_fits first).

    Setting `stop` ends training after the current step; the weights of the last finished
    step are kept (a step whose loss is not finite is undone and ends training too).
    """
    import torch

    params = validate(params)
    if params.seed < 0 or params.seed > MAX_SEED:
        raise ParamError("seed", "resolve it first (resolve_seed)")
    device = text_model.device
    if device == "cpu":
        torch.set_num_threads(threads)
    started = time.perf_counter()
    stop = stop or threading.Event()
    report = on_progress or (lambda progress: None)
    model = _trainable(text_model.model, params)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate)
    batches = torch.Generator().manual_seed(params.seed)

    before = heldout_perplexity(model, data.heldout, params.batch_size, device)
    history = [TuneProgress(0, params.steps, None, before, time.perf_counter() - started)]
    report(history[-1])
    last_good = _trained_state(model)
    after, done, note = before, 0, ""
    for step in range(1, params.steps + 1):
        if stop.is_set():
            break
        rows = torch.randint(data.train.shape[0], (params.batch_size,), generator=batches)
        batch = data.train[rows].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        if not math.isfinite(float(loss)):
            _load_trained_state(model, last_good)
            note = f"step {step}: the loss is not finite (lower learning_rate); kept the weights of step {done}"
            break
        last_good, done = _trained_state(model), step
        measured = None
        if step % params.eval_every == 0 or step == params.steps:
            measured = after = heldout_perplexity(model, data.heldout, params.batch_size, device)
        history.append(TuneProgress(step, params.steps, float(loss), measured, time.perf_counter() - started))
        report(history[-1])
    if history[-1].perplexity is None:  # stopped between measurements: measure what is kept
        after = heldout_perplexity(model, data.heldout, params.batch_size, device)
        history[-1].perplexity = after
        report(history[-1])
    seconds = time.perf_counter() - started
    lora = params.method == "lora"
    recipe = {
        "kind": params.method, "name": name, "adapter": f"{spec.id}+{name}",
        "base_model": spec.id, "base_location": spec.location, "base_revision": spec.revision,
        "runtime": "torch", "device": device, "threads": threads,
        "data_hash": data.data_hash, "data_chars": len(data.text), "heldout_fraction": HELDOUT_FRACTION,
        "train_tokens": data.train_tokens, "heldout_tokens": data.heldout_tokens,
        "params": asdict(params), "optimizer": "AdamW",
        **({"target_modules": "all-linear", "lora_dropout": 0.0} if lora else {"trained_parameters": sum(p.numel() for p in trainable)}),
        "steps_done": done, "stopped": done < params.steps, "note": note,
        "perplexity_before": round(before, 4), "perplexity_after": round(after, 4),
        "perplexity_history": [[p.step, round(p.perplexity, 4)] for p in history if p.perplexity is not None],
        "loss_history": [[p.step, round(p.loss, 5)] for p in history if p.loss is not None],
        "seconds": round(seconds, 2), "versions": {**library_versions(), **(_versions("peft") if lora else {})},
    }
    save_adapter(model, folder, recipe)
    if lora:
        model.unload()  # text_model.model without the LoRA layers again
    return TuneResult(f"{spec.id}+{name}", folder, before, after, data.train_tokens, data.heldout_tokens, done,
                      done < params.steps, seconds, recipe, history)


def _trainable(model: Any, params: TuneParams) -> Any:
    """The model to train: with LoRA layers on every linear layer (only those train), or,
    for method "full", the model itself with every weight trainable."""
    import torch

    if params.method == "full":
        return model.requires_grad_(True)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=0.0, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):  # LoRA's initial A matrices come from the global RNG
        torch.manual_seed(params.seed)
        return get_peft_model(model, config)


def _trained_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _load_trained_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    import torch

    with torch.no_grad():
        for k, v in model.named_parameters():
            if k in state:
                v.copy_(state[k])


def _versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    return {n: metadata.version(n) for n in names}


def save_adapter(model: Any, folder: Path, recipe: dict) -> Path:
    """Into folder, which appears whole (written beside it, then renamed): a LoRA adapter's
    adapter_model.safetensors and adapter_config.json, or a full fine-tune's model.safetensors
    (every weight, tied ones once); and tune_recipe.json."""
    from safetensors.torch import save_model

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if recipe["kind"] == "full":
        # not save_pretrained: a model loaded from GGUF refuses it ("not serializable")
        partial.mkdir(parents=True)
        save_model(model, str(partial / FULL_WEIGHTS), metadata={"base_model": recipe["base_model"]})
    else:
        model.save_pretrained(str(partial), safe_serialization=True)
    (partial / TUNE_RECIPE).write_text(json.dumps(recipe, indent=1, sort_keys=True))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def read_adapter_recipe(folder: Path) -> dict:
    """The recipe of a folder that train() wrote; refuses one without safetensors weights."""
    folder = Path(folder)
    recipe_file = folder / TUNE_RECIPE
    if not (folder / ADAPTER_WEIGHTS).is_file() and not (folder / FULL_WEIGHTS).is_file():
        raise TuneError("adapter", f"{folder} has no {ADAPTER_WEIGHTS} or {FULL_WEIGHTS} "
                                   "(adapters load from safetensors only)")
    if not recipe_file.is_file():
        raise TuneError("adapter", f"{folder} lacks {TUNE_RECIPE}: not a studio adapter")
    try:
        recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TuneError("adapter", f"{recipe_file.name}: not valid JSON ({error})") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("base_model"), str) or "name" not in recipe:
        raise TuneError("adapter", f"{recipe_file.name}: no base_model or name")
    full = recipe.get("kind") == "full"
    if not (folder / (FULL_WEIGHTS if full else ADAPTER_WEIGHTS)).is_file():
        raise TuneError("adapter", f"{folder} has no {FULL_WEIGHTS if full else ADAPTER_WEIGHTS} for its kind "
                                   f"{recipe.get('kind', 'lora')!r}")
    if not full and not (folder / ADAPTER_CONFIG).is_file():
        raise TuneError("adapter", f"{folder} lacks {ADAPTER_CONFIG}: not a studio adapter")
    check_name(recipe["name"])
    return recipe


def saved_adapters(folder: Path) -> list[tuple[Path, dict]]:
    """(folder, recipe) of every adapter saved under folder (e.g. outputs/adapters), by name;
    a folder that cannot be read is skipped with one log line (half-written .partial ones too)."""
    found = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if not path.is_dir() or path.name.endswith(".partial"):
            continue
        try:
            found.append((path, read_adapter_recipe(path)))
        except (OSError, ParamError) as error:
            log.warning("skipped the adapter folder %s: %s", path, error)
    return found


def draw_seed(params: TuneParams) -> TuneParams:
    return resolve_seed(validate(params))


def adapter_spec(base: Any, name: str, folder: Path, recipe: dict | None = None) -> Any:
    """The catalog entry of a tuned model: `<base>+<name>`, source "adapter", runs on torch
    (its folder holds a LoRA adapter or, kind "full", every weight)."""
    from dataclasses import replace

    perplexities, full = "", bool(recipe) and recipe.get("kind") == "full"
    if recipe:
        perplexities = f" Held-out perplexity {recipe['perplexity_before']:.2f} -> {recipe['perplexity_after']:.2f}."
    what = f"Fully fine-tuned copy '{name}' of" if full else f"LoRA adapter '{name}' on"
    return replace(base, id=f"{base.id}+{name}", source="adapter", location=str(folder), base=base,
                   size_mb=2 * base.size_mb if full else base.size_mb + 1, zero_gpu=False,
                   description=f"{what} {base.id}; runs on torch.{perplexities}")


__all__ = ["TuneError", "TuneData", "TuneProgress", "TuneResult", "read_texts", "split", "train", "heldout_perplexity",
           "check_name", "check_full_fits", "save_adapter", "read_adapter_recipe", "saved_adapters", "adapter_spec",
           "draw_seed"]
