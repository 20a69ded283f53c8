"""The live session (earl_ros/live/session.py) decides what the node answers; no DDS, no rclpy here.

The model is the embedded one (models/earl-tiny-synth) on frames of the demo's world; frames carry
a plain object as header, as the session never looks inside it.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from earl_ros.live.errors import InvalidRequestError, QueryTooLongError
from earl_ros.live.health import health_values
from earl_ros.live.session import LiveSession
from earl_ros.model.errors import (BusyError, EmptyQueryError, FrameTooOldError, NoFrameError,
                                   StaleDescriptionError)
from earl_ros.model.types import Interaction
from earl_ros.ros.params import PARAMS

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "models" / "earl-tiny-synth"


@pytest.fixture(scope="module")
def pipeline():
    from earl_ros.model.pipeline import EarlPipeline

    return EarlPipeline.from_dir(EMBEDDED)


@pytest.fixture(scope="module")
def scene():
    """The demo clip's first frame (RGB 192x256)."""
    from earl_ros.ros.bags import read_image_bag

    rgb = next(iter(read_image_bag(REPO / "data" / "demo" / "clip")))[0]
    return type("Scene", (), {"image": rgb})


def _settings(**overrides):
    values = {p.name: p.default for p in PARAMS}
    values.update(overrides)
    return values.__getitem__


def _session(pipeline, log=None, **overrides):
    lines = [] if log is None else log
    return LiveSession(pipeline, _settings(**overrides), log=lambda level, msg: lines.append((level, msg)))


def _put(s: LiveSession, rgb, stamp_ns: int, header="hdr") -> bool:
    return s.accept_frame(header, stamp_ns, "rgb8", lambda: rgb, time.perf_counter())


def test_queries_are_checked_before_any_model_runs(pipeline):
    s = _session(pipeline, max_query_bytes=16)
    assert s.check_query("  which hand?  ", 0, 0) == ("which hand?", 0)
    assert s.check_query("which hand?", 2, 5) == ("which hand?", 2_000_000_005)
    with pytest.raises(QueryTooLongError, match="max_query_bytes"):
        s.check_query("x" * 17, 0, 0)
    with pytest.raises(EmptyQueryError):
        s.check_query(" \n ", 0, 0)
    with pytest.raises(InvalidRequestError, match="nanosec"):
        s.check_query("which hand?", 0, 1_000_000_000)


def test_a_frame_outside_the_shape_bounds_is_counted_as_rejected_not_buffered(pipeline, scene):
    log = []
    s = _session(pipeline, log)
    assert not _put(s, np.zeros((10, 640, 3), np.uint8), 1)
    assert _put(s, scene.image, 2)
    snap = s.frames.snapshot()
    assert snap["buffered"] == 1 and snap["rejections"] == {"INVALID_IMAGE": 1}
    assert log and log[0][0] == "warning" and "rejected frame" in log[0][1]


def test_a_query_about_now_refuses_a_frame_that_arrived_too_long_ago(pipeline, scene):
    s = _session(pipeline, max_frame_age=0.05)
    with pytest.raises(NoFrameError):
        s.frame_for(0)
    _put(s, scene.image, 1_000)
    frame = s.frame_for(0)
    s.check_frame_age(frame, 0)
    time.sleep(0.1)
    with pytest.raises(FrameTooOldError, match="max_frame_age"):
        s.check_frame_age(frame, 0)
    s.check_frame_age(frame, 1_000)  # a query naming its frame's stamp asks about that moment


def test_a_description_of_an_older_frame_never_replaces_a_newer_one(pipeline, scene):
    published = []
    s = LiveSession(pipeline, _settings(), on_description=lambda inter, frame, lag: published.append(inter.text))
    _put(s, scene.image, 1)
    _put(s, scene.image, 2)
    old, new = s.frames.select(1), s.frames.select(2)
    assert s.record_description(Interaction("new", np.ones(4, np.float32)), new) is not None
    assert s.record_description(Interaction("old", np.ones(4, np.float32)), old) is None
    assert s.description.current().text == "new" and published == ["new"]
    assert s.description.current().stamp == new.stamp


@pytest.mark.parametrize("policy", ["refuse", "use", "empty", "describe"])
def test_stale_policy_decides_what_a_query_uses_when_the_description_is_old(pipeline, scene, policy):
    s = _session(pipeline, stale_policy=policy, max_description_age=0.5)
    _put(s, scene.image, 1_000_000_000)
    _put(s, scene.image, 3_000_000_000)
    s.record_description(Interaction("seen at 1 s", np.ones(pipeline.descriptor_dim, np.float32), stamp=1.0),
                         s.frames.select(1_000_000_000))
    frame, timings = s.frames.select(3_000_000_000), {}
    if policy == "refuse":
        with pytest.raises(StaleDescriptionError, match="2.00 s from the frame"):
            s.interaction_for(frame, frame.rgb(), timings)
        return
    inter, age = s.interaction_for(frame, frame.rgb(), timings)
    if policy == "use":
        assert inter.text == "seen at 1 s" and age == pytest.approx(2.0)
    elif policy == "empty":
        assert inter.text == "" and not inter.descriptor.any() and math.isinf(age)
    else:  # a fresh description of this frame, which becomes the rolling one
        assert age == 0.0 and "describe" in timings and inter.stamp == pytest.approx(3.0)
        assert s.description.current() is inter


def test_a_full_queue_answers_busy_and_outcomes_are_counted_once(pipeline, scene):
    refused = []
    s = LiveSession(pipeline, _settings(max_pending_queries=1), on_refused=lambda p, e: refused.append(e.code))
    _put(s, scene.image, 1)
    frame = s.frame_for(0)
    first = s.admit("req", "resp", "which hand?", frame, time.perf_counter())
    assert first.frame is frame and first.timings["frame_age"] >= 0
    with pytest.raises(BusyError, match="1"):
        s.admit("req", "resp", "which hand?", frame, time.perf_counter())
    s.queue.close()  # shutdown ends the waiting request through on_refused
    assert refused == ["BUSY"]
    assert s.outcome(None, time.perf_counter()) == ("OK", "")
    assert s.outcome(BusyError("queue full"), time.perf_counter()) == ("BUSY", "queue full")
    assert s.outcome(KeyError("x"), time.perf_counter())[0] == "INTERNAL"
    assert s.stats.queries()[1] == {"OK": 1, "BUSY": 1, "INTERNAL": 1}


def test_an_admitted_query_is_answered_on_its_own_frame(pipeline, scene):
    s = _session(pipeline, stale_policy="empty")
    _put(s, scene.image, 7)
    pending = s.admit("req", "resp", "what is the right hand holding?", s.frame_for(0), time.perf_counter())
    ticket = s.queue.take(timeout_s=1.0)
    assert ticket.payload is pending
    ans = s.answer(pending)
    assert ans.grounding.image_size == scene.image.shape[:2]
    assert ans.grounding.masks.shape[1:] == scene.image.shape[:2]
    assert {"ros_convert", "model"} <= set(pending.timings)


def test_the_background_worker_describes_the_newest_frame_until_stopped(pipeline, scene):
    published = []
    s = LiveSession(pipeline, _settings(coarse_period=0.0),
                    on_description=lambda inter, frame, lag: published.append(frame.stamp_ns))
    stop = threading.Event()
    worker = threading.Thread(target=s.run_coarse, args=(stop,), daemon=True)
    worker.start()
    _put(s, scene.image, 11)
    deadline = time.monotonic() + 60
    while not published and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    s.frames.wake_all()
    worker.join(5)
    assert published[:1] == [11] and not worker.is_alive()
    values = health_values(s.health("cpu", "torch", {"coarse": False, "workers": True},
                                    type("P", (), {"publish_ms": [], "dropped": 0})()))
    assert values["coarse_passes"] >= 1 and values["frames_buffered"] == 1
