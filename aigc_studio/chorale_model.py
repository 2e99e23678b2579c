"""The studio's own chorale model: a small decoder-only transformer over chorale tokens.

nanoGPT-shaped (pre-norm blocks, causal self-attention, tied input/output embeddings), with
no absolute positions: each token's embedding adds the *next* slot's voice (S, A, T, B) and
position in the bar, so the model always knows which voice and beat it is choosing for, and a
window can slide over a piece longer than the training windows. Hard masks make a voice
leaving its range, holding a note it is not sounding (`allowed`) or moving in parallel fifths or
octaves with a voice above it (`parallel_pitches`) impossible, whatever the knobs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aigc_studio import chorales as ch


@dataclass
class ChoraleConfig:
    vocab: int = ch.VOCAB
    width: int = 128
    layers: int = 5
    heads: int = 4
    dropout: float = 0.0  # the model underfits (train loss above held-out at 0.1)
    window: int = 64  # grid steps the model reads at once (8 bars of 4/4)

    @property
    def context(self) -> int:
        """Tokens in a full window: the [mode, metre] prefix, BOS, 4 per step and END."""
        return 4 * self.window + 4


class _Block(nn.Module):
    def __init__(self, config: ChoraleConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, 4 * config.width), nn.GELU(),
                                 nn.Linear(4 * config.width, config.width))
        self.heads, self.dropout = config.heads, config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + F.dropout(self.proj(attended.transpose(1, 2).reshape(batch, length, width)), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)


class ChoraleTransformer(nn.Module):
    """Logits for the next token from (tokens, next voice, next position in bar), each (batch, length)."""

    def __init__(self, config: ChoraleConfig):
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(config.vocab, config.width)
        self.voices = nn.Embedding(5, config.width)  # S A T B, and "none" (the prefix)
        self.positions = nn.Embedding(ch.NO_POSITION + 1, config.width)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, voices: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.tokens(tokens) + self.voices(voices) + self.positions(positions)
        x = F.dropout(x, self.config.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.tokens.weight.T  # tied output embedding

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def inputs(sequence: list[int], phase: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens, next voices, next positions) tensors of shape (1, len) for one sequence."""
    voices, positions = ch.slots(sequence, phase)
    return (torch.tensor([sequence]), torch.tensor([voices]), torch.tensor([positions]))


def save(model: ChoraleTransformer, folder: Path) -> None:
    """config.json + model.safetensors in folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"family": "chorale-transformer", **asdict(model.config)}, indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def load(folder: Path) -> ChoraleTransformer:
    """The model saved in folder, in eval mode (CPU, float32)."""
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / "config.json").read_text())
    config.pop("family", None)
    model = ChoraleTransformer(ChoraleConfig(**config))
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
    return model.eval()


# ----- hard masks -----------------------------------------------------------------------------

def allowed(voice: int, previous: int | None, transpose: int = 0, pitch_classes: set[int] | None = None) -> torch.Tensor:
    """Boolean mask over the vocabulary of tokens the next `voice` token may be.

    A pitch only inside the voice's range in *sounding* pitch (the model writes in C major
    / A minor; `transpose` semitones move it to the chosen key), HOLD only right after a
    pitch or a HOLD of the same voice (`previous`, None at the start), REST always. No
    special token otherwise (the length is the caller's: END is never drawn). pitch_classes
    (model space, 0 = C), when given, keeps only those pitches and no REST.
    """
    mask = torch.zeros(ch.VOCAB, dtype=torch.bool)
    low, high = ch.RANGES[ch.VOICES[voice]]
    low, high = max(low - transpose, ch.LOWEST), min(high - transpose, ch.HIGHEST)
    mask[ch.pitch_token(low):ch.pitch_token(high) + 1] = True
    mask[ch.REST] = True
    if previous is not None and (previous == ch.HOLD or ch.token_pitch(previous) is not None):
        mask[ch.HOLD] = True
    if pitch_classes is not None:
        mask[ch.REST] = False
        for token in range(ch.PITCH0, ch.VOCAB):
            mask[token] &= ch.token_pitch(token) % 12 in pitch_classes
    return mask


# The opening chord: the training chorales are transposed by -3..+3 semitones, so the prefix
# alone leaves the tonic open (the model's first notes spread over seven keys). A piece opens on
# its key's tonic triad, bass on the tonic, as chorales do; the model then keeps that key.
OPENING = {"major": ({0, 4, 7}, {0}), "minor": ({9, 0, 4}, {9})}  # (upper voices, bass), model space


def opening_classes(mode: str, voice: int) -> set[int]:
    """The pitch classes (model space) the first step's `voice` may take in `mode`."""
    upper, bass = OPENING[mode]
    return bass if voice == 3 else upper


def sounding(body: list[int], step: int, voice: int) -> int | None:
    """The pitch `voice` sounds at grid `step` of `body` (S A T B tokens), None when it rests."""
    while step >= 0:
        token = body[4 * step + voice]
        if token != ch.HOLD:
            return ch.token_pitch(token)
        step -= 1
    return None


def parallel_pitches(body: list[int]) -> set[int]:
    """Pitches the next token of `body` (S A T B tokens so far) may not move to: each would make
    parallel fifths or octaves (or unisons) with a voice already chosen at this step.

    The rule of four-part writing Bach keeps (his chorales break it ~0.4 times per 100
    sonorities): two voices a fifth or an octave apart must not both move, the same way, to
    another fifth or octave. A voice that holds or rests never forms one."""
    step, voice = divmod(len(body), 4)
    if step == 0 or voice == 0:
        return set()
    forbidden = set()
    for upper in range(voice):
        before_upper, before_lower = sounding(body, step - 1, upper), sounding(body, step - 1, voice)
        now_upper = sounding(body, step, upper)
        if None in (before_upper, before_lower, now_upper) or now_upper == before_upper:
            continue
        interval = (before_upper - before_lower) % 12
        if interval not in (0, 7):
            continue
        moving_up = now_upper > before_upper
        for pitch in range(ch.LOWEST, ch.HIGHEST + 1):
            if pitch != before_lower and (pitch > before_lower) == moving_up and (now_upper - pitch) % 12 == interval:
                forbidden.add(pitch)
    return forbidden


def mask_logits(logits: torch.Tensor, voice: int, previous: int | None, transpose: int = 0,
                pitch_classes: set[int] | None = None, forbidden: set[int] = frozenset()) -> torch.Tensor:
    """logits with every token the hard masks forbid set to -inf (forbidden: pitches, model space)."""
    mask = allowed(voice, previous, transpose, pitch_classes)
    for pitch in forbidden:
        mask[ch.pitch_token(pitch)] = False
    return logits.masked_fill(~mask, float("-inf"))
