"""Bach chorales as tokens: the corpus reader and the four-voice grid tokenizer.

The corpus is the `bach/*.mxl` MusicXML files inside the installed `music21` wheel (code
BSD-3-Clause, music public domain); it is read at training time and never copied into
the studio. A small stdlib reader (zip + ElementTree) parses a chorale in ~25 ms where
music21's own parser takes ~1 s; tests check the two agree.

Tokens: one grid step per eighth note, four tokens a step in the order soprano, alto,
tenor, bass. A token is a MIDI pitch (a note starts), HOLD (the voice's note goes on) or
REST. A piece is [mode, metre, BOS, steps..., END]; every chorale is transposed to C major
or A minor by its key signature, so the key is a render-time transposition.
"""

from __future__ import annotations

import importlib.util
import random
import zipfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

VOICES = ("soprano", "alto", "tenor", "bass")
STEPS_PER_QUARTER = 2  # eighth-note grid: 2.7 % of Bach's notes start off it (16th passing notes)
METRES = {"4/4": 8, "3/4": 6}  # grid steps per bar

PAD, BOS, END, REST, HOLD, MAJOR, MINOR, METRE_4, METRE_3 = range(9)
SPECIAL_NAMES = ("pad", "begin", "end", "rest", "hold", "major", "minor", "4/4", "3/4")
LOWEST, HIGHEST = 28, 88  # MIDI pitches with a token (E1..E6): the corpus after transposition +-3
PITCH0 = len(SPECIAL_NAMES)
VOCAB = PITCH0 + HIGHEST - LOWEST + 1
MODE_TOKEN = {"major": MAJOR, "minor": MINOR}
METRE_TOKEN = {"4/4": METRE_4, "3/4": METRE_3}

# Each voice's range (MIDI, inclusive) in sounding pitch: the classic SATB compass widened by a
# tone where Bach goes (Bach's chorales leave it on 0.1 % of their notes).
RANGES = {"soprano": (57, 81), "alto": (52, 76), "tenor": (45, 72), "bass": (33, 64)}
LETTER_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass
class Chorale:
    """One chorale in C major / A minor: per voice, notes as (MIDI pitch, start, length)
    in grid steps, plus its mode, metre and the grid step where bar 1 begins (a pickup
    bar makes it > 0... expressed as phase: position in bar of step 0)."""

    name: str
    mode: str  # major | minor
    metre: str  # 4/4 | 3/4
    phase: int  # position in the bar of grid step 0 (a pickup starts late in its bar)
    length: int  # grid steps
    notes: list[list[tuple[int, int, int]]]  # per voice: (pitch, start, length)

    @property
    def bar(self) -> int:
        return METRES[self.metre]


class NotChorale(ValueError):
    """A corpus file that is not four monophonic voices in 4/4 or 3/4."""


def corpus_files() -> list[Path]:
    """The Bach chorale MusicXML files of the installed music21 wheel, sorted by name."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("music21 is not installed: pip install -r requirements.txt")
    folder = Path(spec.submodule_search_locations[0]) / "corpus" / "bach"
    return sorted(folder.glob("bwv*.mxl"))


def _score_xml(path: Path) -> ET.Element:
    with zipfile.ZipFile(path) as archive:
        inner = next(n for n in archive.namelist() if n.endswith((".xml", ".musicxml")) and not n.startswith("META-INF"))
        return ET.fromstring(archive.read(inner))


def _read_part(part: ET.Element) -> tuple[list[tuple[int, float, float]], dict]:
    """Notes (MIDI, start, length) in quarter notes, ties merged, and the first attributes."""
    notes: list[list] = []
    info: dict = {"measure_lengths": []}
    divisions, time, tied = 1, 0.0, False
    for measure in part.iter("measure"):
        start = time
        for element in measure:
            if element.tag == "attributes":
                divisions = int(element.findtext("divisions") or divisions)
                if element.find("key") is not None and "fifths" not in info:
                    info["fifths"] = int(element.findtext("key/fifths"))
                    info["mode"] = element.findtext("key/mode")
                beats = element.findtext("time/beats")
                if beats is not None:
                    info.setdefault("metres", set()).add(f"{beats}/{element.findtext('time/beat-type')}")
            elif element.tag == "forward":  # an unwritten rest (e.g. the end of a final bar)
                time += int(element.findtext("duration")) / divisions
            elif element.tag == "backup":
                raise NotChorale("more than one voice in a part")
            elif element.tag == "note":
                if element.find("grace") is not None:
                    continue
                if element.find("chord") is not None:
                    raise NotChorale("chords in a part")
                length = int(element.findtext("duration")) / divisions
                pitch = element.find("pitch")
                if pitch is not None:
                    midi = (12 * (int(pitch.findtext("octave")) + 1) + LETTER_PITCH_CLASS[pitch.findtext("step")]
                            + int(float(pitch.findtext("alter") or 0)))
                    if tied and notes and notes[-1][0] == midi and abs(notes[-1][1] + notes[-1][2] - time) < 1e-6:
                        notes[-1][2] += length
                    else:
                        notes.append([midi, time, length])
                    tie_types = {t.get("type") for t in element.findall("tie")}
                    tied = "start" in tie_types
                time += length
        info["measure_lengths"].append(time - start)
    return [tuple(n) for n in notes], info


def read_chorale(path: Path) -> Chorale:
    """Parse one corpus file into a Chorale in C major / A minor; NotChorale if it is not
    four monophonic parts in 4/4 or 3/4."""
    root = _score_xml(path)
    parts = root.findall("part")
    if len(parts) != 4:
        raise NotChorale(f"{len(parts)} parts")
    read = [_read_part(p) for p in parts]
    info = read[0][1]
    metres = set().union(*(i.get("metres", set()) for _, i in read))
    if len(metres) != 1 or next(iter(metres)) not in METRES:
        raise NotChorale(f"metre {sorted(metres)}")
    metre = next(iter(metres))
    if "fifths" not in info:
        raise NotChorale("no key signature")
    major_pc = (7 * info["fifths"]) % 12
    bass = read[3][0]
    mode = info.get("mode")
    if mode not in ("major", "minor"):  # no mode written: the final bass note is the tonic
        mode = "minor" if bass and bass[-1][0] % 12 == (major_pc + 9) % 12 else "major"
    shift = -major_pc if major_pc <= 6 else 12 - major_pc  # to C major / A minor, the nearer way
    bar_quarters = METRES[metre] / STEPS_PER_QUARTER
    first = info["measure_lengths"][0] if info["measure_lengths"] else bar_quarters
    pickup = (bar_quarters - first) if first < bar_quarters - 1e-6 else 0.0
    phase = int(round(pickup * STEPS_PER_QUARTER))
    voices = []
    end = 0.0
    for notes, _ in read:
        voices.append([(p + shift, s, n) for p, s, n in notes])
        if notes:
            end = max(end, notes[-1][1] + notes[-1][2])
    grid = [_quantise(v) for v in voices]
    return Chorale(path.stem, mode, metre, phase, int(round(end * STEPS_PER_QUARTER)), grid)


def _quantise(notes: list[tuple[int, float, float]]) -> list[tuple[int, int, int]]:
    """Notes on the eighth grid: each grid step takes the note sounding at its start; a note
    that sounds at no grid start (a 16th passing note) is dropped."""
    out: list[tuple[int, int, int]] = []
    for pitch, start, length in notes:
        first = int(-(-start * STEPS_PER_QUARTER // 1))  # first grid step at or after the onset
        last = int(-(-(start + length) * STEPS_PER_QUARTER // 1))  # first step after the note
        if last > first:
            out.append((pitch, first, last - first))
    return out


def read_corpus(files: list[Path] | None = None) -> list[Chorale]:
    """Every corpus file that is a four-voice chorale (about 360 of the 408)."""
    chorales = []
    for path in files if files is not None else corpus_files():
        try:
            chorales.append(read_chorale(path))
        except NotChorale:
            continue
    return chorales


def split_names(names: list[str], seed: int = 0, held_out: float = 0.1) -> tuple[list[str], list[str]]:
    """(training names, held-out names): a seeded shuffle of the sorted names, the first
    `held_out` share held out."""
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    count = max(1, round(len(shuffled) * held_out))
    return sorted(shuffled[count:]), sorted(shuffled[:count])


# ----- tokens ---------------------------------------------------------------------------------

def pitch_token(midi: int) -> int:
    if not LOWEST <= midi <= HIGHEST:
        raise ValueError(f"pitch {midi} outside the vocabulary [{LOWEST}, {HIGHEST}]")
    return PITCH0 + midi - LOWEST


def token_pitch(token: int) -> int | None:
    """The MIDI pitch of a pitch token, else None."""
    return token - PITCH0 + LOWEST if token >= PITCH0 else None


def pitch_name(midi: int) -> str:
    """'C4' for MIDI 60 (scientific pitch notation, flats as Eb, Ab, Bb)."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def token_name(token: int, voice: int | None = None) -> str:
    """Readable: 'S C5', 'A hold', 'rest', '4/4'."""
    label = f"{'SATB'[voice]} " if voice is not None else ""
    pitch = token_pitch(token)
    if pitch is None:
        return label + SPECIAL_NAMES[token]
    return label + pitch_name(pitch)


def to_grid(chorale: Chorale, transpose: int = 0) -> list[list[int]]:
    """[step][voice] tokens of a chorale, transposed by `transpose` semitones."""
    grid = [[REST] * 4 for _ in range(chorale.length)]
    for voice, notes in enumerate(chorale.notes):
        for pitch, start, length in notes:
            for step in range(start, min(start + length, chorale.length)):
                grid[step][voice] = pitch_token(pitch + transpose) if step == start else HOLD
    return grid


def encode(chorale: Chorale, transpose: int = 0) -> list[int]:
    """The token sequence [mode, metre, BOS, S A T B per step..., END]."""
    tokens = [MODE_TOKEN[chorale.mode], METRE_TOKEN[chorale.metre], BOS]
    for step in to_grid(chorale, transpose):
        tokens.extend(step)
    return tokens + [END]


def grid_tokens(tokens: list[int]) -> list[int]:
    """The S A T B tokens of a sequence, without its prefix and END."""
    body = tokens[3:] if len(tokens) >= 3 and tokens[2] == BOS else tokens[2:]
    return [t for t in body if t not in (END, PAD)]


def decode(tokens: list[int]) -> list[list[tuple[int, int, int]]]:
    """Per voice, notes (MIDI pitch, start step, length in steps) of a token sequence
    (with or without its prefix); a HOLD after a rest is read as a rest."""
    body = grid_tokens(tokens)
    notes: list[list[list[int]]] = [[] for _ in VOICES]
    sounding = [False] * 4
    for index, token in enumerate(body):
        voice, step = index % 4, index // 4
        pitch = token_pitch(token)
        if pitch is not None:
            notes[voice].append([pitch, step, 1])
            sounding[voice] = True
        elif token == HOLD and sounding[voice]:
            notes[voice][-1][2] += 1
        else:
            sounding[voice] = False
    return [[tuple(n) for n in voice_notes] for voice_notes in notes]


def slots(tokens: list[int], phase: int = 0) -> tuple[list[int], list[int]]:
    """(voice, position in bar) of the token *after* each token of a sequence that starts
    with its [mode, metre] prefix. Voice 4 means "no voice" (the prefix, BOS); position
    indexes 8 steps of a 4/4 bar, then 6 of a 3/4 bar, and len is "none"."""
    bar = METRES["3/4"] if tokens[1] == METRE_3 else METRES["4/4"]
    offset = METRES["4/4"] if bar == METRES["3/4"] else 0
    body_start = 3 if len(tokens) > 2 and tokens[2] == BOS else 2
    voices, positions = [], []
    for index in range(len(tokens)):
        following = index + 1 - body_start  # index of the next token within the grid body
        if following < 0:
            voices.append(4)
            positions.append(NO_POSITION)
        else:
            voices.append(following % 4)
            positions.append(offset + (phase + following // 4) % bar)
    return voices, positions


NO_POSITION = METRES["4/4"] + METRES["3/4"]
