"""What an evaluation's per-sample answers show, read from its cached JSON (no model needed).

cIoU alone cannot tell a model that names the wrong object from one that draws the right object
badly, nor a box that follows the frame from a template box per query wording; these break the
answers down so the card's findings can say which it is.
"""
from __future__ import annotations

import numpy as np


def _is_hand(entity: str) -> bool:
    """Synthetic entity names: "the left hand" / "the right hand"; objects are "the active <category>"."""
    return "hand" in entity and "active" not in entity


def query_kinds(res: dict) -> dict:
    """Per query kind: count, share with exactly the right entity names, mean IoU."""
    out: dict[str, list] = {}
    for x in (res or {}).get("samples", []):
        g = x["gt"]
        kind = ("no target" if not g else "hand" if all(map(_is_hand, g))
                else "hands + objects" if any(map(_is_hand, g)) else "object")
        out.setdefault(kind, []).append(x)
    return {k: {"n": len(v), "names_right": float(np.mean([sorted(x["gt"]) == sorted(x["pred"]) for x in v])),
                "mean_iou": float(np.mean([x["iou"] for x in v]))} for k, v in out.items()}


def left_edge_zero(res: dict | None) -> tuple[float, float] | None:
    """(share of left-hand answers whose box starts at x = 0, median true left edge): the template
    value greedy coordinate decoding falls back on."""
    rows = [r for r in (res or {}).get("samples", []) if r["gt"] == ["the left hand"] and r["pred"] == ["the left hand"]
            and r.get("pred_boxes")]
    if not rows:
        return None
    return (float(np.mean([r["pred_boxes"][0][0] == 0 for r in rows])),
            float(np.median([r["gt_boxes"][0][0] for r in rows])))


def box_fit(res: dict | None) -> dict:
    """Do the predicted boxes follow the frame? Over single-target queries answered with one box, per
    target kind: correlation of predicted and true box centre / size, and predicted spread / true
    spread. A model that ignores the image writes one template box per query wording: spread ~0."""
    rows: dict[str, list] = {}
    for x in (res or {}).get("samples", []):
        if len(x.get("gt_boxes", [])) != 1 or len(x.get("pred_boxes", [])) != 1:
            continue
        kind = "hand" if _is_hand(x["gt"][0]) else "object"
        rows.setdefault(kind, []).append((x["gt_boxes"][0], x["pred_boxes"][0]))
    out = {}
    for kind, pairs in rows.items():
        g, p = (np.array([r[i] for r in pairs], float) for i in (0, 1))
        geo = lambda b: {"cx": (b[:, 0] + b[:, 2]) / 2, "cy": (b[:, 1] + b[:, 3]) / 2,  # noqa: E731
                         "w": b[:, 2] - b[:, 0], "h": b[:, 3] - b[:, 1]}
        gg, pp = geo(g), geo(p)
        out[kind] = {"n": len(pairs)}
        for k in gg:
            ok = gg[k].std() > 0 and pp[k].std() > 0
            out[kind][k] = {"corr": float(np.corrcoef(gg[k], pp[k])[0, 1]) if ok else 0.0,
                            "spread": float(pp[k].std() / gg[k].std()) if gg[k].std() > 0 else None,
                            "mae_px": float(np.abs(gg[k] - pp[k]).mean())}
    return out
