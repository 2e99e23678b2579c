"""The page's shared script and style, the error box beside each button, and the
button's busy / ready states while a run is in flight."""

from __future__ import annotations

import gradio as gr

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


def busy_run(triggers: list, fn, inputs: list, outputs, button: gr.Button, label: str = "Generate",
             busy_label: str = "Running…", **event_kwargs):
    """The chain every action button runs: the button greys out at once ("Running…"), fn runs,
    and the button comes back whether fn succeeded, failed or was stopped. Returns fn's event,
    to chain what shows its results (.then / .success). event_kwargs: fn's event options
    (concurrency_id, ...); its events stay private (the public endpoints are ui/*_api.py)."""
    started = gr.on(triggers, lambda: busy(busy_label), outputs=button, queue=False, api_visibility="private")
    run = started.then(fn, inputs=inputs, outputs=outputs, api_visibility="private", **event_kwargs)
    for finished in (run.then, run.failure):
        finished(lambda: ready(label), outputs=button, queue=False, api_visibility="private")
    return run
