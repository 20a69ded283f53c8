"""Queries ahead of the background description (earl_ros/model/priority.py), on the embedded model.

A background pass pauses between transformer blocks while a query runs and ends with the text and
descriptor it would have had undisturbed; a query that needs the model a paused pass holds gets it
at once. The pause is provoked at a known block (a spy on the pass's per-block hook), so nothing
here depends on how fast this machine is.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from earl_ros.model.priority import Preempted, QueryPriority

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "models" / "earl-tiny-synth"
HOLD_S = 0.6


@pytest.fixture(scope="module")
def pipe():
    from earl_ros.model.pipeline import EarlPipeline

    return EarlPipeline.from_dir(EMBEDDED)


@pytest.fixture(scope="module")
def frame():
    from earl_ros.ros.bags import read_image_bag

    return next(iter(read_image_bag(REPO / "data" / "demo" / "clip")))[0]


def _pause_at_second_block(monkeypatch, priority: QueryPriority) -> threading.Event:
    """An event set when a background pass reaches its second block (inside the image encoding), before it
    checks for queries."""
    reached, real, calls = threading.Event(), priority.background_step, []

    def step():
        calls.append(1)
        if len(calls) == 2:
            reached.set()
            time.sleep(0.1)  # let the test's query begin before the pass looks
        real()
    monkeypatch.setattr(priority, "background_step", step)
    return reached


def _in_thread(fn):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_a_background_pass_pauses_while_a_query_runs_and_ends_as_it_would_have(pipe, frame, monkeypatch):
    undisturbed = pipe.describe(frame, background=True)
    reached = _pause_at_second_block(monkeypatch, pipe.priority)
    before = pipe.priority.paused_s
    t, box = _in_thread(lambda: pipe.describe(frame, background=True))
    assert reached.wait(60)
    with pipe.priority.query():
        time.sleep(HOLD_S)
        assert t.is_alive()  # held at its block for the whole query
    t.join(60)
    assert "error" not in box
    assert box["value"].text == undisturbed.text
    np.testing.assert_array_equal(box["value"].descriptor, undisturbed.descriptor)
    assert pipe.priority.paused_s - before >= HOLD_S - 0.15


def test_a_query_that_needs_the_coarse_model_takes_it_from_a_paused_pass(pipe, frame, monkeypatch):
    reached = _pause_at_second_block(monkeypatch, pipe.priority)
    preempted = pipe.priority.preempted
    t, box = _in_thread(lambda: pipe.describe(frame, background=True))
    assert reached.wait(60)
    g = pipe.answer(frame, "what is my left hand holding?", interaction=None)  # stage 1 runs in the query
    t.join(60)
    assert g.description and "coarse" in g.timings_ms
    assert isinstance(box.get("error"), Preempted)
    assert pipe.priority.preempted == preempted + 1


def test_a_background_pass_does_not_start_during_a_query(pipe, frame):
    with pipe.priority.query():
        t, box = _in_thread(lambda: pipe.describe(frame, background=True))
        time.sleep(HOLD_S)
        assert t.is_alive() and not box
    t.join(60)
    assert box["value"].text


def test_switched_off_the_background_pass_runs_beside_queries(pipe, frame):
    pipe.priority.enabled = False
    try:
        with pipe.priority.query():
            inter = pipe.describe(frame, background=True)  # would wait forever if it yielded
        assert inter.text
    finally:
        pipe.priority.enabled = True


def test_the_live_session_counts_a_preempted_pass_and_keeps_its_worker_alive(pipe, frame, monkeypatch):
    from earl_ros.live.frames import Frame
    from earl_ros.live.session import LiveSession
    from earl_ros.ros.params import PARAMS

    settings = {p.name: p.default for p in PARAMS}
    session = LiveSession(pipe, settings.__getitem__)
    reached = _pause_at_second_block(monkeypatch, pipe.priority)
    f = Frame("hdr", time.time_ns(), 1, "rgb8", frame)
    t, box = _in_thread(lambda: session.describe(f))
    assert reached.wait(60)
    pipe.answer(frame, "where is my right hand?", interaction=None)
    t.join(60)
    assert box == {"value": None}
    assert session.stats.coarse["preempted"] == 1 and session.stats.coarse["errors"] == 0
