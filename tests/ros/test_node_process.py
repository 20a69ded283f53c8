"""The earl node as a real process (earl-launch + the embedded model), driven by real publishers, a
replay process and clients. The tests share one node and pass in any order: each publishes the
frames it needs, leaves parameters as it found them and reads counters as differences; the SIGTERM
test stops a node of its own. Frames are the demo clip's (the embedded model's world), 320x240.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest

from ros_helpers import (DISCOVERY_TIMEOUT, EMBEDDED_MODEL, STARTUP_TIMEOUT, Client, NodeProcess, demo_frames,
                         require_interfaces, tool, wait_until)

require_interfaces()

from earl_ros.live.errors import ALL_ERROR_CODES  # noqa: E402

H, W = 240, 320


def frame(i: int = 0, h: int = H, w: int = W) -> np.ndarray:
    from PIL import Image

    clip = demo_frames()
    return np.asarray(Image.fromarray(clip[(i * 7) % len(clip)]).resize((w, h), Image.Resampling.BILINEAR))


def stamp_ns_of(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# reliable intake so that a loaded CI machine does not drop the frames the tests count on
# (the default best-effort intake is exercised by test_node_inprocess.py and the benchmark)
# max_frame_age: these tests publish a frame and then query for seconds (tested in test_query_queue_node.py)
# track_reask_period 0: a tracked query is followed without asking again, except where a test says so
NODE_PARAMS = ["-p", "coarse_period:=0.2", "-p", "qos_reliability:=reliable", "-p", "qos_depth:=30",
               "-p", "max_frame_age:=0.0", "-p", "track_reask_period:=0.0"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = NodeProcess(EMBEDDED_MODEL, tmp_path_factory.mktemp("earl-node") / "node.log", extra=NODE_PARAMS)
    yield proc
    proc.terminate()


def connected_client(node, **kwargs) -> Client:
    c = Client(**kwargs)
    ok = c.query_client.wait_for_service(timeout_sec=STARTUP_TIMEOUT)
    if not (ok and node.proc.poll() is None):
        c.close()
        raise AssertionError("node did not come up:\n" + node.log())
    c.wait_for_subscriber()
    return c


@pytest.fixture(scope="module")
def client(node):
    """Connected, with the node answering: whichever test runs first finds frames buffered."""
    c = connected_client(node)
    try:
        publish_until(c, frame(0), lambda: c.query("which hand?", publish=False).success, timeout=STARTUP_TIMEOUT,
                      what="a first answer")
        yield c
    finally:
        c.close()


def publish_until(client, img, pred, encoding="rgb8", timeout=DISCOVERY_TIMEOUT, tamper=None, what="node",
                  stamps=None):
    """Publish `img` (fresh stamps, appended to `stamps`) every 0.1 s until pred() holds; returns the stamps."""
    stamps = [] if stamps is None else stamps
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps.append(client.publish_frame(img, encoding=encoding, tamper=tamper))
        t_next = time.monotonic() + 0.1
        while time.monotonic() < t_next:
            if pred():
                return stamps
            time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def query_on(client, img, text, **kwargs):
    """Ask about `img` itself rather than the newest buffered frame, which another test may have left
    (a track started on another frame of the clip is lost on its first update on `img`)."""
    deadline = time.monotonic() + DISCOVERY_TIMEOUT
    while True:
        r = client.query(text, stamp_ns=client.publish_frame(img), **kwargs)
        if r.error_code != "STAMP_NOT_BUFFERED" or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_answer_fields_mask_size_and_stamp(client):
    stamps: list[int] = []

    def described():  # a description of one of our frames (others may still be in flight from other tests)
        return [m for m in client.snapshot("interaction") if stamp_ns_of(m.header) in stamps]

    publish_until(client, frame(0), described, what="an interaction message", stamps=stamps)
    published = set(stamps)
    inter = described()[0]  # its header is the analysed frame's, never now()
    assert inter.header.frame_id == "camera" and inter.descriptor_dim > 0 and inter.model_id

    client.clear("answer", "mask", "overlay")
    r = client.query("which hand is holding something?")
    assert r.success and r.error_code == "OK" and r.message == "", r.message
    assert stamp_ns_of(r.header) in published and r.header.frame_id == "camera"
    res = r.result
    assert stamp_ns_of(res.header) == stamp_ns_of(r.header)
    assert res.query == "which hand is holding something?"
    assert len(res.entities) == len(res.boxes) == len(res.scores)
    for b in res.boxes:
        assert b.x_offset + b.width <= W and b.y_offset + b.height <= H
    assert (r.mask.height, r.mask.width, r.mask.encoding) == (H, W, "mono8")
    labels = np.frombuffer(bytes(r.mask.data), np.uint8)
    assert labels.size == H * W and int(labels.max()) <= len(res.entities)
    timings = dict(zip(res.timing_names, res.timing_ms))
    for key in ("model", "ros_convert", "ros_queue", "total"):
        assert key in timings and timings[key] >= 0
    # the same result is published on answer / mask / overlay with the source header
    wait_until(lambda: client.snapshot("answer") and client.snapshot("mask") and client.snapshot("overlay"),
               DISCOVERY_TIMEOUT, what="answer, mask and overlay messages")
    for key in ("answer", "mask", "overlay"):
        assert stamp_ns_of(client.snapshot(key)[-1].header) == stamp_ns_of(r.header)
    ov = client.snapshot("overlay")[-1]
    assert (ov.height, ov.width, ov.encoding) == (H, W, "rgb8")


def test_earl_query_cli_prints_the_json_contract(client, tmp_path):
    client.publish_frame(frame(1))
    png = tmp_path / "mask.png"
    p = subprocess.run(tool("earl-query") + ["which hand is holding something?", "--save-mask", str(png),
                                             "--timeout", "60"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    for key in ("answer", "entities", "boxes", "scores", "no_target", "description", "timings_ms",
                "success", "message", "stamp", "error_code"):
        assert key in out
    assert out["success"] is True and out["error_code"] == "OK" and out["stamp"] > 0
    from PIL import Image

    assert Image.open(png).size == (W, H)


@pytest.mark.parametrize("text,code", [
    ("", "EMPTY_QUERY"),
    ("   \n\t ", "EMPTY_QUERY"),
    ("x" * (1 << 20), "QUERY_TOO_LONG"),
])
def test_bad_query_text_fails_then_next_query_succeeds(client, text, code):
    client.publish_frame(frame(2))
    r = client.query(text)
    assert (r.success, r.error_code) == (False, code) and r.message
    assert code in ALL_ERROR_CODES
    assert client.query("what is the right hand holding?").success


def test_stamp_outside_buffer_fails_then_next_query_succeeds(client):
    client.publish_frame(frame(3))
    r = client.query("which hand?", stamp_ns=1_000_000_000)  # 1970: never buffered
    assert (r.success, r.error_code) == (False, "STAMP_NOT_BUFFERED") and "buffer" in r.message
    future = time.time_ns() + 3600 * 1_000_000_000
    r = client.query("which hand?", stamp_ns=future)
    assert (r.success, r.error_code) == (False, "STAMP_NOT_BUFFERED")
    assert client.query("which hand?").success


def _bad_length(msg):
    msg.data = msg.data[:-7]


def _bad_step(msg):
    msg.step = msg.step + 4  # data length no longer equals height * step


@pytest.mark.parametrize("encoding,tamper,code", [
    ("16UC1", None, "UNSUPPORTED_ENCODING"),
    ("yuv422", None, "UNSUPPORTED_ENCODING"),
    ("rgb8", _bad_length, "INVALID_IMAGE"),
    ("bgr8", _bad_step, "INVALID_IMAGE"),
])
def test_bad_frames_are_rejected_then_valid_frames_succeed(client, encoding, tamper, code):
    bad = {}

    def node_reports_it():
        bad["r"] = client.query("which hand?", publish=False)
        return bad["r"].error_code == code

    # the latest frame is the bad one: a query about "now" must report it, not use an older frame
    publish_until(client, frame(4), node_reports_it, encoding=encoding, tamper=tamper,
                  what=f"{code} for a {encoding} frame")
    assert bad["r"].success is False and bad["r"].message
    good = {}

    def node_answers():
        good["r"] = client.query("which hand?")
        return good["r"].success

    stamps = publish_until(client, frame(5), node_answers, what="a successful query after a good frame")
    assert stamp_ns_of(good["r"].header) in stamps


def test_other_encodings_are_accepted(client):
    for enc in ("bgr8", "rgba8", "bgra8", "mono8"):
        img = frame(6)
        if enc in ("rgba8", "bgra8"):
            img = np.concatenate([img, np.full((H, W, 1), 255, np.uint8)], axis=2)
        elif enc == "mono8":
            img = img[..., 0].copy()
        r = {}

        def ok():
            r["r"] = client.query("which hand?", publish=False)
            return r["r"].success and stamp_ns_of(r["r"].header) in stamps

        stamps = []
        deadline = time.monotonic() + DISCOVERY_TIMEOUT
        while not (stamps and ok()):
            assert time.monotonic() < deadline, f"{enc}: {r['r'].error_code} {r['r'].message}"
            stamps.append(client.publish_frame(img, encoding=enc))
            time.sleep(0.05)
        assert (r["r"].mask.height, r["r"].mask.width) == (H, W)


def test_eight_concurrent_clients_all_get_answers(client):
    client.publish_frame(frame(7))
    wait_until(lambda: client.query("which hand?", publish=False).success, DISCOVERY_TIMEOUT, step=0.1,
               what="a successful query")
    procs = [subprocess.Popen(tool("earl-query") + [f"question {i}: which hand is holding something?",
                                                     "--timeout", "90", "--no-publish"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, out + err
        outs.append(json.loads(out))
    assert all(o["success"] and o["stamp"] > 0 for o in outs)
    assert sorted(o["mask_shape"] == [H, W] for o in outs) == [True] * 8


def test_mcap_bag_written_by_rosbags_drives_the_node(client, tmp_path):
    from earl_ros.ros.bags import write_image_bag

    bh, bw = 192, 256  # the embedded model writes no answer grammar for much smaller frames
    bag = write_image_bag(tmp_path / "clip", [frame(i, bh, bw) for i in range(12)], topic="/camera/image_raw",
                          rate=30.0, frame_id="head_cam")
    assert any(bag.glob("*.mcap"))
    client.clear("camera")
    p = subprocess.run(tool("earl-replay") + [str(bag), "--topic", "/camera/image_raw", "--rate", "15",
                                              "--wait-subscribers", "2", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    wait_until(lambda: len(client.snapshot("camera")) >= 12, DISCOVERY_TIMEOUT, what="12 replayed frames")
    seen = [s * 1_000_000_000 + n for s, n in client.snapshot("camera")[-12:]]
    assert seen == sorted(seen) and len(set(seen)) == 12  # fresh, strictly increasing stamps
    r = client.query("which hand is holding something?")
    assert r.success, r.message
    assert stamp_ns_of(r.header) == seen[-1] and r.header.frame_id == "head_cam"
    assert (r.mask.height, r.mask.width) == (bh, bw)
    # a buffered older frame, by stamp
    r = client.query("which hand?", stamp_ns=seen[-5])
    assert r.success and stamp_ns_of(r.header) == seen[-5], r.message


def diagnostics(client) -> dict:
    return client.diagnostics()


def test_diagnostics_count_rejected_frames_by_code(client):
    before = diagnostics(client)
    client.publish_frame(frame(0), encoding="yuv422")
    wait_until(lambda: int(diagnostics(client)["frames_rejected"]) > int(before["frames_rejected"]),
               DISCOVERY_TIMEOUT, what="the rejected frame in /diagnostics")
    publish_until(client, frame(1), lambda: int(diagnostics(client)["coarse_passes"]) >= 1, what="a coarse pass")
    kv = diagnostics(client)
    assert "UNSUPPORTED_ENCODING" in kv["frames_rejected_by_code"]
    assert int(kv["frames_accepted"]) > int(before["frames_accepted"])
    assert int(kv["frames_received"]) > int(kv["frames_rejected"])
    assert kv["coarse_worker_alive"] == "True" and kv["query_executor_alive"] == "True"
    for key in ("input_rate_hz", "frame_age_s", "coarse_lag_s", "query_latency_ms_p50", "intake_ms_p99"):
        assert key in kv


def parameter_setter(client):
    """set_(name, value) -> SetParametersResult of the module's node."""
    import threading

    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    cli = client.node.create_client(SetParameters, "/earl/earl/set_parameters")
    assert cli.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT)

    def set_(name, value):
        ev = threading.Event()
        fut = cli.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        fut.add_done_callback(lambda _f: ev.set())
        assert ev.wait(DISCOVERY_TIMEOUT)
        return fut.result().results[0]
    return set_


def test_parameters_validated_and_tunable(client):
    set_ = parameter_setter(client)
    assert not set_("stale_policy", "sometimes").successful  # not a choice
    assert not set_("buffer_size", 100000).successful  # out of range
    assert not set_("model_dir", "/elsewhere").successful  # read-only
    try:
        assert set_("max_query_bytes", 8).successful  # runtime-tunable
        client.publish_frame(frame(8))
        r = client.query("which hand is holding it?")
        assert (r.success, r.error_code) == (False, "QUERY_TOO_LONG")
        assert set_("max_query_bytes", 2048).successful
        assert set_("stale_policy", "refuse").successful and set_("max_description_age", 0.0).successful
        assert client.query("which hand?").success  # 0 = never stale
    finally:  # the other tests see the node's defaults
        for name, value in (("max_query_bytes", 2048), ("stale_policy", "describe"), ("max_description_age", 2.0)):
            set_(name, value)


def test_sigterm_exits_cleanly_within_seconds(tmp_path):
    import signal

    from earl_interfaces.srv import Query

    node = NodeProcess(EMBEDDED_MODEL, tmp_path / "node.log", extra=NODE_PARAMS, namespace="earl_term",
                       camera_topic="/earl_term/camera")
    try:
        client = connected_client(node, namespace="/earl_term", camera_topic="/earl_term/camera")
    except AssertionError:
        node.terminate()
        raise
    try:
        _stop_while_busy(node, client, signal.SIGTERM, Query)
    finally:
        client.close()
        node.terminate()


def _stop_while_busy(node, client, sig, Query):
    publish_until(client, frame(9), lambda: client.query("which hand?", publish=False).success,
                  timeout=STARTUP_TIMEOUT, what="a first answer")
    # stop while the coarse worker runs and a query (with result publishing) is in flight
    client.query_client.call_async(Query.Request(query="which hand is holding something?"))
    time.sleep(0.05)  # not synchronisation: only makes the in-flight case likely
    segments = _shared_memory_segments(node.proc.pid)
    assert segments, "the node maps no Fast DDS shared-memory segment: the profile was not used"
    t = time.monotonic()
    node.proc.send_signal(sig)
    rc = node.proc.wait(timeout=20)
    elapsed = time.monotonic() - t
    log = node.log()
    assert rc == 0, log
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert "Traceback" not in log and "terminate called" not in log, log
    # a leaked segment is tens of MB of RAM (tmpfs) per restart on the robot
    assert [p for p in segments if os.path.exists(p)] == [], "shared-memory segments left behind"


def _shared_memory_segments(pid):
    """The Fast DDS data segments owned by `earl-launch` and the node it runs.

    An owner holds a lock on the segment's `_el` file for as long as it lives (how `fastdds shm
    clean` tells zombies apart); segments of other participants that the node maps do not count,
    nor do the small port queues, which Fast DDS shares between processes by design.
    """
    pids = {str(p) for p in _with_descendants(pid)}
    with open("/proc/locks") as f:
        inodes = {int(fields[5].split(":")[2]) for fields in map(str.split, f) if fields[4] in pids}
    return sorted(e.path[:-len("_el")] for e in os.scandir("/dev/shm")
                  if e.name.startswith("fastdds_") and not e.name.startswith("fastdds_port")
                  and e.name.endswith("_el") and e.inode() in inodes)


def _with_descendants(pid):
    pids = [pid]
    for p in pids:
        with open(f"/proc/{p}/task/{p}/children") as f:
            pids += [int(c) for c in f.read().split()]
    return pids


def test_a_tracked_query_is_followed_on_later_frames_until_stopped(client):
    """The named entities stay segmented on new frames (`tracks`, `tracks/mask`, each frame's own header)
    without another query; track/stop ends them."""
    r = query_on(client, frame(0), "left hand", track=True, publish=False)  # a demo-scene question the model grounds
    assert r.success and list(r.track_ids) and len(r.track_ids) == len(r.result.entities), r
    ids = set(r.track_ids)
    client.clear("tracks", "tracks_mask")
    later: list[int] = []

    def tracked():
        return [m for m in client.snapshot("tracks") if stamp_ns_of(m.header) in later and m.tracks]
    publish_until(client, frame(0), lambda: len(tracked()) >= 2, stamps=later, what="two tracks messages")
    for m in tracked():
        assert {t.id for t in m.tracks} <= ids and m.header.frame_id == "camera"
        for t in m.tracks:
            assert t.state in ("tracking", "lost") and t.entity in r.result.entities
    wait_until(lambda: any(stamp_ns_of(m.header) in later for m in client.snapshot("tracks_mask")), DISCOVERY_TIMEOUT,
               what="a tracks/mask message")
    mask = next(m for m in client.snapshot("tracks_mask") if stamp_ns_of(m.header) in later)
    labels = np.frombuffer(bytes(mask.data), "<u2")
    assert (mask.height, mask.width, mask.encoding) == (H, W, "mono16") and set(np.unique(labels)) <= ids | {0}
    assert set(client.stop_tracks().stopped) <= ids
    assert list(client.stop_tracks().stopped) == []  # all ended
    time.sleep(0.5)  # an update that was under way when the tracks stopped may still arrive
    client.clear("tracks")
    for i in range(10):
        client.publish_frame(frame(0))
        time.sleep(0.1)
    assert not client.snapshot("tracks")  # nothing left to follow


def test_a_tracked_question_is_asked_again_while_its_tracks_run(client):
    """track_reask_period: the node answers a tracked question again in the background and puts its
    tracks right; updates go on meanwhile, and stopped tracks are not asked about any more."""
    set_ = parameter_setter(client)
    try:
        assert set_("track_reask_period", 0.3).successful
        before = int(diagnostics(client)["track_reasks"])
        r = query_on(client, frame(0), "left hand", track=True, publish=False)
        assert r.success and list(r.track_ids), r
        publish_until(client, frame(0), lambda: int(diagnostics(client)["track_reasks"]) >= before + 2,
                      what="two answers asked again")
        kv = diagnostics(client)
        assert int(kv["track_reask_errors"]) == 0 and int(kv["tracks_running"]) >= 1
        client.clear("tracks")
        publish_until(client, frame(0), lambda: any(m.tracks for m in client.snapshot("tracks")),
                      what="tracks messages after the re-asks")
        client.stop_tracks()
        time.sleep(1.0)  # a re-ask under way when the tracks stopped may still finish
        asked = int(diagnostics(client)["track_reasks"])
        for _ in range(10):
            client.publish_frame(frame(0))
            time.sleep(0.1)
        assert int(diagnostics(client)["track_reasks"]) == asked  # still 0.3 s: nothing is asked any more
    finally:
        client.stop_tracks()
        assert set_("track_reask_period", 0.0).successful
