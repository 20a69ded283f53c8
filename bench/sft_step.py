"""Response-SFT step time with and without the frozen-vision feature cache (training/vision_cache.py).

    .venv/bin/python bench/sft_step.py [--steps 10] [--batch 16] [--threads 2] [--out bench/results/sft_step.md]
    .venv/bin/python bench/sft_step.py --style default --wording templates --out bench/results/sft_step_templates.md

Uses the committed model by default (models/earl-tiny-synth: the recipe's response shape) and
freshly rendered synthetic scenes, drawn by default as the recipe draws them (random looks, composed
wording: what the shipped model was trained on); the batches' padded length in tokens is reported
with the times, since sequence length is what the data changes. Each timed step is a full optimiser
step (prepare, forward, backward, AdamW) on the same batches in both arms; the cached arm is timed
after one pass that fills the cache, as in every epoch after the first. Prints a Markdown table
(median / p90 step seconds and the ratio) and writes it. Timings on shared 2-core machines are
noisy: compare the two arms of one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per arm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=str(REPO / "models" / "earl-tiny-synth"),
                    help="model dir (its response model is the one trained)")
    ap.add_argument("--style", default="random", help="scene look of the synthetic images (training synth --style)")
    ap.add_argument("--wording", default="grammar", help="question wording (training synth --wording)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "sft_step.md"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from earl_ros.model.manifest import Manifest
    from earl_ros.model.vlm import ResponseModel
    from training.cli import main as cli
    from training.data import IRGBench
    from training.policy import sft_loss
    from training.sft import freeze_vision, response_sft_batch
    from training.vision_cache import FrozenVisionCache

    torch.set_num_threads(args.threads)
    data = Path(tempfile.mkdtemp(prefix="earl-bench-sft-")) / "data"
    n_images = max(4, args.batch // 4)
    cli(["synth", "--out", str(data), "--splits", f"train={n_images}", "--seed", "5", "--style", args.style,
         "--wording", args.wording, "--quiet"])
    samples = IRGBench(data, "train").samples
    m = Manifest.load(Path(args.model))
    rm = ResponseModel.from_pretrained(m.response.path, m.response.afs, afs_alpha=m.response.afs_alpha)
    freeze_vision(rm.model)
    rm.model.train()
    params = [p for p in rm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(samples), args.batch, replace=False) for _ in range(args.steps)]

    zero = np.zeros(rm.descriptor_dim, np.float32)

    lengths = []

    def step(idx, cache):
        b = response_sft_batch(rm, [samples[i] for i in idx], lambda s, im: zero, cache)
        lengths.append(int(b.inputs["input_ids"].shape[1]))
        loss = sft_loss(rm, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {}
    cache = FrozenVisionCache(rm.model)
    for idx in batches:  # fill the cache (the first epoch) and warm up
        step(idx, cache)
    for arm, c in (("vision tower every step", None), ("cached vision features", cache)):
        ts = []
        for idx in batches:
            t = time.perf_counter()
            step(idx, c)
            ts.append(time.perf_counter() - t)
        times[arm] = ts
    base = float(np.median(times["vision tower every step"]))
    lines = [f"# Response-SFT step, batch {args.batch}, {args.threads} threads ({platform.processor() or platform.machine()}), "
             f"{args.style} look, {args.wording} wording, {Path(args.model).name}",
             "", "| arm | median s/step | p90 s/step | speed-up |", "|---|---:|---:|---:|"]
    for arm, ts in times.items():
        med = float(np.median(ts))
        lines.append(f"| {arm} | {med:.3f} | {float(np.quantile(ts, 0.9)):.3f} | {base / med:.2f}x |")
    lines.append(f"\n{args.steps} timed steps per arm, the same batches; cache: {len(cache.features)} images; "
                 f"batch length (tokens, padded) median {np.median(lengths):.0f}, max {max(lengths)}.")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
