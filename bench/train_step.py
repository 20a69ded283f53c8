"""GRPO step timing at the tiny config: generation / rewards (incl. segmenter) / update, prompts/s, peak RSS.

    .venv/bin/python bench/train_step.py [--steps 5] [--segmenter model|box] [--out bench/results/train_step.md]

Builds everything it needs offline in a temp dir (synthetic data, tiny model dir, a short response SFT so
completions are parseable and R_g actually runs the segmenter), then times GRPO steps with the paper's
step shape (8 prompts x G=4) at a reduced completion length. Prints a table and writes it as Markdown.
Timings on shared 2-core machines are noisy: read the split (ratios), not the absolute numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
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
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-G", "--num-generations", type=int, default=4)
    ap.add_argument("--max-completion-length", type=int, default=64)
    ap.add_argument("--segmenter", choices=("model", "box"), default="model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train_step.md"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from earl_ros.model.tiny import build_tiny_model_dir
    from training.cli import main as cli
    from training.grpo import GRPOTrainer
    from training.cli import parse_settings

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="earl-bench-train-"))
    data = tmp / "data"
    cli(["synth", "--out", str(data), "--splits", "train=24", "--style", "easy", "--quiet"])
    model0 = build_tiny_model_dir(tmp / "model0", seed=0,
                                  extra_texts=(data / "corpus.txt").read_text().splitlines())
    cli(["sft-response", "--model", str(model0), "--data", str(data), "--out", str(tmp / "m1"), "--epochs", "8",
         "--lr", "3e-3", "--afs-alpha", "0.1", "--no-descriptor", "--quiet", "--threads", str(args.threads)])
    gargs = parse_settings("grpo", [
        "--model", str(tmp / "m1"), "--data", str(data), "--out", str(tmp / "grpo"), "--no-descriptor",
        "--steps", str(args.steps + 1), "--prompts-per-step", str(args.prompts), "--micro-batch", str(args.prompts),
        "--num-generations", str(args.num_generations), "--max-completion-length", str(args.max_completion_length),
        "--segmenter", args.segmenter, "--lora-r", "16", "--lora-alpha", "32", "--lr", "1e-4", "--quiet",
        "--quiet-log", "--save-every", "0", "--threads", str(args.threads)])
    tr = GRPOTrainer(gargs)
    tr.train_step()  # warm-up
    rows = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        rec = tr.train_step()
        rec["wall"] = time.perf_counter() - t0
        rows.append(rec)
    # R_g cost when every completion parses: one encoder run per prompt image + one decoder call with
    # G boxes per entity, for the step's prompts (fresh image keys, so the encoder cache does not help)
    seg_s = None
    if args.segmenter == "model":
        samples = tr.samples[: args.prompts]
        t0 = time.perf_counter()
        for k, smp in enumerate(samples):
            img = smp.image()
            fn = tr.masks.for_image(f"bench-{k}", img)
            boxes = np.tile(np.array([[10, 10, 120, 150]], np.float32), (args.num_generations * max(1, len(smp.entities)), 1))
            fn(boxes)
        seg_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def med(k):
        return float(np.median([r[k] for r in rows]))

    gen, rew, upd, wall = med("time/generation"), med("time/rewards"), med("time/update"), med("wall")
    lines = [
        "# GRPO step timing (tiny config)",
        "",
        f"{platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}; "
        f"{args.prompts} prompts x G={args.num_generations}, max completion {args.max_completion_length} tokens, "
        f"R_g segmenter: {args.segmenter}; median of {args.steps} steps after 1 warm-up step.",
        "",
        "| phase | s/step | share |",
        "|---|---|---|",
        f"| generation | {gen:.3f} | {gen / wall:.0%} |",
        f"| rewards (incl. segmenter) | {rew:.3f} | {rew / wall:.0%} |",
        f"| update (ref + policy log-probs, backward, step) | {upd:.3f} | {upd / wall:.0%} |",
        f"| total | {wall:.3f} | 100% |",
        "",
        f"prompts/s: {args.prompts / wall:.2f}; completions/s: {args.prompts * args.num_generations / wall:.2f}; "
        f"mean completion length: {np.mean([r['completion_len'] for r in rows]):.1f} tokens; "
        f"parseable completions: {np.mean([r['parse_ok'] for r in rows]):.0%}; peak RSS: {peak_mb:.0f} MB",
        "",
        (f"R_g segmenter cost when every completion parses (the step's {args.prompts} images encoded once each, "
         f"G boxes per GT entity decoded): {seg_s:.3f} s/step, i.e. {seg_s / wall:.0%} of the measured step."
         if seg_s is not None else "R_g masks: filled boxes (no segmenter)."),
        "",
        "Shared 2-core machines stall now and then: compare the split, not absolute times across runs.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
