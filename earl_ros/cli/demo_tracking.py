"""earl-demo's scoring against the clip's ground truth (`mask_iou`, for answers and tracked frames) and
its tracked questions: the first grounded question of each scene is asked with `track`, and the
node's `tracks/mask` on the scene's later frames is scored and drawn as a strip in the contact sheet
(issue 26: the named entities stay segmented without asking again)."""
from __future__ import annotations

import numpy as np

STRIP = 4  # tracked frames drawn per tracked question
KEEP = 2000  # tracks/mask messages kept (the whole demo clip is 600 frames)


def mark_tracked(plan: list[dict]) -> None:
    """The first question of each scene that names something is asked with track=True."""
    seen = set()
    for item in plan:
        if item.get("expected_mask_ids") and item.get("scene") not in seen:
            item["track"] = True
            seen.add(item.get("scene"))


def on_tracks_mask(client, msg) -> None:
    """DemoClient callback: keep (frame index, frame, uint16 label map) of each update on a known frame."""
    from earl_ros.ros.conversions import stamp_to_ns

    labels = np.frombuffer(bytes(msg.data), "<u2").reshape(msg.height, msg.width).copy()
    with client.lock:
        frame = client.frames.get(stamp_to_ns(msg.header.stamp))
        if frame is not None and len(client.tracked) < KEEP:
            client.tracked.append((frame[0], frame[1], labels))


def mask_iou(pred: np.ndarray | None, gt_labels: np.ndarray, ids: list[int]) -> float | None:
    """IoU of the union of predicted entity masks with the union of the expected instances."""
    if not ids:
        return None
    gt = np.isin(gt_labels, ids)
    if pred is None or pred.shape != gt.shape:
        return 0.0
    p = pred > 0
    union = np.logical_or(p, gt).sum()
    return float(np.logical_and(p, gt).sum() / union) if union else 0.0


def score_tracking(rec: dict, item: dict, client, gt: np.ndarray) -> list[tuple[np.ndarray, list[str]]]:
    """Fill rec's tracked_frames / tracked_mask_iou from the updates on the scene's later frames; returns
    the strip's contact-sheet tiles."""
    from earl_ros.model.overlay import draw_overlay
    from types import SimpleNamespace

    ids = rec.get("track_ids") or []
    with client.lock:
        updates = [u for u in client.tracked if rec["frame_index"] < u[0] <= item["last_frame"]
                   and np.isin(u[2], ids).any()]
    rec["tracked_frames"] = len(updates)
    if not updates:
        return []
    ious = [mask_iou(np.isin(u[2], ids), gt, item["expected_mask_ids"]) for u in updates]
    rec["tracked_mask_iou"] = round(float(np.mean(ious)), 3)
    tiles = []
    for k in np.linspace(0, len(updates) - 1, min(STRIP, len(updates))).round().astype(int):
        index, rgb, labels = updates[k]
        masks = np.stack([labels == i for i in ids])
        g = SimpleNamespace(masks=masks, boxes=np.zeros((0, 4)), entities=rec["entities"][:len(ids)],
                            scores=[1.0] * len(ids))
        tiles.append((draw_overlay(rgb, g), [f"tracked: {rec['question']}", f"frame {index} (asked on "
                                             f"{rec['frame_index']})", f"mask IoU {ious[k]:.2f}"]))
    return tiles
