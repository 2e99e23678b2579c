"""Inside the text model: what each token attends to, and what each layer "thinks" comes next.

    view = attention(text_model, prompt_ids, answer_ids, tokens, position=-1, layer=3, head=None)
    view["weights"][3][0]      # layer 3, head 0: how much the chosen token looks at each token
    view["lens"][-1]["tokens"]  # the last layer's top 5: the model's own next-token choice

Attention weights come from transformers' eager attention (`attn_implementation="eager"`,
`output_attentions=True`): the default SDPA kernel never forms them and the ONNX fast path
has no weights at all, so the studio runs the same safetensors on torch for this view
(Studio.attention). One forward pass per context (prompt + answer) is cached; choosing
another token, layer or head reads the cache.

The logit lens puts each decoder layer's output through the model's final norm and output
head (lm_head), as if the model stopped there. Layer outputs are read with forward hooks on
the decoder layers, so the last one is taken *before* the final norm, exactly as the model
itself uses it: the last layer's lens is the model's own next-token distribution.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from aigc_studio.params import ParamError

MAX_TOKENS = 512  # context (prompt + answer) the view reads: its weights take layers x heads x T^2 x 4 bytes
CACHE_BYTES = 512 * 2**20  # forward passes kept, least recently used dropped first (the newest always stays)
LENS_TOP = 5  # next tokens per layer in the logit lens
DECIMALS = 7  # weights are rounded for JSON; a row of MAX_TOKENS still sums to 1 within 1e-4
KINDS = ("template", "system", "prompt", "answer")


@dataclass
class Forward:
    """One forward pass over a context: attentions (layers, heads, T, T) and the decoder
    layers' outputs (layers, T, hidden), float32 on the CPU."""

    attentions: torch.Tensor
    layer_outputs: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.attentions, self.layer_outputs))


class ForwardCache:
    """Forward passes by context, least recently used dropped first once they take more than
    max_bytes (the newest always stays). A Studio keeps one; keys name the model instance."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Forward] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Forward | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            return self._entries.get(key)

    def put(self, key: tuple, done: Forward) -> None:
        with self._lock:
            self._entries[key] = done
            while len(self._entries) > 1 and sum(f.nbytes for f in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)


def model_key(model, ids: torch.Tensor) -> tuple:
    """A cache key for ids read by this model instance: a stamp set on the model at first
    use, so a model loaded again (same id(), other weights) never meets old entries."""
    stamp = getattr(model, "_aigc_inside_stamp", None)
    if stamp is None:
        stamp = uuid.uuid4().hex
        model._aigc_inside_stamp = stamp
    return stamp, tuple(ids.reshape(-1).tolist())


# ----- the model's parts -------------------------------------------------------------------

def parts(model) -> tuple[list, Any, Any]:
    """(decoder layers, final norm, output head) of a causal LM laid out like Llama, Qwen,
    Mistral (model.layers, model.norm) or GPT-2 (transformer.h, transformer.ln_f)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None)
    norm = next((getattr(decoder, name) for name in ("norm", "ln_f", "final_layernorm") if hasattr(decoder, name)), None)
    head = model.get_output_embeddings()
    if layers is None or norm is None or head is None:
        raise ParamError("model", f"{type(model).__name__} is not laid out like a Llama or GPT-2 model "
                                  f"(decoder layers, a final norm, an output head): the attention view cannot read it")
    return list(layers), norm, head


def forward(model, ids: torch.Tensor, cache: ForwardCache | None = None) -> Forward:
    """The attention weights and layer outputs for ids (1-D), kept in cache (None: not kept).

    The model's attention implementation is switched to eager for this pass only (and back),
    so a model that generates with SDPA can be read without a second copy."""
    key = model_key(model, ids)
    known = cache.get(key) if cache is not None else None
    if known is not None:
        return known
    layers, _, _ = parts(model)
    outputs: list[torch.Tensor] = [None] * len(layers)

    def keep(index):
        def hook(module, args, output):
            outputs[index] = (output[0] if isinstance(output, tuple) else output)[0].detach().float().cpu()
        return hook

    hooks = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    before = model.config._attn_implementation
    try:
        if before != "eager":
            model.set_attn_implementation("eager")
        with torch.inference_mode():
            result = model(input_ids=ids.reshape(1, -1).to(model.device), output_attentions=True, use_cache=False,
                           logits_to_keep=1)
    finally:
        if before != "eager":
            model.set_attn_implementation(before)
        for hook in hooks:
            hook.remove()
    if not result.attentions or result.attentions[0] is None:
        raise ParamError("model", f"{type(model).__name__} returned no attention weights")
    done = Forward(torch.stack([a[0].float().cpu() for a in result.attentions]), torch.stack(outputs))
    if cache is not None:
        cache.put(key, done)
    return done


def lens(model, tokenizer, done: Forward, position: int, top: int = LENS_TOP) -> list[dict]:
    """Per decoder layer, the `top` likeliest next tokens after `position` if the model
    stopped after that layer: its output through the final norm and lm_head, softmaxed."""
    _, norm, head = parts(model)
    with torch.inference_mode():
        states = done.layer_outputs[:, position].to(device=model.device, dtype=head.weight.dtype)
        probs = torch.softmax(head(norm(states)).float(), dim=-1).cpu()
        best = torch.topk(probs, top, dim=-1)
    return [{"layer": layer, "ids": ids, "tokens": [tokenizer.decode([i]) for i in ids],
             "probs": [round(p, DECIMALS) for p in values]}
            for layer, (ids, values) in enumerate(zip(best.indices.tolist(), best.values.tolist()))]


# ----- the context as a person reads it ------------------------------------------------------

def token_kinds(tokenizer, prompt_ids: list[int], prompt: str, system_prompt: str, rendered: str | None) -> list[str]:
    """For each prompt token: "prompt" (the person's words), "system" (their system prompt)
    or "template" (what the chat template adds: role markers, special tokens, a default
    system prompt). rendered is the chat template's text (None in completion mode)."""
    special = set(tokenizer.all_special_ids)
    fallback = ["template" if i in special else "prompt" for i in prompt_ids]
    if rendered is None:
        return fallback
    try:
        encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):  # a slow tokenizer has no offsets
        return fallback
    if list(encoded["input_ids"]) != list(prompt_ids):
        return fallback
    spans = []
    user_at = rendered.rfind(prompt) if prompt else -1
    if user_at >= 0:
        spans.append(("prompt", user_at, user_at + len(prompt)))
    system_at = rendered.find(system_prompt) if system_prompt else -1
    if system_at >= 0:
        spans.append(("system", system_at, system_at + len(system_prompt)))
    kinds = []
    for token_id, (start, end) in zip(prompt_ids, encoded["offset_mapping"]):
        kind = next((name for name, low, high in spans if start < high and end > low), "template")
        kinds.append("template" if token_id in special else kind)
    return kinds


def context(text_model, prompt: str, params, answer: str | list[int]) -> tuple[list[dict], int]:
    """(context_tokens of prompt + answer, prompt tokens): the prompt encoded as generation
    encodes it (engines.text.encode_prompt: chat template or plain), the answer as text or as
    the token ids a generation returned."""
    from aigc_studio.engines.text import encode_prompt

    tokenizer = text_model.tokenizer
    prompt_ids = encode_prompt(text_model, prompt, params).reshape(-1).tolist()
    if isinstance(answer, str):
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) if answer else []
    else:
        answer_ids = [int(i) for i in answer]
    rendered = None
    if params.prompt_mode == "chat" and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        if params.system_prompt:
            messages.insert(0, {"role": "system", "content": params.system_prompt})
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    kinds = token_kinds(tokenizer, prompt_ids, prompt, params.system_prompt, rendered)
    return context_tokens(tokenizer, prompt_ids, answer_ids, kinds), len(prompt_ids)


def context_tokens(tokenizer, prompt_ids: list[int], answer_ids: list[int], kinds: list[str]) -> list[dict]:
    """The context as shown to a person: per token its index, id, text and kind (KINDS)."""
    ids = [*prompt_ids, *answer_ids]
    kinds = [*kinds, *["answer"] * len(answer_ids)]
    return [{"index": i, "id": token_id, "text": tokenizer.decode([token_id]), "kind": kind}
            for i, (token_id, kind) in enumerate(zip(ids, kinds))]


# ----- the view ------------------------------------------------------------------------------

def check_index(name: str, value, count: int, allow_last: bool = False) -> int:
    """A whole number in [0, count - 1] (and -1 for the last when allow_last), else ParamError naming it."""
    low = -1 if allow_last else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < count:
        extra = "-1 (the last) or " if allow_last else ""
        raise ParamError(name, f"must be {extra}a whole number in [0, {count - 1}], got {value!r}")
    return count - 1 if value == -1 else value


def _read(model, tokens: list[dict], layer: int | None, head: int | None,
          cache: ForwardCache | None) -> tuple[Forward, int, int | None]:
    """(the context's forward pass, layer checked (None: the last), head checked (None stays))."""
    if len(tokens) > MAX_TOKENS:
        raise ParamError("answer", f"prompt and answer must be at most {MAX_TOKENS} tokens for the attention view, "
                                   f"got {len(tokens)}")
    done = forward(model, torch.tensor([t["id"] for t in tokens]), cache)
    layers, heads = done.attentions.shape[:2]
    layer = check_index("layer", layers - 1 if layer is None else layer, layers, allow_last=True)
    return done, layer, None if head is None else check_index("head", head, heads)


def attention(model, tokenizer, tokens: list[dict], prompt_length: int, position: int | None = None,
              layer: int | None = None, head: int | None = None, cache: ForwardCache | None = None) -> dict:
    """The attention view of a context (tokens from context_tokens: prompt then answer).

    position: index into tokens of the query token (None or -1: the last); layer: 0 to
    layers - 1 (None: the last); head: 0 to heads - 1, None for the average of the heads.
    Returns {"tokens", "position", "layers", "heads", "layer", "head", "weights"
    [layer][head][token] (what the query token attends to, each row summing to 1, 0 after
    it), "matrix" [query][token] for the chosen layer and head (or their average), "lens"
    [layer] {"layer", "ids", "tokens", "probs"} (top 5 next tokens after the query),
    "prompt_tokens", "explain_position" (the /explain_next_token position whose raw
    distribution is the lens's last layer; None inside the prompt)}.
    """
    position = check_index("position", -1 if position is None else position, len(tokens), allow_last=True)
    done, layer, head = _read(model, tokens, layer, head, cache)
    layers, heads = done.attentions.shape[:2]
    chosen = done.attentions[layer].mean(0) if head is None else done.attentions[layer, head]
    rounded = lambda t: torch.round(t, decimals=DECIMALS).tolist()
    return {
        "tokens": tokens, "position": position, "layers": layers, "heads": heads, "layer": layer, "head": head,
        "weights": rounded(done.attentions[:, :, position]), "matrix": rounded(chosen),
        "lens": lens(model, tokenizer, done, position),
        "prompt_tokens": prompt_length,
        "explain_position": position - prompt_length + 1 if position >= prompt_length - 1 else None,
    }


# ----- pictures: a layer x head grid of small heat maps ----------------------------------------

INK = (67, 56, 202)  # indigo: weight 1; white: weight 0


def heat_map(matrix: torch.Tensor, size: int) -> Image.Image:
    """A T x T weight matrix as a size x size picture: max-pooled (a one-token stripe stays
    visible) and square-rooted (weights of a few % still show), white to indigo."""
    pooled = torch.nn.functional.adaptive_max_pool2d(matrix[None, None], min(size, matrix.shape[-1]))[0, 0]
    level = pooled.clamp(0, 1).sqrt()[..., None]
    ink = torch.tensor(INK, dtype=torch.float32)
    pixels = (255 - level * (255 - ink)).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB").resize((size, size), Image.NEAREST)


def overview(attentions: torch.Tensor, cell: int = 36, gap: int = 3, chosen: tuple[int, int | None] | None = None,
             ) -> Image.Image:
    """Every head of every layer at once: columns are layers (0 at the left), rows heads.
    chosen (layer, head; head None: the whole layer) gets a red frame."""
    from PIL import ImageDraw

    layers, heads = attentions.shape[:2]
    margin = 22
    picture = Image.new("RGB", (margin + layers * (cell + gap), margin + heads * (cell + gap)), "white")
    draw = ImageDraw.Draw(picture)
    for layer in range(layers):
        draw.text((margin + layer * (cell + gap) + cell // 2 - 5, 5), str(layer), fill="black")
    for h in range(heads):
        top = margin + h * (cell + gap)
        draw.text((5, top + cell // 2 - 6), str(h), fill="black")
        for layer in range(layers):
            left = margin + layer * (cell + gap)
            picture.paste(heat_map(attentions[layer, h], cell), (left, top))
            if chosen is not None and chosen[0] == layer and chosen[1] in (None, h):
                draw.rectangle((left - 2, top - 2, left + cell + 1, top + cell + 1), outline=(220, 38, 38), width=2)
    return picture


def overview_of(model, tokens: list[dict], layer: int | None, head: int | None, cache: ForwardCache | None = None,
                ) -> Image.Image:
    """overview() of the context's forward pass (cached), the chosen layer (None: the last)
    and head (None: every head of it) framed."""
    done, layer, head = _read(model, tokens, layer, head, cache)
    return overview(done.attentions, chosen=(layer, head))
