"""Tracking update rate in the node (issue 26): how often `tracks` goes out with up to 3 tracks while a
640x480 camera publishes at 30 Hz, and whether the camera's frames all still arrive.

The node (earl-launch, embedded model, its defaults but `tracking_rate` and `max_tracks` as given)
runs as a process; this process publishes a synthetic clip with camera motion at 640x480 and 30 Hz
(played back and forth; reliable, so a lost
frame is the node's, not the transport's), asks tracked questions until `max_tracks` tracks run, and
then counts for --seconds: `tracks` messages per second (and the tracks they carry), the frames the
node received against those published (its /diagnostics), and the age of each tracks message's frame
when it arrived. Nothing is asserted.

    python bench/tracking_rate.py                    # tracking_rate 30 and 10 (the default), 20 s each
    python bench/tracking_rate.py --rates 10 --seconds 5

Runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID (unless set).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from ask_stream import NS, REPO, Driver, bench_env, pct, start_node

QUESTIONS = ("which hands and objects are interacting?", "what is my left hand holding?", "where is my right hand?")


class TrackCounter:
    """tracks messages and the node's frame counter, recorded by the driver's executor."""

    def __init__(self, drv: Driver):
        from diagnostic_msgs.msg import DiagnosticArray

        from earl_interfaces.msg import Tracks

        self.lock, self.msgs, self.frames_received = threading.Lock(), [], None
        drv.node.create_subscription(Tracks, f"{NS}/tracks", self._on_tracks, 50)
        drv.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_tracks(self, msg):
        from earl_ros.ros.conversions import stamp_to_sec

        with self.lock:
            self.msgs.append((time.monotonic(), time.time() - stamp_to_sec(msg.header.stamp),
                              sum(t.state == "tracking" for t in msg.tracks)))

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.startswith(NS + "/"):
                kv = {v.key: v.value for v in st.values}
                if "frames_received" in kv:
                    with self.lock:
                        self.frames_received = int(kv["frames_received"])

    def snapshot(self):
        with self.lock:
            return len(self.msgs), self.frames_received


def camera_frames(seed: int = 9100, n: int = 60) -> list:
    """A synthetic clip with camera motion at 640x480 (training/data/synth_clips.py), played forwards
    then backwards so the loop never jumps: what a head camera sees, 2 s each way at 30 Hz."""
    from training.data.synth_clips import moving_clip

    frames = moving_clip(seed, n_frames=n, rate_hz=30.0, size=(640, 480), split="bench").frames
    return frames + frames[-2:0:-1]


def start_tracks(drv: Driver, want: int, timeout: float = 60.0) -> int:
    """Tracked questions until `want` tracks run (track_mode add); returns how many run."""
    running, t0, i = 0, time.monotonic(), 0
    while running < want and time.monotonic() - t0 < timeout:
        resp = drv.call_service(QUESTIONS[i % len(QUESTIONS)], track=True)[1]
        if resp.success:
            running = min(want, running + len(resp.track_ids))
        i += 1
    return running


def measure(drv: Driver, counter: TrackCounter, seconds: float, frames_sent) -> dict:
    """Tracks messages over `seconds`; then the camera stops and every frame published since the node
    started is compared with the node's frames_received (the camera is its only source)."""
    n0, t0 = counter.snapshot()[0], time.monotonic()
    time.sleep(seconds)
    n1, wall = counter.snapshot()[0], time.monotonic() - t0
    drv.stop.set()
    time.sleep(2.5)  # the node's diagnostics after the last frame
    with counter.lock:
        window = [m for m in counter.msgs if t0 <= m[0] <= t0 + wall]
    return {"hz": (n1 - n0) / wall, "tracks": pct([m[2] for m in window], 50) if window else 0,
            "age_ms_p50": pct([m[1] * 1e3 for m in window], 50), "age_ms_p95": pct([m[1] * 1e3 for m in window], 95),
            "sent": frames_sent(), "received": counter.snapshot()[1] or 0}


def run_rate(model: Path, rate: float, seconds: float) -> dict:
    log = Path(tempfile.mkdtemp(prefix="track-rate-")) / "node.log"
    node = start_node(model, log, ["-p", f"tracking_rate:={rate}", "-p", "track_mode:=add", "-p", "max_tracks:=3"])
    drv = Driver()
    counter = TrackCounter(drv)
    sent = [0]
    try:
        drv.warm_up(camera_frames(), log, sent)
        tracks = start_tracks(drv, 3)
        print(f"[tracking_rate] rate {rate:g}: {tracks} tracks started", flush=True)
        time.sleep(1.0)
        res = measure(drv, counter, seconds, lambda: sent[0])
        res.update(rate=rate, tracks_started=tracks)
        return res
    finally:
        drv.stop.set()
        drv.close()
        from ros_pipeline import stop_node

        stop_node(node)


def report(rows: list[dict], a) -> str:
    lines = ["# Tracking update rate in the node (generated by bench/tracking_rate.py)", "",
             f"`python bench/tracking_rate.py --rates {' '.join(str(r) for r in a.rates)} --seconds {a.seconds}` on "
             f"{os.cpu_count()} CPUs: the node (earl-launch, embedded model, coarse worker on), a synthetic clip with "
             "camera motion (seed 9100) as a 640x480 camera at 30 Hz (reliable), tracked questions until 3 tracks run (track_mode add), then "
             f"{a.seconds:g} s counted.", "",
             "| tracking_rate | tracks running (median) | tracks messages per s | frame age at arrival p50 / p95 ms "
             "| camera frames received |", "|---:|---:|---:|---|---|"]
    for r in rows:
        share = 100.0 * r["received"] / r["sent"] if r["sent"] else float("nan")
        lines.append(f"| {r['rate']:g} | {r['tracks']:.0f} | {r['hz']:.1f} | {r['age_ms_p50']:.0f} / "
                     f"{r['age_ms_p95']:.0f} | {r['received']}/{r['sent']} ({share:.1f}%) |")
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"))
    ap.add_argument("--rates", type=float, nargs="+", default=[30.0, 10.0], help="tracking_rate values to run")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "tracking_rate.md"))
    a = ap.parse_args(argv)
    bench_env()
    rows = [run_rate(Path(a.model), r, a.seconds) for r in a.rates]
    text = report(rows, a)
    Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
