"""Composing with the chorale model: the studio's own text sampler over chorale tokens.

A symbolic music model is a language model over notes, so this module adds no sampler of
its own: the chorale transformer is wrapped as an engines.text.TextModel (a tokenizer that
names tokens, a backend whose `prefill` returns next-token logits), each step is drawn by
engines.text.Column (the text decoding loop's picker, with the `sampling_stages` logits
processors and a seeded torch.Generator), and the next-note explainer is
engines.text.explain_next_token itself. temperature, top-k and top-p mean exactly what
they mean for text. Only the hard masks are music's own: before the knobs act, a voice's
out-of-range pitches, a HOLD after a rest (chorale_model.allowed) and a move into parallel
fifths or octaves (chorale_model.parallel_pitches) get probability 0, and
the first step is the key's tonic chord (chorale_model.OPENING: it fixes the key).

The model writes in C major / A minor; the key knob is a transposition of -6..+5
semitones, and the range masks are applied in sounding pitch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from aigc_studio import chorales as ch
from aigc_studio.chorale_model import (ChoraleTransformer, inputs, load, mask_logits, opening_classes,
                                       parallel_pitches)
from aigc_studio.engines import GenerationStopped
from aigc_studio.params import MUSIC_KEYS, AudioParams, ParamError, TextParams

KEYS = MUSIC_KEYS
PIECE_CACHE = 16  # composed pieces kept per model (a save or a MIDI download reuses the notes)


def parse_key(key: str) -> tuple[int, str]:
    """'D minor' -> (tonic pitch class 2, 'minor'); ParamError naming `key` otherwise."""
    if key not in KEYS:
        raise ParamError("key", f"must be one of {', '.join(KEYS)}, got {key!r}")
    name, mode = key.split()
    return ch.NOTE_NAMES.index(name), mode


def transposition(key: str) -> int:
    """Semitones (-6..+5) from the model's C major / A minor to `key`."""
    tonic, mode = parse_key(key)
    home = 0 if mode == "major" else 9
    return (tonic - home + 6) % 12 - 6


class ChoraleTokenizer:
    """Names of chorale tokens in sounding pitch ('F#4', 'hold'), shaped like a transformers
    tokenizer for the text engine."""

    all_special_ids: list[int] = []

    def __init__(self, transpose: int = 0):
        self.transpose = transpose

    def name(self, token: int) -> str:
        pitch = ch.token_pitch(token)
        if pitch is None:
            return ch.SPECIAL_NAMES[token]
        pitch += self.transpose
        return f"{ch.NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        return " ".join(self.name(i) for i in ids if not (skip_special_tokens and i < ch.PITCH0))


class ChoraleBackend:
    """A step backend for engines.text: token ids -> hard-masked next-token logits. The last
    `window` grid steps are read (a longer piece slides the window along, cut at a step)."""

    name = "torch"

    def __init__(self, model: ChoraleTransformer, transpose: int = 0):
        self.model, self.transpose = model, transpose
        self.max_length = 4 * 32 * 8 + 4

    def decoder(self) -> "ChoraleBackend":
        return self

    def prefill(self, ids: torch.Tensor, rows: int = 1) -> torch.Tensor:
        sequence = [int(i) for i in ids.reshape(-1)]
        return next_logits(self.model, sequence, self.transpose).reshape(1, -1).expand(rows, -1).clone()


def next_logits(model: ChoraleTransformer, sequence: list[int], transpose: int = 0) -> torch.Tensor:
    """The hard-masked logits (float32, vocabulary) for the token after `sequence`
    ([mode, metre, BOS, grid tokens...], a piece starting on a downbeat)."""
    body = sequence[3:]
    voice = len(body) % 4
    previous = body[-4] if len(body) >= 4 else None
    window = model.config.window
    step = len(body) // 4
    if step >= window:  # keep the last window-1 whole steps and the current step's tokens
        first = step - window + 1
        context, phase = sequence[:2] + body[4 * first:], first
    else:
        context, phase = sequence, 0
    bar = ch.METRES["3/4"] if sequence[1] == ch.METRE_3 else ch.METRES["4/4"]
    with torch.inference_mode():
        logits = model(*inputs(context, phase % bar))[0, -1].float()
    opening = opening_classes("minor" if sequence[0] == ch.MINOR else "major", voice) if step == 0 else None
    return mask_logits(logits, voice, previous, transpose, opening, parallel_pitches(body))


@dataclass
class ChoraleModel:
    """A loaded chorale model: the transformer, and a cache of pieces composed with it."""

    model: ChoraleTransformer
    folder: Path
    pieces: OrderedDict
    lock: threading.Lock

    def text_model(self, transpose: int):
        from aigc_studio.engines.text import TextModel

        return TextModel(ChoraleTokenizer(transpose), ChoraleBackend(self.model, transpose), "cpu", set(), self.model)


def load_model(folder: Path) -> ChoraleModel:
    """The chorale model saved in folder (config.json + model.safetensors)."""
    if not (Path(folder) / "model.safetensors").is_file():
        raise FileNotFoundError(f"model: no chorale weights in {folder}; train them with "
                                "`python -m aigc_studio.train chorales`")
    return ChoraleModel(load(Path(folder)), Path(folder), OrderedDict(), threading.Lock())


@dataclass
class Piece:
    """A composed chorale: its tokens (model space), key, metre and the knobs that made it."""

    tokens: list[int]
    key: str
    metre: str
    transpose: int
    tempo: float
    timbre: str
    bars: int

    @property
    def steps(self) -> int:
        return len(ch.grid_tokens(self.tokens)) // 4

    def notes(self) -> list[list[tuple[int, int, int]]]:
        """Per voice (S, A, T, B): (sounding MIDI pitch, start step, length in steps)."""
        return [[(p + self.transpose, s, n) for p, s, n in voice] for voice in ch.decode(self.tokens)]

    @property
    def step_seconds(self) -> float:
        """Seconds per grid step (an eighth note) at the tempo, in quarter notes a minute."""
        return 60.0 / self.tempo / ch.STEPS_PER_QUARTER


def sampling_params(params: AudioParams) -> TextParams:
    """The text knobs the music knobs are: temperature, top-k, top-p and seed; every
    other text knob off (no penalties, min-p or typical-p: a chorale repeats notes)."""
    return TextParams(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, seed=params.seed,
                      repetition_penalty=1.0, greedy=False, min_p=0.0, typical_p=1.0, no_repeat_ngram_size=0)


def prompt_tokens(key: str, metre: str) -> list[int]:
    """[mode, metre, BOS]: what every piece starts from."""
    if metre not in ch.METRES:
        raise ParamError("metre", f"must be one of {', '.join(ch.METRES)}, got {metre!r}")
    return [ch.MODE_TOKEN[parse_key(key)[1]], ch.METRE_TOKEN[metre], ch.BOS]


def compose(loaded: ChoraleModel, params: AudioParams, on_step: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None) -> Piece:
    """params.bars bars of four-voice chorale in params.key and params.metre (params.seed >= 0).

    Every token is drawn by the text engine's Column from the hard-masked logits; on_step
    (bar, bars) after each bar, and a set `stop` raises GenerationStopped between bars.
    The same knobs give the same tokens (cached: composing again costs nothing)."""
    from aigc_studio.engines.text import Column

    key = (params.seed, params.temperature, params.top_k, params.top_p, params.bars, params.key, params.metre)
    transpose = transposition(params.key)
    with loaded.lock:
        cached = loaded.pieces.get(key)
    if cached is None:
        sequence = prompt_tokens(params.key, params.metre)
        column = Column(sampling_params(params), torch.tensor([sequence]), loaded.text_model(transpose))
        bar = ch.METRES[params.metre]
        for index in range(params.bars * bar * 4):
            logits = next_logits(loaded.model, sequence, transpose)
            column.ids = torch.tensor([sequence])  # the penalties (off here) would read the history
            sequence.append(column.pick(logits))
            if (index + 1) % (bar * 4) == 0:
                done = (index + 1) // (bar * 4)
                if on_step is not None:
                    on_step(done - 1, params.bars)
                if stop is not None and stop.is_set() and done < params.bars:
                    raise GenerationStopped(f"stopped after bar {done}")
        cached = sequence
        with loaded.lock:
            loaded.pieces[key] = cached
            while len(loaded.pieces) > PIECE_CACHE:
                loaded.pieces.popitem(last=False)
    return Piece(list(cached), params.key, params.metre, transpose, params.tempo, params.timbre, params.bars)


def explain(loaded: ChoraleModel, piece: Piece, position: int, params: AudioParams, top_n: int = 10):
    """Why the piece's grid token `position` (0-based, S A T B per step) is what it is: the
    text engine's explain_next_token over the chorale model, stage by stage, with the same
    sampling_stages the composer drew it with. Candidates are named like 'C5', 'hold'."""
    from aigc_studio.engines.text import explain_next_token

    body = ch.grid_tokens(piece.tokens)
    if not 0 <= position < len(body):
        raise ParamError("position", f"must be a whole number in [0, {len(body) - 1}], got {position!r}")
    context = torch.tensor(piece.tokens[:3 + position])
    return explain_next_token(loaded.text_model(piece.transpose), context, sampling_params(params), top_n,
                              chosen_id=body[position], position=position)


def describe_position(piece: Piece, position: int) -> str:
    """'bar 3, beat 2, alto' for a grid token index."""
    step, voice = divmod(position, 4)
    bar = ch.METRES[piece.metre]
    return f"bar {step // bar + 1}, beat {(step % bar) // ch.STEPS_PER_QUARTER + 1}" \
           f"{'' if step % 2 == 0 else '½'}, {ch.VOICES[voice]}"


def render(piece: Piece) -> tuple[int, "object"]:
    """(sample rate, stereo float32 samples) of a piece, by the additive synthesiser."""
    from aigc_studio import music_render

    return music_render.RATE, music_render.synthesise(piece.notes(), piece.step_seconds, piece.timbre)


def recipe_fields(model_id: str, title: str, params: AudioParams) -> dict:
    """What a MIDI file carries as its recipe: model, title and every knob the model reads.
    No times or versions, so the same knobs give the same bytes."""
    from dataclasses import asdict

    from aigc_studio.engines.audio import knobs_used

    return {"modality": "audio", "model_id": model_id, "prompt": title,
            "params": {k: v for k, v in asdict(params).items() if k in knobs_used("chorales")}}


def midi(piece: Piece, recipe: dict | None = None, title: str = "") -> bytes:
    """The piece as a Standard MIDI File carrying `recipe` (see music_render.midi_bytes)."""
    from aigc_studio import music_render

    return music_render.midi_bytes(piece.notes(), piece.tempo, piece.metre, piece.key, recipe, piece.timbre, title)
