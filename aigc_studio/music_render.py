"""Playing a chorale: a deterministic additive synthesiser and a Standard MIDI File writer.

The synthesiser needs nothing but numpy: each note is a sum of harmonics (the timbre
preset's amplitudes) under an attack/decay/sustain/release envelope, with a slow vibrato
for the sung and bowed presets; each voice has its own place in the stereo field. No
random numbers: the same notes give the same samples, bit for bit.

The MIDI writer makes a format-1 file (one tempo/metre/key track, then one track per voice,
480 ticks a quarter note) whose first track carries the recipe as a text event; its bytes
depend only on the notes, the tempo and the recipe text.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from aigc_studio import chorales as ch

RATE = 32000  # Hz
PANS = (-0.45, -0.15, 0.15, 0.45)  # S A T B: -1 left .. +1 right
VOICE_GAIN = (0.9, 0.75, 0.75, 0.85)  # the outer voices a little forward
# timbre -> (harmonic amplitudes 1..n, attack s, decay s, sustain level, release s, vibrato depth in semitones)
TIMBRES = {
    "organ": ((1.0, 0.6, 0.35, 0.3, 0.0, 0.2, 0.0, 0.15), 0.02, 0.05, 0.9, 0.06, 0.0),
    "strings": (tuple(0.9 / n for n in range(1, 11)), 0.08, 0.1, 0.85, 0.12, 0.08),
    "flute": ((1.0, 0.25, 0.08, 0.03), 0.05, 0.08, 0.8, 0.08, 0.05),
    "choir": ((1.0, 0.5, 0.25, 0.12, 0.06), 0.12, 0.1, 0.85, 0.15, 0.12),
}
VIBRATO_HZ = 5.0
TICKS = 480  # per quarter note
PROGRAMS = {"organ": 19, "strings": 48, "flute": 73, "choir": 52}  # General MIDI (0-based)


def frequency(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _note(midi: int, seconds: float, timbre: str, rate: int) -> np.ndarray:
    amplitudes, attack, decay, sustain, release, vibrato = TIMBRES[timbre]
    count = int(round((seconds + release) * rate))
    t = np.arange(count) / rate
    # vibrato as phase: the instantaneous frequency is f * 2^(depth/12 * sin(2 pi 5 t)), fading in
    depth = vibrato / 12 * np.log(2) * np.minimum(t / 0.3, 1.0)
    phase = 2 * np.pi * frequency(midi) * (t + depth * (1 - np.cos(2 * np.pi * VIBRATO_HZ * t)) / (2 * np.pi * VIBRATO_HZ))
    nyquist = rate / 2
    wave = np.zeros(count)
    for harmonic, amplitude in enumerate(amplitudes, start=1):
        if amplitude and frequency(midi) * harmonic < nyquist * 0.9:
            wave += amplitude * np.sin(harmonic * phase)
    held = min(seconds, attack + decay)
    envelope = np.interp(t, [0, attack, attack + decay, max(seconds, held), seconds + release],
                         [0, 1, sustain, sustain, 0])
    return wave * envelope / sum(amplitudes)


def synthesise(notes: list[list[tuple[int, int, int]]], step_seconds: float, timbre: str = "organ",
               rate: int = RATE) -> np.ndarray:
    """Stereo float32 samples, shape (n, 2), in [-1, 1], of per-voice notes (MIDI pitch,
    start step, length in steps) at step_seconds seconds a step."""
    if timbre not in TIMBRES:
        raise ValueError(f"timbre: must be one of {', '.join(TIMBRES)}, got {timbre!r}")
    release = TIMBRES[timbre][4]
    end = max((s + n for voice in notes for _, s, n in voice), default=0)
    out = np.zeros((int(round((end * step_seconds + release) * rate)) + 1, 2))
    for voice, voice_notes in enumerate(notes):
        left, right = np.cos((PANS[voice] + 1) * np.pi / 4), np.sin((PANS[voice] + 1) * np.pi / 4)  # equal power
        for pitch, start, length in voice_notes:
            wave = VOICE_GAIN[voice] * _note(pitch, length * step_seconds, timbre, rate)
            first = int(round(start * step_seconds * rate))
            wave = wave[:len(out) - first]
            out[first:first + len(wave), 0] += left * wave
            out[first:first + len(wave), 1] += right * wave
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 0:
        out *= 0.8 / peak  # -2 dBFS: four voices never clip
    return out.astype(np.float32)


# ----- MIDI -----------------------------------------------------------------------------------

def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, bytes]]) -> bytes:
    """An MTrk chunk from (absolute tick, event bytes), in order, ended by end-of-track."""
    body, now = b"", 0
    for tick, event in events:
        body += _varlen(tick - now) + event
        now = tick
    body += _varlen(0) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


def _meta(kind: int, data: bytes) -> bytes:
    return bytes([0xFF, kind]) + _varlen(len(data)) + data


def midi_bytes(notes: list[list[tuple[int, int, int]]], tempo: float, metre: str, key: str,
               recipe: dict | None = None, timbre: str = "organ", title: str = "") -> bytes:
    """A format-1 Standard MIDI File of per-voice notes (MIDI pitch, start step, length in
    steps, eighth-note steps) at `tempo` quarter notes a minute. Track 1 holds the tempo, the
    time and key signatures, the title and `recipe` (JSON, sorted keys) as a text event."""
    per_step = TICKS // ch.STEPS_PER_QUARTER
    beats = int(metre.split("/")[0])
    tonic, mode = key.split()
    fifths = {"major": (ch.NOTE_NAMES.index(tonic) * 7 + 6) % 12 - 6,
              "minor": ((ch.NOTE_NAMES.index(tonic) + 3) * 7 + 6) % 12 - 6}[mode]
    conductor = [(0, _meta(0x03, (title or "chorale").encode("utf-8")[:200])),
                 (0, _meta(0x51, int(round(60_000_000 / tempo)).to_bytes(3, "big"))),
                 (0, _meta(0x58, bytes([beats, 2, 24, 8]))),
                 (0, _meta(0x59, struct.pack(">bB", fifths, 1 if mode == "minor" else 0)))]
    if recipe is not None:
        conductor.append((0, _meta(0x01, json.dumps(recipe, sort_keys=True).encode("utf-8"))))
    tracks = [_track(conductor)]
    for voice, voice_notes in enumerate(notes):
        events = [(0, _meta(0x03, ch.VOICES[voice].encode())), (0, bytes([0xC0 | voice, PROGRAMS.get(timbre, 19)]))]
        offs = []
        for pitch, start, length in voice_notes:
            offs.append(((start + length) * per_step, bytes([0x80 | voice, pitch, 0])))
            events.append((start * per_step, bytes([0x90 | voice, pitch, 80])))
        merged = sorted(offs + events[2:], key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80))  # note-offs first at a tick
        tracks.append(_track(events[:2] + merged))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), TICKS)
    return header + b"".join(tracks)


def read_midi_recipe(data: bytes) -> dict | None:
    """The recipe a studio MIDI file carries (its first text event), or None; ValueError
    naming the file when `data` is not a Standard MIDI File."""
    if len(data) < 14 or data[:4] != b"MThd":
        raise ValueError("midi: not a MIDI file (a Standard MIDI File starts with 'MThd')")
    position = 14 + 8  # header chunk, then the first track's "MTrk" and length
    while position + 3 < len(data) and data[position] == 0 and data[position + 1] == 0xFF:  # delta 0, meta
        kind, position = data[position + 2], position + 3
        length, position = _read_varlen(data, position)
        if kind == 0x01:
            try:
                return json.loads(data[position:position + length].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None
        position += length
    return None


def _read_varlen(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    while position < len(data):
        byte = data[position]
        value, position = (value << 7) | (byte & 0x7F), position + 1
        if not byte & 0x80:
            break
    return value, position
