"""Validation cIoU along the GRPO stage: the SFT start (step 0), each saved checkpoint and the end.

GRPO's own log says how the rewards moved on the training prompts; whether the model got better at
the task is the validation score, so the recipe scores the stage's evaluation points on `val` (the
split decisions are made on) and writes them as GRPO's `val_log.jsonl`, mirrored to its TensorBoard
dir, where `training plot` and the model card's curves pick them up. Step 0 and the end reuse the
`select` stage's scores of the same decoding (box_refine 0), so only the checkpoints cost an eval.
"""
from __future__ import annotations

import json
from pathlib import Path

from training.common import JsonlLogger
from training.layout import RunLayout
from training.tracking import tensorboard_dir


def checkpoint_steps(grpo_dir: Path) -> dict[int, Path]:
    """step -> checkpoint dir of every `checkpoint-N` GRPO saved (the final model is not one)."""
    found = {}
    for ck in Path(grpo_dir).glob("checkpoint-*"):
        step = ck.name.rpartition("-")[2]
        if step.isdigit() and (ck / "earl.yaml").exists():
            found[int(step)] = ck
    return dict(sorted(found.items()))


def grpo_val_curve(layout: RunLayout, val_images: int, steps: int, report_to: str = "auto") -> Path:
    """Write layout.grpo/val_log.jsonl from selection.json and fresh `val` evals of the checkpoints."""
    from training.evaluate import evaluate

    sel = json.loads(layout.selection.read_text())
    mode = sel["coordinates"]
    at_zero = sel["coordinates_val_cIoU"]
    points = {0: (at_zero["sft"][mode], sel["scores"]["sft"]["no_target_acc"])}
    for step, ck in checkpoint_steps(layout.grpo).items():
        r = evaluate(ck, layout.data, "val", image_limit=val_images, progress=False, box_refine=0, coordinates=mode)
        points[step] = (r["cIoU"], r["no_target_acc"])
        print(f"[recipe] val checkpoint-{step} coordinates {mode}: cIoU {100 * r['cIoU']:.2f}", flush=True)
    points[steps] = (at_zero["grpo"][mode], sel["scores"]["grpo"]["no_target_acc"])
    out = layout.grpo / "val_log.jsonl"
    log = JsonlLogger(out, echo=False, tensorboard=tensorboard_dir(layout.grpo, report_to))
    for step, (ciou, no_target) in sorted(points.items()):
        log.log({"step": step, "val/cIoU": ciou, "val/no_target_acc": no_target, "coordinates": mode,
                 "box_refine": 0, "val_images": val_images})
    log.close()
    return out
