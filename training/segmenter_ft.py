"""`python -m training segmenter-ft` / `segmenter-eval`: train the promptable segmenter box -> mask, and score it alone.

The tiny SAM / SAM 2 of `earl_ros.model.tiny` has untrained weights; this command trains it (all
weights: image encoder, prompt encoder, mask decoder) on the ground-truth masks of a dataset in the
Ego-IRGBench layout, through exactly the inference code path (`Segmenter.preprocess_image`, the
`build_prompt_mask_decoder` module the torch backend runs, the same box scaling). SAM 2 is the better
student here: its mask decoder also reads the backbone's stride-4 and stride-8 features, while SAM's
sees only the stride-16 embedding; on the synthetic masks (600 steps, same data) the tiny SAM 2
reached 51.0 cIoU given ground-truth boxes vs 49.1 for the tiny SAM after 2500 steps.

Training pairs: every (image, entity) of the split (hands and objects with a non-empty mask). The
prompt box is the entity's GT box, jittered (each side moves by up to `--jitter` times the box size,
uniformly at random; the first `--clean-frac` of each batch's boxes are left exact) so the segmenter
learns to segment the hand/object a rough VLM box points at: at inference the response model's boxes
are rough, and the masks (what cIoU measures) come from here.

Loss on the low-resolution logits (64 x 64 over the 256 x 256 input, SAM's padded): BCE + soft Dice
against the GT mask resized into the same padded frame; the IoU head is trained to predict the
mask IoU (MSE), as SAM does. Output: a model dir whose earl.yaml points its segmenter at OUT/sam.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from training.common import JsonlLogger, derive_model_dir, lr_lambda, manifest_paths, seed_everything, torch_threads
from training.data import IRGBench
from training.data.irgbench import load_label_map


def add_segmenter_ft_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", help="output model dir")
    ap.add_argument("--split", default="train")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-images", type=int, default=8, help="images per step")
    ap.add_argument("--boxes-per-image", type=int, default=3, help="entity boxes per image per step (at most)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=float, default=0.03)
    ap.add_argument("--jitter", type=float, default=0.15, help="max side shift as a fraction of the box size")
    ap.add_argument("--clean-frac", type=float, default=0.25, help="fraction of boxes given without jitter")
    ap.add_argument("--seed", type=int, default=0)


def _instances(ds: IRGBench):
    """(image_id, label id) for every distinct entity mask of the split."""
    seen, out = set(), []
    for s in ds.samples:
        if s.no_target:
            continue
        for ent, lid in zip(s.entities, s.mask_ids):
            if (s.image_id, lid) not in seen:
                seen.add((s.image_id, lid))
                out.append((s.image_id, int(lid)))
    return out


def _box_of(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def _jitter(box, hw, rng, amount: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = rng.uniform(-amount, amount, 4) * np.array([w, h, w, h])
    b = np.array([x1 + d[0], y1 + d[1], x2 + d[2], y2 + d[3]])
    H, W = hw
    b[[0, 2]] = np.clip(b[[0, 2]], 0, W)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, H)
    if b[2] - b[0] < 2 or b[3] - b[1] < 2:
        return np.asarray(box, np.float64)
    return b


def _target_lowres(mask: np.ndarray, seg, low_hw) -> torch.Tensor:
    """GT mask (original px) -> float [h, w] in the segmenter's low-res logit frame."""
    from PIL import Image

    pp = seg.preprocess
    H, W = mask.shape
    nh, nw = seg.model_input_hw((H, W))
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((nw, nh), Image.BILINEAR), np.float32) / 255.0
    if pp["mode"] == "longest_edge" and pp["pad"] is not None:
        ph, pw = pp["pad"]
        full = np.zeros((ph, pw), np.float32)
        full[:nh, :nw] = m
        m = full
    lh, lw = low_hw
    t = torch.from_numpy(m)[None, None]
    t = torch.nn.functional.interpolate(t, size=(lh, lw), mode="area")
    return t[0, 0]


def _image_features(model, kind: str, px) -> tuple:
    """(image embedding, high-resolution maps the decoder also takes: none for SAM, SAM 2's s0, s1)."""
    out = model.get_image_embeddings(px)
    if kind == "sam":
        return out, ()
    return out[-1], (out[0], out[1])  # SAM 2: [s0 (4x), s1 (2x), last]


def segmenter_ft(args) -> Path:
    from earl_ros.model.segmenter import Segmenter, build_prompt_mask_decoder

    seed_everything(args.seed)
    torch_threads(args.threads)
    paths = manifest_paths(args.model)
    src = Path(paths["segmenter"])
    seg = Segmenter.from_pretrained(str(src), device=args.device)
    model = seg.model
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    dec = build_prompt_mask_decoder(model, seg.kind)
    ds = IRGBench(args.data, args.split, image_limit=args.limit)
    inst = _instances(ds)
    by_img: dict[str, list[int]] = {}
    for iid, lid in inst:
        by_img.setdefault(iid, []).append(lid)
    ids = sorted(by_img)
    if not ids:
        raise SystemExit(f"no entity masks in {args.data} split {args.split}")
    rng = np.random.default_rng(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.steps, args.warmup, "cosine"))
    out = Path(args.out)
    log = JsonlLogger(out / "segmenter_ft_log.jsonl")
    label_cache: dict[str, np.ndarray] = {}
    t_start = time.perf_counter()
    ious = []
    for step in range(args.steps):
        chosen = rng.choice(len(ids), size=min(args.batch_images, len(ids)), replace=False)
        n_boxes, step_iou = 0, []
        opt.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for k in chosen:
            iid = ids[int(k)]
            img = ds.image(iid)
            if iid not in label_cache:
                label_cache[iid] = load_label_map(ds.root, iid)
            lab = label_cache[iid]
            lids = by_img[iid]
            lids = [lids[i] for i in rng.permutation(len(lids))[:args.boxes_per_image]]
            px, _ = seg.preprocess_image(img)
            emb, high_res = _image_features(model, seg.kind, px)
            boxes, targets = [], []
            for lid in lids:
                m = lab == lid
                b = _box_of(m)
                if b is None:
                    continue
                if rng.random() >= args.clean_frac:
                    b = _jitter(b, m.shape, rng, args.jitter)
                boxes.append(b)
                targets.append(m)
            if not boxes:
                continue
            bm = torch.as_tensor(seg.boxes_to_model(np.stack(boxes), img.shape[:2]), dtype=torch.float32)
            logits, iou_pred = dec(emb, bm, *high_res)
            tgt = torch.stack([_target_lowres(m, seg, logits.shape[-2:]) for m in targets])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, tgt)
            prob = torch.sigmoid(logits)
            inter = (prob * tgt).sum((1, 2))
            dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + tgt.sum((1, 2)) + 1)
            with torch.no_grad():
                hard = (logits > 0).float()
                hb = (tgt > 0.5).float()
                true_iou = (hard * hb).sum((1, 2)) / ((hard + hb).clamp(max=1).sum((1, 2)) + 1e-6)
            iou_loss = torch.nn.functional.mse_loss(iou_pred, true_iou)
            loss = bce + dice.mean() + 0.1 * iou_loss
            total = total + loss * len(boxes)
            n_boxes += len(boxes)
            step_iou.extend(true_iou.tolist())
        if n_boxes == 0:
            continue
        (total / n_boxes).backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ious.append(float(np.mean(step_iou)))
        if step % 10 == 0 or step == args.steps - 1:
            el = time.perf_counter() - t_start
            log.log({"stage": "segmenter-ft", "step": step + 1, "steps": args.steps,
                     "loss": float(total.detach()) / n_boxes, "lowres_iou": float(np.mean(ious[-10:])),
                     "grad_norm": float(gn), "lr": sched.get_last_lr()[0], "elapsed_s": round(el, 1),
                     "eta_s": round(el / (step + 1) * (args.steps - step - 1), 1)})
    model.eval()
    sam_out = out / "sam"
    if sam_out.exists():
        shutil.rmtree(sam_out)
    shutil.copytree(src, sam_out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx"))
    model.save_pretrained(str(sam_out), safe_serialization=True)
    derive_model_dir(args.model, out, extra={"segmenter_ft": {"data": str(args.data), "split": args.split,
                                                              "steps": args.steps, "final_lowres_iou":
                                                                  float(np.mean(ious[-20:])) if ious else None}})
    _point_segmenter(out, "sam")
    print(json.dumps({"model_dir": str(out), "steps": args.steps, "instances": len(inst),
                      "final_lowres_iou": float(np.mean(ious[-20:])) if ious else None}))
    return out


def _point_segmenter(model_dir: Path, rel: str) -> None:
    from earl_ros.model.manifest import write_manifest
    from training.common import read_manifest_raw

    raw = read_manifest_raw(model_dir)
    raw["segmenter"] = {**raw["segmenter"], "path": rel, "decoder_onnx": None}
    write_manifest(model_dir, raw)


def add_segmenter_eval_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", help="write the metrics as JSON")


def segmenter_eval(args) -> dict:
    """Box -> mask quality alone: the model dir's segmenter prompted with the ground-truth boxes.

    This is the ceiling the segmenter puts on `eval`'s cIoU (perfect names and boxes). The filled GT
    boxes are scored beside it: a segmenter that does not beat them adds nothing over the box.
    """
    from earl_ros.model.segmenter import Segmenter

    torch_threads(args.threads)
    paths = manifest_paths(args.model)
    seg = Segmenter.from_pretrained(str(paths["segmenter"]), device=args.device)
    ds = IRGBench(args.data, args.split, image_limit=args.limit)
    by_img: dict[str, list[int]] = {}
    for iid, lid in _instances(ds):
        by_img.setdefault(iid, []).append(lid)
    acc = {"segmenter": [0, 0, []], "filled_box": [0, 0, []]}  # cumulative I, U, per-instance IoUs
    for iid in sorted(by_img):
        img = ds.image(iid)
        lab = load_label_map(ds.root, iid)
        gts = [lab == lid for lid in by_img[iid]]
        boxes = np.stack([_box_of(m) for m in gts])
        masks, _ = seg.segment(img, boxes, key=iid)
        for k, gt in enumerate(gts):
            x1, y1, x2, y2 = boxes[k].astype(int)
            filled = np.zeros_like(gt)
            filled[y1:y2, x1:x2] = True
            for name, pred in (("segmenter", masks[k].astype(bool)), ("filled_box", filled)):
                i, u = int((pred & gt).sum()), int((pred | gt).sum())
                acc[name][0] += i
                acc[name][1] += u
                acc[name][2].append(i / u if u else 1.0)
    res = {"model": str(args.model), "data": str(args.data), "split": args.split,
           "instances": len(acc["segmenter"][2])}
    for name, (i, u, per) in acc.items():
        res[f"{name}_cIoU"] = i / u if u else 0.0
        res[f"{name}_mIoU"] = float(np.mean(per)) if per else 0.0
    print(json.dumps(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return res
