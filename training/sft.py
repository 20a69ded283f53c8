"""Supervised stages: stage-1 SFT of the coarse VLM, descriptor extraction, response SFT warm-up.

sft-coarse     COARSE_INSTRUCTION + image -> caption (teacher forcing on the caption tokens).
descriptors    F_ana for every image of a split, keyed by image id, in a safetensors file. Default
               source "generated": the descriptor of the description the model itself writes, i.e.
               exactly `CoarseModel.describe(image).descriptor` (what the robot computes at run time;
               tested equal). Source "caption": the descriptor of the ground-truth caption
               (`CoarseModel.descriptors`), same pooling.
sft-response   image + response_prompt(query) (+ descriptor through AFS) -> format_response(entities,
               boxes) with GT boxes mapped into the model's resized input frame (the frame the model
               answers in). Small models trained from scratch need it before GRPO.

Both SFT commands train all LLM weights (`--lora-r 0`, the default, right for small models) or a LoRA
adapter (`--lora-r R`, merged into the saved weights), always with the vision tower frozen; the
response SFT also trains the AFS. Output: a model dir whose earl.yaml points at the new parts and at
the untouched parts of the input model dir.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training.common import (JsonlLogger, derive_model_dir, load_descriptors, lr_lambda, manifest_paths,
                             save_descriptors, seed_everything, suppress_special_tokens, torch_threads)
from training.data import IRGBench

LLM_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$|^(.*\.)?lm_head$"


def lora_config(r: int, alpha: int, dropout: float):
    """LoRA on every linear layer of the LLM and on lm_head; the vision tower gets none (frozen)."""
    from peft import LoraConfig

    return LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout), target_modules=LLM_LINEAR,
                      bias="none")


def freeze_vision(model) -> None:
    for n, p in model.named_parameters():
        if ".visual." in f".{n}" or n.startswith("visual."):
            p.requires_grad_(False)


def response_target(sample, frame) -> str:
    """format_response target with GT boxes in the model's input frame."""
    from earl_ros.model.prompts import format_response
    from earl_ros.model.vlm import boxes_to_model

    if sample.no_target:
        return format_response([], None)
    boxes = boxes_to_model(sample.boxes(), frame.scale_xy, frame.input_hw)
    return format_response(sample.entities, [tuple(int(v) for v in b) for b in boxes])


def response_sft_batch(rm, samples, descriptor_of, cache=None):
    """The teacher-forced batch of response SFT: images, GT-box targets in the model frame, descriptors
    (`descriptor_of(sample, image)`), pixels swapped for cached features when a cache is given."""
    imgs = [s.image() for s in samples]
    targets = [response_target(s, rm.frame_of(im.shape[:2])) for s, im in zip(samples, imgs)]
    desc = np.stack([descriptor_of(s, im) for s, im in zip(samples, imgs)])
    b = rm.prepare(imgs, [s.query for s in samples], desc, completions=targets)
    if cache is not None:
        b.inputs = cache.inputs(b.inputs, [s.image_id for s in samples])
    return b


def _vision_cache(args, model):
    """A FrozenVisionCache when the tower is frozen and caching is on (training/vision_cache.py)."""
    if getattr(args, "train_vision", False) or not getattr(args, "vision_cache", True):
        return None
    from training.vision_cache import FrozenVisionCache

    return FrozenVisionCache(model)


def _usable(samples):
    return [s for s in samples if s.no_target or s.valid_boxes]


def _batches(n: int, batch_size: int, epochs: float, seed: int):
    """Deterministic list of index batches over `epochs` passes (fractional epochs allowed)."""
    rng = np.random.default_rng(seed)
    order = []
    for _ in range(int(np.ceil(epochs))):
        order.extend(rng.permutation(n).tolist())
    total = int(round(n * epochs))
    order = order[:max(total, batch_size)]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _train_loop(params, batches, step_fn, lr, warmup, log: JsonlLogger, desc: str, grad_clip=1.0,
                progress=True, schedule: str = "linear"):
    from tqdm import tqdm

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # params: tensors, or groups with their own lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(len(batches), warmup, schedule))
    params = [p for g in opt.param_groups for p in g["params"]]
    losses = []
    t_start = time.perf_counter()
    for step, idx in enumerate(tqdm(batches, desc=desc, disable=not progress, unit="step")):
        t0 = time.perf_counter()
        loss = step_fn(idx)
        extra = {}
        if isinstance(loss, tuple):  # (total loss, {name: component} for the log)
            loss, extra = loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == len(batches) - 1:
            log.log({"stage": desc, "step": step + 1, "loss": float(loss.detach()),
                     **{k: float(v) for k, v in extra.items()}, "grad_norm": float(gn),
                     "lr": sched.get_last_lr()[0], "step_s": time.perf_counter() - t0,
                     "steps": len(batches), "elapsed_s": round(time.perf_counter() - t_start, 1),
                     "eta_s": round((time.perf_counter() - t_start) / (step + 1) * (len(batches) - step - 1), 1)})
    return losses


# ----------------------------------------------------------------------------------------------

def sft_coarse(args) -> Path:
    from earl_ros.model.vlm import CoarseModel

    seed_everything(args.seed)
    torch_threads(args.threads)
    paths = manifest_paths(args.model)
    cm = CoarseModel.from_pretrained(paths["coarse"], device=args.device, lora_path=paths["coarse_lora"],
                                     pooling=paths["pooling"])
    if hasattr(cm.model, "merge_and_unload"):
        cm.model = cm.model.merge_and_unload()
    suppress_special_tokens(cm)
    ds = IRGBench(args.data, args.split, image_limit=args.limit)
    ids = ds.image_ids
    caps = [ds.captions[i] for i in ids]
    model = cm.model
    if args.lora_r > 0:
        from peft import get_peft_model

        model = cm.model = get_peft_model(model, lora_config(args.lora_r, args.lora_alpha, args.lora_dropout))
    if not getattr(args, "train_vision", False):
        freeze_vision(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    log = JsonlLogger(Path(args.out) / "sft_coarse_log.jsonl")
    cache = _vision_cache(args, model)

    def step_fn(idx):
        b = cm.prepare([ds.image(ids[i]) for i in idx], [caps[i] for i in idx])
        inputs = b.inputs if cache is None else cache.inputs(b.inputs, [ids[i] for i in idx])
        return model(**inputs, labels=b.labels, use_cache=False).loss

    batches = _batches(len(ids), args.batch_size, args.epochs, args.seed)
    losses = _train_loop(params, batches, step_fn, args.lr, args.warmup, log, "sft-coarse", progress=not args.quiet,
                         schedule=getattr(args, "lr_schedule", "linear"))
    model.eval()
    if hasattr(model, "merge_and_unload"):
        model = cm.model = model.merge_and_unload()
    out = Path(args.out)
    model.save_pretrained(out / "coarse")
    cm.processor.save_pretrained(out / "coarse")
    derive_model_dir(args.model, out, coarse={"path": "coarse", "lora": None},
                     extra={"sft_coarse": {"data": str(args.data), "split": args.split, "steps": len(batches),
                                           "final_loss": losses[-1] if losses else None}})
    print(json.dumps({"model_dir": str(out), "steps": len(batches), "first_loss": losses[0] if losses else None,
                      "final_loss": losses[-1] if losses else None}))
    return out


def extract_descriptors(args) -> Path:
    from tqdm import tqdm

    from earl_ros.model.vlm import CoarseModel

    torch_threads(args.threads)
    paths = manifest_paths(args.model)
    cm = CoarseModel.from_pretrained(paths["coarse"], device=args.device, lora_path=paths["coarse_lora"],
                                     pooling=args.pooling or paths["pooling"],
                                     max_new_tokens=paths["limits"]["coarse_max_new_tokens"])
    suppress_special_tokens(cm)
    descs, texts = {}, {}
    for split in args.split:
        ds = IRGBench(args.data, split, image_limit=args.limit)
        for iid in tqdm(ds.image_ids, desc=f"descriptors[{split}]", disable=args.quiet, unit="img"):
            img = ds.image(iid)
            if args.source == "generated":
                inter = cm.describe(img)
                descs[iid], texts[iid] = inter.descriptor, inter.text
            else:
                cap = ds.captions[iid]
                descs[iid] = cm.descriptors([img], [cap])[0].cpu().numpy().astype(np.float32)
                texts[iid] = cap
    out = save_descriptors(args.out, descs, texts, meta={"model": str(args.model), "source": args.source,
                                                       "pooling": cm.pooling, "dim": cm.descriptor_dim})
    print(json.dumps({"descriptors": str(out), "count": len(descs), "dim": cm.descriptor_dim,
                      "source": args.source, "pooling": cm.pooling}))
    return out


class DescriptorSource:
    """Descriptors by image id: from a file, computed on demand by the coarse model, or zeros."""

    def __init__(self, dim: int, path: str | None = None, coarse=None, mode: str = "file"):
        self.dim, self.coarse, self.mode = dim, coarse, mode
        self.table = load_descriptors(path) if path else {}
        self.cache: dict[str, np.ndarray] = {}

    def get(self, image_id: str, image) -> np.ndarray:
        if self.mode == "zero":
            return np.zeros((self.dim,), np.float32)
        if image_id in self.table:
            return self.table[image_id]
        if self.coarse is None:
            raise KeyError(f"no descriptor for image {image_id!r} (run `python -m training descriptors` "
                           "for this split, or pass --no-descriptor)")
        if image_id not in self.cache:
            self.cache[image_id] = self.coarse.describe(image).descriptor
        return self.cache[image_id]


def descriptor_noise_scale(dsrc: DescriptorSource, samples, multiple: float) -> np.ndarray | None:
    """Per-dimension noise std: `multiple` x the spread of the split's stored descriptors.

    Scaled to the descriptors' own spread so one flag value means the same signal-to-noise ratio
    for any coarse model; a fresh draw every step keeps a descriptor from serving as a fixed
    per-frame key the response model can memorise its training answers by."""
    if multiple <= 0:
        return None
    ids = sorted({s.image_id for s in samples if s.image_id in dsrc.table})
    if len(ids) < 2:
        raise SystemExit("--descriptor-noise: fewer than 2 of the split's images have a stored descriptor")
    table = np.stack([dsrc.table[i] for i in ids]).astype(np.float32)
    return (multiple * table.std(axis=0)).astype(np.float32)


def make_descriptor_source(args, paths, dim: int, device: str) -> DescriptorSource:
    if getattr(args, "no_descriptor", False):
        return DescriptorSource(dim, mode="zero")
    if getattr(args, "descriptors", None):
        return DescriptorSource(dim, args.descriptors)
    from earl_ros.model.vlm import CoarseModel

    cm = CoarseModel.from_pretrained(paths["coarse"], device=device, lora_path=paths["coarse_lora"],
                                     pooling=paths["pooling"], max_new_tokens=paths["limits"]["coarse_max_new_tokens"])
    suppress_special_tokens(cm)
    return DescriptorSource(dim, coarse=cm, mode="model")


def split_digit_tokens(tokenizer) -> bool:
    """Make a byte-level BPE tokenizer write every number one digit per token (as Qwen2's does).

    A tokenizer trained on box-heavy text learns one token per coordinate value ("137"), so the
    model must learn ~250 unrelated output rows and gets no credit for a near miss; per-digit
    tokens share ten rows across all values. The vocabulary is unchanged (single digits are in
    every byte-level alphabet); only the pre-tokenizer splits. Returns False if it already did.
    """
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    current = backend.pre_tokenizer
    if current is not None and "Digits" in repr(current):
        return False
    for d in "0123456789":
        if tokenizer.convert_tokens_to_ids(d) in (None, tokenizer.unk_token_id):
            raise SystemExit(f"--split-digits: the tokenizer has no token for the digit {d!r}")
    steps = [pre_tokenizers.Digits(individual_digits=True)] + ([current] if current is not None else [])
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
    return True


def longest_target_tokens(rm, samples, probe: int = 256) -> int:
    """Tokens (with the end token) of the longest response target among the wordiest samples.

    The answer's length grows with the number of entities and the length of their names; the
    probe set holds the samples with the most entity characters, so this is the longest target
    without decoding every image of the split."""
    ranked = sorted(samples, key=lambda s: sum(len(e) + 24 for e in (s.entities or [])), reverse=True)[:probe]
    longest = 0
    for s in ranked:
        frame = rm.frame_of(s.image().shape[:2])
        longest = max(longest, len(rm.tokenizer(response_target(s, frame))["input_ids"]) + 1)
    return longest


def sft_response(args) -> Path:
    from earl_ros.model.vlm import ResponseModel

    drop = float(getattr(args, "descriptor_dropout", 0.0))
    if not 0.0 <= drop <= 1.0:
        raise SystemExit(f"--descriptor-dropout {drop}: a share of the training samples, between 0 and 1")
    noise = float(getattr(args, "descriptor_noise", 0.0))
    if noise < 0:
        raise SystemExit(f"--descriptor-noise {noise}: a multiple of the descriptors' per-dimension spread, >= 0")
    if noise > 0 and (getattr(args, "no_descriptor", False) or not getattr(args, "descriptors", None)):
        raise SystemExit("--descriptor-noise needs --descriptors FILE: its scale is the spread of the stored "
                         "training descriptors")
    seed_everything(args.seed)
    torch_threads(args.threads)
    paths = manifest_paths(args.model)
    rm = ResponseModel.from_pretrained(paths["response"], paths["afs"], lora_path=paths["response_lora"],
                                       device=args.device, afs_alpha=paths["afs_alpha"])
    if hasattr(rm.model, "merge_and_unload"):
        rm.model = rm.model.merge_and_unload()
        rm.injector.attach(rm.model)
    if getattr(args, "split_digits", False):
        split_digit_tokens(rm.tokenizer)
    suppress_special_tokens(rm)
    alpha = paths["afs_alpha"] if args.afs_alpha is None else float(args.afs_alpha)
    rm.injector.alpha = alpha
    if getattr(args, "afs_init", "keep") == "zero":
        rm.afs.zero_output()
    ds = IRGBench(args.data, args.split, image_limit=args.limit)
    samples = _usable(ds.samples)
    dsrc = make_descriptor_source(args, paths, rm.descriptor_dim, args.device)
    if args.lora_r > 0:
        rm.attach_lora(lora_config(args.lora_r, args.lora_alpha, args.lora_dropout))
    if not getattr(args, "train_vision", False):
        freeze_vision(rm.model)
    rm.model.train()
    rm.afs.train()
    for p in rm.afs.parameters():
        p.requires_grad_(True)
    params = [p for p in rm.model.parameters() if p.requires_grad]
    afs_lr = args.lr if getattr(args, "afs_lr", None) is None else float(args.afs_lr)
    groups = [{"params": params}, {"params": list(rm.afs.parameters()), "lr": afs_lr}]
    probe = None
    if getattr(args, "position_probe", 0.0) > 0:
        from training.position_probe import ImageTokenPositionProbe

        if not 1 <= args.position_probe_layer <= rm.num_layers:
            raise SystemExit(f"--position-probe-layer {args.position_probe_layer}: the response language model "
                             f"has layers 1..{rm.num_layers}")
        probe = ImageTokenPositionProbe(rm.hidden_size, args.position_probe_layer)
        groups[0]["params"] += list(probe.parameters())
        merge = int(rm.model.config.vision_config.spatial_merge_size)
    limits = {}
    longest = longest_target_tokens(rm, samples)
    if longest > paths["limits"]["max_new_tokens"]:
        # a limit below the longest answer truncates multi-entity answers at inference (lost boxes)
        limits["max_new_tokens"] = -(-(longest + 8) // 16) * 16
        print(f"sft-response: the longest training answer is {longest} tokens; the model dir's "
              f"limits.max_new_tokens goes {paths['limits']['max_new_tokens']} -> {limits['max_new_tokens']}",
              file=sys.stderr)
    log = JsonlLogger(Path(args.out) / "sft_response_log.jsonl")
    cache = _vision_cache(args, rm.model)

    drop_rng = np.random.default_rng(args.seed + 7919)  # its own stream: batch order and init stay as without
    zeros = np.zeros(rm.descriptor_dim, np.float32)

    noise_std = descriptor_noise_scale(dsrc, samples, noise)
    noise_rng = np.random.default_rng(args.seed + 104729)

    def descriptor_of(s, im):
        if drop > 0 and drop_rng.random() < drop:
            return zeros  # before the lookup: a live coarse model would describe the frame for nothing
        d = dsrc.get(s.image_id, im)
        if noise_std is not None:
            d = d + noise_rng.standard_normal(d.shape[0]).astype(np.float32) * noise_std
        return d

    def step_fn(idx):
        b = response_sft_batch(rm, [samples[i] for i in idx], descriptor_of, cache)
        if probe is None:
            return rm.sft_loss(b)
        out = rm.sft_forward(b, output_hidden_states=True)
        aux = probe.loss(out.hidden_states, b.inputs["input_ids"], rm.model.config.image_token_id,
                         b.inputs["image_grid_thw"], merge)
        return out.loss + args.position_probe * aux, {"answer_loss": out.loss.detach(), "probe_loss": aux.detach()}

    batches = _batches(len(samples), args.batch_size, args.epochs, args.seed)
    losses = _train_loop(groups, batches, step_fn, args.lr, args.warmup, log, "sft-response", progress=not args.quiet,
                         schedule=getattr(args, "lr_schedule", "linear"))
    rm.model.eval()
    rm.afs.eval()
    if hasattr(rm.model, "merge_and_unload"):
        rm.model = rm.model.merge_and_unload()
    out = Path(args.out)
    rm.model.save_pretrained(out / "response")
    rm.processor.save_pretrained(out / "response")
    rm.afs.save_pretrained(out / "afs")
    derive_model_dir(args.model, out, response={"path": "response", "lora": None, "afs": "afs", "afs_alpha": alpha},
                     extra={"sft_response": {"data": str(args.data), "split": args.split, "steps": len(batches),
                                             "final_loss": losses[-1] if losses else None,
                                             "longest_target_tokens": longest}},
                     limits=limits)
    print(json.dumps({"model_dir": str(out), "steps": len(batches), "samples": len(samples),
                      "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}))
    return out


# ----------------------------------------------------------------------------------------------
# CLI parsers

def add_common(ap: argparse.ArgumentParser):
    ap.add_argument("--config", help="YAML file of option: value (CLI flags override it)")
    ap.add_argument("--model", required=False, help="input EARL model dir (earl.yaml)")
    ap.add_argument("--data", help="dataset root in the Ego-IRGBench layout")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images of the split")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def add_sft_args(ap: argparse.ArgumentParser, lr: float, epochs: float, batch: int):
    ap.add_argument("--out", help="output model dir")
    ap.add_argument("--split", default="train")
    ap.add_argument("--epochs", type=float, default=epochs)
    ap.add_argument("--batch-size", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--warmup", type=float, default=0.05, help="warm-up fraction of the steps")
    ap.add_argument("--lora-r", type=int, default=0, help="0 = train all LLM weights; R > 0 = LoRA (merged on save)")
    ap.add_argument("--lora-alpha", type=int, default=128)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-vision", action="store_true",
                    help="also train the vision tower (default: frozen, as a pretrained encoder should be: "
                         "trained along with a from-scratch language model at its learning rate, the "
                         "tiny towers lost what vision-pretrain taught them; see docs/training.md)")
    ap.add_argument("--lr-schedule", choices=("linear", "constant", "cosine"), default="linear")
    ap.add_argument("--no-vision-cache", dest="vision_cache", action="store_false",
                    help="run the frozen vision tower on every batch instead of once per image "
                         "(training/vision_cache.py; the cache holds one feature tensor per training image)")


def add_position_probe(ap: argparse.ArgumentParser):
    ap.add_argument("--position-probe", type=float, default=0.0,
                    help="weight of the auxiliary loss that makes image tokens encode their own position "
                         "(training/position_probe.py); 0 = off. Experimental: on the tiny recipe it learnt "
                         "the positions but did not by itself make the boxes follow the frame (docs/training.md)")
    ap.add_argument("--position-probe-layer", type=int, default=2,
                    help="language-model layer whose output the position probe reads (1 = first layer)")


def add_split_digits(ap: argparse.ArgumentParser):
    ap.add_argument("--split-digits", action="store_true",
                    help="write numbers one digit per token in the response tokenizer before training (saved "
                         "with the model, so inference reads the same); see split_digit_tokens")


def add_afs_init(ap: argparse.ArgumentParser):
    ap.add_argument("--afs-init", choices=("keep", "zero"), default="keep",
                    help="keep: train the input model's AFS as it is (the authors' random init in a fresh tiny "
                         "model); zero: zero the AFS output layer first, so the injection starts at exactly "
                         "nothing and the response model starts as the no-descriptor one (AFS.zero_output)")


def add_descriptor_dropout(ap: argparse.ArgumentParser):
    ap.add_argument("--descriptor-dropout", type=float, default=0.0,
                    help="share of training samples whose descriptor is zeroed (AFS injection off for them), so "
                         "the model must also answer from the image alone; 0 = off (experimental, docs/training.md)")


def add_descriptor_noise(ap: argparse.ArgumentParser):
    ap.add_argument("--descriptor-noise", type=float, default=0.0,
                    help="Gaussian noise added to each training descriptor, fresh every step, with a per-dimension "
                         "std of this multiple of the stored training descriptors' spread (needs --descriptors); "
                         "0 = off. The recipe uses 0.5: without it the AFS model leaned on the descriptor as a key "
                         "to its training frames and trailed the no-descriptor arm (docs/training.md)")


def add_afs_lr(ap: argparse.ArgumentParser):
    ap.add_argument("--afs-lr", type=float, default=None,
                    help="learning rate of the AFS (default: --lr). The recipe uses 1e-4 with --afs-init zero; "
                         "on the tiny recipe the modulation still reached the size it reaches at 2e-3 (the rate "
                         "sets how fast it grows, not where it ends; docs/training.md)")


def add_afs_alpha(ap: argparse.ArgumentParser):
    ap.add_argument("--afs-alpha", type=float, default=None,
                    help="AFS modulation scale, written to the output earl.yaml (default: the input model's; "
                         "the authors' code uses 1.0, their README 0.1; small models trained from scratch need 0.1)")
