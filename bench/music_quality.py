"""Quality of the embedded chorale model (bach-chorales) against the held-out chorales of its
training log, with a Bach and an independent-Markov baseline.

- nll_ratio: held-out negative log-likelihood per grid token (nats) of the model, divided by
  that of a same-voice trigram (each voice's token from its own previous two) fitted on the
  training split with the same +-3 semitone transpositions; the trigram's interpolation
  weights are chosen on the held-out set itself, so the baseline is at its strongest.
- parallels_per_100: parallel fifths + octaves (or unisons) between any two voices, moving the
  same way, per 100 onset sonorities (steps where some voice starts a note).
- in_key: duration-weighted share of notes in the key's scale (major; natural, harmonic or
  melodic minor).
- range_violations: notes outside their voice's range (sounding pitch).
- seconds_per_8_bars: composing and rendering 8 bars on one thread (and the playing time).
Generated pieces: `--pieces` seeds at the catalog's default knobs (8 bars, C major).
    python bench/music_quality.py [--pieces 48]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from aigc_studio import chorales as ch
from aigc_studio import music
from aigc_studio.catalog import EMBEDDED_MODELS
from aigc_studio.chorale_train import AUGMENT, IGNORE, TRAINING_LOG, batch_tensors
from aigc_studio.params import AudioParams, make

MAJOR_SCALE = {0, 2, 4, 5, 7, 9, 11}
MINOR_SCALES = {9, 11, 0, 2, 4, 5, 7} | {6, 8}  # A natural minor, and the raised 6th and 7th


# ----- metrics over notes ----------------------------------------------------------------------

def sonorities(notes: list[list[tuple[int, int, int]]]) -> list[list[int | None]]:
    """The sounding pitch of each voice (None: rest) at every step where some voice starts a note."""
    length = max((s + n for voice in notes for _, s, n in voice), default=0)
    sounding = [[None] * length for _ in notes]
    onsets = set()
    for voice, voice_notes in enumerate(notes):
        for pitch, start, span in voice_notes:
            onsets.add(start)
            for step in range(start, start + span):
                sounding[voice][step] = pitch
    return [[sounding[v][step] for v in range(len(notes))] for step in sorted(onsets)]


def parallels(notes) -> tuple[int, int]:
    """(parallel fifths + octaves, onset sonorities) of one piece."""
    chords = sonorities(notes)
    count = 0
    for before, after in zip(chords, chords[1:]):
        for upper in range(4):
            for lower in range(upper + 1, 4):
                a, b, c, d = before[upper], before[lower], after[upper], after[lower]
                if None in (a, b, c, d) or a == c or b == d:
                    continue  # a rest, or a voice that does not move: no parallel motion
                if (c - a > 0) != (d - b > 0):
                    continue
                first, second = (a - b) % 12, (c - d) % 12
                if first == second and first in (0, 7):
                    count += 1
    return count, len(chords)


def in_key(notes, mode: str, tonic: int = 0) -> tuple[float, float]:
    """(duration in the scale, total duration) of one piece; tonic: the key's shift from C / A."""
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALES
    inside = total = 0
    for voice in notes:
        for pitch, _, span in voice:
            total += span
            inside += span * ((pitch - tonic) % 12 in scale)
    return inside, total


def range_violations(notes) -> int:
    return sum(not ch.RANGES[name][0] <= pitch <= ch.RANGES[name][1]
               for name, voice in zip(ch.VOICES, notes) for pitch, _, _ in voice)


# ----- likelihoods ---------------------------------------------------------------------------

def sliding_windows(piece, window: int, stride: int) -> list[tuple[list[int], list[int], int]]:
    """Windows of `window` steps every `stride` steps, as the composer slides its window: each
    grid token is scored once, with at least window - stride steps before it (or the piece's
    start) in view."""
    grid = ch.to_grid(piece, 0)
    items = []
    for start in range(0, max(1, piece.length - window + stride), stride):
        stop = min(start + window, piece.length)
        sequence = [ch.MODE_TOKEN[piece.mode], ch.METRE_TOKEN[piece.metre]] + ([ch.BOS] if start == 0 else [])
        head = len(sequence)
        for step in grid[start:stop]:
            sequence.extend(step)
        scored_from = head + (0 if start == 0 else 4 * (window - stride))
        targets = [IGNORE] * len(sequence)
        for i in range(max(head - 1, scored_from - 1), len(sequence) - 1):
            targets[i] = sequence[i + 1]
        items.append((sequence, targets, (piece.phase + start) % piece.bar))
        if stop == piece.length:
            break
    return items


@torch.no_grad()
def model_nll(model, pieces) -> tuple[float, int]:
    """Mean NLL (nats) of the model over the pieces' grid tokens (untransposed, sliding windows)."""
    total, count = 0.0, 0
    items = [w for piece in pieces for w in sliding_windows(piece, model.config.window, model.config.window // 4)]
    for index in range(0, len(items), 16):
        tokens, voices, positions, targets = batch_tensors(items[index:index + 16])
        logprobs = torch.log_softmax(model(tokens, voices, positions).float(), dim=-1)
        keep = (targets != IGNORE) & (targets != ch.END)
        picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total -= float(picked[keep].sum())
        count += int(keep.sum())
    return total / count, count


class Trigram:
    """Same-voice trigram over grid tokens, interpolated with the bigram, unigram and uniform."""

    def __init__(self, pieces, transpositions):
        self.counts = [defaultdict(Counter) for _ in range(3)]  # order 1, 2, 3: context tuple -> Counter
        for piece in pieces:
            for shift in transpositions:
                for voice, line in enumerate(self.lines(piece, shift)):
                    for i in range(2, len(line)):
                        for order in range(3):
                            self.counts[order][(voice, *line[i - order:i])][line[i]] += 1
        self.totals = [{context: sum(c.values()) for context, c in order.items()} for order in self.counts]
        self.weights = (0.6, 0.3, 0.09, 0.01)

    @staticmethod
    def lines(piece, shift=0) -> list[list[int]]:
        grid = ch.to_grid(piece, shift)
        return [[ch.BOS, ch.BOS] + [step[v] for step in grid] for v in range(4)]

    def probability(self, voice: int, history: tuple[int, int], token: int) -> float:
        p = self.weights[3] / ch.VOCAB
        for order, weight in zip((2, 1, 0), self.weights):
            context = (voice, *history[2 - order:])
            counter = self.counts[order].get(context)
            if counter:
                p += weight * counter[token] / self.totals[order][context]
        return p

    def nll(self, pieces) -> float:
        total = count = 0
        for piece in pieces:
            for voice, line in enumerate(self.lines(piece)):
                for i in range(2, len(line)):
                    total -= math.log(self.probability(voice, (line[i - 2], line[i - 1]), line[i]))
                    count += 1
        return total / count

    def fit_weights(self, pieces) -> None:
        """The interpolation weights that minimise the NLL of `pieces` (a coarse grid)."""
        best = None
        for w3 in (0.4, 0.5, 0.6, 0.7, 0.8):
            for w2 in (0.1, 0.2, 0.3, 0.4):
                for w0 in (0.001, 0.01):
                    if w3 + w2 + w0 < 1:
                        self.weights = (w3, w2, 1 - w3 - w2 - w0, w0)
                        value = self.nll(pieces)
                        if best is None or value < best[0]:
                            best = (value, self.weights)
        self.weights = best[1]

    def sample(self, steps: int, rng: np.random.Generator) -> list[list[tuple[int, int, int]]]:
        """One piece of `steps` steps whose four voices are drawn independently (a Markov chain each)."""
        grid = [[0] * 4 for _ in range(steps)]
        for voice in range(4):
            history = (ch.BOS, ch.BOS)
            for step in range(steps):
                probs = np.array([self.probability(voice, history, t) for t in range(ch.VOCAB)])
                probs[[ch.PAD, ch.BOS, ch.END, ch.MAJOR, ch.MINOR, ch.METRE_4, ch.METRE_3]] = 0
                token = int(rng.choice(ch.VOCAB, p=probs / probs.sum()))
                grid[step][voice] = token
                history = (history[1], token)
        tokens = [ch.MAJOR, ch.METRE_4, ch.BOS] + [t for step in grid for t in step]
        return ch.decode(tokens)


def summary(pieces_notes, modes) -> dict:
    par = [parallels(n) for n in pieces_notes]
    key = [in_key(n, m) for n, m in zip(pieces_notes, modes)]
    return {"parallels_per_100": 100 * sum(p for p, _ in par) / max(1, sum(s for _, s in par)),
            "in_key": sum(i for i, _ in key) / max(1, sum(t for _, t in key)),
            "range_violations": sum(range_violations(n) for n in pieces_notes),
            "notes": sum(len(v) for n in pieces_notes for v in n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = next(s for s in EMBEDDED_MODELS if s.id == "bach-chorales")
    folder = Path(spec.location)
    log = json.loads((folder / TRAINING_LOG).read_text())
    corpus = ch.read_corpus()
    held_names = set(log["held_out_chorales"])
    held = [p for p in corpus if p.name in held_names]
    training = [p for p in corpus if p.name not in held_names]
    loaded = music.load_model(folder)

    nll, tokens = model_nll(loaded.model, held)
    trigram = Trigram(training, range(-AUGMENT, AUGMENT + 1))
    trigram.fit_weights(held)
    baseline = trigram.nll(held)
    print(f"held_out_chorales={len(held)} held_out_tokens={tokens}")
    print(f"model_nll={nll:.4f} trigram_nll={baseline:.4f} trigram_weights={','.join(f'{w:g}' for w in trigram.weights)}")
    print(f"nll_ratio={nll / baseline:.3f}")

    params = make(AudioParams, **{**spec.defaults, "seed": 0})
    generated, seconds = [], []
    for seed in range(args.pieces):
        knobs = make(AudioParams, **{**spec.defaults, "seed": seed})
        started = time.perf_counter()
        piece = music.compose(loaded, knobs)
        music.render(piece)
        seconds.append(time.perf_counter() - started)
        generated.append(piece)
    ours = summary([p.notes() for p in generated], [music.parse_key(p.key)[1] for p in generated])
    bach = summary([p.notes for p in held], [p.mode for p in held])
    rng = np.random.default_rng(0)
    markov = summary([trigram.sample(params.bars * 8, rng) for _ in range(args.pieces)], ["major"] * args.pieces)
    print(f"pieces={args.pieces} bars={params.bars} key={params.key} temperature={params.temperature} "
          f"top_k={params.top_k} top_p={params.top_p}")
    print(f"parallels_per_100={ours['parallels_per_100']:.2f} bach_parallels_per_100={bach['parallels_per_100']:.2f} "
          f"markov_parallels_per_100={markov['parallels_per_100']:.2f}")
    print(f"in_key={ours['in_key']:.3f} bach_in_key={bach['in_key']:.3f} markov_in_key={markov['in_key']:.3f}")
    print(f"range_violations={ours['range_violations']} of {ours['notes']} notes "
          f"(bach_range_violations={bach['range_violations']} of {bach['notes']}, transposed to C / A)")
    playing = params.bars * 4 * 60 / params.tempo
    print(f"seconds_per_8_bars={np.mean(seconds) * 8 / params.bars:.2f} (median {np.median(seconds) * 8 / params.bars:.2f}; "
          f"playing time {playing * 8 / params.bars:.1f} s at {params.tempo:g} BPM)")
    print(f"weights_mb={(folder / 'model.safetensors').stat().st_size / 2**20:.2f} parameters={log['parameters']} "
          f"best_epoch={log['best_epoch']} best_held_out_loss={log['best_held_out_loss']} "
          f"train_minutes={log['train_minutes']}")


if __name__ == "__main__":
    main()
