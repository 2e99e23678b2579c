"""Train the chorale model: `python -m aigc_studio.train chorales`.

nanoGPT-style: plain settings at the top, one loop, seeded. Each epoch every training
chorale is transposed by a random -3..+3 semitones (in C major / A minor first) and cut
into windows of `window` grid steps at a random offset; the held-out chorales (a seeded
10 % of the file names, written into the training log) are scored untransposed after every
epoch, and the epoch with the lowest held-out loss is the one saved.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from aigc_studio import chorales as ch
from aigc_studio.chorale_model import ChoraleConfig, ChoraleTransformer, save

ASSETS = Path(__file__).resolve().parent.parent / "assets"
OUT = ASSETS / "bach-chorales"
TRAINING_LOG = "training_log.json"
EPOCHS = 24
BATCH = 8
LR = 2e-3
MIN_LR = 1e-4
WARMUP = 100  # optimiser steps
WEIGHT_DECAY = 0.05
AUGMENT = 3  # semitones either way
SEED = 0
HELD_OUT = 0.1
IGNORE = -100


def windows(chorale: ch.Chorale, transpose: int, window: int, offset: int) -> list[tuple[list[int], list[int], int]]:
    """(input tokens, targets, phase) per window of `window` grid steps; window borders at
    offset + k * window. Targets are the next token, IGNORE where the next token is the
    prefix or BOS (given, never predicted)."""
    grid = ch.to_grid(chorale, transpose)
    borders = sorted({0, chorale.length} | set(range(offset % window or window, chorale.length, window)))
    out = []
    for start, stop in zip(borders, borders[1:]):
        sequence = [ch.MODE_TOKEN[chorale.mode], ch.METRE_TOKEN[chorale.metre]] + ([ch.BOS] if start == 0 else [])
        head = len(sequence)
        for step in grid[start:stop]:
            sequence.extend(step)
        if stop == chorale.length:
            sequence.append(ch.END)
        targets = [IGNORE] * (head - 1) + sequence[head:] + [IGNORE]
        out.append((sequence, targets, (chorale.phase + start) % chorale.bar))
    return out


def batch_tensors(items: list[tuple[list[int], list[int], int]]) -> tuple[torch.Tensor, ...]:
    """(tokens, voices, positions, targets), padded to the longest item."""
    length = max(len(s) for s, _, _ in items)
    rows = []
    for sequence, targets, phase in items:
        voices, positions = ch.slots(sequence, phase)
        pad = length - len(sequence)
        rows.append((sequence + [ch.PAD] * pad, voices + [4] * pad, positions + [ch.NO_POSITION] * pad,
                     targets + [IGNORE] * pad))
    return tuple(torch.tensor([row[i] for row in rows]) for i in range(4))


def loss_of(model: ChoraleTransformer, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    tokens, voices, positions, targets = batch
    logits = model(tokens, voices, positions)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


@torch.no_grad()
def held_out_loss(model: ChoraleTransformer, pieces: list[ch.Chorale]) -> float:
    """Mean negative log-likelihood (nats per token) of the pieces, untransposed, in
    windows from step 0."""
    model.eval()
    total = count = 0.0
    items = [w for piece in pieces for w in windows(piece, 0, model.config.window, 0)]
    for index in range(0, len(items), BATCH):
        batch = batch_tensors(items[index:index + BATCH])
        total += float(loss_of(model, batch))
        count += int((batch[3] != IGNORE).sum())
    model.train()
    return total / max(count, 1)


def learning_rate(step: int, total: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, total - WARMUP)
    return MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(out: Path = OUT, epochs: int = EPOCHS, threads: int = 1, seed: int = SEED,
          config: ChoraleConfig | None = None, limit: int | None = None) -> dict:
    """Train, keep the epoch with the lowest held-out loss in out/, return the log.
    limit: use only the first `limit` corpus files (tests: a tiny, quick run)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    files = ch.corpus_files()[:limit] if limit else ch.corpus_files()
    pieces = ch.read_corpus(files)
    train_names, held_names = ch.split_names([p.name for p in pieces], seed, HELD_OUT)
    training = [p for p in pieces if p.name in set(train_names)]
    held = [p for p in pieces if p.name in set(held_names)]
    config = config or ChoraleConfig()
    model = ChoraleTransformer(config)
    print(f"chorales: {len(training)} training, {len(held)} held out; model {model.parameter_count():,} parameters")
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(sum(len(windows(p, 0, config.window, 0)) for p in training) / BATCH)
    total_steps = steps_per_epoch * epochs
    log = {"family": "chorale-transformer", "corpus": "music21 corpus/bach (read at training time)",
           "settings": {"epochs": epochs, "batch": BATCH, "lr": LR, "min_lr": MIN_LR, "warmup": WARMUP,
                        "weight_decay": WEIGHT_DECAY, "augment_semitones": AUGMENT, "seed": seed, "threads": threads,
                        **asdict(config)},
           "parameters": model.parameter_count(), "training_chorales": len(training),
           "held_out_chorales": held_names, "epochs": []}
    start, step, best = time.time(), 0, math.inf
    model.train()
    for epoch in range(epochs):
        items = [w for piece in training
                 for w in windows(piece, rng.randint(-AUGMENT, AUGMENT), config.window, rng.randrange(config.window))]
        rng.shuffle(items)
        total = count = 0.0
        bar = tqdm(range(0, len(items), BATCH), desc=f"chorales epoch {epoch + 1}/{epochs}", leave=False)
        for index in bar:
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, total_steps)
            batch = batch_tensors(items[index:index + BATCH])
            tokens = int((batch[3] != IGNORE).sum())
            loss = loss_of(model, batch)
            optimiser.zero_grad(set_to_none=True)
            (loss / tokens).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            total, count, step = total + loss.item(), count + tokens, step + 1
            bar.set_postfix(loss=f"{total / count:.3f}")
        held_loss = held_out_loss(model, held)
        entry = {"epoch": epoch + 1, "train_loss": round(total / count, 4), "held_out_loss": round(held_loss, 4),
                 "seconds": round(time.time() - start, 1)}
        log["epochs"].append(entry)
        if held_loss < best:
            best = held_loss
            save(model, out)
            log["best_epoch"], log["best_held_out_loss"] = epoch + 1, round(held_loss, 4)
        log["train_minutes"] = round((time.time() - start) / 60, 2)
        (out / TRAINING_LOG).write_text(json.dumps(log, indent=1) + "\n")
        tqdm.write(f"epoch {epoch + 1:3d} train {entry['train_loss']:.4f} held-out {held_loss:.4f} "
                   f"(best {best:.4f}, epoch {log['best_epoch']}) {entry['seconds']:.0f}s")
    print(f"saved {out} (epoch {log['best_epoch']}, held-out {log['best_held_out_loss']}) after {time.time() - start:.0f}s")
    return log
