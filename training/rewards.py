"""GRPO rewards R_f (format), R_a (answer), R_g (grounding), METHOD.md section 3.

Every reward parses the completion with `earl_ros.model.prompts.parse_response` (the one grammar),
so a completion that is rewarded is exactly one the robot can use.

R_f format
    default: 1 if both <answer>..</answer> and <bbox>..</bbox> are present, 0.5 if one, 0 if none
    (the authors' definition: garbage inside well-formed tags still earns 1).
    strict_format=True: a tag only counts (0.5 each) when its content parses: the answer block is a
    list of strings or the no-target sentence; the bbox block is `none` or only valid box lines.
R_a answer
    no-target GT: 1 if the answer says "no suitable referring result", else 0. Otherwise 0 when the
    answer block is not a list of strings, 0.1 when the count differs from GT, else the mean over
    positions of name_score (1 if one string contains the other, else the Levenshtein ratio).
R_g grounding
    no-target GT: 1 if the bbox block is exactly `none`, else 0. Otherwise the valid
    `name: [x1, y1, x2, y2]` lines are matched by name to GT entities (best name_score > 0.5), each
    matched box goes through the segmenter, and the mask IoU with the GT mask is the pair's score.
    grounding="strict" (default): one-to-one greedy matching in box order; reward = sum of matched
        IoUs / number of GT entities (an unmatched GT entity counts as IoU 0); no valid box -> 0.
    grounding="paper" (the public release): every box is matched to its best GT independently;
        reward = mean IoU over matched boxes (no recall term: a missing target is not penalised);
        0.2 when the bbox block is missing or holds no valid box line ("parse failure");
        0 when boxes parse but none matches a GT name.

total = w_format R_f + w_answer R_a + w_ground R_g (paper default 1, 1, 1).

Boxes in a completion are in the pixel frame the VLM saw; `box_scale=(sx, sy)` maps them to the
original image (x * sx, y * sy) before segmentation (METHOD.md FIX: rescale boxes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from earl_ros.model.prompts import ParsedResponse, name_score, parse_response

NAME_THRESHOLD = 0.5
PAPER_PARSE_FAILURE = 0.2


@dataclass
class RewardConfig:
    w_format: float = 1.0
    w_answer: float = 1.0
    w_ground: float = 1.0
    grounding: str = "strict"  # "strict" | "paper"
    strict_format: bool = False
    allow_float: bool = False  # accept float box coordinates (rounded) when parsing

    def __post_init__(self):
        if self.grounding not in ("strict", "paper"):
            raise ValueError(f"grounding must be 'strict' or 'paper', not {self.grounding!r}")


class MaskFn(Protocol):
    def __call__(self, boxes: np.ndarray) -> np.ndarray:
        """float [N, 4] original-pixel corners -> bool [N, H, W] masks."""


# ---------------------------------------------------------------------------------------------

def format_reward(p: ParsedResponse, strict: bool = False) -> float:
    if not strict:
        return 0.5 * p.has_answer_tag + 0.5 * p.has_bbox_tag
    ans_ok = p.has_answer_tag and (p.no_target or p.entities is not None)
    box_ok = p.has_bbox_tag and (p.bbox_none or (bool(p.boxes) and p.invalid_box_lines == 0))
    return 0.5 * ans_ok + 0.5 * box_ok


def answer_reward(p: ParsedResponse, gt_entities: Sequence[str]) -> float:
    if not gt_entities:
        return 1.0 if p.has_answer_tag and p.no_target else 0.0
    if not p.has_answer_tag or p.no_target or p.entities is None:
        return 0.0
    if len(p.entities) != len(gt_entities):
        return 0.1
    return float(np.mean([name_score(a, b) for a, b in zip(p.entities, gt_entities)]))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 0.0
    return float(np.logical_and(a, b).sum() / union)


def match_boxes(p: ParsedResponse, gt_entities: Sequence[str], one_to_one: bool) -> list[tuple[int, int]]:
    """(box index, GT index) pairs with name_score > 0.5, in box order."""
    pairs, used = [], set()
    for bi, nb in enumerate(p.boxes):
        best, best_s = None, NAME_THRESHOLD
        for gi, g in enumerate(gt_entities):
            if one_to_one and gi in used:
                continue
            s = name_score(nb.name, g)
            if s > best_s:
                best, best_s = gi, s
        if best is not None:
            used.add(best)
            pairs.append((bi, best))
    return pairs


def grounding_reward(p: ParsedResponse, gt_entities: Sequence[str], gt_masks: np.ndarray | None,
                     mask_fn: MaskFn | None, variant: str = "strict",
                     box_scale: tuple[float, float] = (1.0, 1.0)) -> float:
    if not gt_entities:
        return 1.0 if p.has_bbox_tag and p.bbox_none else 0.0
    if not p.has_bbox_tag or not p.boxes:
        return PAPER_PARSE_FAILURE if variant == "paper" else 0.0
    pairs = match_boxes(p, gt_entities, one_to_one=(variant == "strict"))
    if not pairs:
        return 0.0
    from earl_ros.model.coordinates import scale_boxes

    boxes = scale_boxes([p.boxes[bi].box for bi, _ in pairs], box_scale)
    masks = mask_fn(boxes) if mask_fn is not None else None
    ious = [mask_iou(masks[k], gt_masks[gi]) for k, (_, gi) in enumerate(pairs)]
    if variant == "paper":
        return float(np.mean(ious))
    return float(np.sum(ious) / len(gt_entities))


@dataclass
class RewardBreakdown:
    format: float
    answer: float
    ground: float
    total: float
    status: str


def score_completion(text: str, gt_entities: Sequence[str], gt_masks: np.ndarray | None,
                     mask_fn: MaskFn | None, cfg: RewardConfig | None = None,
                     box_scale: tuple[float, float] = (1.0, 1.0)) -> RewardBreakdown:
    cfg = cfg or RewardConfig()
    p = parse_response(text, allow_float=cfg.allow_float)
    rf = format_reward(p, cfg.strict_format)
    ra = answer_reward(p, gt_entities)
    rg = grounding_reward(p, gt_entities, gt_masks, mask_fn, cfg.grounding, box_scale)
    total = cfg.w_format * rf + cfg.w_answer * ra + cfg.w_ground * rg
    return RewardBreakdown(rf, ra, rg, total, p.status)


# ---------------------------------------------------------------------------------------------
# mask functions for R_g

def box_masks(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Filled-rectangle masks: the "box" segmenter (no model; documented CPU fallback)."""
    h, w = hw
    out = np.zeros((len(boxes), h, w), bool)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64)):
        x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        x2, y2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
        if x2 > x1 and y2 > y1:
            out[i, y1:y2, x1:x2] = True
    return out


class SegmenterMasks:
    """Mask oracle for R_g: `for_image(key, image)` gives a MaskFn for one image.

    kind="box": masks are the filled boxes (fast, no model). kind="model": an
    earl_ros.model.segmenter.Segmenter; its image embedding is computed once per image key and
    reused for all G completions of the group. `refine` re-prompts with each mask's own box as the
    shipped pipeline does (segmenter.box_refine), so R_g scores the masks the robot would get.
    """

    def __init__(self, segmenter=None, kind: str = "model", refine: int = 0):
        if kind not in ("box", "model"):
            raise ValueError(kind)
        if kind == "model" and segmenter is None:
            raise ValueError("kind='model' needs a segmenter")
        if refine and kind == "box":
            raise ValueError("box refinement needs a segmenter (kind='model')")
        self.segmenter, self.kind, self.refine = segmenter, kind, int(refine)

    @classmethod
    def from_path(cls, path: str | None, device: str = "cpu", refine: int = 0) -> "SegmenterMasks":
        if path in (None, "", "box"):
            return cls(None, "box", refine=refine)
        from earl_ros.model.segmenter import Segmenter

        return cls(Segmenter.from_pretrained(str(path), device=device), "model", refine=refine)

    def for_image(self, key: str, image: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        hw = image.shape[:2]
        if self.kind == "box":
            return lambda boxes: box_masks(boxes, hw)
        seg = self.segmenter

        def fn(boxes: np.ndarray) -> np.ndarray:
            if len(boxes) == 0:
                return np.zeros((0,) + hw, bool)
            # segment() = set_image (cached by key: the encoder runs once per image) + predict, atomically
            masks, _ = seg.segment(image, np.asarray(boxes, np.float32), key=key, refine=self.refine)
            return np.asarray(masks).astype(bool)

        return fn
