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

import re
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
        return ch.pitch_name(pitch + self.transpose)

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
    given: frozenset = frozenset()  # grid positions (S A T B per step) taken from the start knob

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

    key = (params.seed, params.temperature, params.top_k, params.top_p, params.bars, params.key, params.metre,
           params.start)
    transpose = transposition(params.key)
    start = parse_start(params.start, params.key, params.metre, params.bars)
    given = {4 * step + voice: token for step, tokens in enumerate(start) for voice, token in enumerate(tokens)
             if token is not None}
    with loaded.lock:
        cached = loaded.pieces.get(key)
    if cached is None:
        sequence = prompt_tokens(params.key, params.metre)
        column = Column(sampling_params(params), torch.tensor([sequence]), loaded.text_model(transpose))
        bar = ch.METRES[params.metre]
        for index in range(params.bars * bar * 4):
            if index in given:
                sequence.append(given[index])
                continue
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
    return Piece(list(cached), params.key, params.metre, transpose, params.tempo, params.timbre, params.bars,
                 frozenset(given))


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
    """'bar 3, beat 2, alto' for a grid token index ('..., given by the start' for a given note)."""
    step, voice = divmod(position, 4)
    bar = ch.METRES[piece.metre]
    given = " (given by the start: the model did not choose it)" if position in piece.given else ""
    return f"bar {step // bar + 1}, beat {(step % bar) // ch.STEPS_PER_QUARTER + 1}" \
           f"{'' if step % 2 == 0 else '½'}, {ch.VOICES[voice]}{given}"


# ----- a start: a melody to harmonise, or first bars to continue ------------------------------

NOTE_PATTERN = re.compile(r"^([A-Ga-g])([#b]?)(-?\d)$")
HOLD_MARK, REST_MARK, BAR_MARK = "-", "r", "|"


def _note_pitch(name: str) -> int | None:
    """'F#4' -> 66, 'Bb3' -> 58; None when `name` is not a note name."""
    match = NOTE_PATTERN.match(name)
    if match is None:
        return None
    letter, accidental, octave = match.groups()
    return (int(octave) + 1) * 12 + ch.LETTER_PITCH_CLASS[letter.upper()] + {"#": 1, "b": -1, "": 0}[accidental]


def parse_start(text: str, key: str, metre: str, bars: int) -> list[list[int | None]]:
    """The start knob as grid steps of [S, A, T, B] tokens in model space (None: the model
    chooses). One line is a soprano melody to harmonise; four lines (soprano, alto, tenor,
    bass) are first bars to continue. A line is one item per eighth note: a note in sounding
    pitch ('C5', 'F#4', 'Bb3'), '-' (the note goes on) or 'r' (a rest); '|' bar lines are
    optional. ParamError naming `start` for anything else, a note outside its voice's range,
    or a start longer than `bars`."""
    lines = [line.split() for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return []
    if len(lines) not in (1, 4):
        raise ParamError("start", f"one line (a soprano melody) or four lines (soprano, alto, tenor, bass), "
                                  f"got {len(lines)} lines")
    transpose = transposition(key)
    voices = [[token for token in line if token != BAR_MARK] for line in lines]
    if len({len(v) for v in voices}) > 1:
        raise ParamError("start", f"the four lines must be equally long (eighth notes: "
                                  f"{', '.join(str(len(v)) for v in voices)})")
    most = bars * ch.METRES[metre]
    if len(voices[0]) > most:
        raise ParamError("start", f"{len(voices[0])} eighth notes do not fit in {bars} bars of {metre} ({most}); "
                                  f"raise bars or shorten the start")
    steps = [[None] * 4 for _ in voices[0]]
    for voice, items in enumerate(voices):
        name, sounding = ch.VOICES[voice], False
        low, high = ch.RANGES[name]
        for step, item in enumerate(items):
            where = f"{name}, eighth note {step + 1}"
            if item == HOLD_MARK:
                if not sounding:
                    raise ParamError("start", f"{where}: '-' holds a note, but no note sounds there")
                steps[step][voice] = ch.HOLD
                continue
            if item.lower() == REST_MARK:
                steps[step][voice], sounding = ch.REST, False
                continue
            pitch = _note_pitch(item)
            if pitch is None:
                raise ParamError("start", f"{where}: {item!r} is not a note (like C5, F#4, Bb3), "
                                          f"'{HOLD_MARK}' (hold) or '{REST_MARK}' (rest)")
            if not low <= pitch <= high:
                raise ParamError("start", f"{where}: {item} is outside the {name}'s range "
                                          f"{ch.pitch_name(low)}..{ch.pitch_name(high)}")
            steps[step][voice], sounding = ch.pitch_token(pitch - transpose), True
    return steps


def _fit_range(pitches: list[int], low: int, high: int) -> int:
    """The octave shift (semitones) that puts the most of `pitches` inside [low, high]."""
    return max((12 * k for k in range(-4, 5)),
               key=lambda shift: (sum(low <= p + shift <= high for p in pitches), -abs(shift)))


def start_from_midi(data: bytes, max_bars: int = 32) -> tuple[str, str, str, int]:
    """(start text, key, metre, bars) read from a Standard MIDI File: four parts are first bars
    to continue (highest part = soprano), anything else gives its top line as a melody to
    harmonise. Notes snap to the eighth-note grid; each line moves by octaves into its voice's
    range (a note still outside folds in by octaves); the key is music21's Krumhansl analysis;
    the metre is the file's first time signature when it is 4/4 or 3/4 (else 4/4); at most
    `max_bars` bars. ParamError naming `midi` when the bytes are not MIDI or hold no notes."""
    from music21 import converter, midi as m21midi

    try:
        score = converter.parseData(bytes(data), format="midi")
    except (m21midi.MidiException, ValueError, IndexError, KeyError) as error:
        raise ParamError("midi", f"not a readable MIDI file ({error})") from None
    parts = [[(float(n.offset), float(n.quarterLength), [p.midi for p in n.pitches])
              for n in part.flatten().stripTies().notes] for part in score.parts]
    parts = [part for part in parts if part]
    if not parts:
        raise ParamError("midi", "the MIDI file holds no notes")
    signatures = [ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")]
    metre = signatures[0] if signatures and signatures[0] in ch.METRES else "4/4"
    analysed = score.analyze("key")
    key = f"{ch.NOTE_NAMES[analysed.tonic.pitchClass]} {analysed.mode if analysed.mode == 'minor' else 'major'}"
    if len(parts) == 4:
        lines = sorted(parts, key=lambda notes: -sum(max(p) for _, _, p in notes) / len(notes))
    else:
        lines = [[note for part in parts for note in part]]
    length = min(max_bars * ch.METRES[metre],
                 max(round(2 * (offset + span)) for line in lines for offset, span, _ in line))
    texts = []
    for voice, line in enumerate(lines):
        onsets: dict[int, tuple[int, int]] = {}
        for offset, span, pitches in line:
            step = round(2 * offset)
            if step < length and (step not in onsets or max(pitches) > onsets[step][0]):
                onsets[step] = (max(pitches), max(1, round(2 * span)))
        low, high = ch.RANGES[ch.VOICES[voice]]
        shift = _fit_range([p for p, _ in onsets.values()], low, high)
        items, sounding_until = [], 0
        for step in range(length):
            if step in onsets:
                pitch = onsets[step][0] + shift
                while pitch < low:
                    pitch += 12
                while pitch > high:
                    pitch -= 12
                items.append(ch.pitch_name(pitch))
                sounding_until = step + onsets[step][1]
            else:
                items.append(HOLD_MARK if step < sounding_until else REST_MARK)
        bar = ch.METRES[metre]
        texts.append(f" {BAR_MARK} ".join(" ".join(items[i:i + bar]) for i in range(0, length, bar)))
    return "\n".join(texts), key, metre, -(-length // ch.METRES[metre])


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
