"""Every request gets exactly one answer, in arrival order: the node as a real process under load.

The node (earl-launch + the embedded model) runs with its defaults for the queue and frame age;
a camera thread publishes demo-clip frames at 10 Hz, as a head camera would. Clients are real
processes (earl_ros.ros.query_load) or client nodes in this process. Each test makes its own
requests and reads counters as differences, so the tests pass in any order.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ros_helpers import (DISCOVERY_TIMEOUT, EMBEDDED_MODEL, STARTUP_TIMEOUT, Client, NodeProcess, demo_frames,
                         require_interfaces, wait_until)

require_interfaces()

NS = "earl_q"
MAX_PENDING = 16


class Camera:
    """Publishes demo frames at 10 Hz from a thread; `paused` stops it (a stalled camera)."""

    def __init__(self, client: Client):
        self.client, self.paused, self._stop = client, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        frames, i = demo_frames(), 0
        while not self._stop.wait(0.1):
            if not self.paused.is_set():
                self.client.publish_frame(frames[i % len(frames)])
                i += 1

    def stop(self):
        self._stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    log = tmp_path_factory.mktemp("earl-queue") / "node.log"
    proc = NodeProcess(EMBEDDED_MODEL, log, namespace=NS, camera_topic="/earl_q/camera",
                       extra=["-p", "qos_reliability:=reliable", "-p", f"max_pending_queries:={MAX_PENDING}"])
    yield proc
    proc.terminate()
    assert "Traceback" not in proc.log(), proc.log()[-3000:]


@pytest.fixture(scope="module")
def client(node):
    c = Client(namespace=f"/{NS}", camera_topic="/earl_q/camera")
    try:
        assert c.query_client.wait_for_service(timeout_sec=STARTUP_TIMEOUT), "node did not come up:\n" + node.log()
        c.wait_for_subscriber()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def camera(client):
    cam = Camera(client)
    wait_until(lambda: client.query("which hand?", publish=False).success, STARTUP_TIMEOUT, step=0.2,
               what="a first answer")
    yield cam
    cam.stop()


def diag(client) -> dict:
    return client.diagnostics()


def load(requests: int, start_at: float, mode: str = "burst") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "earl_ros.ros.query_load", "--namespace", NS,
                             "--requests", str(requests), "--mode", mode, "--timeout", "240",
                             "--start-at", str(start_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_burst_of_40_from_8_clients_gets_40_answers_each_ok_or_busy(node, client, camera):
    procs = [load(5, start_at=time.time() + 8.0) for _ in range(8)]  # started together once all have matched
    records = []
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-2000:]
        records += json.loads(out)["requests"]
    codes = [r["code"] for r in records]
    assert len(codes) == 40 and "LOST" not in codes, codes
    # UNPARSEABLE_ANSWER is an answered request too (the model ran; its text was no answer)
    assert set(codes) <= {"OK", "BUSY", "UNPARSEABLE_ANSWER"}, codes
    assert codes.count("BUSY") >= 40 - 2 * MAX_PENDING - 2 and 40 - codes.count("BUSY") >= MAX_PENDING, codes
    assert not any(r["empty_success"] for r in records)
    # the node's own books balance: everything it accepted has been answered
    wait_until(lambda: (lambda d: d["queries_in_flight"] == "0" and d["queries_accepted"] == d["queries_answered"])(
        diag(client)), DISCOVERY_TIMEOUT, what="accepted == answered with nothing in flight")


def test_waiting_requests_are_served_in_arrival_order(node, client, camera):
    """One request runs while three wait; they come back in the order they were sent."""
    from earl_interfaces.srv import Query

    done, lock = [], threading.Lock()
    futures = []
    for i in range(4):  # sent within milliseconds: the first runs, three wait in the queue
        fut = client.query_client.call_async(Query.Request(query="which hand is holding something?",
                                                           publish=False, return_mask=False))
        fut.add_done_callback(lambda f, i=i: (lock.acquire(), done.append(i), lock.release()))
        futures.append(fut)
    wait_until(lambda: len(done) == 4, 120, what="four answers")
    assert done == [0, 1, 2, 3]
    waits = [dict(zip(f.result().result.timing_names, f.result().result.timing_ms)).get("ros_queue")
             for f in futures]
    codes = [f.result().error_code for f in futures]
    assert set(codes) <= {"OK", "UNPARSEABLE_ANSWER"}, codes  # all four ran the model, none was refused
    assert waits[3] > waits[0]  # the last one queued behind the others


def test_a_query_about_now_on_a_stalled_camera_fails_frame_too_old(node, client, camera):
    camera.paused.set()
    try:
        time.sleep(1.5)  # the default max_frame_age is 1.0 s
        r = client.query("which hand is holding something?", publish=False)
        assert (r.success, r.error_code) == (False, "FRAME_TOO_OLD"), r.message
        assert "max_frame_age" in r.message and " s ago" in r.message
    finally:
        camera.paused.clear()
    wait_until(lambda: client.query("which hand?", publish=False).success, DISCOVERY_TIMEOUT, step=0.2,
               what="an answer once the camera is back")


@pytest.mark.parametrize("h,w", [(1, 1), (3, 640), (640, 3), (10, 10), (30, 1000)])
def test_frames_the_models_cannot_take_are_rejected_at_intake_with_the_bound(node, client, camera, h, w):
    camera.paused.set()
    try:
        bad = {}

        def reported():
            client.publish_frame(np.full((h, w, 3), 120, np.uint8))
            bad["r"] = client.query("which hand?", publish=False)
            return bad["r"].error_code == "INVALID_IMAGE"

        wait_until(reported, DISCOVERY_TIMEOUT, step=0.1, what=f"INVALID_IMAGE for a {w}x{h} frame")
        assert f"{w}x{h}" in bad["r"].message and ("28 px" in bad["r"].message or "1:20" in bad["r"].message)
    finally:
        camera.paused.clear()
    wait_until(lambda: client.query("which hand?", publish=False).success, DISCOVERY_TIMEOUT, step=0.2,
               what="an answer about the next valid frame")
    assert "Traceback" not in node.log()


@pytest.mark.parametrize("text", ["😀 which hand?\nnow 🙌", "x" * 2048, "?", "WHERE IS MY RIGHT HAND"])
def test_no_success_is_ever_an_empty_answer(node, client, camera, text):
    r = client.query(text, publish=False)
    if r.success:
        assert r.result.answer and (r.result.entities or r.result.no_target), r.result
        assert r.result.parse_status in ("ok", "no_target", "bad_bbox", "bad_answer")
    else:
        assert r.error_code == "UNPARSEABLE_ANSWER" and "wrote:" in r.message


def test_the_frame_buffer_is_bounded_in_bytes(node, client, camera):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    cli = client.node.create_client(SetParameters, f"/{NS}/earl/set_parameters")
    assert cli.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT)

    def set_mb(mb):
        ev = threading.Event()
        fut = cli.call_async(SetParameters.Request(parameters=[Parameter("buffer_max_mb", value=mb).to_parameter_msg()]))
        fut.add_done_callback(lambda _f: ev.set())
        assert ev.wait(DISCOVERY_TIMEOUT) and fut.result().results[0].successful

    frame_mb = 192 * 256 * 3 / (1 << 20)  # a demo frame, 0.14 MiB
    # more than 1 MiB buffered first (a test before this one may have just restarted the camera)
    wait_until(lambda: int(diag(client)["frames_buffered"]) > int(1.0 / frame_mb) + 1, DISCOVERY_TIMEOUT,
               what="more than 1 MiB of frames buffered")
    before = int(diag(client)["frames_evicted_from_buffer"])
    set_mb(1)
    try:
        wait_until(lambda: float(diag(client)["buffered_mb"]) <= 1.0, DISCOVERY_TIMEOUT, what="<= 1 MiB buffered")
        d = diag(client)
        assert int(d["frames_buffered"]) <= int(1.0 / frame_mb) and int(d["frames_evicted_from_buffer"]) > before
    finally:
        set_mb(512)
    wait_until(lambda: int(diag(client)["frames_buffered"]) > int(1.0 / frame_mb), DISCOVERY_TIMEOUT,
               what="the buffer refilling to its frame count once the byte bound is wide again")


@pytest.fixture(scope="module")
def garbage_node(tiny_model_dir, tmp_path_factory):
    """A node whose response model has random weights: it writes no answer grammar."""
    log = tmp_path_factory.mktemp("earl-garbage") / "node.log"
    proc = NodeProcess(tiny_model_dir, log, namespace="earl_garbage", camera_topic="/earl_garbage/camera",
                       extra=["-p", "qos_reliability:=reliable", "-p", "max_frame_age:=0.0"])
    c = Client(namespace="/earl_garbage", camera_topic="/earl_garbage/camera")
    try:
        assert c.query_client.wait_for_service(timeout_sec=STARTUP_TIMEOUT), "node did not come up:\n" + proc.log()
        c.wait_for_subscriber()
        yield proc, c
    finally:
        c.close()
        proc.terminate()


def test_an_output_that_is_no_answer_fails_unparseable_with_the_model_text(garbage_node):
    proc, c = garbage_node
    got = {}

    def answered():
        c.publish_frame(demo_frames()[0])
        got["r"] = c.query("which hand is holding something?")
        # the camera subscription exists a moment before activation completes: INACTIVE until then
        return got["r"].error_code not in ("NO_FRAME", "INACTIVE")

    wait_until(answered, DISCOVERY_TIMEOUT, step=0.2, what="an answer about a frame")
    r = got["r"]
    assert (r.success, r.error_code) == (False, "UNPARSEABLE_ANSWER"), r.message
    assert "wrote:" in r.message and len(r.message) < 600
    assert r.result.parse_status not in ("", "ok", "no_target")
    assert r.mask.height == 0 and "Traceback" not in proc.log()
