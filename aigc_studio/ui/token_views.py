"""Tokens for people: coloured by the model's probability, their alternatives, a column's
figures, and the next-token explainer's chart (one row per candidate, one column per sampling
stage). Pure functions of plain data, shared by the Text tab and the Audio tab's next-note
explainer; tested without a browser."""

from __future__ import annotations

import html

from aigc_studio.actions.text import mean_logprob

# Token colours by the model's probability of the token: confident tokens pale, surprising ones strong.
PROBABILITY_BINS = ((0.9, "p ≥ 0.9"), (0.5, "p 0.5–0.9"), (0.1, "p 0.1–0.5"), (0.0, "p < 0.1"))
DIVERGES = "first difference"
UNKNOWN = "p unknown"  # a remote server that sends no probabilities
COLOR_MAP = {"p ≥ 0.9": "#d1fae5", "p 0.5–0.9": "#fef3c7", "p 0.1–0.5": "#fed7aa", "p < 0.1": "#fca5a5",
             UNKNOWN: "#e5e7eb", DIVERGES: "#818cf8"}
SOMETIMES = (UNKNOWN, DIVERGES)  # legend entries shown only when some token has them


def probability_label(p: float) -> str:
    """The colour bin of a probability; NaN (the server sent none) has its own."""
    return next((label for low, label in PROBABILITY_BINS if p >= low), UNKNOWN)


def shown(text: str) -> str:
    """A token's text with its spaces and line breaks visible."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def highlighted(tokens: list[dict], diverge_at: int | None = None) -> list[tuple[str, str]]:
    """(text, category) per token for gr.HighlightedText: its probability bin, or
    DIVERGES for the first token where side-by-side columns differ."""
    out = []
    for index, token in enumerate(tokens):
        text = token["text"] or ("⟨end⟩" if token["special"] else "")
        out.append((text, DIVERGES if index == diverge_at else probability_label(token["p"])))
    return out


def legend_colors(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The colour map for highlighted pairs: every probability bin (a stable legend),
    "p unknown" and "first difference" only when a token is in them."""
    used = {category for _, category in pairs}
    return {label: color for label, color in COLOR_MAP.items() if label not in SOMETIMES or label in used}


def alternatives_markdown(tokens: list[dict], index: int) -> str:
    token = tokens[index]
    rows = "\n".join(f"| `{shown(text)}` | {100 * p:.1f}% |" for text, p in token["alternatives"])
    return (f"**Token {index}: `{shown(token['text'] or '⟨end⟩')}`** — probability {100 * token['p']:.1f}% "
            f"under the model\n\n| likeliest here | probability |\n|---|---|\n{rows}")


def column_label(label: str, tokens: list[dict], tokens_per_s: float) -> str:
    return f"{label} · {len(tokens)} tokens · {tokens_per_s:.1f} tok/s · mean log-prob {mean_logprob(tokens):.2f}"


def _bar(p: float, kept: bool) -> str:
    color = "#6366f1" if kept else "#d1d5db"
    width = max(0.0, min(100.0, 100 * p))
    cell = (f'<div style="background:{color};height:0.7em;width:{width:.1f}%;min-width:1px;border-radius:2px"></div>'
            f'<span style="font-size:0.8em">{100 * p:.1f}%</span>')
    if not kept:
        cell = f'<div style="opacity:0.45;text-decoration:line-through">{cell}</div><span style="font-size:0.75em">cut</span>'
    return f'<td style="min-width:6em;padding:2px 6px">{cell}</td>'


def context_html(explanation: dict, prompt: str | None, state: dict | None) -> str:
    """What the next token follows, as a person wrote it: the prompt, then the answer's
    first `position` tokens (not the chat template the model reads around them)."""
    if prompt is None:
        return f"<code>{html.escape(explanation['context'])}</code>"
    position = explanation["position"]
    answer = "".join(t["text"] for t in state["tokens"][:position]) if state else ""
    short = prompt if len(prompt) <= 160 else "…" + prompt[-160:]
    shown_answer = answer if len(answer) <= 200 else "…" + answer[-200:]
    return (f"<q>{html.escape(short)}</q>" + (f" → <code>{html.escape(shown_answer)}</code>" if shown_answer else ""))


def chart_html(explanation: dict | None, prompt: str | None = None, state: dict | None = None) -> str:
    """The explainer as a table: one row per candidate token, one column per sampling
    stage, a bar for its probability there; cut tokens are struck through, and each
    stage says how many tokens and how much probability it keeps. The header shows the
    prompt as written (and the answer so far) when given."""
    if not explanation:
        return ""
    stages = explanation["stages"]
    header = "".join(
        f'<th style="padding:2px 6px;text-align:left;{"opacity:0.5" if "off" in s["setting"] else ""}">'
        f'{html.escape(s["name"])}<br><span style="font-weight:normal;font-size:0.8em">{html.escape(s["setting"])}</span></th>'
        for s in stages)
    rows = []
    for row, (token_id, text) in enumerate(zip(explanation["candidate_ids"], explanation["candidates"])):
        mark = " ★" if token_id == explanation["chosen_id"] else ""
        cells = "".join(_bar(s["probs"][row], s["kept"][row]) for s in stages)
        rows.append(f'<tr><td style="padding:2px 6px"><code>{html.escape(shown(text))}</code>{mark}</td>{cells}</tr>')
    kept = "".join(f'<td style="padding:2px 6px;font-size:0.8em">{s["kept_tokens"]} tokens<br>'
                   f'mass kept {100 * s["mass_kept"]:.1f}%</td>' for s in stages)
    chosen = " · ★ = the token generated here" if explanation["chosen_id"] is not None else ""
    return (f'<div style="overflow-x:auto"><p>Next token after {context_html(explanation, prompt, state)} '
            f'(answer token {explanation["position"]}){chosen}</p>'
            f'<table style="border-collapse:collapse"><tr><th style="text-align:left">token</th>{header}</tr>'
            f'{"".join(rows)}<tr><td style="font-size:0.8em">kept</td>{kept}</tr></table></div>')
