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

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from training.common import JsonlLogger, derive_model_dir, lr_lambda, manifest_paths, seed_everything, torch_threads
from training.data import IRGBench
from training.data.irgbench import load_label_map
from training.errors import TrainingError
from training.progress import progress
from training.settings import SegmenterEvalSettings, SegmenterFtSettings
from training.stage_checkpoint import StageCheckpoint
from training.tracking import tensorboard_dir


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


def _entity_masks_by_image(ds: IRGBench) -> dict[str, list[int]]:
    """Label ids of every entity mask of the split, by image id."""
    by_img: dict[str, list[int]] = {}
    for iid, lid in _instances(ds):
        by_img.setdefault(iid, []).append(lid)
    return by_img


def _image_loss(seg, model, dec, img, lab, lids, rng, s: SegmenterFtSettings):
    """Summed box -> mask loss of one image's prompts (jittered GT boxes), its box count and the
    low-resolution IoUs; (None, 0, []) when none of the chosen entities has a mask."""
    px, _ = seg.preprocess_image(img)
    emb, high_res = _image_features(model, seg.kind, px)
    boxes, targets = [], []
    for lid in lids:
        m = lab == lid
        b = _box_of(m)
        if b is None:
            continue
        if rng.random() >= s.clean_frac:
            b = _jitter(b, m.shape, rng, s.jitter)
        boxes.append(b)
        targets.append(m)
    if not boxes:
        return None, 0, []
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
    return loss * len(boxes), len(boxes), true_iou.tolist()


class _SegmenterBatches:
    """The training images and their labels (label maps cached: every image comes back many times)."""

    def __init__(self, ds: IRGBench, by_img: dict[str, list[int]]):
        self.ds, self.by_img, self.ids = ds, by_img, sorted(by_img)
        self.labels: dict[str, np.ndarray] = {}

    def image(self, k: int):
        """(image, label map, its entity label ids) of image k of the sorted ids."""
        iid = self.ids[k]
        img = self.ds.image(iid)
        if iid not in self.labels:
            self.labels[iid] = load_label_map(self.ds.root, iid)
        return img, self.labels[iid], self.by_img[iid]


def _train_segmenter(seg, model, dec, data: _SegmenterBatches, s: SegmenterFtSettings,
                     resume: StageCheckpoint) -> list[float]:
    """The optimisation loop; returns the mean low-resolution IoU of each step."""
    rng = np.random.default_rng(s.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s.steps, s.warmup, "cosine"))
    start, extra = resume.restore({"segmenter": model}, opt, sched, {"batches": rng})
    out = Path(s.out)
    log = JsonlLogger(out / "segmenter_ft_log.jsonl", tensorboard=tensorboard_dir(out, s.report_to),
                      resume_step=start or None)
    resume.start_clock()
    ious = list(extra.get("ious", []))
    for step in progress(range(start, s.steps), desc="segmenter-ft", quiet=s.quiet, initial=start, total=s.steps):
        step_iou, gn, mean_loss = _segmenter_step(seg, model, dec, data, s, rng, opt, params)
        if step_iou is None:
            continue
        sched.step()
        ious.append(step_iou)
        if step % 10 == 0 or step == s.steps - 1:
            el = resume.elapsed()
            log.log({"stage": "segmenter-ft", "step": step + 1, "steps": s.steps,
                     "loss": mean_loss, "lowres_iou": float(np.mean(ious[-10:])),
                     "grad_norm": gn, "lr": sched.get_last_lr()[0], "elapsed_s": round(el, 1),
                     "eta_s": round(el / (step + 1) * (s.steps - step - 1), 1)})
        resume.maybe_save(step + 1, s.steps, {"ious": ious})
    log.close()
    return ious


def _segmenter_step(seg, model, dec, data: _SegmenterBatches, s: SegmenterFtSettings, rng, opt, params):
    """One optimiser step on a random batch: (its mean IoU, grad norm, mean loss), or Nones when no
    image of the batch had a usable box."""
    chosen = rng.choice(len(data.ids), size=min(s.batch_images, len(data.ids)), replace=False)
    n_boxes, step_iou = 0, []
    opt.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for k in chosen:
        img, lab, lids = data.image(int(k))
        lids = [lids[i] for i in rng.permutation(len(lids))[:s.boxes_per_image]]
        loss, n, iou = _image_loss(seg, model, dec, img, lab, lids, rng, s)
        if loss is None:
            continue
        total = total + loss
        n_boxes += n
        step_iou.extend(iou)
    if n_boxes == 0:
        return None, None, None
    (total / n_boxes).backward()
    gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return float(np.mean(step_iou)), float(gn), float(total.detach()) / n_boxes


def segmenter_ft(s: SegmenterFtSettings) -> Path:
    from earl_ros.model.segmenter import Segmenter, build_prompt_mask_decoder

    seed_everything(s.seed)
    torch_threads(s.threads)
    paths = manifest_paths(s.model)
    src = Path(paths["segmenter"])
    seg = Segmenter.from_pretrained(str(src), device=s.device)
    model = seg.model
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    dec = build_prompt_mask_decoder(model, seg.kind)
    ds = IRGBench(s.data, s.split, image_limit=s.limit)
    by_img = _entity_masks_by_image(ds)
    if not by_img:
        raise TrainingError(f"no entity masks in {s.data} split {s.split}")
    out = Path(s.out)
    resume = StageCheckpoint(out, "segmenter-ft", s, s.resume_every)
    ious = _train_segmenter(seg, model, dec, _SegmenterBatches(ds, by_img), s, resume)
    model.eval()
    sam_out = out / "sam"
    if sam_out.exists():
        shutil.rmtree(sam_out)
    shutil.copytree(src, sam_out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx"))
    model.save_pretrained(str(sam_out), safe_serialization=True)
    final_iou = float(np.mean(ious[-20:])) if ious else None
    derive_model_dir(s.model, out, segmenter={"path": "sam", "decoder_onnx": None},
                     extra={"segmenter_ft": {"data": str(s.data), "split": s.split, "steps": s.steps,
                                             "final_lowres_iou": final_iou}})
    resume.finish()
    print(json.dumps({"model_dir": str(out), "steps": s.steps, "instances": sum(map(len, by_img.values())),
                      "final_lowres_iou": final_iou}))
    return out


def segmenter_eval(s: SegmenterEvalSettings) -> dict:
    """Box -> mask quality alone: the model dir's segmenter prompted with the ground-truth boxes.

    This is the ceiling the segmenter puts on `eval`'s cIoU (perfect names and boxes). The filled GT
    boxes are scored beside it: a segmenter that does not beat them adds nothing over the box.
    In code: `segmenter_eval(SegmenterEvalSettings(model=DIR, data=ROOT, split="val"))`.
    """
    from earl_ros.model.segmenter import Segmenter

    torch_threads(s.threads)
    paths = manifest_paths(s.model)
    seg = Segmenter.from_pretrained(str(paths["segmenter"]), device=s.device)
    ds = IRGBench(s.data, s.split, image_limit=s.limit)
    by_img = _entity_masks_by_image(ds)
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
    res = {"model": str(s.model), "data": str(s.data), "split": s.split,
           "instances": len(acc["segmenter"][2])}
    for name, (i, u, per) in acc.items():
        res[f"{name}_cIoU"] = i / u if u else 0.0
        res[f"{name}_mIoU"] = float(np.mean(per)) if per else 0.0
    print(json.dumps(res))
    if s.out:
        Path(s.out).parent.mkdir(parents=True, exist_ok=True)
        Path(s.out).write_text(json.dumps(res, indent=1) + "\n")
    return res
