"""The pipeline's health: what a robot team reads on /diagnostics to see whether it is healthy.

Built from snapshots the live session hands over (frame buffer, query queue, coarse worker, timing windows)
so that the keys are defined in one place; README.md ("/diagnostics") lists them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def percentile(values, q) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass
class PipelineHealth:
    """Everything one diagnostics message reports, gathered by the node under its locks."""

    model_id: str
    device: str
    mask_backend: str
    frames: dict  # FrameBuffer.snapshot()
    frame_age_s: float
    description_age_s: float
    queue: dict  # QueryQueue.stats()
    query_counts: dict
    query_ms: list
    coarse: dict  # passes, errors, skipped_frames, last_error, preempted, pauses, paused_s
    coarse_latency_ms: list
    coarse_lag_s: float
    intake_ms: list
    transport_ms: list
    publish_ms: list
    results_not_published: int
    coarse_alive: bool
    coarse_enabled: bool
    workers_alive: bool
    tracking: dict = field(default_factory=dict)  # running, updates, lost, errors, update_ms, reasks, reask_errors


def _tracking_values(h: PipelineHealth) -> dict:
    t = h.tracking
    return {"tracks_running": t.get("running", 0), "track_updates": t.get("updates", 0),
            "tracks_lost": t.get("lost", 0), "track_update_errors": t.get("errors", 0),
            "track_update_ms_p50": f"{percentile(t.get('update_ms', []), 50):.1f}",
            "track_reasks": t.get("reasks", 0), "track_reask_errors": t.get("reask_errors", 0)}


def _frame_values(h: PipelineHealth) -> dict:
    snap, c = h.frames, h.frames["counters"]
    return {
        "input_rate_hz": f"{snap['rate_hz']:.2f}",
        "frames_received": c.get("received", 0),
        "frames_accepted": c.get("received", 0) - c.get("rejected", 0),
        "frames_rejected": c.get("rejected", 0),
        "frames_rejected_by_code": ",".join(f"{k}={v}" for k, v in sorted(snap["rejections"].items())),
        "last_rejection": "" if snap["last_rejection"] is None else str(snap["last_rejection"].error),
        "frames_out_of_order": c.get("out_of_order", 0),
        "frames_duplicate_stamp": c.get("duplicate_stamp", 0),
        "stamp_waits": c.get("stamp_waits", 0),
        "frames_evicted_from_buffer": c.get("evicted", 0),
        "time_jumps": c.get("time_jumps", 0),
        "frames_buffered": snap["buffered"],
        "buffered_mb": f"{snap['buffered_bytes'] / (1 << 20):.1f}",
        "frame_age_s": f"{h.frame_age_s:.3f}",
        "intake_ms_p50": f"{percentile(h.intake_ms, 50):.3f}",
        "intake_ms_p99": f"{percentile(h.intake_ms, 99):.3f}",
        "stamp_to_intake_ms_p50": f"{percentile(h.transport_ms, 50):.2f}",
        "stamp_to_intake_ms_p99": f"{percentile(h.transport_ms, 99):.2f}",
    }


def _query_values(h: PipelineHealth) -> dict:
    q = h.queue
    return {
        "queries_accepted": q["accepted"],
        "queries_rejected_busy": q["rejected_busy"],
        "queries_expired_in_queue": q["expired"],
        "queries_cancelled_in_queue": q["cancelled"],
        "queries_answered": q["answered"],
        "queries_in_flight": q["in_flight"],
        "queries_waiting": q["waiting"],
        "query_wait_ms_p50": f"{q['wait_s_p50'] * 1e3:.1f}",
        "query_wait_ms_p95": f"{q['wait_s_p95'] * 1e3:.1f}",
        "query_wait_ms_max": f"{q['wait_s_max'] * 1e3:.1f}",
        "query_latency_ms_p50": f"{percentile(h.query_ms, 50):.1f}",
        "query_latency_ms_p95": f"{percentile(h.query_ms, 95):.1f}",
        "queries_by_code": ",".join(f"{k}={v}" for k, v in sorted(h.query_counts.items())),
        "results_publish_ms_p50": f"{percentile(h.publish_ms, 50):.1f}",
        "results_not_published": h.results_not_published,
    }


def _coarse_values(h: PipelineHealth) -> dict:
    return {
        "frames_not_described": h.coarse["skipped_frames"],
        "coarse_passes": h.coarse["passes"],
        "coarse_errors": h.coarse["errors"],
        "coarse_last_error": h.coarse["last_error"],
        "coarse_paused_for_queries": h.coarse.get("pauses", 0),
        "coarse_paused_s": f"{h.coarse.get('paused_s', 0.0):.2f}",
        "coarse_preempted": h.coarse.get("preempted", 0),
        "coarse_latency_ms_p50": f"{percentile(h.coarse_latency_ms, 50):.1f}",
        "coarse_lag_s": f"{h.coarse_lag_s:.3f}",
        "description_age_s": f"{h.description_age_s:.3f}",
    }


def health_values(h: PipelineHealth) -> dict:
    """Key -> value (stringified by the caller); the keys are the /diagnostics contract."""
    values = {"model_id": h.model_id, "device": h.device, "mask_backend": h.mask_backend}
    values.update(_frame_values(h))
    values.update(_coarse_values(h))
    values.update(_query_values(h))
    values.update(_tracking_values(h))
    values["coarse_worker_alive"] = h.coarse_alive
    values["query_executor_alive"] = h.workers_alive
    return values


def health_level(h: PipelineHealth) -> tuple[str, str]:
    """("OK" | "WARN" | "ERROR", message) for the status."""
    snap = h.frames
    if not h.workers_alive or (h.coarse_enabled and not h.coarse_alive):
        return "ERROR", "a worker thread stopped"
    if snap["latest"] is None:
        return "WARN", "no camera frames yet"
    if h.frame_age_s > 2.0 and snap["rate_hz"] == 0.0:
        return "WARN", f"no camera frame for {h.frame_age_s:.1f} s"
    if snap["last_rejection"] is not None:
        return "WARN", f"latest frame rejected: {snap['last_rejection'].error}"
    return "OK", "ok"
