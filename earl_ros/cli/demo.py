"""earl-demo: the whole system in one command.

    earl-demo [--out out/demo] [--model DIR] [--clip BAG --script JSON] [--rate 15]
    earl-demo --camera-topic /my/camera/image_raw [--question TEXT ...] [--interval 3]

Starts the node stack (`earl-launch`), replays the committed synthetic egocentric clip
(data/demo/clip, `earl-replay`), asks the clip's scripted questions of every kind (hand, object of
a hand, hands + objects, no target) through the node's `query` service about a frame of the scene on
screen, prints question, answer, latency and the mask IoU against the clip's ground truth, writes one
overlay PNG per question plus contact_sheet.png and results.json to --out, stops everything and
exits 0 when every question got an answer and interaction descriptions arrived (1 otherwise).

With --camera-topic it replays nothing and asks --question (default: one of each kind) about a
user's own camera instead; ROS_DOMAIN_ID must then be the camera's (it is taken from the
environment, not randomised).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from earl_ros.cli.demo_tracking import mark_tracked, mask_iou, on_tracks_mask, score_tracking
from earl_ros.cli.errors import Parser, run_reporting

DEFAULT_QUESTIONS = ["Which hands and objects are interacting?", "Where is my right hand?",
                     "What am I holding in my left hand?", "Where is the kettle I am holding?"]
FRAME_CACHE = 60  # frames kept by stamp for drawing overlays (about 4 s at 15 Hz)


def parse_args(argv=None):
    ap = Parser(prog="earl-demo", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--out", default="out/demo", help="output folder (default: %(default)s)")
    ap.add_argument("--model", help="model directory (default: models/earl-tiny-synth)")
    ap.add_argument("--clip", help="bag to replay (default: the shipped data/demo/clip)")
    ap.add_argument("--script", help="questions + ground truth for --clip (default: data/demo/script.json)")
    ap.add_argument("--rate", type=float, default=15.0, help="replay rate in Hz (default: %(default)s)")
    ap.add_argument("--camera-topic", help="ask about this live camera topic instead of replaying the clip")
    ap.add_argument("--question", action="append", help="with --camera-topic: a question to ask (repeatable)")
    ap.add_argument("--interval", type=float, default=3.0, help="with --camera-topic: seconds between questions")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer")
    ap.add_argument("--startup-timeout", type=float, default=180.0,
                    help="seconds to wait for the node's query service")
    return ap.parse_args(argv)


def log(*a) -> None:
    print("[earl-demo]", *a, flush=True)


# ------------------------------------------------------------------------------------------ setup

def resolve_model(args, out: Path) -> tuple[Path, bool]:
    """(model dir, trained?). Without the embedded model, a tiny random-weight one is built so the
    plumbing can still be shown; its answers are noise and the demo says so loudly."""
    from earl_ros.model.manifest import default_model_dir

    if args.model:
        from earl_ros.model.manifest import Manifest

        model = Path(args.model).expanduser().resolve()
        Manifest.load(model)  # a bad model dir is one clear line before any process starts
        return model, True
    model = default_model_dir()
    if model is not None:
        return model.resolve(), True
    fallback = out / "tiny-random-model"
    log("WARNING: models/earl-tiny-synth is not in this checkout; using a tiny RANDOM-WEIGHT model.")
    log("WARNING: its answers and masks are meaningless; only the plumbing is being shown.")
    if not (fallback / "earl.yaml").is_file():
        from earl_ros.model.tiny import build_tiny_model_dir

        build_tiny_model_dir(fallback, segmenter="sam")
    return fallback.resolve(), False


def shipped(*parts: str) -> Path:
    from earl_ros.ros.env import share_file

    return share_file(*parts)


def start(cmd: list[str], logfile: Path, env: dict) -> subprocess.Popen:
    f = open(logfile, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc._earl_log = f  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen | None, name: str, grace: float = 20.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop within {grace:.0f} s; killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc._earl_log.close()  # type: ignore[attr-defined]
    return proc.returncode


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------- ROS side

class DemoClient:
    """Subscribes to the camera (to know which frame is on screen and to draw overlays) and to the
    node's `interaction` topic, and calls its `query` service; spun by one background thread."""

    def __init__(self, camera_topic: str, namespace: str, reliable: bool):
        import rclpy
        from earl_ros.ros.spin import spin_in_background
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from earl_interfaces.msg import InteractionDescription
        from earl_interfaces.srv import Query

        rclpy.init(args=["earl-demo"])
        self.node = Node(f"earl_demo_{os.getpid()}", use_global_arguments=False)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self.lock = threading.Lock()
        self.frames: dict[int, tuple[int, np.ndarray]] = {}  # stamp_ns -> (index, rgb)
        self.received = 0
        self.latest_stamp_ns = 0
        self.interactions: list[tuple[int, str]] = []
        self.tracked: list = []  # (frame index, frame, track-id label map) of each tracks/mask update
        self.node.create_subscription(Image, camera_topic, self._on_image, qos)
        self.node.create_subscription(Image, f"/{namespace}/tracks/mask", lambda m: on_tracks_mask(self, m),
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(InteractionDescription, f"/{namespace}/interaction", self._on_interaction, 10)
        self.client = self.node.create_client(Query, f"/{namespace}/query")
        self.service = f"/{namespace}/query"
        self.camera_topic = camera_topic
        self.executor, self.thread = spin_in_background(self.node)

    def _on_image(self, msg):
        from earl_ros.ros.conversions import image_msg_to_rgb, stamp_to_ns

        rgb = image_msg_to_rgb(msg)
        ns = stamp_to_ns(msg.header.stamp)
        with self.lock:
            self.frames[ns] = (self.received, rgb)
            self.received += 1
            self.latest_stamp_ns = max(self.latest_stamp_ns, ns)
            while len(self.frames) > FRAME_CACHE:
                self.frames.pop(min(self.frames))

    def _on_interaction(self, msg):
        from earl_ros.ros.conversions import stamp_to_ns

        with self.lock:
            self.interactions.append((stamp_to_ns(msg.header.stamp), msg.description))

    def wait_for_service(self, timeout: float, alive) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.wait_for_service(timeout_sec=1.0):
                return True
            if not alive():
                return False
        return False

    def ask(self, query: str, stamp_ns: int, timeout: float, track: bool = False):
        from earl_ros.ros.client import make_request

        fut = self.client.call_async(make_request(query, stamp_ns / 1e9 if stamp_ns else None, track=track))
        deadline = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not fut.done():
            self.client.remove_pending_request(fut)
            return None
        return fut.result()

    def frame(self, stamp_ns: int):
        with self.lock:
            return self.frames.get(stamp_ns)

    def close(self):
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown()
        # the subscriptions' callbacks hold this client in reference cycles; collected only here, not
        # at interpreter exit, they would leave the DDS participant's /dev/shm segments behind
        self.executor = self.node = None
        gc.collect()

    def close_and_count(self) -> tuple[int, list]:
        """(camera frames received, interaction messages), then close."""
        with self.lock:
            counts = self.received, list(self.interactions)
        self.close()
        return counts


# ------------------------------------------------------------------------------------ scoring

def overlay_for(rgb: np.ndarray, resp_json: dict, label_map: np.ndarray | None) -> np.ndarray:
    from earl_ros.model.overlay import draw_overlay

    n = len(resp_json["entities"])
    if label_map is not None and label_map.shape == rgb.shape[:2]:
        masks = np.stack([label_map == i + 1 for i in range(n)]) if n else np.zeros((0,) + rgb.shape[:2], bool)
    else:
        masks = np.zeros((0,) + rgb.shape[:2], bool)
    g = SimpleNamespace(masks=masks, boxes=np.asarray(resp_json["boxes"], float).reshape(-1, 4),
                        entities=resp_json["entities"], scores=resp_json["scores"])
    return draw_overlay(rgb, g)


def contact_sheet(tiles: list[tuple[np.ndarray, list[str]]], path: Path, cols: int = 4, width: int = 320) -> None:
    """All overlays on one page, each captioned with its question, answer and score."""
    from PIL import Image, ImageDraw, ImageFont

    if not tiles:
        return
    font = ImageFont.load_default()
    line_h, n_lines = 12, 6
    cells = []
    for img, lines in tiles:
        im = Image.fromarray(img)
        h = round(im.height * width / im.width)
        cell = Image.new("RGB", (width, h + line_h * n_lines + 6), (255, 255, 255))
        cell.paste(im.resize((width, h)), (0, 0))
        d = ImageDraw.Draw(cell)
        wrapped = [w for line in lines for w in (textwrap.wrap(line, 52) or [""])][:n_lines]
        for i, line in enumerate(wrapped):
            d.text((4, h + 3 + i * line_h), line, fill=(0, 0, 0), font=font)
        cells.append(cell)
    cw, ch = width, max(c.height for c in cells)
    rows = (len(cells) + cols - 1) // cols
    sheet = Image.new("RGB", (cw * min(cols, len(cells)) + 4 * (min(cols, len(cells)) - 1),
                              ch * rows + 4 * (rows - 1)), (90, 90, 90))
    for i, c in enumerate(cells):
        sheet.paste(c, ((i % cols) * (cw + 4), (i // cols) * (ch + 4)))
    sheet.save(path)


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, float), q)) if xs else float("nan")


# ------------------------------------------------------------------------------------- the job

def plan_from_script(script: dict) -> list[dict]:
    """(scene, question) pairs in clip order, with the frame index from which the scene is on screen."""
    per = int(script["frames_per_scene"])
    plan = []
    for s in script["scenes"]:
        for q in s["queries"]:
            plan.append({**q, "scene": s["scene"], "gt": s["gt"], "scene_start": s["scene"] * per,
                         "first_frame": s["scene"] * per + per // 5,
                         "last_frame": (s["scene"] + 1) * per - 1})
    mark_tracked(plan)
    return plan


def _confine_dds(live: bool) -> dict:
    """The environment of every process the demo starts: loopback DDS, a domain of its own."""
    from earl_ros.ros.env import safe_env

    env = safe_env(dict(os.environ))
    if not live and not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(random.randint(1, 100))  # our own domain: nobody else's nodes answer
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE", "AMENT_PREFIX_PATH") if k in env})
    return env


def _plan(args, live: bool):
    """(script, questions in order, folder of the ground truth, clip to replay); live: no script."""
    if live:
        return None, [{"query": q, "kind": "live"} for q in (args.question or DEFAULT_QUESTIONS)], None, None
    script_path = Path(args.script) if args.script else shipped("data", "demo", "script.json")
    script = json.loads(script_path.read_text())
    clip = Path(args.clip) if args.clip else script_path.parent / "clip"
    return script, plan_from_script(script), script_path.parent, clip


def run(args) -> int:
    out = Path(args.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    live = bool(args.camera_topic)
    env = _confine_dds(live)
    model, trained = resolve_model(args, out)
    camera_topic = args.camera_topic or "/earl_demo/camera/image_raw"
    script, plan, data_dir, clip = _plan(args, live)
    log(f"model {model}; ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')} "
        f"(discovery {os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}); output {out}")
    procs = {"node": None, "replay": None}
    client, records, tiles, t_start = None, [], [], time.monotonic()
    try:
        procs["node"] = start([sys.executable, "-m", "earl_ros.cli.launch", "--model", str(model),
                               "--camera-topic", camera_topic, "--namespace", "earl", "--",
                               "-p", f"qos_reliability:={'best_effort' if live else 'reliable'}",
                               # the demo scores how the first answer's tracks are followed, not re-asks
                               "-p", "track_reask_period:=0.0"], out / "node.log", env)
        client = DemoClient(camera_topic, "earl", reliable=not live)
        if not _node_up(client, procs["node"], args, out, t_start):
            return 1
        if not live:
            procs["replay"] = start([sys.executable, "-m", "earl_ros.cli.replay", str(clip), "--topic", camera_topic,
                                     "--rate", str(args.rate), "--wait-subscribers", "2", "--qos", "reliable"],
                                    out / "replay.log", env)
            log(f"replaying {clip} on {camera_topic} at {args.rate:g} Hz "
                f"({len(script['scenes'])} scenes x {script['frames_per_scene']} frames)")
        _ask_plan(client, plan, args, procs["replay"], data_dir, out, records, tiles)
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        replay_rc = stop(procs["replay"], "earl-replay")
        n_frames, interactions = client.close_and_count() if client is not None else (0, [])
        node_rc = stop(procs["node"], "earl-launch")
    summary = summarize(records, n_frames, interactions, trained, model, time.monotonic() - t_start)
    summary.update(node_exit=node_rc, replay_exit=replay_rc)
    return _report(out, tiles, records, plan, summary, replay_rc)


def _node_up(client, node_proc, args, out: Path, t_start: float) -> bool:
    log(f"waiting for {client.service} (model loading; log: {out / 'node.log'})")
    if not client.wait_for_service(args.startup_timeout, lambda: node_proc.poll() is None):
        log(f"error: the node did not come up (exit {node_proc.poll()}); last lines of {out / 'node.log'}:")
        print(tail(out / "node.log"), file=sys.stderr)
        return False
    log(f"node ready after {time.monotonic() - t_start:.1f} s")
    return True


def _ask_plan(client, plan, args, replay_proc, data_dir, out: Path, records: list, tiles: list) -> None:
    """Each question once its scene is on screen; records and contact-sheet tiles are appended."""
    live = bool(args.camera_topic)
    for k, item in enumerate(plan):
        stamp_ns = wait_for_frame(client, item, args, replay_proc)
        if stamp_ns is None:
            log(f"error: no camera frame on {client.camera_topic}" + ("" if live else " (replay ended early?)"))
            break
        t0 = time.monotonic()
        # the demo can see a frame before the node has buffered it: the node waits for it (stamp_wait)
        resp = client.ask(item["query"], stamp_ns, args.timeout, track=bool(item.get("track")))
        rec = score(item, resp, (time.monotonic() - t0) * 1e3, client, data_dir, out, k, tiles)
        records.append(rec)
        print_record(rec)
        if live and k + 1 < len(plan):
            time.sleep(args.interval)
    if replay_proc is not None:
        replay_proc.wait(timeout=max(5.0, len(plan) * 2.0))
    _score_tracked(plan, records, client, data_dir, tiles)


def _score_tracked(plan, records, client, data_dir, tiles) -> None:
    """Once the clip has played: how the tracked questions' entities were followed over their scenes."""
    from PIL import Image

    for item, rec in zip(plan, records):
        if rec.get("track_ids") and "frame_index" in rec and data_dir is not None:
            tiles += score_tracking(rec, item, client, np.asarray(Image.open(data_dir / item["gt"])))


def _report(out: Path, tiles: list, records: list, plan: list, summary: dict, replay_rc) -> int:
    """Contact sheet, results.json and the summary; 0 only if every question got a successful answer."""
    contact_sheet(tiles, out / "contact_sheet.png")
    (out / "results.json").write_text(json.dumps({"summary": summary, "questions": records}, indent=1) + "\n")
    print_summary(summary, out)
    ok = (len(records) == len(plan) and all(r["success"] for r in records) and summary["interaction_messages"] > 0
          and replay_rc in (0, None))
    if not ok:
        log("FAILED: " + ("not every question got an answer" if len(records) != len(plan)
                          or not all(r["success"] for r in records) else
                          "no interaction description arrived" if not summary["interaction_messages"]
                          else f"earl-replay exited with {replay_rc}"))
    return 0 if ok else 1


def wait_for_frame(client: DemoClient, item: dict, args, replay_proc) -> int | None:
    """Stamp of the newest frame once the question's scene is on screen (live: the newest frame)."""
    deadline = time.monotonic() + max(30.0, args.startup_timeout)
    first = item.get("first_frame", 0)
    while time.monotonic() < deadline:
        with client.lock:
            if client.received > first and client.latest_stamp_ns:
                return client.latest_stamp_ns
        if replay_proc is not None and replay_proc.poll() is not None:
            with client.lock:
                return client.latest_stamp_ns or None
        time.sleep(0.01)
    return None


def score(item, resp, latency_ms, client: DemoClient, data_dir, out: Path, k: int, tiles) -> dict:
    from PIL import Image

    from earl_ros.ros.client import mask_array, response_to_json

    rec = {"question": item["query"], "kind": item["kind"], "latency_ms": round(latency_ms, 1)}
    if resp is None:
        rec.update(success=False, error_code="TIMEOUT", message="no answer in time")
        return rec
    j = response_to_json(resp)
    rec.update(success=j["success"], error_code=j["error_code"], message=j["message"], answer=j["answer"],
               entities=j["entities"], boxes=j["boxes"], no_target=j["no_target"], stamp=j["stamp"],
               timings_ms=j["timings_ms"], description=j["description"])
    if j.get("track_ids"):
        rec["track_ids"] = j["track_ids"]
    if not j["success"]:
        return rec
    labels = mask_array(resp)
    stamp_ns = int(resp.header.stamp.sec) * 1_000_000_000 + int(resp.header.stamp.nanosec)
    frame = client.frame(stamp_ns)
    if "scene" in item and frame is not None:
        index, _ = frame
        rec["frame_index"] = index
        rec["scene"] = item["scene"]
        on_scene = item["scene_start"] <= index <= item["last_frame"]  # else the scene changed meanwhile
        rec["expected_entities"] = item["expected_entities"]
        if on_scene:
            gt = np.asarray(Image.open(data_dir / item["gt"]))
            if item["expected_mask_ids"]:
                rec["mask_iou"] = round(mask_iou(labels, gt, item["expected_mask_ids"]), 3)
            rec["no_target_correct"] = bool(j["no_target"]) == (not item["expected_mask_ids"])
    if frame is not None:
        ov = overlay_for(frame[1], j, labels)
        name = f"q{k + 1:02d}_{item['kind'].replace('+', '_')}.png"
        Image.fromarray(ov).save(out / "overlays" / name)
        rec["overlay"] = str(out / "overlays" / name)
        caption = [f"Q: {item['query']}", f"A: {j['answer'] or '(no answer)'}"]
        if "mask_iou" in rec:
            caption.append(f"mask IoU {rec['mask_iou']:.2f}   {latency_ms:.0f} ms")
        elif "no_target_correct" in rec:
            caption.append(f"no-target {'correct' if rec['no_target_correct'] else 'WRONG'}   {latency_ms:.0f} ms")
        else:
            caption.append(f"{latency_ms:.0f} ms")
        tiles.append((ov, caption))
    return rec


def print_record(rec: dict) -> None:
    print(f"\nQ: {rec['question']}   [{rec['kind']}]")
    if not rec["success"]:
        print(f"   failed: {rec['error_code']}: {rec['message']}")
        return
    print(f"A: {rec['answer'] or '(empty answer)'}")
    extra = []
    if "expected_entities" in rec:
        extra.append("expected: " + (", ".join(rec["expected_entities"]) or "no target"))
    if "mask_iou" in rec:
        extra.append(f"mask IoU {rec['mask_iou']:.2f}")
    if "no_target_correct" in rec and not rec.get("expected_entities"):
        extra.append("no-target " + ("correct" if rec["no_target_correct"] else "WRONG"))
    extra.append(f"{rec['latency_ms']:.0f} ms")
    print("   " + " | ".join(extra))


def summarize(records, n_frames, interactions, trained, model, wall_s) -> dict:
    lat = [r["latency_ms"] for r in records if r["success"]]
    ious = [r["mask_iou"] for r in records if "mask_iou" in r]
    nt = [r["no_target_correct"] for r in records if "no_target_correct" in r]
    return {
        "model": str(model), "trained_model": trained, "questions": len(records),
        "answered": sum(r["success"] for r in records), "frames_received": n_frames,
        "interaction_messages": len(interactions),
        "last_description": interactions[-1][1] if interactions else "",
        "latency_ms_p50": round(percentile(lat, 50), 1), "latency_ms_p95": round(percentile(lat, 95), 1),
        "mean_mask_iou": round(float(np.mean(ious)), 3) if ious else None,
        "no_target_accuracy": round(float(np.mean(nt)), 3) if nt else None,
        "tracked_questions": sum(1 for r in records if r.get("track_ids")),
        "tracked_frames": sum(r.get("tracked_frames", 0) for r in records),
        "tracked_mask_iou": (round(float(np.mean([r["tracked_mask_iou"] for r in tracked])), 3)
                             if (tracked := [r for r in records if "tracked_mask_iou" in r]) else None),
        "wall_s": round(wall_s, 1),
    }


def print_summary(s: dict, out: Path) -> None:
    print()
    log(f"{s['answered']}/{s['questions']} questions answered; {s['frames_received']} frames seen; "
        f"{s['interaction_messages']} interaction descriptions published")
    log(f"query latency p50 {s['latency_ms_p50']} ms, p95 {s['latency_ms_p95']} ms (round trip through /earl/query)")
    if s["mean_mask_iou"] is not None:
        log(f"mean mask IoU vs ground truth {s['mean_mask_iou']:.3f}; no-target accuracy {s['no_target_accuracy']:.2f}")
    if s["tracked_questions"]:
        log(f"{s['tracked_questions']} tracked questions followed on {s['tracked_frames']} later frames without "
            f"asking again; tracked mask IoU vs ground truth {s['tracked_mask_iou']}")
    if s["last_description"]:
        log(f"last interaction description: {s['last_description']!r}")
    if not s["trained_model"]:
        log("WARNING: answers came from a RANDOM-WEIGHT model (models/earl-tiny-synth missing); they are noise.")
    log(f"overlays in {out / 'overlays'}, contact sheet {out / 'contact_sheet.png'}, all results {out / 'results.json'}"
        f" ({s['wall_s']:.0f} s)")


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse_args(argv)
    return run_reporting("earl-demo", run, args)


if __name__ == "__main__":
    sys.exit(main())
