"""Widgets shared by the tabs: knob controls built from params.py that follow the
chosen model, the side-by-side controls, the recipe card, the error box beside each
action, and the translation of backend errors into gr.Error."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import logging
import math
import re
import threading
import time
import traceback
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, AsyncIterator, Callable, Iterator

import gradio as gr

from aigc_studio import logs
from aigc_studio import params as knobs
from aigc_studio.studio import (
    ModelMemoryError, Recipe, Studio, UnknownModelError, UnknownPromptError, free_memory, out_of_memory_errors,
)

log = logging.getLogger(__name__)

SEEDS, SWEEP = "Different seeds", "Sweep one knob"
MAX_MESSAGE_CHARS = 400  # an error message quotes the bad value; a megabyte of it helps nobody
# A streamed answer reaches the page at most this often (10 updates a second). A fast
# model makes 40+ tokens a second, 4 columns of them side by side: a slow browser then
# draws behind the model, and a click (Stop) waits behind the drawing.
STREAM_INTERVAL_S = 0.1


def shown(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def own_init(parent: type, component, *args, **kwargs) -> None:
    """Run `parent`'s own __init__ body on component.

    Gradio rebuilds a component from its constructor arguments whenever an event updates
    it (a model change updates a knob's range) and keeps the new object for the session;
    inside an event it runs only the outermost __init__ of the class. So a knob's name
    and range are constructor arguments (attributes set later would be lost), and the
    Knob* classes call their Gradio parent's body directly (it sets choices, bounds...)."""
    parent.__init__.__wrapped__(component, *args, **kwargs)


class KnobSlider(gr.Slider):
    """A slider whose range errors name the knob (Gradio's own say only "Value 0 is
    less than minimum value 0.25"), and that refuses non-numbers with a message.
    knob_range: the knob's own range; the slider may show a model's narrower one."""

    def __init__(self, minimum: float = 0, maximum: float = 100, value=None, *, knob_name: str = "value",
                 knob_range: tuple | None = None, **kwargs):
        self.knob_name, self.knob_range = knob_name, knob_range
        own_init(gr.Slider, self, minimum, maximum, value=value, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "slider"  # the browser renders it as a plain slider

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Slider)  # the browser gets a Slider's props

    def preprocess(self, payload):
        low, high = self.knob_range or (self.minimum, self.maximum)
        try:
            number = float(payload)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            number = float("nan")
        if not low <= number <= high:  # NaN fails too
            raise user_error(f"{self.knob_name}: must be a number in [{low}, {high}], got {shown(payload)}")
        return number  # Gradio's own Slider.preprocess would check the shown range


class _NamesItsKnob:
    """Mixin: Gradio's own input checks ("Value: warp is not in the list of
    choices") get the knob's name in front, so API users know which field."""

    knob_name = "value"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except gr.Error as error:
            raise user_error(f"{self.knob_name}: {error.message}") from None


class KnobDropdown(_NamesItsKnob, gr.Dropdown):
    def __init__(self, choices=None, *, knob_name: str = "value", **kwargs):
        self.knob_name = knob_name
        own_init(gr.Dropdown, self, choices, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "dropdown"

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Dropdown)


class KnobRadio(_NamesItsKnob, gr.Radio):
    def __init__(self, choices=None, *, knob_name: str = "value", **kwargs):
        self.knob_name = knob_name
        own_init(gr.Radio, self, choices, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "radio"

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Radio)


class KnobNumber(_NamesItsKnob, gr.Number):
    def __init__(self, value=None, *, knob_name: str = "value", **kwargs):
        self.knob_name = knob_name
        own_init(gr.Number, self, value, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "number"

    def get_config(self, cls=None):
        return super().get_config(cls or gr.Number)

    def preprocess(self, payload):
        # Gradio's Number compares the payload with its bounds as is: text or NaN
        # would fail deep inside with a TypeError, so check for a finite number first.
        if payload is not None:
            try:
                number = float(payload)
            except (TypeError, ValueError, OverflowError):
                number = float("nan")
            if isinstance(payload, bool) or not math.isfinite(number):
                raise user_error(f"{self.knob_name}: must be a whole number in [{self.minimum}, {self.maximum}], "
                                 f"got {shown(payload)}")
            payload = number
        return super().preprocess(payload)


def model_dropdown(choices: list[str], value: str | None, **kwargs) -> KnobDropdown:
    """The model picker: an id outside the catalog (a path, a Hub repo) is refused
    before any handler runs, with a message naming the `model` field."""
    kwargs.setdefault("info", "Which model generates: loaded on first use, then kept while memory allows.")
    dropdown = KnobDropdown(choices, value=value, label="model", knob_name="model", **kwargs)
    return dropdown


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


def sweep_names(params_type: type, used) -> list[str]:
    """The knobs a model reads that side by side can sweep, in the model's order."""
    sweepable = knobs.sweepable(params_type)
    return [name for name in used if name in sweepable]


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


class SweepDropdown(KnobDropdown):
    """The "knob to sweep" picker: shows the chosen model's knobs by their names for
    people, accepts any sweepable knob of the modality (the handler checks the model)."""

    # Gradio rebuilds a component from its constructor arguments when an event updates it
    # (here: the model changed), which drops attributes set after construction; so the
    # check uses every modality's sweepable knobs, and the handler checks the model's own.
    sweepable: tuple = ("none", *dict.fromkeys(name for kind in (knobs.TextParams, knobs.ImageParams, knobs.AudioParams)
                                                for name in knobs.sweepable(kind)))  # "none": a grid's absent Y axis
    knob_name = "knob_name"

    def __init__(self, choices=None, *, knob_name: str = "knob_name", sweepable: tuple | None = None, **kwargs):
        """sweepable: the names this picker accepts beyond the class's (e.g. a grid's
        "model" axis); a constructor argument, so a rebuilt picker keeps them."""
        self.knob_name = knob_name
        if sweepable is not None:
            self.sweepable = tuple(sweepable)
        own_init(gr.Dropdown, self, choices, **kwargs)

    @classmethod
    def get_block_name(cls) -> str:
        return "dropdown"

    def preprocess(self, payload):
        allowed = dict.fromkeys((*self.sweepable, *SweepDropdown.sweepable))  # the instance's, when it still has them
        if payload not in allowed:
            raise user_error(f"{self.knob_name}: must be one of {', '.join(allowed)}, got {shown(payload)}")
        return payload


def variant_controls(params_type: type, used, tab: str, extra_modes: tuple[str, ...] = (),
                     info: str = "What differs between the columns.") -> tuple[gr.Radio, gr.Slider, gr.Dropdown, gr.Textbox]:
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
    return mode, count, knob_name, values


def knob_choices_for(names) -> list[tuple[str, str]]:
    return [(knob_label(n), n) for n in names]


def sweep_updates(studio: Studio, modality: str, model: str | None, current: str | None = None) -> tuple:
    """(picker update, values update) for a model: its sweepable knobs, the current
    one kept when the model reads it, and values to sweep it over."""
    params = studio.params(modality, model)
    names = sweep_names(type(params), studio.knobs_used(modality, model))
    chosen = current if current in names else names[0]
    return gr.update(choices=knob_choices_for(names), value=chosen), sweep_values(params, chosen)


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


def column_updates(labels: list[str], slots: int, clear: bool) -> list:
    """Show one labelled column per variant and hide the rest; clear empties them
    before a compare runs."""
    values = {"value": None} if clear else {}
    shown = [gr.update(label=label, visible=True, **values) for label in labels]
    return shown + [gr.update(visible=False, **values)] * (slots - len(labels))


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


# ----- errors beside what caused them, and the Generate button while a run is in flight -----

# A gr.Error shows as a toast that fades; this copies its message into the error box
# beside the button that was pressed (or the first one in view), where it stays until
# that button is pressed again. A number typed out of a slider's range stays as typed
# (Gradio would clamp it silently when the box loses focus), so the run is refused with
# the same message the API gives: "steps: must be a number in [1, 150], got 100000".
PAGE_JS = """
if (!window.studioErrors) {
  window.studioErrors = true;
  let last = null;
  const boxFor = (button) => button && document.getElementById(button.id + '-error');
  const visibleBoxes = () => [...document.querySelectorAll('.studio-error')].filter(b => b.offsetParent);
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('button[id]');
    const box = boxFor(button);
    if (!box) return;
    last = box;
    box.querySelector('.studio-error-text').textContent = '';
    document.querySelectorAll('.studio-invalid').forEach(e => e.classList.remove('studio-invalid'));
  }, true);
  const show = (message) => {
    const box = (last && last.offsetParent) ? last : visibleBoxes()[0];
    if (!box) return;
    box.querySelector('.studio-error-text').textContent = message;
    const field = (message.match(/^([a-z_]+):/) || [])[1];
    const tab = box.id.split('-')[0];
    const input = field && document.getElementById(tab + '-' + field);
    if (input) input.classList.add('studio-invalid');
  };
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) {
      if (!(node instanceof Element)) continue;
      const selector = '[data-testid="toast-text"].error';
      const texts = node.matches(selector) ? [node] : [...node.querySelectorAll(selector)];
      for (const text of texts) setTimeout(() => show(text.textContent.trim()), 0);
    }
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener('blur', (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || input.dataset.testid !== 'number-input') return;
    const value = Number(input.value);
    if (input.value !== '' && !(value >= Number(input.min) && value <= Number(input.max))) {
      event.stopImmediatePropagation();  // keep what was typed; the run says what is wrong with it
    }
  }, true);
}
"""

PAGE_CSS = """
.studio-error-text:empty { display: none; }
.studio-error-text { color: #991b1b; background: #fef2f2; border: 1px solid #fca5a5; border-radius: 6px;
                     padding: 8px 12px; font-size: 0.95em; white-space: pre-wrap; }
.studio-invalid { outline: 2px solid #ef4444; border-radius: 6px; }
/* the red "Error" badge Gradio leaves on every output of a failed run says nothing: the box does */
.wrap.error, .wrap .error:not(.toast-body) { display: none !important; }
.studio-recipe { font-size: 0.9em; }
.studio-grid .caption-label, .studio-grid figcaption { white-space: normal !important; overflow: visible !important;
                                                      text-overflow: clip !important; text-align: center; }
#image-strip img, #image-strip .image-frame { max-height: none !important; }
"""


def page_assets() -> gr.HTML:
    """The page's shared style and script (once per page: the script guards itself)."""
    return gr.HTML("", head=f"<style>{PAGE_CSS}</style>", js_on_load=PAGE_JS, container=False, padding=False,
                   elem_classes=["studio-assets"])


def error_box(button_id: str) -> gr.HTML:
    """Where the last error of the button `button_id` stays until it is pressed again."""
    return gr.HTML('<div class="studio-error-text" role="alert"></div>', elem_id=f"{button_id}-error",
                   elem_classes=["studio-error"], container=False, padding=False)


def busy(label: str = "Running…"):
    return gr.update(value=label, interactive=False)


def ready(label: str = "Generate"):
    return gr.update(value=label, interactive=True)


def user_error(message: str) -> gr.Error:
    """A person's mistake (a bad knob, an unknown model): logged as one line with a
    request id, no traceback; returns the gr.Error to raise, which repeats the id."""
    request = logs.new_request_id()
    log.info("user error (request %s): %s", request, logs.one_line(message[:MAX_MESSAGE_CHARS]))
    return _shown_error(message, request)


def _shown_error(message: str, request: str) -> gr.Error:
    # The id goes last: messages start with the field, and API users match on that.
    suffix = f" (request {request})"
    # print_exception=False: Gradio would print a traceback of the gr.Error itself.
    return gr.Error(message[: MAX_MESSAGE_CHARS - len(suffix)] + suffix, print_exception=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the backend's input errors into gr.Error (a message in the UI and the
    API) and log each as one line. Anything else is logged with its traceback and
    reported without one. Log line and message share a request id."""
    try:
        yield
    except gr.Error:
        raise
    except (knobs.ParamError, UnknownModelError, UnknownPromptError, ValueError, FileNotFoundError) as error:
        raise user_error(str(error)) from None
    except out_of_memory_errors() as error:  # the Studio's ModelMemoryError says what ran out; a raw one is freed here
        message = str(error) if isinstance(error, ModelMemoryError) else (
            "Out of memory: try a smaller size, fewer steps or a smaller model. The studio is still running.")
        traceback.clear_frames(error.__traceback__)
        free_memory()
        request = logs.new_request_id()
        log.warning("out of memory (request %s): %s", request, logs.one_line(message))
        raise _shown_error(message, request) from None
    except Exception as error:  # keep serving: one bad request never kills the demo
        request = logs.new_request_id()
        log.exception("generation failed (request %s)", request)
        raise _shown_error(f"Generation failed ({type(error).__name__}); the studio is still running, "
                           f"please try again.", request) from None


class Sessions:
    """Per-browser-session state the UI keeps beside a generation: the stop event
    of the running request and the recipes of the last results (bounded)."""

    MAX_SESSIONS = 1000

    def __init__(self, history=None):
        self.history = history  # an aigc_studio.history.History: every kept result also goes there
        self._stops: dict[str, threading.Event] = {}
        self._kept: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(request: gr.Request | None) -> str:
        return (request.session_hash if request is not None else None) or "api"

    def fresh_stop(self, request: gr.Request | None, tab: str = "text") -> threading.Event:
        """A new stop event for this session's generation in `tab`."""
        with self._lock:
            event = self._stops[f"{self.key(request)}/{tab}"] = threading.Event()
            return event

    def stop(self, request: gr.Request | None, tab: str = "text") -> None:
        with self._lock:
            event = self._stops.get(f"{self.key(request)}/{tab}")
        if event is not None:
            event.set()

    def keep(self, request: gr.Request | None, name: str, value) -> None:
        """Remember value under name for this session (the oldest sessions are forgotten)."""
        with self._lock:
            self._kept.setdefault(self.key(request), {})[name] = value
            self._kept.move_to_end(self.key(request))
            while len(self._kept) > self.MAX_SESSIONS:
                self._kept.popitem(last=False)

    def kept(self, request: gr.Request | None, name: str, default=None):
        with self._lock:
            return self._kept.get(self.key(request), {}).get(name, default)

    def keep_recipes(self, request: gr.Request | None, recipes: list, texts: list | None = None) -> None:
        """Remember the recipes of the last results; each also goes into the browser's
        history (with its answer, for text: `texts` in the same order)."""
        self.keep(request, "recipes", recipes)
        if self.history is not None:
            for index, recipe in enumerate(recipes):
                self.history.add(self.key(request), recipe, texts[index] if texts and index < len(texts) else None)

    def recipes(self, request: gr.Request | None) -> list:
        return self.kept(request, "recipes", [])


def paced(updates: Iterator, interval: float = STREAM_INTERVAL_S) -> Iterator:
    """The updates of a stream, at most one every `interval` seconds: the first at once,
    then the newest one each time the interval has passed, and always the last. Each
    update holds everything so far (the whole answer), so a skipped one loses nothing."""
    shown_at, waiting = -math.inf, None
    for update in updates:
        now = time.monotonic()
        if now - shown_at >= interval:
            yield update
            shown_at, waiting = now, None
        else:
            waiting = update
    if waiting is not None:
        yield waiting


async def run_in_worker(work: Callable[[Callable[[Any], None]], Any],
                        stop: threading.Event | None = None) -> AsyncIterator[tuple[str, Any]]:
    """Run work(emit) in a thread and yield ("update", item) for every emit, then
    ("result", its return value). Lets a Gradio handler stream progress (e.g.
    denoising previews) from a blocking backend call. Errors re-raise here.

    An async generator on purpose: Gradio cancels a request (Stop, a cancelled API
    job, a vanished client) by cancelling its task, which reaches the await here at
    once and sets `stop`, so the work ends at its next step. A plain generator would
    sit blocked in a thread until its next item (a preview 50 steps away) and could
    not be closed before then."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def put(event: tuple[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    def target() -> None:
        try:
            put(("result", work(lambda item: put(("update", item)))))
        except BaseException as error:  # handed to the caller's task
            put(("error", error))

    threading.Thread(target=target, daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = await events.get()
            finished = kind != "update"
            if kind == "error":
                raise value
            yield kind, value
            if kind == "result":
                return
    finally:
        if not finished and stop is not None:
            stop.set()
