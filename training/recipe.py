"""`python -m training recipe tiny-synth`: train the embedded default model end to end on a CPU.

One command, every stage through the project's own training commands (so each stage is also
reproducible by hand, see the printed commands and OUT/recipe.json):

  1. synth         synthetic egocentric scenes (train + val, seed 0) + corpus.txt
  2. tiny          random-weight tiny EARL model dir, tokenizer trained on the corpus
  3. sft-coarse    stage-1 SFT (image -> interaction description), vision tower trained too
  4. descriptors   F_ana of every train/val image (the model's own description, as at run time)
  5. segmenter-ft  the tiny SAM trained box -> mask on the synthetic masks (jittered boxes)
  6. sft-response  response SFT warm-up with AFS (alpha 0.1) on image + query -> answer + boxes
  7. grpo          GRPO (R_f + R_a + R_g, R_g through the fine-tuned segmenter), LoRA + AFS
  8. select        evaluate SFT-only and SFT + GRPO on the validation split (seed 0 val, not the
                   held-out test seeds); the one with the higher cIoU is exported
  9. export        self-contained model dir (LoRA merged, relative paths) -> --model-out

Held-out evaluation data (other seeds, other styles) is generated separately by
`python -m training recipe tiny-synth-eval`, which also trains the ablation arms and writes the
quality table and the model card.

`--resume` skips stages whose output already exists; `--scale quick` shrinks everything for a smoke
test (a minute or two). Threads: 2 (torch.set_num_threads), the 2-core CPU this recipe targets.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# The recipe (full scale). Chosen by profiling on 2 CPU cores: see docs/training.md.
TINY_SYNTH = {
    "threads": 2,
    "synth": {"splits": "train=3000,val=50", "seed": 0, "size": "256x192"},
    "tiny": {"vocab_size": 2048, "coarse_hidden": 128, "response_hidden": 128, "num_layers": 4, "seed": 0},
    "sft_coarse": {"epochs": 4, "batch_size": 16, "lr": 2e-3, "warmup": 0.03, "lr_schedule": "cosine"},
    "segmenter_ft": {"steps": 2500, "batch_images": 8, "boxes_per_image": 3, "lr": 2e-3, "jitter": 0.15},
    "sft_response": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "warmup": 0.03, "lr_schedule": "cosine",
                     "afs_alpha": 0.1},
    "grpo": {"steps": 150, "prompts_per_step": 8, "micro_batch": 8, "num_generations": 4, "temperature": 1.0,
             "max_completion_length": 96, "beta": 0.01, "epsilon": 0.2, "lr": 5e-4, "afs_lr": 1e-4,
             "warmup": 0.05, "lr_schedule": "linear", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
             "segmenter": "model", "save_every": 50},
    "select": {"val_images": 50},
}

QUICK = {
    "synth": {"splits": "train=24,val=4"},
    "sft_coarse": {"epochs": 1},
    "segmenter_ft": {"steps": 3},
    "sft_response": {"epochs": 0.2},
    "grpo": {"steps": 2, "save_every": 0},
    "select": {"val_images": 2},
}


def recipe_config(scale: str = "full") -> dict:
    cfg = json.loads(json.dumps(TINY_SYNTH))
    if scale == "quick":
        for k, v in QUICK.items():
            cfg[k].update(v)
    return cfg


def _flags(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            if v:
                out.append(flag)
        else:
            out += [flag, str(v)]
    return out


class Recipe:
    def __init__(self, out: Path, model_out: Path | None, cfg: dict, resume: bool, ablation: str | None = None,
                 device: str = "cpu", workers: int = 1):
        self.out, self.model_out, self.cfg, self.resume = out, model_out, cfg, resume
        self.ablation, self.device, self.workers = ablation, device, workers
        self.times: dict[str, float] = {}
        self.commands: list[str] = []
        self.t0 = time.perf_counter()
        self.state_file = out / ("recipe.json" if not ablation else f"recipe_{ablation}.json")
        if resume and self.state_file.exists():
            prev = json.loads(self.state_file.read_text())
            self.times = prev.get("stage_seconds", {})

    def _save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"config": self.cfg, "stage_seconds": self.times,
                                               "total_seconds": sum(self.times.values()),
                                               "commands": self.commands}, indent=1))

    def stage(self, name: str, done: Path, argv: list[str] | None = None, fn=None):
        cmd = "python -m training " + " ".join(argv) if argv else f"({name})"
        self.commands.append(cmd)
        if self.resume and done.exists():
            print(f"[recipe] {name}: exists ({done}), skipped", flush=True)
            return
        print(f"\n[recipe] === {name} === {cmd}\n[recipe] elapsed so far {self._el()}", flush=True)
        t = time.perf_counter()
        if argv:
            from training.cli import main as cli_main

            rc = cli_main(argv)
            if rc:
                raise SystemExit(f"[recipe] stage {name} failed (exit {rc})")
        else:
            fn()
        self.times[name] = round(time.perf_counter() - t, 1)
        print(f"[recipe] {name} done in {self.times[name]:.0f} s (total {self._el()})", flush=True)
        self._save()

    def _el(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"

    def run(self) -> Path:
        c, o = self.cfg, self.out
        th = ["--threads", str(c["threads"])]
        dev = th + (["--device", self.device] if self.device != "cpu" else [])
        data, m0 = o / "data", o / "model0"
        self.stage("synth", data / "corpus.txt", ["synth", "--out", str(data), "--quiet", "--workers", str(self.workers),
                                                 *_flags(c["synth"])])

        def build_tiny():
            from earl_ros.model.tiny import build_tiny_model_dir

            extra = [ln for ln in (data / "corpus.txt").read_text().splitlines() if ln.strip()]
            build_tiny_model_dir(m0, extra_texts=extra, name="earl-tiny-synth", **c["tiny"])
        self.stage("tiny", m0 / "earl.yaml", fn=build_tiny)
        self.stage("sft-coarse", o / "coarse" / "earl.yaml",
                   ["sft-coarse", "--model", str(m0), "--data", str(data), "--out", str(o / "coarse"),
                    "--train-vision", "--quiet", *th, *_flags(c["sft_coarse"])])
        desc = o / "coarse" / "descriptors.safetensors"
        self.stage("descriptors", desc, ["descriptors", "--model", str(o / "coarse"), "--data", str(data),
                                         "--split", "train", "val", "--out", str(desc), "--quiet", *th])
        self.stage("segmenter-ft", o / "seg" / "earl.yaml",
                   ["segmenter-ft", "--model", str(o / "coarse"), "--data", str(data), "--out", str(o / "seg"),
                    *th, *_flags(c["segmenter_ft"])])
        if self.ablation == "no-descriptor":  # same data, same stages and steps, zero descriptors (AFS off)
            self.stage("sft-response-nodesc", o / "sft_nodesc" / "earl.yaml",
                       ["sft-response", "--model", str(o / "seg"), "--data", str(data), "--out", str(o / "sft_nodesc"),
                        "--no-descriptor", "--train-vision", "--quiet", *dev, *_flags(c["sft_response"])])
            self.stage("grpo-nodesc", o / "grpo_nodesc" / "final" / "earl.yaml",
                       ["grpo", "--model", str(o / "sft_nodesc"), "--data", str(data), "--out", str(o / "grpo_nodesc"),
                        "--no-descriptor", "--quiet", *dev, *_flags(c["grpo"])])
            print(f"[recipe] ablation finished: {json.dumps(self.times)}", flush=True)
            return o / "grpo_nodesc" / "final"
        self.stage("sft-response", o / "sft" / "earl.yaml",
                   ["sft-response", "--model", str(o / "seg"), "--data", str(data), "--out", str(o / "sft"),
                    "--descriptors", str(desc), "--train-vision", "--quiet", *dev, *_flags(c["sft_response"])])
        self.stage("grpo", o / "grpo" / "final" / "earl.yaml",
                   ["grpo", "--model", str(o / "sft"), "--data", str(data), "--out", str(o / "grpo"),
                    "--descriptors", str(desc), "--quiet", *dev, *_flags(c["grpo"])])
        # Model selection on the validation split (seed 0, never the held-out test seeds): export the
        # response stage (SFT warm-up or SFT + GRPO) with the higher val cIoU.
        sel_file = o / "selection.json"

        def select():
            from training.evaluate import evaluate

            scores = {}
            for name, d in (("sft", o / "sft"), ("grpo", o / "grpo" / "final")):
                r = evaluate(d, data, "val", image_limit=c["select"]["val_images"], progress=False)
                scores[name] = {"cIoU": r["cIoU"], "no_target_acc": r["no_target_acc"], "n": r["n"]}
                print(f"[recipe] val {name}: cIoU {100 * r['cIoU']:.2f} no-target {100 * r['no_target_acc']:.1f}%",
                      flush=True)
            best = max(scores, key=lambda k: (scores[k]["cIoU"], k == "grpo"))
            sel_file.write_text(json.dumps({"scores": scores, "selected": best}, indent=1))
        self.stage("select", sel_file, fn=select)
        if self.model_out is not None:
            def export():
                from training.export import export_model_dir

                best = json.loads(sel_file.read_text())["selected"]
                src = o / "sft" if best == "sft" else o / "grpo" / "final"
                export_model_dir(src, self.model_out, name="earl-tiny-synth",
                                 extra={"recipe": "python -m training recipe tiny-synth", "selected_stage": best,
                                        "stage_seconds": dict(self.times)})
            self.stage("export", Path("/nonexistent-always-run"), fn=export)
        total = sum(self.times.values())
        print(f"[recipe] finished: {json.dumps(self.times)} total {total:.0f} s", flush=True)
        return self.model_out or (o / "grpo" / "final")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training recipe",
                                 description="End-to-end training recipes (tiny-synth: the embedded default model).")
    ap.add_argument("name", choices=("tiny-synth", "tiny-synth-eval"),
                    help="tiny-synth: train + export; tiny-synth-eval: held-out eval, ablation table, model card")
    ap.add_argument("--config", help="YAML overriding parts of the recipe configuration, e.g. "
                                     "'grpo: {steps: 100}' (sections: " + ", ".join(TINY_SYNTH) + ")")
    ap.add_argument("--out", default="runs/tiny-synth", help="run dir (data, stages, logs)")
    ap.add_argument("--model-out", default="models/earl-tiny-synth", help="exported model dir ('' = no export)")
    ap.add_argument("--scale", choices=("full", "quick"), default="full", help="quick = smoke test")
    ap.add_argument("--resume", action="store_true", help="skip stages whose output exists")
    ap.add_argument("--ablation", choices=("no-descriptor",), default=None,
                    help="train the response stages of an ablation arm instead (same data, stages and steps; "
                         "shared stages are reused with --resume); nothing is exported")
    ap.add_argument("--device", default="cpu", help="device of the response stages (ablation runs on a GPU box)")
    ap.add_argument("--workers", type=int, default=1, help="processes drawing the synthetic images")
    args = ap.parse_args(argv)
    import os

    # Sleep instead of spinning in OpenMP barriers: on a shared 2-core machine a spinning trainer and
    # any other torch process slow each other down ~10x (must be set before torch starts its pool).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if args.name == "tiny-synth-eval":
        from training.report import run_report

        run_report(Path(args.out), Path(args.model_out))
        return 0
    cfg = recipe_config(args.scale)
    if args.config:
        import yaml

        over = yaml.safe_load(Path(args.config).read_text()) or {}
        for k, v in over.items():
            if k not in cfg:
                raise SystemExit(f"{args.config}: unknown recipe section {k!r} (known: {', '.join(cfg)})")
            cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    torch.set_num_threads(cfg["threads"])
    out = Path(args.out)
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    model_out = Path(args.model_out) if args.model_out and not args.ablation else None
    r = Recipe(out, model_out, cfg, args.resume, ablation=args.ablation, device=args.device, workers=args.workers)
    r.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
