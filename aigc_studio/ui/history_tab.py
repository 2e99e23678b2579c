"""The History tab: every result of this browser, newest first, with Restore, Download
and Compare. The entries live in studio.history (aigc_studio/history.py); the browser
keeps a random id in gr.BrowserState, linked to the session hash at each page load, so
the history survives a reload."""

from __future__ import annotations

import html
import dataclasses
import json
import os
import tempfile
import uuid
from pathlib import Path

import gradio as gr

from aigc_studio.history import TABS, Entry, differing_knobs
from aigc_studio.recipe import RECIPE_KEY, Recipe, Result
from aigc_studio.ui import tune_tab
from aigc_studio.storage import write_atomically
from aigc_studio.studio import Studio
from aigc_studio.ui.errors import user_errors
from aigc_studio.ui.session import Sessions, bind

STORAGE_KEY = "aigc-studio-history"
SHOWN = 30  # entries drawn in the list (the picker offers all of them)
CSS = """<style>
.history-entry { display: flex; gap: 12px; align-items: center; padding: 6px 0; border-bottom: 1px solid #ddd; }
.history-entry img { width: 72px; height: 72px; object-fit: cover; border-radius: 4px; }
.history-entry audio { width: 220px; }
.history-pruned { color: #a15c00; font-style: italic; }
.history-compare td, .history-compare th { padding: 4px 8px; border: 1px solid #ddd; vertical-align: top; }
.history-compare tr.history-differs td, .history-compare tr.history-differs th { background: #fff3b0; color: #222; }
.history-compare img { max-width: 256px; }
</style>"""


def file_url(path: str) -> str:
    return "/gradio_api/file=" + html.escape(str(Path(path).resolve()), quote=True)


def preview(entry: Entry) -> str:
    """A thumbnail, a player or the text's first line; a pruned file says so."""
    if entry.tab in ("text", "tune"):
        return f"<span>{html.escape(entry.first_line or '(empty answer)')}</span>"
    state = entry.file_state
    if state == "pruned":
        return '<span class="history-pruned">file pruned by the retention policy (the recipe is kept)</span>'
    if state == "none":
        return '<span class="history-pruned">no file was kept (the recipe is kept)</span>'
    if entry.tab == "image":
        return f'<img src="{file_url(entry.path)}" alt="#{entry.id}">'
    return f'<audio controls preload="none" src="{file_url(entry.path)}"></audio>'


def title(entry: Entry) -> str:
    return f"#{entry.id} {TABS.get(entry.tab, entry.tab)} · {entry.model} · {entry.label}"


def list_html(entries: list[Entry]) -> str:
    if not entries:
        return CSS + "<p>No results yet: everything you generate in the Text, Image, Audio and Tune tabs lands here.</p>"
    rows = [f'<div class="history-entry" data-entry="{e.id}">{preview(e)}<div><b>{html.escape(title(e))}</b><br>'
            f'<small>{html.escape(e.recipe.get("prompt", "")[:100])}</small></div></div>' for e in entries[:SHOWN]]
    more = f"<p>… and {len(entries) - SHOWN} older (pick them above).</p>" if len(entries) > SHOWN else ""
    return CSS + "".join(rows) + more


def compare_html(entries: list[Entry]) -> str:
    """The entries side by side: a row per knob, the rows whose values differ highlighted."""
    differ = differing_knobs([e.recipe for e in entries])
    head = "".join(f"<th>{html.escape(title(e))}</th>" for e in entries)
    body = [f"<tr><th>output</th>{''.join(f'<td>{preview(e)}</td>' for e in entries)}</tr>"]
    names = ["model", "prompt"] + sorted(set().union(*[e.recipe.get("params", {}) for e in entries]))
    for name in names:
        values = [e.model if name == "model" else e.recipe.get("prompt") if name == "prompt"
                  else e.recipe.get("params", {}).get(name, "—") for e in entries]
        cls = ' class="history-differs"' if name in differ else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in values)
        body.append(f"<tr{cls}><th>{html.escape(name)}</th>{cells}</tr>")
    note = f"<p>{len(differ)} of {len(names)} differ (highlighted).</p>"
    return CSS + note + f'<table class="history-compare"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def recipe_file(studio: Studio, entry: Entry) -> str:
    """The entry's file with its recipe: the kept image/audio, else a studio .json (a text
    answer with its recipe, or the bare recipe of a pruned file)."""
    if entry.file_state == "kept":
        return entry.path
    if entry.tab == "text":
        return str(studio.save(Result(entry.text or "", Recipe.from_json(json.dumps(entry.recipe)))))
    name = f"recipe-{entry.tab}-{entry.id}-{uuid.uuid4().hex[:6]}.json"
    data = json.dumps({RECIPE_KEY: entry.recipe}, indent=2)
    return str(write_atomically(studio.settings.output_dir / name, lambda part: part.write_text(data)))


def browser_state() -> gr.BrowserState:
    """The browser's random id, kept in its local storage. Made outside gr.Tabs: a component
    directly under gr.Tabs is drawn as a second tab button, and one inside a tab is only
    drawn (and read) once that tab is opened, too late for the page load."""
    return gr.BrowserState(None, storage_key=STORAGE_KEY)


@dataclasses.dataclass
class HistoryLayout:
    """The History tab's components."""

    tab: gr.Tab
    picked: gr.Dropdown
    refresh: gr.Button
    restore: gr.Button
    download: gr.Button
    compare: gr.Button
    downloaded: gr.File
    compared: gr.HTML
    listing: gr.HTML


def layout() -> HistoryLayout:
    with gr.Tab("History", id="history") as tab:
        gr.Markdown("Every result of this browser, newest first (the last 100; files follow the output "
                    "folder's retention policy). Pick one to restore or download it, or two or more to compare.")
        with gr.Row():
            picked = gr.Dropdown([], value=[], multiselect=True, label="Entries", scale=4, elem_id="history-picked")
            refresh = gr.Button("Refresh", scale=1, elem_id="history-refresh")
        with gr.Row():
            restore = gr.Button("Restore", variant="primary", elem_id="history-restore")
            download = gr.Button("Download", elem_id="history-download")
            compare = gr.Button("Compare", elem_id="history-compare")
        downloaded = gr.File(label="Download", visible=False, elem_id="history-file")
        compared = gr.HTML(elem_id="history-compared")
        listing = gr.HTML(list_html([]), elem_id="history-list")
    return HistoryLayout(tab, picked, refresh, restore, download, compare, downloaded, compared, listing)


# ----- handlers ---------------------------------------------------------------------------------

def link(studio: Studio, browser_id, request: gr.Request):
    """Give a new browser an id and link this page's session to it."""
    browser_id = browser_id if isinstance(browser_id, str) and browser_id else uuid.uuid4().hex
    studio.history.link(Sessions.key(request), browser_id)
    return browser_id


def show(studio: Studio, request: gr.Request):
    """The entry picker's choices and the listing, newest first."""
    entries = studio.history.entries(Sessions.key(request))
    return gr.update(choices=[(title(e), e.id) for e in entries], value=[]), list_html(entries)


def picked_entry(studio: Studio, picked_ids, request: gr.Request | None, action: str) -> Entry:
    if not picked_ids or len(picked_ids) != 1:
        raise ValueError(f"entries: pick exactly one entry to {action}, got {len(picked_ids or [])}")
    return studio.history.get(Sessions.key(request), picked_ids[0])


def restored_kinds(hooks: dict) -> list[str]:
    """The tabs a restore can fill, in the order of restore_entry's outputs."""
    return [t for t in ("text", "image", "audio", "tune") if t in hooks]


def restore_entry(studio: Studio, hooks: dict, picked_ids, request: gr.Request):
    """The picked entry's tab selected and its prompt, model and knobs put back there."""
    with user_errors():
        entry = picked_entry(studio, picked_ids, request, "restore")
    kinds = restored_kinds(hooks)
    updates = {t: [gr.update()] * len(hooks[t]["outputs"]) for t in kinds}
    if entry.tab == "text":
        updates["text"] = restore_text(studio, hooks["text"], entry)
    elif entry.tab == "tune":
        updates["tune"] = tune_tab.restore_tune(studio, hooks["tune"], entry.recipe)
    else:
        updates[entry.tab] = restore_file(hooks[entry.tab], entry, request)
    return [gr.Tabs(selected=entry.tab), *[u for t in kinds for u in updates[t]]]


def download_entry(studio: Studio, picked_ids, request: gr.Request):
    with user_errors():
        entry = picked_entry(studio, picked_ids, request, "download")
        if entry.file_state == "pruned":
            gr.Info(f"#{entry.id}: its file was pruned by the retention policy; here is its recipe.")
        return gr.update(value=recipe_file(studio, entry), visible=True)


def compare_entries(studio: Studio, picked_ids, request: gr.Request):
    with user_errors():
        return compare_html(studio.history.pick(Sessions.key(request), picked_ids or []))


# ----- the events -------------------------------------------------------------------------------

def wire(ui: HistoryLayout, studio: Studio, demo: gr.Blocks, tabs: gr.Tabs, hooks: dict,
         browser: gr.BrowserState) -> None:
    private = {"api_visibility": "private"}
    listed = [ui.picked, ui.listing]
    demo.load(bind(link, studio), browser, browser, queue=False, **private).then(
        bind(show, studio), None, listed, queue=False, **private)
    gr.on([ui.tab.select, ui.refresh.click], bind(show, studio), None, listed, queue=False, **private)
    outputs = [tabs, *[component for t in restored_kinds(hooks) for component in hooks[t]["outputs"]]]
    ui.restore.click(bind(restore_entry, studio, hooks), ui.picked, outputs, **private)
    ui.download.click(bind(download_entry, studio), ui.picked, ui.downloaded, **private)
    ui.compare.click(bind(compare_entries, studio), ui.picked, ui.compared, **private)


def build(studio: Studio, demo: gr.Blocks, tabs: gr.Tabs, hooks: dict, browser: gr.BrowserState) -> None:
    """The History tab; hooks maps a tab id (text, image, audio, tune) to what its build()
    returned, browser is browser_state()."""
    text = hooks["text"]
    text.setdefault("outputs", [text["prompt"], text["model"], *text["controls"].values()])
    wire(layout(), studio, demo, tabs, hooks, browser)


def restore_text(studio: Studio, hook: dict, entry: Entry) -> list:
    """Prompt, model and every knob of a text entry, as a recipe file would bring them."""
    with user_errors():
        saved = Recipe.from_json(json.dumps(entry.recipe))
        names = list(hook["controls"])
        chosen = studio.params("text", saved.model_id, **{k: v for k, v in saved.params.items() if k in names})
    gr.Info(f"Restored the recipe of a {saved.model_id} answer (seed {chosen.seed}).")
    return [saved.prompt, saved.model_id, *[getattr(chosen, name) for name in names]]


def restore_file(hook: dict, entry: Entry, request: gr.Request) -> list:
    """An image or audio entry through its tab's own recipe restore: from the kept file,
    or from the recipe alone written as a studio .json when the file was pruned."""
    if entry.file_state == "kept":
        return hook["restore"](entry.path, request)
    handle, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump({RECIPE_KEY: entry.recipe}, out)
        return hook["restore"](path, request)
    finally:
        os.unlink(path)
