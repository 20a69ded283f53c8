"""`python -m training vision-pretrain`: give a from-scratch vision tower something to see with.

The real EARL starts from Qwen2.5-VL, whose vision encoder is pretrained. A tiny model built by
`earl_ros.model.tiny` starts from random weights, and caption / answer SFT alone does not teach its
vision tower: on held-out frames the first embedded model's coarse model had nearly the same caption
loss with the right image as with another frame's (0.420 vs 0.444 per token, `python -m
training.report image-reliance`), i.e. it described the language prior, not the frame; with this
stage the gap is ten times larger (0.371 vs 0.608). This stage is the tiny model's stand-in for that pretraining: dense
supervision of the merged vision tokens (what the language model reads) on freshly rendered
synthetic scenes, predicting for each token's 28 x 28 px cell

  - what is there: background, left hand, right hand, or one of the object categories;
  - its colour (the synthetic palette, for the description's colour words);
  - its role: hand holding / touching / free, object held / touched / lying (the interaction).

Targets are the area fractions of each class in the cell (soft cross-entropy), read from the
renderer's label map and scene graph, so nothing is annotated by hand. Scenes are drawn on the fly
from seed `--seed` and split name "vision" (disjoint from the benchmark splits' generators, so the
held-out test seeds stay unseen). The trained tower replaces the vision tower of the model dir's
coarse and response models (they share its shape); the heads are thrown away.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from training.common import JsonlLogger, lr_lambda, seed_everything, torch_threads
from training.data.synth import CATEGORIES, COLOURS, SynthConfig, scene_rng, render_scene
from training.errors import TrainingError
from training.progress import progress
from training.settings import VisionPretrainSettings
from training.stage_checkpoint import StageCheckpoint
from training.tracking import tensorboard_dir

CLASSES = ("background", "left hand", "right hand", *CATEGORIES)
COLOUR_NAMES = ("none", *COLOURS)
ROLES = ("background", "hand holding", "hand touching", "hand free", "object held", "object touched",
         "object lying")
_HAND_ROLE = {"held": 1, "touched": 2, "free": 3}
_OBJ_ROLE = {"held": 4, "touched": 5}


def scene_targets(lab: np.ndarray, scene: dict) -> np.ndarray:
    """Per-pixel class, colour and role indices, int64 [3, H, W]."""
    cls = np.zeros(lab.shape, np.int64)
    col = np.zeros(lab.shape, np.int64)
    role = np.zeros(lab.shape, np.int64)
    state_of = {h.obj.iid: h.state for h in scene["hands"] if h.obj is not None}
    for o in scene["objects"]:
        m = lab == o.iid
        cls[m] = CLASSES.index(o.category)
        col[m] = COLOUR_NAMES.index(o.colour) if o.colour in COLOUR_NAMES else 0
        role[m] = _OBJ_ROLE.get(state_of.get(o.iid, ""), 6)
    for h in scene["hands"]:
        m = lab == h.iid
        cls[m] = CLASSES.index(f"{h.side} hand")
        role[m] = _HAND_ROLE[h.state]
    return np.stack([cls, col, role])


def _soft(idx: torch.Tensor, n: int, hw: tuple[int, int]) -> torch.Tensor:
    """Pixel indices [H, W] -> area fractions per merged-token cell [h*w, n] (raster order)."""
    onehot = torch.nn.functional.one_hot(idx, n).permute(2, 0, 1).float()[None]  # [1, n, H, W]
    cells = torch.nn.functional.interpolate(onehot, size=hw, mode="area")[0]  # [n, h, w]
    return cells.flatten(1).T


class TokenHeads(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.cls = torch.nn.Linear(dim, len(CLASSES))
        self.col = torch.nn.Linear(dim, len(COLOUR_NAMES))
        self.role = torch.nn.Linear(dim, len(ROLES))

    def forward(self, x):
        return self.cls(x), self.col(x), self.role(x)


def _merged_features(visual, pixel_values, grid_thw) -> torch.Tensor:
    out = visual(pixel_values, grid_thw=grid_thw)
    return getattr(out, "pooler_output", out)  # [sum of merged tokens, D], raster order per image


class _Batcher:
    """Renders scenes and turns them into (pixel_values, grid_thw, soft targets)."""

    def __init__(self, processor, seed: int, style: str, size: str, merge: int, split: str):
        w, _, h = size.lower().partition("x")
        # drawn no larger than the processor keeps: its resize would throw the extra pixels away
        self.cfg = SynthConfig(width=int(w), height=int(h), style=style,
                               max_pixels=processor.image_processor.size.longest_edge)
        self.proc, self.seed, self.merge, self.split = processor, seed, merge, split
        self.next_index = 0

    def batch(self, n: int):
        imgs, tgts = [], []
        for _ in range(n):
            rgb, lab, _, scene = render_scene(scene_rng(self.seed, self.cfg.style, self.split, self.next_index),
                                              self.cfg)
            self.next_index += 1
            imgs.append(rgb)
            tgts.append(torch.from_numpy(scene_targets(lab, scene)))
        enc = self.proc.image_processor(images=imgs, return_tensors="pt")
        thw = enc["image_grid_thw"]
        soft = [[], [], []]
        for t, (_, gh, gw) in zip(tgts, thw.tolist()):
            hw = (gh // self.merge, gw // self.merge)
            for k, n in enumerate((len(CLASSES), len(COLOUR_NAMES), len(ROLES))):
                soft[k].append(_soft(t[k], n, hw))
        return enc["pixel_values"], thw, [torch.cat(s) for s in soft]


def _losses(heads, feats, soft):
    out = heads(feats)
    losses = [-(s * torch.log_softmax(o, -1)).sum(-1).mean() for o, s in zip(out, soft)]
    return losses, out


def token_accuracies(out, soft) -> dict:
    """Accuracy of head outputs against each cell's majority label: `*_acc` over all cells, `*_fg_acc`
    over foreground cells, `object_class_acc` / `object_role_acc` over object cells, `hand_role_acc`
    over hand cells (None where a split has no such cell)."""

    def acc(pred, target, sel):
        return float((pred[sel] == target[sel]).float().mean()) if bool(sel.any()) else None

    res = {}
    for name, o, s in zip(("class", "colour", "role"), out, soft):
        target, pred = s.argmax(-1), o.argmax(-1)
        res[f"{name}_acc"] = acc(pred, target, torch.ones_like(target, dtype=torch.bool))
        res[f"{name}_fg_acc"] = acc(pred, target, target != 0)
        if name == "class":
            res["object_class_acc"] = acc(pred, target, target >= CLASSES.index(CATEGORIES[0]))
        if name == "role":
            res["object_role_acc"] = acc(pred, target, target >= ROLES.index("object held"))
            res["hand_role_acc"] = acc(pred, target, (target >= 1) & (target < ROLES.index("object held")))
    return res


@torch.no_grad()
def _score(visual, heads, batcher: _Batcher, n_images: int) -> dict:
    """token_accuracies of the pretraining heads on fresh scenes."""
    visual.eval()
    px, thw, soft = batcher.batch(n_images)
    _, out = _losses(heads, _merged_features(visual, px, thw), soft)
    visual.train()
    return token_accuracies(out, soft)


def linear_probe(train_feats: torch.Tensor, train_soft: list[torch.Tensor], val_feats: torch.Tensor,
                 val_soft: list[torch.Tensor], steps: int = 600, lr: float = 1e-2, seed: int = 0) -> dict:
    """Fit fresh linear heads on fixed token features and score them (token_accuracies) on other scenes.

    Answers "is the information still in the tokens the language model reads?" for a tower that
    later stages trained on (their own heads are gone).
    """
    torch.manual_seed(seed)
    heads = TokenHeads(train_feats.shape[-1])
    opt = torch.optim.Adam(heads.parameters(), lr=lr)
    for _ in range(steps):
        losses, _ = _losses(heads, train_feats, train_soft)
        opt.zero_grad(set_to_none=True)
        sum(losses).backward()
        opt.step()
    with torch.no_grad():
        _, out = _losses(heads, val_feats, val_soft)
    return token_accuracies(out, val_soft)


@torch.no_grad()
def tower_features(visual, batcher: _Batcher, n_images: int, batch: int = 16):
    """Merged token features [N, D] and soft targets of n_images fresh scenes (tower in eval mode)."""
    visual.eval()
    feats, soft = [], [[], [], []]
    while batcher.next_index < n_images:
        px, thw, s = batcher.batch(min(batch, n_images - batcher.next_index))
        feats.append(_merged_features(visual, px, thw))
        for k in range(3):
            soft[k].append(s[k])
    return torch.cat(feats), [torch.cat(x) for x in soft]


def probe_model(model_dir, part: str = "coarse", train_images: int = 320, val_images: int = 64,
                steps: int = 600, style: str = "default", size: str = "256x192", seed: int = 0) -> dict:
    """`linear_probe` of the `part` ("coarse" / "response") vision tower of an EARL model dir.

    A LoRA adapter in the dir is ignored: the project's adapters target the language model only.
    """
    from earl_ros.model.vlm import load_vlm
    from earl_ros.model.vlm_processing import load_processor
    from training.common import manifest_paths

    paths = manifest_paths(model_dir)
    model = load_vlm(paths[part])
    proc = load_processor(paths[part])
    merge = int(model.config.vision_config.spatial_merge_size)
    visual = model.model.visual
    tr = tower_features(visual, _Batcher(proc, seed, style, size, merge, "vision"), train_images)
    va = tower_features(visual, _Batcher(proc, seed, style, size, merge, "vision-val"), val_images)
    res = linear_probe(*tr, *va, steps=steps, seed=seed)
    return {"model": str(model_dir), "part": part, "train_images": train_images, "val_images": val_images,
            **res}


def vision_pretrain(s: VisionPretrainSettings) -> Path:
    from earl_ros.model.vlm import load_vlm
    from earl_ros.model.vlm_processing import load_processor
    from training.common import derive_model_dir, manifest_paths

    seed_everything(s.seed)
    torch_threads(s.threads)
    paths = manifest_paths(s.model)
    if paths["coarse_lora"] or paths["response_lora"]:
        raise TrainingError("vision-pretrain expects a model dir without LoRA adapters (run it before SFT)")
    out = Path(s.out)
    coarse = load_vlm(paths["coarse"])
    response = load_vlm(paths["response"])
    visual = coarse.model.visual
    shapes = {k: v.shape for k, v in visual.state_dict().items()}
    if shapes != {k: v.shape for k, v in response.model.visual.state_dict().items()}:
        raise TrainingError("vision-pretrain: the coarse and response vision towers differ in shape; "
                            "build the model dir with equal --coarse-hidden and --response-hidden")
    proc = load_processor(paths["coarse"])
    merge = int(coarse.config.vision_config.spatial_merge_size)
    dim = int(coarse.config.vision_config.out_hidden_size)
    heads = TokenHeads(dim)
    visual.train()
    params = list(visual.parameters()) + list(heads.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s.steps, s.warmup, "cosine"))
    train = _Batcher(proc, s.seed, s.style, s.size, merge, "vision")
    resume = StageCheckpoint(out, "vision-pretrain", s, s.resume_every)
    trained = {"visual": visual, "heads": heads}
    start, extra = resume.restore(trained, opt, sched)
    train.next_index = int(extra.get("images", 0))
    log = JsonlLogger(out / "vision_pretrain_log.jsonl", tensorboard=tensorboard_dir(out, s.report_to),
                      resume_step=start or None)
    before = extra.get("val_before") or _score(visual, heads, _Batcher(proc, s.seed, s.style, s.size, merge,
                                                                       "vision-val"), s.val_images)
    resume.start_clock()
    for step in progress(range(start, s.steps), desc="vision-pretrain", quiet=s.quiet, initial=start,
                         total=s.steps):
        px, thw, soft = train.batch(s.batch_images)
        losses, _ = _losses(heads, _merged_features(visual, px, thw), soft)
        loss = sum(losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == s.steps - 1:
            el = resume.elapsed()
            lv = [float(x.detach()) for x in losses]
            log.log({"stage": "vision-pretrain", "step": step + 1, "steps": s.steps, "loss": sum(lv),
                     "class_loss": lv[0], "colour_loss": lv[1], "role_loss": lv[2],
                     "grad_norm": float(gn), "lr": sched.get_last_lr()[0], "elapsed_s": round(el, 1),
                     "eta_s": round(el / (step + 1) * (s.steps - step - 1), 1)})
        resume.maybe_save(step + 1, s.steps, {"images": train.next_index, "val_before": before})
    after = _score(visual, heads, _Batcher(proc, s.seed, s.style, s.size, merge, "vision-val"),
                   s.val_images)
    visual.eval()
    response.model.visual.load_state_dict(visual.state_dict())
    for part, model in (("coarse", coarse), ("response", response)):
        if (out / part).exists():
            shutil.rmtree(out / part)
        model.save_pretrained(out / part)
        load_processor(paths[part]).save_pretrained(out / part)
    derive_model_dir(s.model, out, coarse={"path": "coarse", "lora": None},
                     response={"path": "response", "lora": None},
                     extra={"vision_pretrain": {"steps": s.steps, "images": train.next_index,
                                                "style": s.style, "val_after": after}})
    log.log({"stage": "vision-pretrain", "step": s.steps, "val_before": before, "val_after": after})
    log.close()
    resume.finish()
    res = {"model_dir": str(out), "steps": s.steps, "images": train.next_index, "val_before": before,
           "val_after": after}
    print(json.dumps(res))
    return out
