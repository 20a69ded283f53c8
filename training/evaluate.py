"""`python -m training eval`: run the full pipeline on a split and compute every metric of metrics.py.

Per image: stage 1 once (`EarlPipeline.describe`: description for the description METEOR/CIDEr and the
descriptor), then every query of the image through `EarlPipeline.answer` with that interaction, so
evaluation exercises exactly the inference path of the robot. Masks and IoUs use the entities the
pipeline grounded (entity + box + mask); the answer sentence for METEOR/CIDEr is rebuilt with
`answer_sentence` from the entity list of the parsed <answer> block (an answer without boxes still
counts as text), or the no-target sentence.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from training.metrics import EvalAccumulator, aggregate, score_sample
from training.settings import EvalSettings

TABLE_ROWS = [
    ("cIoU", "cIoU (paper's metric)"), ("gIoU", "gIoU"), ("sample_mIoU", "sample mIoU (public eval code)"),
    ("instance_mIoU", "instance mIoU (public eval code)"), ("no_target_acc", "no-target accuracy"),
    ("target_recall", "target recall"), ("parse_ok", "parseable outputs"), ("answer_METEOR", "answer METEOR"),
    ("answer_CIDEr", "answer CIDEr"), ("description_METEOR", "description METEOR"),
    ("description_CIDEr", "description CIDEr"),
]


def format_table(summary: dict) -> str:
    lines = ["| metric | value |", "|---|---|"]
    for key, label in TABLE_ROWS:
        if key in summary:
            v = summary[key]
            lines.append(f"| {label} | {v:.4f} |" if isinstance(v, float) else f"| {label} | {v} |")
    lines.append(f"| samples | {summary.get('n', 0)} |")
    return "\n".join(lines)


def evaluate(model_dir, data_root, split: str = "test", limit: int | None = None, image_limit: int | None = None,
             device: str = "cpu", segmenter: str = "model", progress: bool = True, no_descriptor: bool = False,
             box_refine: int | None = None, coordinates: str | None = None, one_by_one: bool = False) -> dict:
    """Scores a model dir on a split. An image's questions are answered in one batched generation
    (EarlPipeline.answer_many, the same greedy answers); one_by_one takes the node's path instead."""
    from earl_ros.model.pipeline import EarlPipeline
    from earl_ros.model.prompts import parse_response
    from training.data import IRGBench
    from training.data.irgbench import masks_to_boxes
    from training.progress import progress as progress_bar
    from training.rewards import box_masks

    pipe = EarlPipeline.from_dir(model_dir, device=device)
    if box_refine is not None:
        pipe.box_refine = box_refine
    if coordinates is not None:
        pipe.response.coordinates = coordinates
    ds = IRGBench(data_root, split, limit=limit, image_limit=image_limit)
    by_image: dict[str, list] = {}
    for s in ds.samples:
        by_image.setdefault(s.image_id, []).append(s)
    acc = EvalAccumulator()
    parse_ok, t0 = [], time.perf_counter()
    per_sample = []
    for iid, samples in progress_bar(by_image.items(), desc=f"eval[{split}]", quiet=not progress, unit="img"):
        img = ds.image(iid)
        inter = pipe.empty_interaction() if no_descriptor else pipe.describe(img)
        if not no_descriptor:
            acc.add_description(inter.text, ds.captions.get(iid, samples[0].caption))
        answers = ([pipe.answer(img, s.query, inter) for s in samples] if one_by_one
                   else pipe.answer_many(img, [s.query for s in samples], inter))
        for s, g in zip(samples, answers):
            masks = g.masks if segmenter == "model" else box_masks(g.boxes, img.shape[:2])
            gt_masks = s.masks() if s.entities else None
            acc.add(g.entities, masks, s.entities, gt_masks)
            p = parse_response(g.raw_text)
            text_entities = [] if p.no_target else (p.entities or [])
            acc.answer_hyp[-1] = _answer(text_entities, p)
            parse_ok.append(float(p.ok))
            per_sample.append({"image_id": iid, "query": s.query, "gt": s.entities, "pred": g.entities,
                               "status": g.parse_status, "iou": acc.scores[-1].giou,
                               "inter": acc.scores[-1].inter, "union": acc.scores[-1].union,
                               "gt_boxes": masks_to_boxes(gt_masks).tolist() if s.entities else [],
                               "pred_boxes": [[float(v) for v in b] for b in g.boxes]})
    out = acc.summary()
    out["parse_ok"] = float(np.mean(parse_ok)) if parse_ok else 0.0
    out["seconds"] = time.perf_counter() - t0
    out["model"], out["data"], out["split"] = str(model_dir), str(data_root), split
    out["segmenter"] = segmenter
    out["box_refine"] = pipe.box_refine
    out["coordinates"] = pipe.response.coordinates
    out["samples"] = per_sample
    return out


def _rescore(result: dict, model_dir, data_root, rounds) -> dict[int, list]:
    """Per-sample scores of an `evaluate` result with its masks redrawn at each box_refine count."""
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.segmenter import Segmenter
    from training.data import IRGBench

    ds = IRGBench(data_root, result["split"])
    samples = {}
    for s in ds.samples:
        samples.setdefault((s.image_id, s.query), []).append(s)
    seg = Segmenter.from_pretrained(Manifest.load(model_dir).segmenter.path)
    scores: dict[int, list] = {k: [] for k in rounds}
    for rec in result["samples"]:
        s = samples[(rec["image_id"], rec["query"])].pop(0)  # the same order evaluate() went through
        img = ds.image(rec["image_id"])
        gt_masks = s.masks() if s.entities else None
        boxes = np.asarray(rec["pred_boxes"], np.float32).reshape(-1, 4)
        for k in rounds:
            masks = seg.segment(img, boxes, key=rec["image_id"], refine=k)[0] if len(boxes) else None
            scores[k].append(score_sample(rec["pred"], masks, s.entities, gt_masks))
    return scores


def refine_sweep(result: dict, model_dir, data_root, rounds=(0, 1, 2, 3)) -> dict[int, dict]:
    """IoU metrics of an `evaluate` result at each segmenter.box_refine count.

    Refinement changes only the masks, so the answers and boxes of one evaluation are reused and only
    the segmenter runs again: choosing box_refine on the validation split costs seconds, not an eval.
    """
    return {k: aggregate(v) for k, v in _rescore(result, model_dir, data_root, rounds).items()}


def with_box_refine(result: dict, model_dir, data_root, box_refine: int) -> dict:
    """The `evaluate` result `evaluate(..., box_refine=box_refine)` would give, from one at another
    count (answers, boxes and text metrics are the same; IoU metrics and per-sample IoUs are redrawn)."""
    scores = _rescore(result, model_dir, data_root, (box_refine,))[box_refine]
    out = {**result, **aggregate(scores), "box_refine": box_refine}
    out["samples"] = [{**rec, "iou": sc.giou, "inter": sc.inter, "union": sc.union}
                      for rec, sc in zip(result["samples"], scores)]
    return out


def _answer(entities, parsed) -> str:
    from earl_ros.model.prompts import NO_TARGET_ANSWER, answer_sentence

    if parsed.no_target:
        return NO_TARGET_ANSWER
    return answer_sentence(entities) if entities else ""


def run_eval(s: EvalSettings) -> dict:
    res = evaluate(s.model, s.data, s.split, limit=s.limit, image_limit=s.image_limit, device=s.device,
                   segmenter=s.segmenter, progress=not s.quiet, no_descriptor=s.no_descriptor,
                   box_refine=s.box_refine, coordinates=s.coordinates, one_by_one=s.one_by_one)
    print(format_table(res))
    if s.out:
        Path(s.out).parent.mkdir(parents=True, exist_ok=True)
        Path(s.out).write_text(json.dumps(res, indent=1))
    return res
