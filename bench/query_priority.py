"""Queries ahead of the background description (issue 26, item 4): query latency with the coarse worker
running against the same query with it off, and how often descriptions still refresh.

The live session (earl_ros/live/session.py, what the `earl` node runs, without DDS) gets the demo
clip as a 30 Hz camera and a query every --period seconds; each query uses the rolling description
(max_description_age 0), so with the worker off it does exactly the same model work. Three runs:
  off        coarse worker off (one description made before the run)
  yielding   coarse worker on, back to back, pausing between tokens while a query runs (the default)
  competing  coarse worker on, back to back, coarse_yields_to_queries false (what the node did before)
Reported: query latency p50 / p95 (the session's answer: description pick + model), its ratio to
`off`, descriptions per second, the pauses and pre-emptions. Nothing is asserted.

    python bench/query_priority.py              # 20 queries per run, about 3 minutes on 2 cores
    python bench/query_priority.py --queries 5  # a quick look
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
QUERIES = ("what is my left hand holding?", "where is my right hand?", "which hands and objects are interacting?")
RUNS = {"off": {"coarse_enabled": False}, "yielding": {"coarse_yields_to_queries": True},
        "competing": {"coarse_yields_to_queries": False}}


def pct(v, q):
    return float(np.percentile(np.asarray(v, np.float64), q)) if len(v) else float("nan")


def _camera(session, frames, stop: threading.Event, hz: float = 30.0) -> None:
    period, k, t_next = 1.0 / hz, 0, time.monotonic()
    while not stop.is_set():
        session.accept_frame(f"frame{k}", time.time_ns(), "rgb8", lambda f=frames[k % len(frames)]: f,
                             time.perf_counter())
        k += 1
        t_next += period
        stop.wait(max(0.0, t_next - time.monotonic()))


def run_one(pipe, frames, overrides: dict, n_queries: int, period: float) -> dict:
    from earl_ros.live.session import LiveSession, PendingQuery
    from earl_ros.ros.params import PARAMS

    settings = {p.name: p.default for p in PARAMS} | {"max_description_age": 0.0} | overrides
    session = LiveSession(pipe, settings.__getitem__)
    stop = threading.Event()
    threads = [threading.Thread(target=_camera, args=(session, frames, stop), daemon=True),
               threading.Thread(target=session.run_coarse, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    while session.frames.snapshot()["latest"] is None:
        time.sleep(0.01)
    first = session.frames.snapshot()["latest"]
    session.record_description(pipe.describe(first.rgb(), stamp=first.stamp), first)
    passes0, pr = session.stats.coarse["passes"], pipe.priority
    pauses0, paused0, pre0 = pr.pauses, pr.paused_s, session.stats.coarse["preempted"]
    lat, t0 = [], time.monotonic()
    for i in range(n_queries):
        time.sleep(max(0.0, t0 + i * period - time.monotonic()))
        frame = session.frames.snapshot()["latest"]
        pending = PendingQuery(None, None, QUERIES[i % len(QUERIES)], frame, time.perf_counter())
        t = time.perf_counter()
        session.answer(pending)
        lat.append((time.perf_counter() - t) * 1e3)
    wall = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(30)
    return {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat),
            "desc_hz": (session.stats.coarse["passes"] - passes0) / wall, "pauses": pr.pauses - pauses0,
            "paused_s": pr.paused_s - paused0, "preempted": session.stats.coarse["preempted"] - pre0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"))
    ap.add_argument("--queries", type=int, default=20, help="queries per run")
    ap.add_argument("--period", type=float, default=2.0, help="seconds between queries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "query_priority.md"))
    a = ap.parse_args(argv)
    import torch

    from bench.ros_pipeline import demo_frames
    from earl_ros.model.pipeline import EarlPipeline

    torch.set_num_threads(a.threads)
    pipe = EarlPipeline.from_dir(a.model)
    frames = demo_frames(640, 480, 12)
    pipe.answer(frames[0], QUERIES[0], pipe.describe(frames[0]))  # warm-up
    res = {}
    for name, overrides in RUNS.items():
        res[name] = run_one(pipe, frames, overrides, a.queries, a.period)
        print(name, {k: round(v, 2) for k, v in res[name].items()}, flush=True)
    Path(a.out).write_text(report(res, a))
    print(Path(a.out).read_text())
    return 0


def report(res: dict, a) -> str:
    base = res["off"]["p50"]
    rows = [f"| {name} | {r['n']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p50'] / base:.2f} | "
            + (f"{r['desc_hz']:.2f} | {r['pauses']} | {r['paused_s']:.1f} | {r['preempted']} |" if name != "off"
               else "- | - | - | - |") for name, r in res.items()]
    return "\n".join([
        "# Queries ahead of the background description (generated by bench/query_priority.py)", "",
        f"`python bench/query_priority.py --queries {a.queries} --period {a.period} --threads {a.threads}`: the "
        f"embedded model, the demo clip as a 30 Hz 640x480 camera, one query every {a.period:g} s through the live "
        "session (no DDS).", "",
        "| coarse worker | queries | query p50 ms | p95 ms | p50 / off | descriptions per s | pauses | paused s | "
        "pre-empted |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, ""])


if __name__ == "__main__":
    sys.exit(main())
