"""Queries ahead of the background description (issue 26, item 4): query latency with the coarse worker
running against the same query with it off, and how often descriptions still refresh.

The live session (earl_ros/live/session.py, what the `earl` node runs, without DDS) gets the demo
clip as a 30 Hz camera and a query every --period seconds; each query uses the rolling description
(max_description_age 0), so with the worker off it does exactly the same model work. Three arms,
interleaved (see run_interleaved):
  off        coarse worker off; before each query (untimed) the newest camera frame is described,
             so its answers see as recent a description as the worker gives the other arms (with one
             description for the whole run, the answers of one model differed in length by arm)
  yielding   coarse worker on, back to back, pausing between tokens while a query runs (the default)
  competing  coarse worker on, back to back, coarse_yields_to_queries false (what the node did before)
Reported: query latency p50 / p95 (the session's answer: description pick + model), its ratio to
`off` with a 95% interval, the answers' length (a longer answer is more tokens, not slower tokens),
descriptions per second, the pauses and pre-emptions. Nothing is asserted.

    python bench/query_priority.py                        # 8 rounds x 5 questions x 3 arms, about 5 minutes
    python bench/query_priority.py --rounds 2 --per-block 2  # a quick look
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


def _query_frame(rgb: np.ndarray, seq: int):
    """A query's own frame record: the same pixels in every arm, a fresh stamp so no arm gets a
    cached segmenter embedding from another."""
    from earl_ros.live.frames import Frame

    return Frame(header=None, stamp_ns=time.time_ns(), seq=seq, encoding="rgb8", data=rgb)


def run_block(pipe, frames, overrides: dict, items: list[tuple[int, str]], period: float) -> dict:
    """One arm's block: a fresh live session with the camera (and its coarse worker, unless off)
    running, and `items` (frame index, question) asked one every `period` s."""
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
    lat, chars, t0 = [], [], time.monotonic()
    for i, (idx, question) in enumerate(items):
        if not settings["coarse_enabled"]:  # off: as fresh a description as the worker's, made untimed
            latest = session.frames.snapshot()["latest"]
            session.record_description(pipe.describe(latest.rgb(), stamp=latest.stamp), latest)
        time.sleep(max(0.0, t0 + i * period - time.monotonic()))
        pending = PendingQuery(None, None, question, _query_frame(frames[idx], i), time.perf_counter())
        t = time.perf_counter()
        answer = session.answer(pending)
        lat.append((time.perf_counter() - t) * 1e3)
        chars.append(len(answer.grounding.raw_text or ""))
    wall = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(30)
    return {"lat": lat, "chars": chars, "passes": session.stats.coarse["passes"] - passes0, "wall": wall,
            "pauses": pr.pauses - pauses0, "paused_s": pr.paused_s - paused0,
            "preempted": session.stats.coarse["preempted"] - pre0}


def run_interleaved(pipe, frames, rounds: int, per_block: int, period: float, log=print) -> dict:
    """Every round asks the same questions about the same frames in each arm, the arms in a rotated
    order: slow drift of the machine (another process, thermal state) then falls on every arm alike,
    and a round is the unit the interval resamples."""
    names = list(RUNS)
    blocks = {name: [] for name in names}
    for r in range(rounds):
        items = [((r * per_block + j) % len(frames), QUERIES[(r * per_block + j) % len(QUERIES)])
                 for j in range(per_block)]
        for name in names[r % len(names):] + names[:r % len(names)]:
            blocks[name].append(run_block(pipe, frames, RUNS[name], items, period))
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} p50 {pct(blocks[n][-1]['lat'], 50):.0f} ms"
                                                     for n in names))
    return blocks


def ratio_interval(arm: list[dict], base: list[dict], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of p50(arm) / p50(base), resampling whole rounds (the pairs within a round share a
    machine state)."""
    rng = np.random.default_rng(seed)
    k = len(arm)
    ratios = []
    for _ in range(n_boot):
        pick = rng.integers(0, k, k)
        a = np.concatenate([arm[i]["lat"] for i in pick])
        b = np.concatenate([base[i]["lat"] for i in pick])
        ratios.append(np.median(a) / np.median(b))
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(blocks: dict) -> dict:
    out = {}
    base = blocks["off"]
    base_p50 = pct([x for b in base for x in b["lat"]], 50)
    for name, bl in blocks.items():
        lat = [x for b in bl for x in b["lat"]]
        wall = sum(b["wall"] for b in bl)
        out[name] = {"n": len(lat), "p50": pct(lat, 50), "p95": pct(lat, 95), "ratio": pct(lat, 50) / base_p50,
                     "ci": ratio_interval(bl, base) if name != "off" else (1.0, 1.0),
                     "chars": float(np.mean([c for b in bl for c in b["chars"]])),
                     "desc_hz": sum(b["passes"] for b in bl) / wall, "pauses": sum(b["pauses"] for b in bl),
                     "paused_s": sum(b["paused_s"] for b in bl), "preempted": sum(b["preempted"] for b in bl)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"))
    ap.add_argument("--rounds", type=int, default=8, help="rounds; each asks every arm the same questions")
    ap.add_argument("--per-block", type=int, default=5, help="questions per arm in a round")
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
    res = summarise(run_interleaved(pipe, frames, a.rounds, a.per_block, a.period,
                                    log=lambda m: print(m, flush=True)))
    Path(a.out).write_text(report(res, a))
    print(Path(a.out).read_text())
    return 0


def report(res: dict, a) -> str:
    rows = [f"| {name} | {r['n']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['ratio']:.2f} | "
            + (f"{r['ci'][0]:.2f}-{r['ci'][1]:.2f} | " if name != "off" else "- | ")
            + f"{r['chars']:.0f} | "
            + (f"{r['desc_hz']:.2f} | {r['pauses']} | {r['paused_s']:.1f} | {r['preempted']} |" if name != "off"
               else "- | - | - | - |") for name, r in res.items()]
    return "\n".join([
        "# Queries ahead of the background description (generated by bench/query_priority.py)", "",
        f"`python bench/query_priority.py --rounds {a.rounds} --per-block {a.per_block} --period {a.period} "
        f"--threads {a.threads}`: the embedded model, the demo clip as a 30 Hz 640x480 camera, one query every "
        f"{a.period:g} s through the live session (no DDS). Each round asks every arm the same {a.per_block} "
        "questions about the same frames, the arms in a rotated order; the interval resamples rounds (2000 "
        "bootstrap draws).", "",
        "| coarse worker | queries | query p50 ms | p95 ms | p50 / off | 95% interval | answer, mean chars | "
        "descriptions per s | pauses | paused s | pre-empted |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|", *rows, ""])


if __name__ == "__main__":
    sys.exit(main())
