"""ROS pipeline benchmark: camera intake, queries and memory of the `earl` node (issue 3, item 6).

For each resolution (640x480, 1280x720) and transport (shared-memory profile / Fast DDS defaults)
it starts the node with `earl-launch` (coarse worker running back to back), publishes demo-clip
scenes resized to that resolution as camera frames at 30 Hz (best effort, like a camera driver) from a separate driver process, asks a
query every second, and reports:
  frames published vs received by the node, intake callback p50/p99 (validation + buffering, in
  the node), stamp -> intake latency p50/p99 (serialization + transport + deserialization), frame
  age at query time, query latency p50/p95 split into ROS overhead (round trip minus model compute:
  serialization, conversion, queueing, building and publishing results) and model compute.
Then one memory run: node RSS before and after 10,000 frames (640x480, shared memory, 100 Hz).
Then the query queue, on the embedded model with the demo clip replayed at 15 Hz as the camera:
  burst: 8 client processes send 5 requests each at once (40 outstanding): answered / OK / BUSY / lost;
  fairness: 8 client processes each keep one request outstanding for --fair-duration seconds:
  round trip p50 / p95 / max and the longest queue wait against 8 x the median service time
  (the node's time per request once a worker takes it).

    python bench/ros_pipeline.py            # about 6 minutes on 2 cores; writes bench/results/ros_pipeline.md
    python bench/ros_pipeline.py --quick    # about 1.5 minutes (8 s runs, 1,500-frame memory run)

All processes run with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID (unless
set). The model is the embedded one (or pass --model DIR). Numbers are measured
on the machine it runs on; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHM_PROFILE = REPO / "config" / "fastdds_shm.xml"
NS = "/earl_bench"
TOPIC = "/bench/camera/image_raw"


def pct(v, q):
    return float(np.percentile(np.asarray(v, np.float64), q)) if len(v) else float("nan")


def demo_frames(w: int, h: int, n: int) -> list:
    """n frames of the demo clip resized to w x h: the scenes the embedded model answers about."""
    from PIL import Image

    from earl_ros.ros.bags import read_image_bag

    frames = [f for f, _s, _id in read_image_bag(REPO / "data" / "demo" / "clip")]
    step = max(1, len(frames) // n)
    return [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in frames[::step][:n]]


# =============================================================================== driver process
def driver(args) -> int:
    """Runs inside a child process whose environment selects the transport."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from earl_interfaces.srv import Query
    from earl_ros.ros.conversions import array_to_image, ns_to_stamp

    rclpy.init(args=["bench-driver"])
    node = Node("earl_bench_driver", use_global_arguments=False)
    pub = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    diags = []
    lock = threading.Lock()

    def on_diag(msg):
        for st in msg.status:
            if st.name.startswith(NS):
                with lock:
                    diags.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    qc = node.create_client(Query, f"{NS}/query")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    def spin():
        try:
            ex.spin()
        except Exception:  # noqa: BLE001 - ExternalShutdownException at the end
            pass

    spin_thread = threading.Thread(target=spin, daemon=True)
    spin_thread.start()

    def last_diag(after_t=0.0, timeout=10.0):
        deadline = time.monotonic() + timeout
        n0 = len(diags)
        while time.monotonic() < deadline:
            with lock:
                if len(diags) > n0 and time.monotonic() >= after_t:
                    return diags[-1]
            time.sleep(0.05)
        with lock:
            return diags[-1] if diags else {}

    def wait(pred, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise SystemExit(f"bench driver: timed out waiting for {what}")

    wait(lambda: qc.service_is_ready(), 120, "the query service")
    wait(lambda: pub.get_subscription_count() >= 1, 30, "the node's image subscription")
    wait(lambda: diags, 30, "/diagnostics")

    w, h = args.width, args.height
    base = demo_frames(w, h, 4)
    msgs = [array_to_image(b, "rgb8") for b in base]
    for m in msgs:
        m.header.frame_id = "bench_cam"

    def publish_frames(n, rate, stop_evt):
        period = 1.0 / rate
        t_next = time.monotonic()
        sent = 0
        while sent < n and not stop_evt.is_set():
            now = time.monotonic()
            if now < t_next:
                time.sleep(t_next - now)
            t_next += period
            m = msgs[sent % len(msgs)]
            m.header.stamp = ns_to_stamp(time.time_ns())
            pub.publish(m)
            sent += 1
        return sent

    def query_once(text):
        ev = threading.Event()
        t0 = time.perf_counter()
        fut = qc.call_async(Query.Request(query=text))
        fut.add_done_callback(lambda _f: ev.set())
        if not ev.wait(60):
            return None
        rtt = (time.perf_counter() - t0) * 1e3
        r = fut.result()
        return rtt, r

    out = {"mode": args.mode, "width": w, "height": h}
    if args.mode == "intake":
        # warm-up: a few frames so the first query's one-time costs are not measured
        stop = threading.Event()
        publish_frames(int(args.rate), args.rate, stop)
        query_once("which hand is holding something?")
        d0 = last_diag()
        n_frames = int(args.duration * args.rate)
        res = {}
        th = threading.Thread(target=lambda: res.setdefault("sent", publish_frames(n_frames, args.rate, stop)))
        th.start()
        unparseable = 0
        rtts, model, overhead, ages, parts = [], [], [], [], {"ros_queue": [], "ros_convert": [], "ros_build": [],
                                                               "transport": []}
        while th.is_alive():
            t_q = time.monotonic()
            q = query_once("which hand is holding something?")
            # UNPARSEABLE_ANSWER ran the full model too; counted apart in the table
            if q is not None and q[1].error_code in ("OK", "UNPARSEABLE_ANSWER"):
                unparseable += q[1].error_code != "OK"
                rtt, r = q
                tm = dict(zip(r.result.timing_names, r.result.timing_ms))
                m = tm.get("model", 0.0) + tm.get("describe", 0.0)
                rtts.append(rtt)
                model.append(m)
                overhead.append(rtt - m)
                ages.append(tm.get("frame_age", float("nan")))
                for k in ("ros_queue", "ros_convert", "ros_build"):
                    parts[k].append(tm.get(k, 0.0))
                parts["transport"].append(rtt - tm.get("total", rtt))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t_q)))
        th.join()
        d1 = last_diag(after_t=time.monotonic() + 1.5)
        received = int(d1.get("frames_received", 0)) - int(d0.get("frames_received", 0))
        out.update(
            published=res["sent"], received=received,
            intake_p50=float(d1.get("intake_ms_p50", "nan")), intake_p99=float(d1.get("intake_ms_p99", "nan")),
            stamp_to_intake_p50=float(d1.get("stamp_to_intake_ms_p50", "nan")),
            stamp_to_intake_p99=float(d1.get("stamp_to_intake_ms_p99", "nan")),
            coarse_passes=int(d1.get("coarse_passes", 0)) - int(d0.get("coarse_passes", 0)),
            results_publish_p50=float(d1.get("results_publish_ms_p50", "nan")),
            coarse_latency_p50=float(d1.get("coarse_latency_ms_p50", "nan")),
            queries=len(rtts), unparseable=unparseable, frame_age_p50=pct(ages, 50), frame_age_p95=pct(ages, 95),
            rtt_p50=pct(rtts, 50), rtt_p95=pct(rtts, 95), model_p50=pct(model, 50), model_p95=pct(model, 95),
            overhead_p50=pct(overhead, 50), overhead_p95=pct(overhead, 95),
            parts_p50={k: pct(v, 50) for k, v in parts.items()},
        )
    else:  # memory: RSS is read by the parent; the driver only publishes and signals progress
        stop = threading.Event()
        publish_frames(200, args.rate, stop)
        query_once("which hand is holding something?")
        print("WARM", flush=True)
        sys.stdin.readline()  # parent measured RSS "before"
        d0 = last_diag()
        sent = publish_frames(args.frames, args.rate, stop)
        query_once("which hand is holding something?")
        d1 = last_diag(after_t=time.monotonic() + 1.5)
        out.update(published=sent, received=int(d1.get("frames_received", 0)) - int(d0.get("frames_received", 0)))
    print("RESULT " + json.dumps(out), flush=True)
    rclpy.try_shutdown()  # spin() in the thread returns; then tear down in order
    spin_thread.join(5)
    ex.shutdown(timeout_sec=1)
    node.destroy_node()
    return 0


# =============================================================================== orchestration
def bench_env(shm: bool) -> dict:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    env["AMENT_PREFIX_PATH"] = env.get("AMENT_PREFIX_PATH") or sys.prefix
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if shm:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    else:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


def start_node(model: Path, shm: bool, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "earl_ros.cli.launch", "--model", str(model), "--namespace", NS,
           "--camera-topic", TOPIC, "--", "-p", "coarse_period:=0.0", "-p", "diagnostics_period:=0.5"]
    if not shm:
        cmd.insert(3, "--no-shm")
    return subprocess.Popen(cmd, env=bench_env(shm), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            cwd=REPO)


def node_pid(launcher: subprocess.Popen, timeout=30.0) -> int:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(launcher.pid).children()
        if kids:
            return kids[0].pid
        time.sleep(0.1)
    raise SystemExit("bench: the node process did not start")


def stop_node(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_driver(mode, shm, w, h, rate, duration=0.0, frames=0, on_warm=None):
    cmd = [sys.executable, __file__, "--driver", "--mode", mode, "--width", str(w), "--height", str(h),
           "--rate", str(rate), "--duration", str(duration), "--frames", str(frames)]
    p = subprocess.Popen(cmd, env=bench_env(shm), stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
                         cwd=REPO)
    result = None
    for line in p.stdout:
        if line.startswith("WARM") and on_warm is not None:
            on_warm()
            p.stdin.write("go\n")
            p.stdin.flush()
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    p.wait(60)
    if result is None:
        raise SystemExit(f"bench: driver failed ({mode}, {w}x{h}, shm={shm})")
    return result


def run_clients(n_clients: int, requests: int, mode: str, duration: float = 0.0, lead: float = 8.0) -> list:
    """n_clients earl_ros.ros.query_load processes, started together; all their request records."""
    start_at = time.time() + lead  # every client has found the service by then
    cmd = [sys.executable, "-m", "earl_ros.ros.query_load", "--namespace", NS.strip("/"), "--requests",
           str(requests), "--mode", mode, "--timeout", "300", "--start-at", str(start_at)]
    if duration:
        cmd += ["--duration", str(duration)]
    procs = [subprocess.Popen(cmd, env=bench_env(True), stdout=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(n_clients)]
    records = []
    for c, p in enumerate(procs):
        out, _ = p.communicate(timeout=duration + 600)
        for r in json.loads(out)["requests"]:
            records.append(dict(r, client=c))
    return records


def wait_until_answering(timeout: float = 180.0) -> None:
    """One request at a time until one is answered OK: a burst sent while the node is still
    activating (INACTIVE) or before its first camera frame (NO_FRAME) measures start-up, not the queue."""
    deadline, codes = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        codes.append(run_clients(1, 1, "closed", lead=0.0)[0]["code"])
        if codes[-1] == "OK":
            print(f"[bench] queue: the node answers ({len(codes)} probe(s): {', '.join(codes)})", flush=True)
            return
        time.sleep(1.0)
    raise SystemExit(f"bench: the node did not answer OK within {timeout:.0f} s (probes: {', '.join(codes)})")


def run_queue(model: Path, tmp: Path, fair_duration: float) -> dict:
    """Burst and fairness runs against one node (SHM profile, the demo clip as a 15 Hz camera)."""
    node = start_node(model, True, tmp / "node_queue.log")
    camera = subprocess.Popen([sys.executable, "-m", "earl_ros.cli.replay", str(REPO / "data" / "demo" / "clip"),
                               "--topic", TOPIC, "--rate", "15", "--loop", "--quiet"], env=bench_env(True), cwd=REPO)
    try:
        wait_until_answering()
        print("[bench] queue: burst, 8 clients x 5 requests at once ...", flush=True)
        burst = run_clients(8, 5, "burst")
        print(f"[bench] queue: fairness, 8 clients one outstanding each, {fair_duration:.0f} s ...", flush=True)
        fair = run_clients(8, 100000, "closed", duration=fair_duration)
    finally:
        stop_node(camera)
        stop_node(node)
    return {"burst": burst, "fair": fair}


def _others(codes: list) -> str:
    from collections import Counter

    other = Counter(c for c in codes if c not in ("OK", "BUSY", "LOST"))
    return ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "0"


def queue_lines(q: dict, model: str) -> list:
    burst, fair = q["burst"], q["fair"]
    codes = [r["code"] for r in burst]
    rt = [r["round_trip_ms"] for r in burst if r["round_trip_ms"] is not None]
    lines = [
        "",
        f"## Query queue (model: {model}; camera: the demo clip replayed at 15 Hz; SHM profile; "
        "default max_pending_queries 16, query_workers 1)",
        "",
        "| run | requests | answered | OK | BUSY | other codes (the model's) | lost | round trip p50 / p95 / max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        f"| burst: 8 clients x 5 at once | {len(codes)} | {sum(c != 'LOST' for c in codes)} | {codes.count('OK')} "
        f"| {codes.count('BUSY')} | {_others(codes)} | {codes.count('LOST')} "
        f"| {fmt(pct(rt, 50), 0)} / {fmt(pct(rt, 95), 0)} / {fmt(max(rt) if rt else None, 0)} |",
    ]
    fcodes = [r["code"] for r in fair]
    frt = [r["round_trip_ms"] for r in fair if r["round_trip_ms"] is not None]
    service = [r["service_ms"] for r in fair if r.get("service_ms") is not None]
    waits = [r["queue_ms"] for r in fair if r.get("queue_ms") is not None]
    med = pct(service, 50)
    lines.append(
        f"| fairness: 8 clients, one outstanding each | {len(fcodes)} | {sum(c != 'LOST' for c in fcodes)} "
        f"| {fcodes.count('OK')} | {fcodes.count('BUSY')} | {_others(fcodes)} "
        f"| {fcodes.count('LOST')} | {fmt(pct(frt, 50), 0)} / {fmt(pct(frt, 95), 0)} / {fmt(max(frt) if frt else None, 0)} |")
    bound = 8 * med
    lines += [
        "",
        f"Fairness: median service time (node time per request once a worker takes it) {fmt(med, 0)} ms, so "
        f"8 x service = {fmt(bound, 0)} ms. Longest queue wait {fmt(max(waits) if waits else None, 0)} ms "
        f"({fmt((max(waits) / bound) if waits and bound else None, 2)} x 8 x service); longest round trip "
        f"{fmt(max(frt) if frt else None, 0)} ms ({fmt((max(frt) / bound) if frt and bound else None, 2)} "
        "x 8 x service). Requests are served in arrival order, so a request waits for at most the 7 "
        "requested before it plus the one running.",
    ]
    return lines


def fmt(v, nd=1):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 s runs and a 1,500-frame memory run")
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"),
                    help="model directory (default: the embedded model, which answers the demo scenes)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per intake run (default 30, quick 8)")
    ap.add_argument("--mem-frames", type=int, default=None, help="frames of the memory run (default 10000)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ros_pipeline.md"))
    ap.add_argument("--queue-model", default=str(REPO / "models" / "earl-tiny-synth"),
                    help="model of the queue runs (default: the embedded model, which answers demo frames)")
    ap.add_argument("--fair-duration", type=float, default=None, help="seconds of the fairness run (default 60, quick 20)")
    ap.add_argument("--only-queue", action="store_true", help="run only the query-queue section")
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="intake", help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=30.0, help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.driver:
        if args.duration is None:
            args.duration = 30.0
        return driver(args)

    import psutil

    duration = args.duration or (8.0 if args.quick else 30.0)
    fair_duration = args.fair_duration or (20.0 if args.quick else 60.0)
    mem_frames = args.mem_frames or (1500 if args.quick else 10000)
    os.environ.update({k: v for k, v in bench_env(True).items() if k == "ROS_DOMAIN_ID"})
    tmp = Path(tempfile.mkdtemp(prefix="earl-bench-"))
    model = Path(args.model)
    t_start = time.monotonic()
    if args.only_queue:
        q = run_queue(Path(args.queue_model), tmp, fair_duration)
        lines = ["# ROS pipeline benchmark, query queue only (`bench/ros_pipeline.py --only-queue`)",
                 *queue_lines(q, Path(args.queue_model).name)]
        return write_report(lines, Path(args.out).with_name("ros_pipeline_queue.md"))
    rows = []
    for (w, h) in ((640, 480), (1280, 720)):
        for shm in (True, False):
            print(f"[bench] {w}x{h} 30 Hz, {'shared-memory profile' if shm else 'Fast DDS defaults'}, "
                  f"{duration:.0f} s ...", flush=True)
            node = start_node(model, shm, tmp / f"node_{w}_{shm}.log")
            try:
                r = run_driver("intake", shm, w, h, 30.0, duration=duration)
            finally:
                stop_node(node)
            r["shm"] = shm
            rows.append(r)
            print("[bench]   " + json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
                                            if k != "parts_p50"}), flush=True)

    print(f"[bench] memory: {mem_frames} frames 640x480 at 100 Hz, shared memory ...", flush=True)
    node = start_node(model, True, tmp / "node_mem.log")
    mem = {}
    try:
        pid_holder = {}

        def on_warm():
            pid_holder["pid"] = node_pid(node)
            mem["rss_before"] = psutil.Process(pid_holder["pid"]).memory_info().rss / 2**20

        r = run_driver("memory", True, 640, 480, 100.0, frames=mem_frames, on_warm=on_warm)
        mem["rss_after"] = psutil.Process(pid_holder["pid"]).memory_info().rss / 2**20
        mem.update(published=r["published"], received=r["received"])
    finally:
        stop_node(node)
    q = run_queue(Path(args.queue_model), tmp, fair_duration)
    elapsed = time.monotonic() - t_start

    lines = [
        "# ROS pipeline benchmark (`bench/ros_pipeline.py" + (" --quick" if args.quick else "") + "`)",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GB, no GPU; "
        f"model: {model.name} on CPU; camera frames: demo-clip scenes resized to each resolution; "
        f"coarse worker running back to back; camera frames rgb8 at 30 Hz, best effort, {duration:.0f} s per row; "
        f"a query every second. Total run time {elapsed:.0f} s.",
        "",
        "| resolution | transport | frames published | received by node | intake callback p50 / p99 ms "
        "| stamp->intake p50 / p99 ms | frame age at query p50 ms | query p50 / p95 ms | ROS overhead p50 / p95 ms "
        "| model compute p50 / p95 ms | coarse passes | queries (unparseable) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        recv_pct = 100.0 * r["received"] / max(1, r["published"])
        lines.append(
            f"| {r['width']}x{r['height']} | {'SHM profile' if r['shm'] else 'Fast DDS defaults'} "
            f"| {r['published']} | {r['received']} ({recv_pct:.1f}%) "
            f"| {fmt(r['intake_p50'], 3)} / {fmt(r['intake_p99'], 3)} "
            f"| {fmt(r['stamp_to_intake_p50'])} / {fmt(r['stamp_to_intake_p99'])} "
            f"| {fmt(r['frame_age_p50'])} "
            f"| {fmt(r['rtt_p50'])} / {fmt(r['rtt_p95'])} | {fmt(r['overhead_p50'])} / {fmt(r['overhead_p95'])} "
            f"| {fmt(r['model_p50'])} / {fmt(r['model_p95'])} | {r['coarse_passes']} "
            f"| {r['queries']} ({r.get('unparseable', 0)}) |")
    lines += [
        "",
        "ROS overhead per query (p50 ms) by part: queue = wait for a query worker, convert = message to RGB "
        "(0 when the coarse worker already converted that frame), build = response + mask message, "
        "transport = client round trip minus the node's own total (request/response serialization and DDS). "
        "Publishing answer/mask/overlay (incl. drawing the overlay) happens after the response, in the "
        "node's result publisher thread: last column, not part of the query latency.",
        "",
        "| resolution | transport | queue | convert | build | transport | result publishing (off the query path) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["parts_p50"]
        lines.append(f"| {r['width']}x{r['height']} | {'SHM profile' if r['shm'] else 'Fast DDS defaults'} | "
                     + " | ".join(fmt(p[k], 2) for k in ("ros_queue", "ros_convert", "ros_build", "transport"))
                     + f" | {fmt(r.get('results_publish_p50'), 1)} |")
    lines += [
        "",
        f"Memory: node RSS {mem['rss_before']:.1f} MB after warm-up, {mem['rss_after']:.1f} MB after "
        f"{mem['published']} more frames (640x480, 100 Hz, SHM; {mem['received']} received): "
        f"growth {mem['rss_after'] - mem['rss_before']:+.1f} MB.",
        "",
        "Intake callback = the node's image callback (validation + ring buffer), excluding rclpy's message "
        "deserialization, which is inside stamp->intake (publisher serialization + transport + deserialization). "
        "Timings on shared 2-core machines are noisy; compare rows of one run, not runs of different machines.",
        *queue_lines(q, Path(args.queue_model).name),
    ]
    return write_report(lines, Path(args.out))


def write_report(lines: list, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"[bench] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
