#!/usr/bin/env python3
"""Regenerate the committed demo clip: data/demo/clip (MCAP bag of JPEG frames), data/demo/gt/*.png
(ground-truth label maps) and data/demo/script.json (which questions `earl-demo` asks about which
scene, with the expected entities).

    .venv/bin/python scripts/make_demo_clip.py [--out data/demo] [--scenes 4] [--seconds 4] [--rate 15]

The clip is a head-mounted camera looking at a sequence of synthetic scenes (training/data/synth.py,
default style, a seed no training split uses), each held for a few seconds with per-frame sensor
noise and exposure flicker, so the node sees a live-looking stream. The clip is committed (not drawn
at demo time) so that the demo does not depend on the training package and a user can replay it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from earl_ros.ros.bags import write_compressed_bag  # noqa: E402
from training.data.synth import SynthConfig, scene_rng, entries_for, render_scene  # noqa: E402

SEED, SPLIT = 20261125, "demo"  # never used by the training recipes (their seeds are small ints)
KIND_ORDER = (("hand",), ("object", "hands+objects"), ("no-target",))


def kind_of(entry: dict) -> str:
    tokens = [t for t in entry["tokens"] if t]
    if not tokens:
        return "no-target"
    if len(tokens) > 1:
        return "hands+objects"
    return "hand" if tokens[0].endswith(" hand") else "object"


def pick_queries(entries: list[dict], scene_index: int) -> list[dict]:
    """One question per kind group; the object/hands+objects group alternates between scenes."""
    out = []
    for group in KIND_ORDER:
        want = group[scene_index % len(group)] if len(group) > 1 else group[0]
        cands = [e for e in entries if kind_of(e) == want] or [e for e in entries if kind_of(e) in group]
        if not cands:
            continue
        e = cands[0]
        q = e["questions"][0]
        ids = [int(i) for i, t in zip(e["masks_idx"], e["tokens"]) if t]
        out.append({"query": q["query"], "kind": kind_of(e),
                    "expected_entities": [t for t in e["tokens"] if t], "expected_mask_ids": ids})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "demo"))
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0, help="how long each scene stays in view")
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality of the frames")
    args = ap.parse_args(argv)

    out = Path(args.out)
    if (out / "clip").exists():
        shutil.rmtree(out / "clip")
    (out / "gt").mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig()
    scenes, frames_rgb = [], []
    index = 0
    while len(scenes) < args.scenes:
        rng = scene_rng(SEED, cfg.style, SPLIT, index)
        rgb, lab, _depth, scene = render_scene(rng, cfg)
        entries = entries_for(scene, f"demo_{index:03d}", rng)
        index += 1
        if not any(h.obj is not None for h in scene["hands"]):
            continue  # the demo shows interactions; idle-only scenes still appear as no-target questions
        k = len(scenes)
        Image.fromarray(lab, mode="L").save(out / "gt" / f"scene_{k}.png")
        scenes.append({"scene": k, "gt": f"gt/scene_{k}.png", "caption": entries[0]["caption"],
                       "queries": pick_queries(entries, k)})
        frames_rgb.append(rgb)

    per_scene = int(round(args.seconds * args.rate))
    noise_rng = np.random.default_rng(SEED)

    def frames():
        for rgb in frames_rgb:
            base = rgb.astype(np.float32)
            for _ in range(per_scene):
                gain = 1.0 + noise_rng.normal(0.0, 0.02)
                noisy = base * gain + noise_rng.normal(0.0, 2.0, base.shape)
                yield np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    write_compressed_bag(out / "clip", frames(), rate=args.rate, quality=args.quality)
    script = {"rate": args.rate, "frames_per_scene": per_scene, "width": cfg.width, "height": cfg.height,
              "seed": SEED, "generator": "scripts/make_demo_clip.py", "scenes": scenes}
    (out / "script.json").write_text(json.dumps(script, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {len(scenes)} scenes x {per_scene} frames, "
          f"{sum(len(s['queries']) for s in scenes)} questions, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
