"""`python -m training video-memory`: give a model dir's SAM 2 segmenter its video memory (issue 26).

transformers' Sam2VideoModel adds memory modules to SAM 2 (memory encoder, memory attention, object
pointers); published SAM 2 checkpoints come with them trained, the embedded segmenter does not. They
are trained here on synthetic clips with camera motion (training/data/synth_clips.py, split
`memory-train`; bench/tracking.py draws its clips from another split): each step conditions one
entity on its exact mask in the first frame and asks for it on the following frames from memory alone,
as tracking will. The image encoder stays frozen (tracking shares its one encoding per frame with the
segmenter); the prompt encoder and mask decoder train with the memory in the video model's own copy,
so the segmenter's box -> mask answers do not change.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.common import JsonlLogger, derive_model_dir, lr_lambda, manifest_paths, seed_everything, torch_threads
from training.progress import progress
from training.settings import VideoMemorySettings
from training.stage_checkpoint import StageCheckpoint
from training.tracking import tensorboard_dir

# The image encoder stays as it is (tracking shares its one encoding per frame with the segmenter). The
# decoder and prompt encoder train with the memory: a box-trained decoder has never segmented from
# memory alone, nor said whether its object is in view; the video model keeps its own copy of them.
FROZEN = ("shared_image_embedding", "vision_encoder", "no_memory_embedding")
MIN_AREA = 40  # pixels: an entity smaller than this on the first frame is not worth following


def _clip_sample(s: VideoMemorySettings, seed: int, split: str, n_frames: int):
    """(frames, the followed entity's masks) of one clip, or None when no entity is big enough."""
    from training.data.synth_clips import moving_clip

    rng = np.random.default_rng(seed)
    clip = moving_clip(seed, n_frames=n_frames, motion=float(rng.uniform(0.3, s.motion)), style=s.style, split=split)
    ids = [int(v) for v in np.unique(clip.labels[0]) if v and (clip.labels[0] == v).sum() >= MIN_AREA]
    if not ids:
        return None
    lid = ids[int(rng.integers(len(ids)))]
    return clip.frames, [lab == lid for lab in clip.labels]


def _lowres_target(mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.interpolate(m, size=hw, mode="area") >= 0.5).float()[0, 0]


def _follow(memory, frames, masks):
    """Run one clip through the video model: the first mask as memory, then the model on every later
    frame. Returns the low-res logits and object-score logits of frames 1.. (with gradients)."""
    feats = [memory.encode(f) for f in frames]
    mem = memory.begin(feats[0], masks[0])
    outs = []
    for f in feats[1:]:
        out = memory.track(mem, f)
        outs.append((out.pred_masks[0, 0], out.object_score_logits.reshape(-1)[0]))
    return outs


def _clip_loss(outs, masks):
    """Mean over frames of BCE + dice on the low-res mask (frames where the entity is in view), plus BCE
    on whether it is in view."""
    total, ious = 0.0, []
    for (logits, score), mask in zip(outs, masks[1:]):
        tgt = _lowres_target(mask, tuple(logits.shape))
        present = torch.tensor(float(tgt.sum() > 0))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * tgt).sum() + 1) / (p.sum() + tgt.sum() + 1)
        mask_loss = F.binary_cross_entropy_with_logits(logits.clamp(-30, 30), tgt) + dice if present else 0.0
        total = total + mask_loss + F.binary_cross_entropy_with_logits(score, present)
        pred = (logits > 0).float()
        union = ((pred + tgt) > 0).sum()
        ious.append(float((pred * tgt).sum() / union) if union else 1.0)
    return total / len(outs), float(np.mean(ious))


def _train(memory, s: VideoMemorySettings, resume: StageCheckpoint) -> list[float]:
    model = memory.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s.steps, s.warmup, "cosine"))
    start, extra = resume.restore({"video_memory": model}, opt, sched, {})
    log = JsonlLogger(Path(s.out) / "video_memory_log.jsonl", tensorboard=tensorboard_dir(Path(s.out), s.report_to),
                      resume_step=start or None)
    resume.start_clock()
    ious = list(extra.get("ious", []))
    for step in progress(range(start, s.steps), desc="video-memory", quiet=s.quiet, initial=start, total=s.steps):
        sample = _clip_sample(s, s.seed * 1_000_003 + step, "memory-train", s.clip_frames)
        if sample is None:
            continue
        opt.zero_grad(set_to_none=True)
        loss, iou = _clip_loss(_follow(memory, *sample), sample[1])
        loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        sched.step()
        ious.append(iou)
        if step % 10 == 0 or step == s.steps - 1:
            el = resume.elapsed()
            log.log({"stage": "video-memory", "step": step + 1, "steps": s.steps, "loss": float(loss.detach()),
                     "lowres_iou": float(np.mean(ious[-20:])), "grad_norm": gn, "lr": sched.get_last_lr()[0],
                     "elapsed_s": round(el, 1), "eta_s": round(el / (step + 1 - start) * (s.steps - step - 1), 1)})
        resume.maybe_save(step + 1, s.steps, {"ious": ious})
    log.close()
    return ious


def validate(memory, s: VideoMemorySettings) -> float:
    """Mean full-resolution mask IoU over frames 1.. of `val_clips` clips (split memory-val), served
    as tracking serves them (no gradients)."""
    memory.grad, vals = False, []
    for k in range(s.val_clips):
        sample = _clip_sample(s, 500_000 + k, "memory-val", s.val_frames)
        if sample is None:
            continue
        feats = [memory.encode(f) for f in sample[0]]
        mem = memory.begin(feats[0], sample[1][0])
        for f, gt in zip(feats[1:], sample[1][1:]):
            pred, _ = memory.step(mem, f)
            union = np.logical_or(pred, gt).sum()
            vals.append(float(np.logical_and(pred, gt).sum() / union) if union else 1.0)
    return float(np.mean(vals)) if vals else float("nan")


def _trainable_memory(s: VideoMemorySettings):
    """The model dir's SAM 2 segmenter with fresh memory modules, ready to train (another segmenter is
    refused by VideoMemory)."""
    from earl_ros.model.segmenter import Segmenter
    from earl_ros.model.video_memory import VideoMemory

    seg = Segmenter.from_pretrained(str(manifest_paths(s.model)["segmenter"]), device=s.device)
    memory = VideoMemory.from_segmenter(seg, grad=True)  # its own copy of every weight: training must not write into the segmenter's
    for name, p in memory.model.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    return memory


def video_memory(s: VideoMemorySettings) -> Path:
    seed_everything(s.seed)
    torch_threads(s.threads)
    memory = _trainable_memory(s)
    out = Path(s.out)
    resume = StageCheckpoint(out, "video-memory", s, s.resume_every)
    ious = _train(memory, s, resume)
    memory.model.eval()
    val_iou = validate(memory, s)
    vid_out = out / "sam_video"
    if vid_out.exists():
        shutil.rmtree(vid_out)
    memory.model.save_pretrained(str(vid_out), safe_serialization=True)
    final = float(np.mean(ious[-50:])) if ious else None
    derive_model_dir(s.model, out, segmenter={"video_memory": "sam_video"},
                     extra={"video_memory": {"steps": s.steps, "clip_frames": s.clip_frames, "final_lowres_iou": final,
                                             "val_iou": val_iou, "val_clips": s.val_clips}})
    resume.finish()
    print(json.dumps({"model_dir": str(out), "steps": s.steps, "final_lowres_iou": final, "val_iou": val_iou}))
    return out

