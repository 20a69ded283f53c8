"""Where to set `track_reask_min_score`, and why an answer asked again should not always replace a
track's mask: bench/tracking.py's default row replayed on answers computed once.

bench/tracking.py asks the model again inside each row, so each setting costs a whole run (about 40
minutes on the 90 val clips). Here each question's answer on every frame of its clip is computed once
and cached under --answers (about 20 minutes for the val clips on 2 cores; a later run reuses it), then
the default row (flow, segmenter on every 5th frame, the question answered again every 10th) is
replayed on those answers once per --min-scores value: the same frames, answers and answer latencies,
so the rows differ by the threshold alone; re-asking on every frame is scored from the same answers.
With every answer replacing (threshold 0), each answer asked again that named a running track's entity
is also binned by the segmenter's score of its mask: the mean IoU, with that entity's exact mask on the
frame the answer is applied to, of the mask the track had and of the answer's mask that replaced it.
Decisions are made on val (seeds 8000..); the threshold's held-out check is bench/tracking.py's.

    python bench/tracking_replay.py --clips 90 --seed0 8000 --out bench/results/tracking_replay_val.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tracking import REASK, _iou, _mask_of, clip_bootstrap, make_tracker, questions, track_clip  # noqa: E402

SCORE_BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 1.01)


def _pack(g, seconds: float) -> tuple[dict, np.ndarray]:
    """A grounding as cached: what it says (json) and its masks as bits (a 90-clip cache of bools
    would take 0.5 GB)."""
    masks = np.asarray(g.masks, bool)
    return (dict(entities=list(g.entities), boxes=np.asarray(g.boxes).tolist(), scores=[float(x) for x in g.scores],
                 seconds=seconds, shape=list(masks.shape)), np.packbits(masks, axis=-1))


def _unpack(a: dict):
    from earl_ros.model.types import Grounding

    masks = np.unpackbits(a["bits"], axis=-1, count=a["shape"][-1]).astype(bool).reshape(a["shape"])
    return Grounding(entities=a["entities"], boxes=np.asarray(a["boxes"], np.int64).reshape(-1, 4), masks=masks,
                     scores=a["scores"], answer="", no_target=False)


def _read(cache: Path, seed: int) -> list[dict] | None:
    meta, bits = cache / f"{seed}.json", cache / f"{seed}.npz"
    if not (meta.exists() and bits.exists()):
        return None
    qs = json.loads(meta.read_text())
    with np.load(bits, allow_pickle=False) as z:
        for i, qd in enumerate(qs):
            for k, a in enumerate(qd["answers"]):
                a["bits"] = z[f"q{i}_f{k}"]
    return qs


def _write(cache: Path, seed: int, qs: list[dict], bits: dict) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache / f"{seed}.npz", **bits)
    (cache / f"{seed}.json").write_text(json.dumps(qs))  # last: a clip counts as cached once both exist


def clip_answers(pipe, seed: int, frames: int, cache: Path) -> list[dict]:
    """Per question of clip `seed`: its text, target, and its answer on every frame (frame 0's is the
    first answer), each with the seconds it took; computed once, then read from `cache`."""
    import time

    from training.data.synth_clips import entity_ids, moving_clip

    cached = _read(cache, seed)
    if cached is not None:
        return cached
    clip = moving_clip(seed, n_frames=frames, split="bench")
    out, bits = [], {}
    if clip.scene["hands"]:
        inter = pipe.describe(clip.frames[0], stamp=0.0)
        for i, (q, name) in enumerate(questions(clip.scene)):
            pipe.segmenter.clear_cache()  # as bench/tracking.py: the same stamps, the same answers
            answers = []
            for k in range(frames):
                t = time.perf_counter()
                g = pipe.answer(clip.frames[k], q, interaction=inter, stamp=float(k))
                a, bits[f"q{i}_f{k}"] = _pack(g, time.perf_counter() - t)
                answers.append(a)
            out.append(dict(q=q, name=name, gt=int(entity_ids(clip.scene)[name]), answers=answers))
    _write(cache, seed, out, bits)
    return _read(cache, seed)


class _Witness:
    """Wraps a tracker's reground: for each answer that names a running track's entity, records the
    answer's score and the IoU with that entity's exact mask of the track's mask before and after."""

    def __init__(self, tracker, clip, events: list):
        self.tracker, self.clip, self.events = tracker, clip, events
        self._reground, tracker.reground = tracker.reground, self.reground

    def reground(self, grounding, frame, ids=None):
        from training.data.synth_clips import entity_ids

        before = {t.entity: t.mask.copy() for t in self.tracker.tracks()}
        out = self._reground(grounding, frame, ids)
        labels, names = self.clip.labels[self.tracker._frames], entity_ids(self.clip.scene)  # the tracks' frame
        scores = dict(zip(grounding.entities, grounding.scores))
        for t in out:
            if t.entity in before:
                truth = labels == names[t.entity] if t.entity in names else np.zeros_like(labels, bool)
                self.events.append((scores[t.entity], _iou(before[t.entity], truth), _iou(t.mask, truth)))
        return out


def replay(pipe, clips: dict, min_scores: list[float], every: tuple[int, int] = (5, 10)):
    """rows: label -> (per-question mean IoU, ms per frame); events of threshold 0; clip per question."""
    from training.data.synth_clips import moving_clip

    label = {m: f"default, track_reask_min_score {m:g}" for m in min_scores}
    rows = {label[m]: ([], []) for m in min_scores}
    rows[REASK] = ([], [])
    events, clip_of = [], []
    for seed, qs in clips.items():
        clip = moving_clip(seed, n_frames=len(qs[0]["answers"]) if qs else 1, split="bench")
        for qd in qs:
            answers = [_unpack(a) for a in qd["answers"]]
            truth = [clip.labels[k] == qd["gt"] for k in range(len(answers))]
            found = [_mask_of(g, qd["name"]) for g in answers]
            rows[REASK][0].append(float(np.mean([_iou(m, truth[k]) if m is not None else 0.0
                                                 for k, m in enumerate(found) if k])))
            rows[REASK][1].extend(a["seconds"] * 1e3 for a in qd["answers"][1:])
            for m in min_scores:
                tracker = make_tracker(pipe, "flow", every[0], reground_min_score=m)
                if m == 0:
                    _Witness(tracker, clip, events)
                ask = (lambda k, qd=qd, answers=answers: (answers[k], qd["answers"][k]["seconds"]))
                i, ms = track_clip(tracker, clip, answers[0], qd["name"], qd["gt"], reask=(every[1], ask))
                rows[label[m]][0].append(float(np.mean(i)))
                rows[label[m]][1].extend(ms)
            clip_of.append(seed)
        print(seed, {k: round(v[0][-1], 3) for k, v in rows.items() if v[0]}, flush=True)
    return rows, events, clip_of


def _out_arg(out: str) -> str:
    out = Path(out).resolve()
    if out == REPO / "bench" / "results" / "tracking_replay_val.md":
        return ""
    return f" --out {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"


def report(rows: dict, events: list, clip_of: list, a) -> str:
    ci = clip_bootstrap(rows, clip_of)
    reask_ms = float(np.mean(rows[REASK][1]))
    lines = ["# Re-asked answers replayed on a tracked question (generated by bench/tracking_replay.py)", "",
             f"`python bench/tracking_replay.py --clips {a.clips} --seed0 {a.seed0} --frames {a.frames} "
             f"--min-scores {' '.join(f'{m:g}' for m in a.min_scores)}{_out_arg(a.out)}`: {len(clip_of)} questions from "
             f"{len(set(clip_of))} clips (seeds {a.seed0}-{a.seed0 + a.clips - 1}), each answered once on every frame, "
             "bench/tracking.py's default row (flow, segmenter every 5th frame, re-ask every 10th) replayed on those "
             "answers. Intervals: 95%, resampling clips; the difference from re-asking is paired.", "",
             "| row | mean mask IoU, % [95%] | minus re-ask every frame, points [95%] | compute / re-ask |",
             "|---|---:|---:|---:|"]
    for row, (ious, ms) in rows.items():
        (lo, hi), diff, (dlo, dhi) = ci[row]
        diff, dlo, dhi = (round(100 * v, 1) + 0.0 for v in (diff, dlo, dhi))  # + 0.0: no "-0.0"
        vs = "-" if row == REASK else f"{diff:+.1f} [{dlo:+.1f}, {dhi:+.1f}]"
        lines.append(f"| {row} | {100 * np.mean(ious):.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {vs} | "
                     f"{np.mean(ms) / reask_ms:.2f} |")
    lines += ["", "Every answer replacing (threshold 0): the answers asked again that named a running track's "
              "entity, by the segmenter's score of the answer's mask; mean IoU with that entity's exact mask.", "",
              "| answer's score | answers | the track's mask before | the answer's mask |", "|---|---:|---:|---:|"]
    ev = np.array(events, float).reshape(-1, 3)
    for lo, hi in zip(SCORE_BINS, SCORE_BINS[1:]):
        m = (ev[:, 0] >= lo) & (ev[:, 0] < hi)
        if m.any():
            lines.append(f"| {lo:.1f} to {min(hi, 1.0):.1f} | {int(m.sum())} | {ev[m, 1].mean():.2f} | "
                         f"{ev[m, 2].mean():.2f} |")
    return "\n".join(lines + [""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"))
    ap.add_argument("--clips", type=int, default=90)
    ap.add_argument("--seed0", type=int, default=8000, help="first clip seed (val: 8000..)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-scores", type=float, nargs="+", default=[0.0, 0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--answers", default=None,
                    help="answer cache (default: runs/tracking_answers/<model>-<frames>f; delete it after retraining)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "tracking_replay_val.md"))
    a = ap.parse_args(argv)
    if 0.0 not in a.min_scores:
        a.min_scores = [0.0, *a.min_scores]  # the events are those of every answer replacing
    import torch

    from earl_ros.model.pipeline import EarlPipeline

    torch.set_num_threads(a.threads)
    pipe = EarlPipeline.from_dir(a.model)
    cache = Path(a.answers or REPO / "runs" / "tracking_answers" / f"{Path(a.model).name}-{a.frames}f")
    clips = {}
    for seed in range(a.seed0, a.seed0 + a.clips):
        clips[seed] = clip_answers(pipe, seed, a.frames, cache)
        print(f"answers: clip {seed} ({len(clips[seed])} questions)", flush=True)
    rows, events, clip_of = replay(pipe, {s: q for s, q in clips.items() if q}, a.min_scores)
    Path(a.out).write_text(report(rows, events, clip_of, a))
    print(Path(a.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
