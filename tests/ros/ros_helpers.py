"""Helpers for the ROS tests: a client context spinning in a thread, the node as a real process.

DDS confinement (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, per-run ROS_DOMAIN_ID) comes from
tests/conftest.py, which runs first; every subprocess inherits it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

try:  # the process tests need the generated messages
    import rclpy  # noqa: F401
    from earl_interfaces.srv import Query  # noqa: F401

    IFACE_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the environment
    IFACE_ERROR = f"earl_interfaces is not built ({e}); run `make setup` (scripts/setup.sh)"


def require_interfaces():
    """Call at the top of a test module: skips it with a clear reason when messages are missing."""
    if IFACE_ERROR:
        pytest.skip(IFACE_ERROR, allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))

EMBEDDED_MODEL = REPO / "models" / "earl-tiny-synth"  # trained: it answers in the answer grammar
DISCOVERY_TIMEOUT = 30.0  # discovery usually takes 0.3 s, sometimes 3 s; never a fixed sleep
STARTUP_TIMEOUT = 120.0  # node start = python + torch + tiny model load on a busy 2-core machine


_DEMO_FRAMES: list = []


def demo_frames() -> list:
    """The demo clip's RGB frames (192x256), the world the embedded model was trained on."""
    if not _DEMO_FRAMES:
        from earl_ros.ros.bags import read_image_bag

        _DEMO_FRAMES.extend(f for f, _s, _id in read_image_bag(REPO / "data" / "demo" / "clip"))
    return _DEMO_FRAMES


def wait_until(pred, timeout: float, step: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def tool(name: str) -> list[str]:
    """Console script if installed next to this interpreter, else `python -m` of its module."""
    exe = BIN / name
    if exe.exists():
        return [str(exe)]
    mod = {"earl-launch": "earl_ros.cli.launch", "earl-query": "earl_ros.cli.query",
           "earl-replay": "earl_ros.cli.replay"}[name]
    return [sys.executable, "-m", mod]


class NodeProcess:
    """`earl-launch` as a subprocess, output captured to a log file."""

    def __init__(self, model_dir, log_path: Path, extra=(), namespace="earl", camera_topic="/camera/image_raw"):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        cmd = tool("earl-launch") + ["--model", str(model_dir), "--namespace", namespace,
                                     "--camera-topic", camera_topic]
        if extra:
            cmd += ["--", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ))

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


class Client:
    """A client node in the test process, spun by a background SingleThreadedExecutor."""

    def __init__(self, namespace="/earl", camera_topic="/camera/image_raw"):
        import rclpy
        from rclpy.context import Context
        from earl_ros.ros.spin import spin_in_background
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from diagnostic_msgs.msg import DiagnosticArray
        from earl_interfaces.msg import InteractionDescription, QueryResult, Tracks
        from earl_interfaces.srv import Query, StopTracks
        from sensor_msgs.msg import Image

        self.namespace = namespace.rstrip("/")
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = Node("earl_test_client", context=self.ctx, use_global_arguments=False)
        self.lock = threading.Lock()
        self.got = {k: [] for k in ("camera", "interaction", "answer", "mask", "overlay", "diagnostics", "tracks",
                                    "tracks_mask")}
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

        def rec(key, keep_msg=True):
            def cb(msg):
                with self.lock:
                    self.got[key].append(msg if keep_msg else (msg.header.stamp.sec, msg.header.stamp.nanosec))
            return cb

        self.pub = self.node.create_publisher(Image, camera_topic, rel)
        # reliable + deep: under CPU load a best-effort reader would lose frames the tests count
        self.node.create_subscription(Image, camera_topic, rec("camera", False),
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(InteractionDescription, f"{namespace}/interaction", rec("interaction"), rel)
        self.node.create_subscription(QueryResult, f"{namespace}/answer", rec("answer"), rel)
        self.node.create_subscription(Image, f"{namespace}/mask", rec("mask"), rel)
        self.node.create_subscription(Image, f"{namespace}/overlay", rec("overlay"), rel)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", rec("diagnostics"), 10)
        self.node.create_subscription(Tracks, f"{namespace}/tracks", rec("tracks"), rel)
        self.node.create_subscription(Image, f"{namespace}/tracks/mask", rec("tracks_mask"), rel)
        self.query_client = self.node.create_client(Query, f"{namespace}/query")
        self.stop_tracks_client = self.node.create_client(StopTracks, f"{namespace}/track/stop")
        self.executor, self.thread = spin_in_background(self.node, self.ctx)

    def snapshot(self, key):
        with self.lock:
            return list(self.got[key])

    def diagnostics(self) -> dict:
        """The latest /diagnostics values of this client's node.

        /diagnostics is one global topic: another node alive in the same test module (a second
        fixture) publishes there too, so statuses are matched by the node's namespace.
        """
        def mine():
            return [st for arr in self.snapshot("diagnostics") for st in arr.status
                    if st.name.startswith(self.namespace + "/")]

        self.clear("diagnostics")
        wait_until(mine, DISCOVERY_TIMEOUT, what=f"/diagnostics from {self.namespace}")
        return {v.key: v.value for v in mine()[-1].values}

    def clear(self, *keys):
        with self.lock:
            for k in keys or self.got:
                self.got[k].clear()

    def wait_for_subscriber(self, n=1, timeout=DISCOVERY_TIMEOUT):
        wait_until(lambda: self.pub.get_subscription_count() >= n, timeout, what="the node's image subscription")

    def publish_frame(self, img, encoding="rgb8", stamp_ns=None, frame_id="camera", tamper=None):
        from earl_ros.ros.conversions import array_to_image, ns_to_stamp

        msg = array_to_image(img, encoding if encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8") else "rgb8")
        if encoding not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"):
            msg.encoding = encoding
        stamp_ns = stamp_ns or time.time_ns()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id = frame_id
        if tamper:
            tamper(msg)
        self.pub.publish(msg)
        return stamp_ns

    def query(self, text, stamp_ns=0, timeout=60.0, return_mask=True, publish=True, track=False):
        from earl_interfaces.srv import Query
        from earl_ros.ros.conversions import ns_to_stamp

        assert self.query_client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT), "query service not found"
        req = Query.Request(query=text, return_mask=return_mask, publish=publish, track=track)
        req.stamp = ns_to_stamp(stamp_ns)
        return self._call(self.query_client, req, timeout, f"{text[:40]!r}")

    def stop_tracks(self, ids=(), timeout=30.0):
        from earl_interfaces.srv import StopTracks

        assert self.stop_tracks_client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT), "track/stop not found"
        return self._call(self.stop_tracks_client, StopTracks.Request(ids=list(ids)), timeout, "track/stop")

    @staticmethod
    def _call(client, req, timeout, what):
        done = threading.Event()
        fut = client.call_async(req)
        fut.add_done_callback(lambda _f: done.set())
        assert done.wait(timeout), f"no response to {what} within {timeout} s"
        return fut.result()

    def close(self):
        import rclpy

        rclpy.try_shutdown(context=self.ctx)  # spin() returns; then tear down in order
        self.thread.join(5)
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
