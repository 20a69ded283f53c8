"""How the response model's box coordinates are decoded: its most likely token, or the value it expects.

A tokenizer with one token per whole number (the tiny models' BPE: `Ġ167` is one token) makes each
coordinate a classification over a few hundred unrelated tokens. Greedy decoding then returns the
mode of that distribution, and a small model's mode is often a template value: the tiny response
model wrote x1 = 0 for 68% of left hands (true median 20 px) and its hand boxes came out 25 px too
wide on average, although most of the probability mass sat near the true edge (docs/training.md).
Reading the value the distribution expects keeps the answer format and costs nothing:

  greedy   the most likely token (what `generate` does by default);
  mean     the number token nearest the probability-weighted mean value;
  median   the number token at the weighted median (robust to a far-off second mode).

Only steps whose most likely token is a number are changed, and the choice stays among number
tokens of the same spelling (with or without the leading-space marker), so the text still parses.
This needs whole-number tokens: a tokenizer that spells numbers digit by digit (Qwen2's, or the
tiny one after `sft-response --split-digits`) would average digits, so `NumberTokenDecoding`
refuses it with a clear error.

The logits processor is handed to transformers' `generate` (greedy decoding only; GRPO's sampling
keeps the model's own distribution).
"""
from __future__ import annotations

import re

import torch
from transformers import LogitsProcessor

from .errors import ModelDirError
from .manifest import COORDINATE_DECODINGS

_NUMBER = re.compile(r"(\D*?)([0-9]+)")
# values that must be one token each for expected-value decoding to make sense
_PROBE_VALUES = (7, 42, 99, 123)


class CoordinateDecodingError(ModelDirError):
    """The model dir asks for a coordinate decoding its tokenizer cannot support."""


def number_token_groups(tokenizer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Whole-number tokens grouped by their spelling prefix ('' or ' '): {prefix: (ids, values)},
    sorted by value. Tokens are read through the tokenizer's own decoder, so byte-level BPE
    ('Ġ') and sentencepiece ('▁') space markers both come out as ' '."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for tok, tid in tokenizer.get_vocab().items():
        if not any(ch.isdigit() for ch in tok):
            continue
        m = _NUMBER.fullmatch(tokenizer.convert_tokens_to_string([tok]))
        if m is None or m.group(1).strip():
            continue
        groups.setdefault(m.group(1), []).append((int(m.group(2)), int(tid)))
    out = {}
    for prefix, items in groups.items():
        items.sort()
        out[prefix] = (torch.tensor([t for _, t in items]), torch.tensor([float(v) for v, _ in items]))
    return out


def check_whole_number_tokens(tokenizer) -> None:
    """Raise CoordinateDecodingError unless numbers like those in a box are single tokens."""
    for v in _PROBE_VALUES:
        ids = tokenizer(f"[{v}, {v}]", add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids)]
        if str(v) not in [p.strip() for p in pieces]:
            raise CoordinateDecodingError(
                f"coordinate decoding 'mean'/'median' needs one token per whole number, but this tokenizer "
                f"spells {v} as {pieces!r}; use response.coordinates: greedy for digit-by-digit tokenizers")


class NumberTokenDecoding(LogitsProcessor):
    """Replace a number token chosen by argmax with the mean or median of the model's number distribution."""

    def __init__(self, tokenizer, mode: str):
        if mode not in ("mean", "median"):
            raise ValueError(f"NumberTokenDecoding mode must be 'mean' or 'median', got {mode!r}")
        check_whole_number_tokens(tokenizer)
        self.mode = mode
        self.groups = list(number_token_groups(tokenizer).values())

    def _pick(self, probs: torch.Tensor, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # probs: [R, V] full distribution of the R rows whose argmax is in this group
        p = probs[:, ids]  # [R, K]
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
        if self.mode == "median":
            k = (p.cumsum(-1) < 0.5).sum(-1).clamp(max=len(ids) - 1)
        else:
            mean = (p * values).sum(-1)
            k = (values[None, :] - mean[:, None]).abs().argmin(-1)
        return ids[k]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = scores.argmax(-1)
        probs = None
        for ids, values in self.groups:
            ids, values = ids.to(scores.device), values.to(scores.device)
            rows = torch.isin(top, ids).nonzero().flatten()
            if rows.numel() == 0:
                continue
            if probs is None:
                probs = scores.float().softmax(-1)
                scores = scores.clone()
            chosen = self._pick(probs[rows], ids, values)
            forced = torch.full_like(scores[rows], float("-inf"))
            forced[torch.arange(len(rows), device=scores.device), chosen] = 0.0
            scores[rows] = forced
        return scores


__all__ = ["COORDINATE_DECODINGS", "CoordinateDecodingError", "NumberTokenDecoding", "number_token_groups",
           "check_whole_number_tokens"]
