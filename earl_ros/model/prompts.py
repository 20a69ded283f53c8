"""The EARL prompts and the one output grammar.

Inference, the GRPO rewards and evaluation all parse model output with `parse_response`, so a
completion that earns a format reward is exactly a completion the robot can use.

Grammar (METHOD.md section 1):
    <answer>["the right hand", "the active kettle"]</answer>
    <bbox>"the right hand": [x1, y1, x2, y2]
    "the active kettle": [x1, y1, x2, y2]</bbox>
No target:
    <answer>There is no suitable referring result.</answer>
    <bbox>none</bbox>
Boxes are integer pixel corners in the image the model saw. The public release's prompt asked for
[x, y, width, height] while its parser read corners; this prompt says corners.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

import Levenshtein

PROMPT_VERSION = "earl-prompt-v1"

COARSE_INSTRUCTION = "Please analyze the interactions of hands and objects in detail."

NO_TARGET_ANSWER = "There is no suitable referring result."

RESPONSE_INSTRUCTION = (
    "{query}\n"
    "List the referred hands and objects and give one bounding box per entity, exactly in this "
    "format:\n"
    '<answer>["entity 1", "entity 2"]</answer>\n'
    '<bbox>"entity 1": [x1, y1, x2, y2]\n"entity 2": [x1, y1, x2, y2]</bbox>\n'
    "Boxes are integer pixel corners: (x1, y1) top-left, (x2, y2) bottom-right. "
    f"If nothing fits the question, answer <answer>{NO_TARGET_ANSWER}</answer> and <bbox>none</bbox>."
)

# Inputs longer than this are not worth a regex pass: no valid answer is this long.
MAX_PARSE_CHARS = 20_000

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BBOX_RE = re.compile(r"<bbox>(.*?)</bbox>", re.DOTALL | re.IGNORECASE)
_BOX_LINE_RE = re.compile(r'^\s*"?(?P<name>[^"\[\]:]*?)"?\s*:\s*\[(?P<coords>[^\[\]]*)\]\s*,?\s*$')
_INT_RE = re.compile(r"^[+]?\d+$")
_FLOAT_RE = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)$")


def response_prompt(query: str) -> str:
    """The user turn of the response stage for one query."""
    return RESPONSE_INSTRUCTION.format(query=query.strip())


@dataclass
class NamedBox:
    name: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (x1 < x2, y1 < y2, all >= 0)


@dataclass
class ParsedResponse:
    """Everything the rewards, the metrics and the pipeline need from one completion.

    status is one of: "ok", "no_target", "missing_answer", "missing_bbox", "missing_both",
    "bad_answer", "bad_bbox". The parser never raises; a malformed completion is a status.
    """

    status: str
    has_answer_tag: bool = False
    has_bbox_tag: bool = False
    answer_text: str = ""
    entities: list[str] | None = None  # None when the answer block is not a list of strings
    no_target: bool = False  # the answer says there is no suitable referring result
    bbox_none: bool = False  # the bbox block is exactly "none"
    boxes: list[NamedBox] = field(default_factory=list)  # valid lines, in order
    invalid_box_lines: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "no_target")

    def grounded_entities(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        """(entity, box) pairs in answer order; entities without a box are dropped.

        Boxes are attached to answer entities by best name score, so a model that names a box
        slightly differently from its answer list still grounds the entity.
        """
        if self.no_target or not self.boxes:
            return []
        names = self.entities if self.entities else [b.name for b in self.boxes]
        pairs, used = [], set()
        for ent in names:
            best, best_s = None, 0.5
            for i, nb in enumerate(self.boxes):
                if i in used:
                    continue
                s = name_score(ent, nb.name)
                if s > best_s:
                    best, best_s = i, s
            if best is not None:
                used.add(best)
                pairs.append((ent, self.boxes[best].box))
        return pairs


def name_score(a: str, b: str) -> float:
    """1.0 if one name contains the other (case-insensitive), else the Levenshtein ratio."""
    a, b = a.strip().lower(), b.strip().lower()
    if not a or not b:
        return 0.0
    if a in b or b in a:
        return 1.0
    return float(Levenshtein.ratio(a, b))


def is_no_target_text(text: str) -> bool:
    return "no suitable referring result" in text.lower()


def _parse_entities(text: str) -> list[str] | None:
    text = text.strip()
    if not text or len(text) > MAX_PARSE_CHARS:
        return None
    value = None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        if text.startswith("[") and text.endswith("]") and text.count("[") < 8:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                value = None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return None
    return [v.strip() for v in value]


def parse_box(coords: str, allow_float: bool = False) -> tuple[int, int, int, int] | None:
    """"x1, y1, x2, y2" -> ints, or None if not four valid corners."""
    parts = [p.strip() for p in coords.split(",")]
    if len(parts) != 4:
        return None
    vals = []
    for p in parts:
        if _INT_RE.match(p):
            vals.append(int(p))
        elif allow_float and _FLOAT_RE.match(p):
            vals.append(int(round(float(p))))
        else:
            return None
    x1, y1, x2, y2 = vals
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        return None
    return (x1, y1, x2, y2)


def parse_response(text: object, allow_float: bool = False) -> ParsedResponse:
    """Parse one completion. Never raises, whatever `text` is."""
    try:
        return _parse(text if isinstance(text, str) else "", allow_float)
    except Exception:  # pragma: no cover - the grammar is total; this is a last line of defence
        return ParsedResponse(status="missing_both")


def _parse(text: str, allow_float: bool) -> ParsedResponse:
    text = text[:MAX_PARSE_CHARS]
    am, bm = _ANSWER_RE.search(text), _BBOX_RE.search(text)
    out = ParsedResponse(status="ok", has_answer_tag=am is not None, has_bbox_tag=bm is not None)
    if am is None and bm is None:
        out.status = "missing_both"
        return out
    if am is not None:
        out.answer_text = am.group(1).strip()
        out.no_target = is_no_target_text(out.answer_text)
        if not out.no_target:
            out.entities = _parse_entities(out.answer_text)
    if bm is not None:
        block = bm.group(1).strip()
        out.bbox_none = block.lower() == "none"
        if not out.bbox_none:
            for line in block.splitlines():
                if not line.strip():
                    continue
                m = _BOX_LINE_RE.match(line)
                box = parse_box(m.group("coords"), allow_float) if m else None
                if box is None:
                    out.invalid_box_lines += 1
                else:
                    out.boxes.append(NamedBox(m.group("name").strip(), box))
    if am is None:
        out.status = "missing_answer"
    elif bm is None:
        out.status = "missing_bbox"
    elif out.no_target:
        out.status = "no_target" if out.bbox_none else "bad_bbox"
    elif out.entities is None:
        out.status = "bad_answer"
    elif out.bbox_none or not out.boxes or out.invalid_box_lines:
        out.status = "bad_bbox"
    return out


def format_response(entities: list[str], boxes: list[tuple[int, int, int, int]] | None) -> str:
    """The target completion for SFT; `entities == []` gives the no-target answer."""
    if not entities:
        return f"<answer>{NO_TARGET_ANSWER}</answer>\n<bbox>none</bbox>"
    assert boxes is not None and len(boxes) == len(entities)
    lines = "\n".join(
        f'"{e}": [{int(b[0])}, {int(b[1])}, {int(b[2])}, {int(b[3])}]' for e, b in zip(entities, boxes)
    )
    return f"<answer>{json.dumps(entities)}</answer>\n<bbox>{lines}</bbox>"


def answer_sentence(entities: list[str]) -> str:
    """The benchmark's template sentence rebuilt from an entity list (for METEOR/CIDEr)."""
    if not entities:
        return NO_TARGET_ANSWER
    parts = [f"the mask of {e} is <MSK_{i}>" for i, e in enumerate(entities)]
    sentence = ", and ".join(parts) + "."
    return sentence[0].upper() + sentence[1:]
