"""Streamed answers (issue 26, item 2): how soon the `ask` action's first token arrives, against the
full latency of the same question through the `query` service.

The node (earl-launch, embedded model, coarse worker on, its defaults) runs as a process; this
process publishes the demo clip at 640x480 and 30 Hz as the camera and alternates a `query` call and
an `ask` goal, one every --period seconds, each waiting for the previous. Reported over --queries of
each: service round trip p50 / p95, the action's first token (goal sent -> first feedback with a
token) and result p50 / p95, and first token / service round trip. Nothing is asserted.

    python bench/ask_stream.py               # 20 of each, about 2 minutes on 2 cores
    python bench/ask_stream.py --queries 5   # a quick look

Runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID (unless set).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NS = "/earl_ask_bench"
TOPIC = "/ask_bench/camera/image_raw"
QUESTIONS = ("what is my left hand holding?", "where is my right hand?", "which hands and objects are interacting?")


def bench_env() -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
    os.environ["AMENT_PREFIX_PATH"] = os.environ.get("AMENT_PREFIX_PATH") or sys.prefix


def start_node(model: Path, log: Path, extra: list[str] | None = None):
    import subprocess

    cmd = [sys.executable, "-m", "earl_ros.cli.launch", "--model", str(model), "--namespace", NS,
           "--camera-topic", TOPIC, "--", "-p", "qos_reliability:=reliable", *(extra or [])]
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO)


class Driver:
    """Camera publisher, query client and action client on one node spun in the background."""

    def __init__(self):
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from earl_interfaces.action import Ask
        from earl_interfaces.srv import Query
        from earl_ros.ros.spin import spin_in_background

        rclpy.init(args=["ask-bench"])
        self.node = Node("earl_ask_bench", use_global_arguments=False)
        self.pub = self.node.create_publisher(Image, TOPIC, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.query = self.node.create_client(Query, f"{NS}/query")
        self.ask = ActionClient(self.node, Ask, f"{NS}/ask")
        self.executor, self.thread = spin_in_background(self.node)
        self.stop = threading.Event()

    def camera(self, frames, hz: float = 30.0, sent: list | None = None) -> None:
        """Publish `frames` in a loop at `hz` until stop; sent[0] counts the frames published."""
        from earl_ros.ros.conversions import array_to_image, ns_to_stamp

        msgs = [array_to_image(f, "rgb8") for f in frames]
        k, t_next = 0, time.monotonic()
        while not self.stop.is_set():
            m = msgs[k % len(msgs)]
            m.header.stamp = ns_to_stamp(time.time_ns())
            self.pub.publish(m)
            k += 1
            if sent is not None:
                sent[0] = k
            t_next += 1.0 / hz
            self.stop.wait(max(0.0, t_next - time.monotonic()))

    def warm_up(self, frames, log: Path, sent: list | None = None) -> None:
        """Wait for the node's service and action, start the camera (30 Hz) and wait for a first
        answer (a frame and a description exist); RuntimeError naming the node's log if it never comes."""
        if not self.query.wait_for_service(timeout_sec=120) or not self.ask.wait_for_server(timeout_sec=30):
            raise RuntimeError(f"the node did not come up; its log: {log}")
        threading.Thread(target=self.camera, args=(frames, 30.0, sent), daemon=True).start()
        deadline = time.monotonic() + 60
        while not self.call_service("which hand?")[1].success:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer within 60 s; the node's log: {log}")
            time.sleep(0.5)

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown()
        self.thread.join(5)
        self.executor.shutdown(timeout_sec=2)

    def call_service(self, text: str, timeout: float = 60.0, track: bool = False):
        """(round trip ms, the query response) of one `query` call."""
        from earl_ros.ros.client import make_request

        done, t0 = threading.Event(), time.perf_counter()
        fut = self.query.call_async(make_request(text, publish=False, track=track))
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            raise RuntimeError(f"no service response within {timeout} s")
        return (time.perf_counter() - t0) * 1e3, fut.result()

    def send_goal(self, text: str, timeout: float = 60.0) -> tuple[float, float, bool]:
        """(first token ms, result ms, success) of one goal."""
        from earl_ros.ros.client import make_goal

        first, done, out = [], threading.Event(), {}
        t0 = time.perf_counter()

        def on_feedback(msg):
            if msg.feedback.tokens and not first:
                first.append((time.perf_counter() - t0) * 1e3)

        def on_result(fut):
            out["ms"], out["ok"] = (time.perf_counter() - t0) * 1e3, fut.result().result.success
            done.set()

        sent = self.ask.send_goal_async(make_goal(text, publish=False), feedback_callback=on_feedback)
        sent.add_done_callback(lambda f: f.result().get_result_async().add_done_callback(on_result))
        if not done.wait(timeout):
            raise RuntimeError(f"no action result within {timeout} s")
        return (first[0] if first else float("nan")), out["ms"], out["ok"]


def pct(v, q):
    import numpy as np

    return float(np.percentile(np.asarray(v, np.float64), q)) if len(v) else float("nan")


def measure(drv: Driver, n: int, period: float) -> dict:
    svc, first, result, failed = [], [], [], 0
    t0 = time.monotonic()
    for i in range(n):
        text = QUESTIONS[i % len(QUESTIONS)]
        time.sleep(max(0.0, t0 + 2 * i * period - time.monotonic()))
        ms, resp = drv.call_service(text)
        svc.append(ms)
        failed += not resp.success
        time.sleep(max(0.0, t0 + (2 * i + 1) * period - time.monotonic()))
        f, r, ok = drv.send_goal(text)
        first.append(f)
        result.append(r)
        failed += not ok
    return {"n": n, "svc": svc, "first": first, "result": result, "failed": failed}


def report(r: dict, a) -> str:
    ratio = pct(r["first"], 50) / pct(r["svc"], 50)
    rows = [("query service round trip", r["svc"]), ("ask: first token", r["first"]), ("ask: result", r["result"])]
    lines = ["# Streamed answers: first token of the `ask` action vs the `query` service", "",
             f"Generated by `python bench/ask_stream.py --queries {a.queries} --period {a.period}` on "
             f"{os.cpu_count()} CPUs, model {Path(a.model).name}; the camera is the demo clip at 640x480, 30 Hz; "
             f"coarse worker on (node defaults). {r['n']} service calls and {r['n']} goals, alternating; "
             f"{r['failed']} did not succeed.", "",
             "| measured | p50 ms | p95 ms |", "|---|---|---|"]
    lines += [f"| {name} | {pct(v, 50):.0f} | {pct(v, 95):.0f} |" for name, v in rows]
    lines += ["", f"First token / service round trip (p50): **{ratio:.2f}**", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"))
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--period", type=float, default=2.0, help="seconds between requests")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ask_stream.md"))
    a = ap.parse_args(argv)
    bench_env()
    import tempfile

    from ros_pipeline import demo_frames, stop_node

    log = Path(tempfile.mkdtemp(prefix="ask-bench-")) / "node.log"
    node = start_node(Path(a.model), log)
    drv = Driver()
    try:
        drv.warm_up(demo_frames(640, 480, 12), log)
        res = measure(drv, a.queries, a.period)
    except RuntimeError as e:
        print(f"ask_stream: {e}", file=sys.stderr)
        return 1
    finally:
        drv.stop.set()
        drv.close()
        stop_node(node)
    text = report(res, a)
    Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
