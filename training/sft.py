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

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.common import (JsonlLogger, derive_model_dir, load_descriptors, lr_lambda, manifest_paths,
                             save_descriptors, seed_everything, suppress_special_tokens, torch_threads)
from training.data import IRGBench
from training.errors import SettingsError, TrainingError
from training.policy import attach_lora, sft_forward, sft_loss
from training.progress import progress
from training.settings import DescriptorsSettings, SftCoarseSettings, SftResponseSettings, SftSettings
from training.stage_checkpoint import StageCheckpoint
from training.tracking import tensorboard_dir

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
    from earl_ros.model.coordinates import boxes_to_model

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


def _vision_cache(s: SftSettings, model):
    """A FrozenVisionCache when the tower is frozen and caching is on (training/vision_cache.py)."""
    if s.train_vision or not s.vision_cache:
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


@dataclass
class LoopResume:
    """What a training loop saves at its resume points besides the optimizer and scheduler: the
    modules it trains and the numpy generators its batches draw from."""
    checkpoint: StageCheckpoint
    modules: dict
    generators: dict = dataclasses.field(default_factory=dict)


def _train_loop(params, batches, step_fn, lr, warmup, log_path: Path, report_to: str, desc: str,
                resume: LoopResume, grad_clip=1.0, quiet=False, schedule: str = "linear"):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # params: tensors, or groups with their own lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(len(batches), warmup, schedule))
    params = [p for g in opt.param_groups for p in g["params"]]
    start, extra = resume.checkpoint.restore(resume.modules, opt, sched, resume.generators)
    log = JsonlLogger(log_path, tensorboard=tensorboard_dir(log_path.parent, report_to), resume_step=start or None)
    losses = list(extra.get("losses", []))
    resume.checkpoint.start_clock()
    for step in progress(range(start, len(batches)), desc=desc, quiet=quiet, initial=start, total=len(batches)):
        t0 = time.perf_counter()
        loss = step_fn(batches[step])
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
                     "steps": len(batches), "elapsed_s": round(resume.checkpoint.elapsed(), 1),
                     "eta_s": round(resume.checkpoint.elapsed() / (step + 1) * (len(batches) - step - 1), 1)})
        resume.checkpoint.maybe_save(step + 1, len(batches), {"losses": losses})
    log.close()
    return losses


# ----------------------------------------------------------------------------------------------

def sft_coarse(s: SftCoarseSettings) -> Path:
    from earl_ros.model.vlm import CoarseModel

    seed_everything(s.seed)
    torch_threads(s.threads)
    paths = manifest_paths(s.model)
    cm = CoarseModel.from_pretrained(paths["coarse"], device=s.device, lora_path=paths["coarse_lora"],
                                     pooling=paths["pooling"])
    if hasattr(cm.model, "merge_and_unload"):
        cm.model = cm.model.merge_and_unload()
    suppress_special_tokens(cm)
    ds = IRGBench(s.data, s.split, image_limit=s.limit)
    ids = ds.image_ids
    caps = [ds.captions[i] for i in ids]
    model = cm.model
    if s.lora_r > 0:
        from peft import get_peft_model

        model = cm.model = get_peft_model(model, lora_config(s.lora_r, s.lora_alpha, s.lora_dropout))
    if not s.train_vision:
        freeze_vision(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    cache = _vision_cache(s, model)

    def step_fn(idx):
        b = cm.prepare([ds.image(ids[i]) for i in idx], [caps[i] for i in idx])
        inputs = b.inputs if cache is None else cache.inputs(b.inputs, [ids[i] for i in idx])
        return model(**inputs, labels=b.labels, use_cache=False).loss

    batches = _batches(len(ids), s.batch_size, s.epochs, s.seed)
    resume = LoopResume(StageCheckpoint(s.out, "sft-coarse", s, s.resume_every), {"model": model})
    losses = _train_loop(params, batches, step_fn, s.lr, s.warmup, Path(s.out) / "sft_coarse_log.jsonl",
                         s.report_to, "sft-coarse", resume, quiet=s.quiet, schedule=s.lr_schedule)
    model.eval()
    if hasattr(model, "merge_and_unload"):
        model = cm.model = model.merge_and_unload()
    out = Path(s.out)
    model.save_pretrained(out / "coarse")
    cm.processor.save_pretrained(out / "coarse")
    derive_model_dir(s.model, out, coarse={"path": "coarse", "lora": None},
                     extra={"sft_coarse": {"data": str(s.data), "split": s.split, "steps": len(batches),
                                           "final_loss": losses[-1] if losses else None}})
    resume.checkpoint.finish()
    print(json.dumps({"model_dir": str(out), "steps": len(batches), "first_loss": losses[0] if losses else None,
                      "final_loss": losses[-1] if losses else None}))
    return out


def extract_descriptors(s: DescriptorsSettings) -> Path:
    from earl_ros.model.vlm import CoarseModel

    torch_threads(s.threads)
    paths = manifest_paths(s.model)
    cm = CoarseModel.from_pretrained(paths["coarse"], device=s.device, lora_path=paths["coarse_lora"],
                                     pooling=s.pooling or paths["pooling"],
                                     max_new_tokens=paths["limits"]["coarse_max_new_tokens"])
    suppress_special_tokens(cm)
    descs, texts = {}, {}
    for split in s.split:
        ds = IRGBench(s.data, split, image_limit=s.limit)
        for iid in progress(ds.image_ids, desc=f"descriptors[{split}]", quiet=s.quiet, unit="img"):
            img = ds.image(iid)
            if s.source == "generated":
                inter = cm.describe(img)
                descs[iid], texts[iid] = inter.descriptor, inter.text
            else:
                cap = ds.captions[iid]
                descs[iid] = cm.descriptors([img], [cap])[0].cpu().numpy().astype(np.float32)
                texts[iid] = cap
    out = save_descriptors(s.out, descs, texts, meta={"model": str(s.model), "source": s.source,
                                                       "pooling": cm.pooling, "dim": cm.descriptor_dim})
    print(json.dumps({"descriptors": str(out), "count": len(descs), "dim": cm.descriptor_dim,
                      "source": s.source, "pooling": cm.pooling}))
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
        raise TrainingError("--descriptor-noise: fewer than 2 of the split's images have a stored descriptor")
    table = np.stack([dsrc.table[i] for i in ids]).astype(np.float32)
    return (multiple * table.std(axis=0)).astype(np.float32)


def make_descriptor_source(no_descriptor: bool, descriptors: str | None, paths, dim: int,
                           device: str) -> DescriptorSource:
    """Zeros (--no-descriptor), the stored file (--descriptors), or the coarse model describing each frame."""
    if no_descriptor:
        return DescriptorSource(dim, mode="zero")
    if descriptors:
        return DescriptorSource(dim, descriptors)
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
            raise TrainingError(f"--split-digits: the tokenizer has no token for the digit {d!r}")
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


def _check_descriptor_options(s: SftResponseSettings) -> None:
    """Refuse descriptor dropout / noise values that mean nothing, before any model loads."""
    if not 0.0 <= s.descriptor_dropout <= 1.0:
        raise SettingsError(f"--descriptor-dropout {s.descriptor_dropout}: a share of the training samples, "
                            "between 0 and 1")
    if s.descriptor_noise < 0:
        raise SettingsError(f"--descriptor-noise {s.descriptor_noise}: a multiple of the descriptors' "
                            "per-dimension spread, >= 0")
    if s.descriptor_noise > 0 and (s.no_descriptor or not s.descriptors):
        raise SettingsError("--descriptor-noise needs --descriptors FILE: its scale is the spread of the stored "
                            "training descriptors")


def _load_response_model(s: SftResponseSettings, paths: dict):
    """The input dir's response model, merged, with the AFS scale and init the settings ask for.
    Returns (model, AFS alpha)."""
    from earl_ros.model.vlm import ResponseModel

    rm = ResponseModel.from_pretrained(paths["response"], paths["afs"], lora_path=paths["response_lora"],
                                       device=s.device, afs_alpha=paths["afs_alpha"])
    if hasattr(rm.model, "merge_and_unload"):
        rm.model = rm.model.merge_and_unload()
        rm.injector.attach(rm.model)
    if s.split_digits:
        split_digit_tokens(rm.tokenizer)
    suppress_special_tokens(rm)
    alpha = paths["afs_alpha"] if s.afs_alpha is None else float(s.afs_alpha)
    rm.injector.alpha = alpha
    if s.afs_init == "zero":
        rm.afs.zero_output()
    return rm, alpha


def _response_param_groups(s: SftResponseSettings, rm) -> list[dict]:
    """Optimizer groups: the language model's trainable weights (LoRA or all) and the AFS at its own rate."""
    if s.lora_r > 0:
        attach_lora(rm, lora_config(s.lora_r, s.lora_alpha, s.lora_dropout))
    if not s.train_vision:
        freeze_vision(rm.model)
    rm.model.train()
    rm.afs.train()
    for p in rm.afs.parameters():
        p.requires_grad_(True)
    params = [p for p in rm.model.parameters() if p.requires_grad]
    afs_lr = s.lr if s.afs_lr is None else float(s.afs_lr)
    return [{"params": params}, {"params": list(rm.afs.parameters()), "lr": afs_lr}]


def _position_probe(s: SftResponseSettings, rm, groups: list[dict]):
    """The auxiliary position probe (its head trained with the language model), or None when off."""
    if s.position_probe <= 0:
        return None
    from training.position_probe import ImageTokenPositionProbe

    if not 1 <= s.position_probe_layer <= rm.num_layers:
        raise SettingsError(f"--position-probe-layer {s.position_probe_layer}: the response language model "
                            f"has layers 1..{rm.num_layers}")
    probe = ImageTokenPositionProbe(rm.hidden_size, s.position_probe_layer)
    groups[0]["params"] += list(probe.parameters())
    return probe


def _answer_limits(rm, samples, max_new_tokens: int) -> tuple[dict, int]:
    """(limits override for the output earl.yaml, longest training answer in tokens)."""
    limits = {}
    longest = longest_target_tokens(rm, samples)
    if longest > max_new_tokens:
        # a limit below the longest answer truncates multi-entity answers at inference (lost boxes)
        limits["max_new_tokens"] = -(-(longest + 8) // 16) * 16
        print(f"sft-response: the longest training answer is {longest} tokens; the model dir's "
              f"limits.max_new_tokens goes {max_new_tokens} -> {limits['max_new_tokens']}", file=sys.stderr)
    return limits, longest


def _descriptor_sampler(s: SftResponseSettings, dim: int, dsrc: DescriptorSource, samples):
    """descriptor_of(sample, image) for training: the stored or computed descriptor, zeroed for a
    --descriptor-dropout share of draws, with fresh --descriptor-noise added."""
    drop = float(s.descriptor_dropout)
    drop_rng = np.random.default_rng(s.seed + 7919)  # its own stream: batch order and init stay as without
    zeros = np.zeros(dim, np.float32)
    noise_std = descriptor_noise_scale(dsrc, samples, float(s.descriptor_noise))
    noise_rng = np.random.default_rng(s.seed + 104729)

    def descriptor_of(sample, im):
        if drop > 0 and drop_rng.random() < drop:
            return zeros  # before the lookup: a live coarse model would describe the frame for nothing
        d = dsrc.get(sample.image_id, im)
        if noise_std is not None:
            d = d + noise_rng.standard_normal(d.shape[0]).astype(np.float32) * noise_std
        return d

    descriptor_of.generators = {"descriptor_dropout": drop_rng, "descriptor_noise": noise_rng}  # resume points
    return descriptor_of


def _response_step(rm, samples, descriptor_of, cache, probe, probe_weight: float):
    """The loss of one batch of sample indices (answer loss, plus the weighted probe loss when on)."""
    merge = None if probe is None else int(rm.model.config.vision_config.spatial_merge_size)

    def step_fn(idx):
        b = response_sft_batch(rm, [samples[i] for i in idx], descriptor_of, cache)
        if probe is None:
            return sft_loss(rm, b)
        out = sft_forward(rm, b, output_hidden_states=True)
        aux = probe.loss(out.hidden_states, b.inputs["input_ids"], rm.model.config.image_token_id,
                         b.inputs["image_grid_thw"], merge)
        return out.loss + probe_weight * aux, {"answer_loss": out.loss.detach(), "probe_loss": aux.detach()}

    return step_fn


def _save_response(s: SftResponseSettings, rm, alpha: float, extra: dict, limits: dict) -> Path:
    rm.model.eval()
    rm.afs.eval()
    if hasattr(rm.model, "merge_and_unload"):
        rm.model = rm.model.merge_and_unload()
    out = Path(s.out)
    rm.model.save_pretrained(out / "response")
    rm.processor.save_pretrained(out / "response")
    rm.afs.save_pretrained(out / "afs")
    derive_model_dir(s.model, out, response={"path": "response", "lora": None, "afs": "afs", "afs_alpha": alpha},
                     extra={"sft_response": {"data": str(s.data), "split": s.split, **extra}}, limits=limits)
    return out


def sft_response(s: SftResponseSettings) -> Path:
    _check_descriptor_options(s)
    seed_everything(s.seed)
    torch_threads(s.threads)
    paths = manifest_paths(s.model)
    rm, alpha = _load_response_model(s, paths)
    samples = _usable(IRGBench(s.data, s.split, image_limit=s.limit).samples)
    dsrc = make_descriptor_source(s.no_descriptor, s.descriptors, paths, rm.descriptor_dim, s.device)
    groups = _response_param_groups(s, rm)
    probe = _position_probe(s, rm, groups)
    limits, longest = _answer_limits(rm, samples, paths["limits"]["max_new_tokens"])
    cache = _vision_cache(s, rm.model)
    descriptor_of = _descriptor_sampler(s, rm.descriptor_dim, dsrc, samples)
    step_fn = _response_step(rm, samples, descriptor_of, cache, probe, s.position_probe)
    batches = _batches(len(samples), s.batch_size, s.epochs, s.seed)
    trained = {"model": rm.model, "afs": rm.afs, **({"probe": probe} if probe is not None else {})}
    resume = LoopResume(StageCheckpoint(s.out, "sft-response", s, s.resume_every), trained,
                        descriptor_of.generators)
    losses = _train_loop(groups, batches, step_fn, s.lr, s.warmup, Path(s.out) / "sft_response_log.jsonl",
                         s.report_to, "sft-response", resume, quiet=s.quiet, schedule=s.lr_schedule)
    out = _save_response(s, rm, alpha, {"steps": len(batches), "final_loss": losses[-1] if losses else None,
                                         "longest_target_tokens": longest}, limits)
    resume.checkpoint.finish()
    print(json.dumps({"model_dir": str(out), "steps": len(batches), "samples": len(samples),
                      "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None}))
    return out
