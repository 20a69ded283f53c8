"""A pipeline Grounding -> the `QueryResult` message and the label-map mask (source header kept)."""
from __future__ import annotations

import math

import numpy as np

from .conversions import array_to_image


def box_rois(boxes, height: int, width: int) -> list:
    """[x1, y1, x2, y2] boxes -> RegionOfInterest, clamped to the frame (never negative sizes)."""
    from sensor_msgs.msg import RegionOfInterest

    from earl_ros.model.coordinates import clamp_boxes  # here: importing this module must not load torch

    out = []
    for b in clamp_boxes(boxes, (height, width)):
        x1, y1, x2, y2 = (int(v) for v in b)
        out.append(RegionOfInterest(x_offset=x1, y_offset=y1, width=x2 - x1, height=y2 - y1))
    return out


def fill_result(res, header, query: str, g, description: str, description_age: float,
                frame_hw: tuple[int, int]):
    """Fill `res` (earl_interfaces/QueryResult) and return the mono8 mask message."""
    h, w = frame_hw
    res.header = header
    res.query = query
    res.query_truncated = bool(g.query_truncated)
    res.answer = g.answer
    res.entities = [str(e) for e in g.entities]
    res.boxes = box_rois(g.boxes, h, w)
    res.scores = [float(s) for s in g.scores]
    res.no_target = bool(g.no_target)
    res.description = g.description or description
    res.description_age_s = float(description_age) if math.isfinite(description_age) else -1.0
    labels = g.label_map() if g.image_size and g.image_size[0] else np.zeros((h, w), np.uint8)
    return array_to_image(labels, "mono8", header)


def set_timings(res, timings: dict, model_timings: dict | None) -> None:
    for k, v in (model_timings or {}).items():
        timings.setdefault(f"model.{k}", float(v))
    res.timing_names = list(timings)
    res.timing_ms = [float(v) for v in timings.values()]
