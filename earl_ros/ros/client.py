"""Query client: call the node's `query` service (or its `ask` action) and turn the response into the
JSON contract."""
from __future__ import annotations

import time

import numpy as np

from .conversions import image_to_array, ns_to_stamp, stamp_to_sec


def response_to_json(resp) -> dict:
    """The JSON contract of ARCHITECTURE.md (earl-infer fields + success, message, stamp, error_code)."""
    r = resp.result
    boxes = [[int(b.x_offset), int(b.y_offset), int(b.x_offset + b.width), int(b.y_offset + b.height)]
             for b in r.boxes]
    out = {
        "success": bool(resp.success),
        "error_code": resp.error_code,
        "message": resp.message,
        "stamp": stamp_to_sec(resp.header.stamp),
        "frame_id": resp.header.frame_id,
        "answer": r.answer,
        "entities": list(r.entities),
        "boxes": boxes,
        "scores": [round(float(s), 4) for s in r.scores],
        "no_target": bool(r.no_target),
        "parse_status": r.parse_status,
        "description": r.description,
        "timings_ms": {k: round(float(v), 2) for k, v in zip(r.timing_names, r.timing_ms)},
        "mask_shape": [int(resp.mask.height), int(resp.mask.width)],
    }
    if len(resp.track_ids):
        out["track_ids"] = [int(i) for i in resp.track_ids]
    return out


def mask_array(resp) -> np.ndarray | None:
    """The mono8 label map of a response as uint8 [H, W] (None when the response has no mask)."""
    if resp.mask.height == 0 or resp.mask.width == 0:
        return None
    return image_to_array(resp.mask)[..., 0].copy()


def make_request(query: str, stamp_sec: float | None = None, return_mask: bool = True, publish: bool = True,
                 track: bool = False):
    from earl_interfaces.srv import Query

    req = Query.Request(query=query, return_mask=return_mask, publish=publish, track=track)
    if stamp_sec:
        req.stamp = ns_to_stamp(int(round(stamp_sec * 1e9)))
    return req


def call(node, client, request, timeout: float):
    """Call and wait (spinning `node`); returns the response or None on timeout."""
    import rclpy

    fut = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < deadline:
        rclpy.spin_until_future_complete(node, fut, timeout_sec=min(0.5, max(0.01, deadline - time.monotonic())))
    if not fut.done():
        client.remove_pending_request(fut)
        return None
    return fut.result()


def make_goal(query: str, stamp_sec: float | None = None, return_mask: bool = True, publish: bool = True,
              track: bool = False):
    """The `ask` action's goal with the same fields as make_request."""
    from earl_interfaces.action import Ask

    req = make_request(query, stamp_sec, return_mask, publish, track)
    return Ask.Goal(query=req.query, stamp=req.stamp, return_mask=return_mask, publish=publish, track=track)


def ask(node, action_client, goal, timeout: float, on_feedback=None):
    """Send an `ask` goal and wait (spinning `node`), passing each feedback to on_feedback; returns the
    result (fields of the query response) or None on timeout. A timeout or Ctrl-C cancels the goal,
    so the node's worker does not go on writing an answer nobody reads."""
    import rclpy

    deadline = time.monotonic() + timeout

    def spin_until(fut) -> bool:
        while not fut.done() and time.monotonic() < deadline:
            rclpy.spin_until_future_complete(node, fut, timeout_sec=min(0.2, max(0.01, deadline - time.monotonic())))
        return fut.done()

    cb = (lambda msg: on_feedback(msg.feedback)) if on_feedback else None
    sent = action_client.send_goal_async(goal, feedback_callback=cb)
    handle, finished = None, False
    try:
        if not spin_until(sent) or not sent.result().accepted:
            return None
        handle = sent.result()
        result = handle.get_result_async()
        finished = spin_until(result)
        return result.result().result if finished else None
    finally:
        if handle is not None and not finished:
            cancel = handle.cancel_goal_async()
            deadline = time.monotonic() + 2.0
            spin_until(cancel)
