"""Result types shared by the pipeline, the ROS node, the CLI and training."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import UnparseableAnswerError


@dataclass
class Interaction:
    """Stage-1 output for one frame: the description and the global interaction descriptor.

    descriptor: float32 [D] (D = coarse model hidden size). An all-zero descriptor means "no
    description yet" and disables the AFS injection.
    stamp: the analysed frame's stamp in seconds (None outside ROS).
    """

    text: str
    descriptor: np.ndarray
    stamp: float | None = None
    latency_ms: float = 0.0

    @staticmethod
    def empty(dim: int) -> "Interaction":
        return Interaction(text="", descriptor=np.zeros((dim,), np.float32))


@dataclass
class Grounding:
    """Stage-2 output for one (frame, query).

    boxes: int [N, 4] x1, y1, x2, y2 in ORIGINAL image pixels.
    masks: bool [N, H, W] at the original image size.
    """

    entities: list[str]
    boxes: np.ndarray
    masks: np.ndarray
    scores: list[float]
    answer: str
    no_target: bool
    description: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    raw_text: str = ""
    parse_status: str = "ok"
    query_truncated: bool = False
    image_size: tuple[int, int] = (0, 0)  # (height, width)

    def label_map(self) -> np.ndarray:
        """uint8 [H, W]: 0 background, i = entity i (1-based); later entities win overlaps."""
        h, w = self.image_size
        out = np.zeros((h, w), np.uint8)
        for i, m in enumerate(self.masks[:255]):
            out[m.astype(bool)] = i + 1
        return out

    def to_json(self) -> dict:
        """The JSON contract of ARCHITECTURE.md (earl-infer and earl-query)."""
        return {
            "answer": self.answer,
            "entities": list(self.entities),
            "boxes": [[int(v) for v in b] for b in np.asarray(self.boxes).reshape(-1, 4)],
            "scores": [round(float(s), 4) for s in self.scores],
            "no_target": bool(self.no_target),
            "description": self.description,
            "timings_ms": {k: round(float(v), 2) for k, v in self.timings_ms.items()},
        }


RAW_TEXT_IN_ERRORS = 300  # characters of the model's own text quoted in an UNPARSEABLE_ANSWER message


def require_answer(g: Grounding) -> Grounding:
    """Raise UnparseableAnswerError unless `g` names an entity or says there is no target.

    An empty answer with no_target false is no answer: callers must not report it as success.
    The message quotes the model's text (truncated) so the failure can be read.
    """
    if g.entities or g.no_target:
        return g
    raw = g.raw_text if len(g.raw_text) <= RAW_TEXT_IN_ERRORS else g.raw_text[:RAW_TEXT_IN_ERRORS] + "..."
    why = ("every box it named fell outside the frame" if g.parse_status == "ok"
           else f"parse status {g.parse_status}")
    raise UnparseableAnswerError(f"the response model's output is not an answer ({why}); it wrote: {raw!r}")
