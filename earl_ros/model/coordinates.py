"""Box coordinates of the response model: the frames they live in, and how they are decoded.

Box geometry. A box is (x1, y1, x2, y2) in pixels of some frame: the ORIGINAL image, the frame the
pipeline downscaled it to, the VLM's resized input frame, or the segmenter's input frame. A frame
maps to the one above it by a per-axis scale (sx, sy) with original = model * scale. Every
conversion between frames goes through the functions here, so the rounding and clipping rules are
written once: the VLM's answers are rounded to whole pixels and clipped to the target frame; the
segmenter's prompts stay float and unclipped (its prompt encoder takes sub-pixel boxes).

Coordinate decoding: the box numbers are read from the model either as its most likely token or as
the value it expects.

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

import numpy as np
import torch
from transformers import LogitsProcessor

from .errors import ModelDirError
from .manifest import COORDINATE_DECODINGS

_NUMBER = re.compile(r"(\D*?)([0-9]+)")
# values that must be one token each for expected-value decoding to make sense
_PROBE_VALUES = (7, 42, 99, 123)


# --------------------------------------------------------------------------------------------------
# Box geometry
# --------------------------------------------------------------------------------------------------
def frame_scale(orig_hw: tuple[int, int], resized_hw: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy) mapping a resized frame back to the original: original = resized * scale."""
    (h, w), (rh, rw) = orig_hw, resized_hw
    return (w / rw, h / rh)


def chain_scales(inner: tuple[float, float], outer: tuple[float, float]) -> tuple[float, float]:
    """The scale of two stacked resizes: inner maps frame A to B, outer maps B to C; the result A to C."""
    return (inner[0] * outer[0], inner[1] * outer[1])


def scale_boxes(boxes, scale_xy: tuple[float, float]) -> np.ndarray:
    """Boxes [N, 4] times (sx, sy, sx, sy), float64, neither rounded nor clipped."""
    sx, sy = scale_xy
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])


def clip_boxes(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Clip x to [0, w] and y to [0, h] in place; each corner is clipped on its own, so a box lying
    outside the frame collapses to zero width or height (see `nonempty_boxes`)."""
    h, w = hw
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return boxes


def boxes_to_original(boxes, scale_xy: tuple[float, float], orig_hw: tuple[int, int]) -> np.ndarray:
    """Boxes [N, 4] (x1, y1, x2, y2) in the model frame -> int boxes in original pixels, clipped."""
    return clip_boxes(np.rint(scale_boxes(boxes, scale_xy)).astype(np.int64), orig_hw)


def boxes_to_model(boxes, scale_xy: tuple[float, float], input_hw: tuple[int, int]) -> np.ndarray:
    """Inverse of boxes_to_original: original-pixel boxes -> int boxes in the model frame."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = scale_xy
    # divided, not scaled by (1/sx, 1/sy): the reciprocal can differ in the last bit, which flips
    # np.rint on a half pixel
    return clip_boxes(np.rint(b / np.array([sx, sy, sx, sy])).astype(np.int64), input_hw)


def nonempty_boxes(boxes) -> np.ndarray:
    """bool [N]: the boxes with positive width and height (clipping may have collapsed the others)."""
    b = np.asarray(boxes).reshape(-1, 4)
    return (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])


def clamp_boxes(boxes, hw: tuple[int, int]) -> np.ndarray:
    """Int boxes inside the frame with x2 >= x1 and y2 >= y1: never a negative width or height, which
    message fields such as RegionOfInterest cannot hold."""
    out = clip_boxes(np.asarray(boxes).reshape(-1, 4).astype(np.int64), hw)
    out[:, 2] = np.maximum(out[:, 0], out[:, 2])
    out[:, 3] = np.maximum(out[:, 1], out[:, 3])
    return out


# --------------------------------------------------------------------------------------------------
# Coordinate decoding
# --------------------------------------------------------------------------------------------------
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


__all__ = ["COORDINATE_DECODINGS", "CoordinateDecodingError", "NumberTokenDecoding", "boxes_to_model",
           "boxes_to_original", "chain_scales", "check_whole_number_tokens", "clamp_boxes", "clip_boxes",
           "frame_scale", "nonempty_boxes", "number_token_groups", "scale_boxes"]
