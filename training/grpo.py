"""GRPO for the response stage (METHOD.md section 3), with AFS in the loop.

Why our own loop and not trl's GRPOTrainer: trl forwards only the multimodal inputs it knows
(pixel_values, image_grid_thw, ...), so the per-image interaction descriptor that AFS injects cannot
reach the model through it.

One optimisation step:
  1. take `prompts_per_step` training samples (split over processes), each with its image, query,
     descriptor (offline file, computed on demand by the coarse model, or zeros) and GT;
  2. sample G completions per prompt (temperature, max completion length) with AFS injection;
  3. reward each completion (training/rewards.py: R_f, R_a, R_g with the segmenter in the loop; boxes
     are mapped from the model's input frame to original pixels first);
  4. group advantages A = (r - mean) / (std + 1e-4);
  5. per-token log-probs of the sampled tokens under the policy (LoRA on) and the reference (same
     model, adapters disabled: peft `disable_adapter`), both through the same AFS injection and the
     same M-RoPE position ids as sampling (training.policy.sequence_logprobs feeds input_ids, so the
     model computes the multimodal rotary positions itself);
  6. loss = mean over sequences of the mean over completion tokens of
     -min(rho A, clip(rho, 1-eps, 1+eps) A) + beta k3; one gradient step (rho = 1 at the sample point,
     so the clip only matters with --iterations > 1, which re-uses the same samples).
Trainable: the LoRA adapter (r, alpha, dropout; all LLM linear layers + lm_head) and the AFS. The
vision tower and all base weights are frozen.

Checkpoints (every --save-every steps and at the end) are complete model dirs: earl.yaml + lora/ +
afs/ (the AFS is saved in every checkpoint: FIX of the public release) plus the trainer state
(training/trainer_state.py: trainer_state.safetensors + trainer_state.json, no pickle: optimizer,
scheduler, step, RNG states of every process, the settings) and policy.safetensors (the trainable
tensors by name), so `--resume` continues exactly and `python -m training eval --model CKPT` or
`earl-infer --model CKPT` use a checkpoint directly.

Multi-process: run under `accelerate launch` (configs in training/configs/). Each process samples its
share of the prompts; gradients of the trainable tensors are averaged across processes with an
all-reduce before the optimizer step (DDP semantics; we do not hand the model to a DDP wrapper because
sampling goes through `generate` and the reference through peft's `disable_adapter`, which a wrapper
hides). Every replica therefore applies the same update and stays bit-identical (tested with 2 CPU
processes on gloo).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.common import (JsonlLogger, derive_model_dir, lr_lambda, manifest_paths, seed_everything,
                             suppress_special_tokens, torch_threads)
from training.data import IRGBench
from training.errors import SettingsError, TrainingError
from training.grpo_math import group_advantages, grpo_loss
from training.policy import attach_lora, save_trainable, sequence_logprobs
from training.progress import progress
from training.rewards import RewardConfig, SegmenterMasks, score_completion
from training.settings import GrpoSettings
from training.sft import freeze_vision, lora_config, make_descriptor_source
from training.tracking import tensorboard_dir
from training.trainer_state import load_trainer_state, rng_state, save_trainer_state, set_rng_state

POLICY_NAME = "policy.safetensors"


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _allreduce_mean_grads(params) -> None:
    dist = _dist()
    if dist is None:
        return
    world = dist.get_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p).clone()
        off += n


def _gather_floats(values: list[float], device) -> list[float]:
    dist = _dist()
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist is None:
        return t.tolist()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(values)], device=device))
    mx = int(max(s.item() for s in sizes))
    pad = torch.zeros(mx, dtype=torch.float64, device=device)
    pad[: len(values)] = t
    outs = [torch.zeros(mx, dtype=torch.float64, device=device) for _ in sizes]
    dist.all_gather(outs, pad)
    res = []
    for o, s in zip(outs, sizes):
        res.extend(o[: int(s.item())].tolist())
    return res


def step_indices(n: int, prompts_per_step: int, step: int, seed: int) -> list[int]:
    """Global sample indices of optimisation step `step` (epoch-wise permutations, deterministic)."""
    per_epoch = max(1, n // prompts_per_step)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * prompts_per_step:(k + 1) * prompts_per_step].tolist()


@dataclass
class StepTimes:
    generation: float = 0.0
    rewards: float = 0.0
    update: float = 0.0


class GRPOTrainer:
    def __init__(self, settings: GrpoSettings):
        from accelerate import Accelerator

        s = self.settings = settings
        self.acc = Accelerator(cpu=(s.device == "cpu"))
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        torch_threads(s.threads)
        self._check_settings()
        seed_everything(s.seed)  # identical LoRA init on every replica
        self.paths = manifest_paths(s.model)
        device = str(self.acc.device)
        self.rm = rm = self._load_policy(device)
        self.named_params = [(f"model.{n}", p) for n, p in rm.model.named_parameters() if p.requires_grad]
        self.named_params += [(f"afs.{n}", p) for n, p in rm.afs.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.opt, self.sched = self._optimizer()
        self.reward_cfg = RewardConfig(w_format=s.w_format, w_answer=s.w_answer, w_ground=s.w_ground,
                                       grounding=s.grounding, strict_format=s.strict_format,
                                       allow_float=s.allow_float)
        seg = self.paths["segmenter"] if s.segmenter == "model" else "box"
        self.masks = SegmenterMasks.from_path(str(seg) if seg != "box" else "box", device=device,
                                              refine=s.reward_box_refine)
        ds = IRGBench(s.data, s.split, image_limit=s.limit)
        self.samples = [x for x in ds.samples if x.no_target or x.valid_boxes]
        if not self.samples:
            raise TrainingError(f"no usable samples in {s.data} split {s.split}")
        self.dsrc = make_descriptor_source(s.no_descriptor, s.descriptors, self.paths, rm.descriptor_dim, device)
        self.step = 0
        self.out = Path(s.out)
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = JsonlLogger(self.out / "log.jsonl" if self.acc.is_main_process else None,
                               echo=self.acc.is_main_process and not s.quiet_log,
                               append=bool(s.resume),
                               tensorboard=tensorboard_dir(self.out, s.report_to) if self.acc.is_main_process
                               else None)
        if s.resume:
            self.load_checkpoint(self._resolve_resume(s.resume))
        else:
            seed_everything(s.seed + 1000 * self.rank)  # independent sampling per replica

    def _check_settings(self) -> None:
        """Refuse contradictory options before any model loads."""
        from earl_ros.model.manifest import MAX_BOX_REFINE, valid_box_refine

        s = self.settings
        if not valid_box_refine(s.reward_box_refine):
            raise SettingsError(f"--reward-box-refine must be an integer in 0..{MAX_BOX_REFINE}, "
                                f"got {s.reward_box_refine}")
        if s.reward_box_refine and s.segmenter != "model":
            raise SettingsError("--reward-box-refine needs --segmenter model (filled boxes cannot be refined)")
        if s.prompts_per_step % self.world:
            raise SettingsError(f"--prompts-per-step {s.prompts_per_step} must be divisible by the number of "
                                f"processes ({self.world})")

    def _load_policy(self, device: str):
        """The input dir's response model, merged, with a fresh LoRA adapter; the AFS trainable unless frozen."""
        from earl_ros.model.vlm import ResponseModel

        s = self.settings
        rm = ResponseModel.from_pretrained(self.paths["response"], self.paths["afs"],
                                           lora_path=self.paths["response_lora"], device=device,
                                           afs_alpha=self.paths["afs_alpha"],
                                           max_new_tokens=s.max_completion_length)
        if hasattr(rm.model, "merge_and_unload"):  # start GRPO from a merged model dir
            rm.model = rm.model.merge_and_unload()
            rm.injector.attach(rm.model)
        suppress_special_tokens(rm)
        if s.afs_alpha is not None:
            rm.injector.alpha = float(s.afs_alpha)
        self.afs_alpha = float(rm.injector.alpha)
        attach_lora(rm, lora_config(s.lora_r, s.lora_alpha, s.lora_dropout))
        freeze_vision(rm.model)
        if s.gradient_checkpointing:
            rm.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for p in rm.afs.parameters():
            p.requires_grad_(not s.freeze_afs)
        return rm

    def _optimizer(self):
        s = self.settings
        lora_p = [p for n, p in self.named_params if n.startswith("model.")]
        afs_p = [p for n, p in self.named_params if n.startswith("afs.")]
        groups = [{"params": lora_p, "lr": s.lr}]
        if afs_p:
            groups.append({"params": afs_p, "lr": s.lr if s.afs_lr is None else s.afs_lr})
        opt = torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.99), weight_decay=s.weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s.steps, s.warmup, s.lr_schedule))

    # ---------------------------------------------------------------------------------------
    def _resolve_resume(self, spec: str) -> Path:
        if spec == "auto":
            cks = sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            if not cks:
                raise TrainingError(f"--resume auto: no checkpoint-* in {self.out}")
            return cks[-1]
        return Path(spec)

    def save_checkpoint(self, final: bool = False) -> Path:
        from safetensors.torch import save_file

        ck = self.out / ("final" if final else f"checkpoint-{self.step}")
        rng = rng_state()
        rngs = [rng]
        dist = _dist()
        if dist is not None:
            rngs = [None] * self.world
            dist.all_gather_object(rngs, rng)
        if self.acc.is_main_process:
            ck.mkdir(parents=True, exist_ok=True)
            save_trainable(self.rm, ck)  # lora/ + afs/
            save_file({n: p.detach().cpu().contiguous() for n, p in self.named_params}, str(ck / POLICY_NAME))
            save_trainer_state(ck, {"step": self.step, "optimizer": self.opt.state_dict(),
                                    "scheduler": self.sched.state_dict(), "rng": rngs, "world": self.world,
                                    "settings": dataclasses.asdict(self.settings)})
            derive_model_dir(self.settings.model, ck,
                             response={"lora": "lora", "afs": "afs", "afs_alpha": self.afs_alpha},
                             extra={"grpo": {"step": self.step, "data": str(self.settings.data)}})
        self.acc.wait_for_everyone()
        return ck

    def load_checkpoint(self, ck: Path) -> None:
        from safetensors.torch import load_file

        state = load_trainer_state(ck)
        tensors = load_file(str(ck / POLICY_NAME))
        with torch.no_grad():
            for n, p in self.named_params:
                p.copy_(tensors[n].to(p.device, p.dtype))
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) == self.world:
            set_rng_state(rngs[self.rank])
        else:
            seed_everything(self.settings.seed + 1000 * self.rank + self.step)

    # ---------------------------------------------------------------------------------------
    def _rollout(self, samples):
        """Generation + rewards for this process's prompts (in micro-batches)."""
        a, rm = self.settings, self.rm
        G = a.num_generations
        times = StepTimes()
        rolls = []
        for i in range(0, len(samples), a.micro_batch):
            ss = samples[i:i + a.micro_batch]
            imgs = [s.image() for s in ss]
            desc = np.stack([self.dsrc.get(s.image_id, im) for s, im in zip(ss, imgs)])
            t0 = time.perf_counter()
            batch = rm.prepare(imgs, [s.query for s in ss], desc)
            rm.model.eval()
            with torch.no_grad():
                gen = rm.generate(batch, num_return_sequences=G, max_new_tokens=a.max_completion_length,
                                  do_sample=True, temperature=a.temperature, top_p=a.top_p)
            times.generation += time.perf_counter() - t0
            t0 = time.perf_counter()
            comps = []
            for k, (s, im) in enumerate(zip(ss, imgs)):
                fn = self.masks.for_image(s.image_id, im)
                gt_masks = s.masks() if s.entities else None
                for j in range(G):
                    comps.append(score_completion(gen.texts[k * G + j], s.entities, gt_masks, fn, self.reward_cfg,
                                                  box_scale=batch.frames[k].scale_xy))
            times.rewards += time.perf_counter() - t0
            rolls.append((batch, gen, comps))
        return rolls, times

    def train_step(self) -> dict:
        a, rm = self.settings, self.rm
        G = a.num_generations
        idx = step_indices(len(self.samples), a.prompts_per_step, self.step, a.seed)
        per = len(idx) // self.world
        mine = [self.samples[i] for i in idx[self.rank * per:(self.rank + 1) * per]]
        rolls, times = self._rollout(mine)
        t0 = time.perf_counter()
        n_local = sum(g.completion_ids.shape[0] for _, g, _ in rolls)
        n_total = n_local * self.world
        stats_acc = {"kl": 0.0, "clip_frac": 0.0}
        loss_val = 0.0
        cached = []
        for batch, gen, comps in rolls:
            rewards = torch.tensor([c.total for c in comps], dtype=torch.float32)
            adv = group_advantages(rewards, G).to(rm.device)
            ref = None
            old = None
            with torch.no_grad():
                if a.beta != 0:
                    ref = sequence_logprobs(rm, batch, gen.completion_ids, gen.completion_mask, disable_adapter=True)
                if a.iterations > 1:
                    rm.model.eval()
                    old = sequence_logprobs(rm, batch, gen.completion_ids, gen.completion_mask)
            cached.append((batch, gen, adv, ref, old))
        for it in range(a.iterations):
            self.opt.zero_grad(set_to_none=True)
            rm.model.train()
            rm.afs.train()
            for batch, gen, adv, ref, old in cached:
                logp = sequence_logprobs(rm, batch, gen.completion_ids, gen.completion_mask)
                mask = gen.completion_mask.to(logp.device)
                loss, st = grpo_loss(logp, old if old is not None else logp.detach(), ref, adv, mask,
                                     beta=a.beta, eps=a.epsilon)
                # mean over ALL sequences of the global batch: weight each micro-batch by its share
                w = gen.completion_ids.shape[0] / n_local
                (loss * w).backward()
                loss_val += float(loss.detach()) * w / a.iterations
                for k in stats_acc:
                    stats_acc[k] += st[k] * w / a.iterations
            _allreduce_mean_grads(self.params)
            gn = torch.nn.utils.clip_grad_norm_(self.params, a.max_grad_norm)
            self.opt.step()
        self.sched.step()
        self.step += 1
        times.update = time.perf_counter() - t0
        # logging (gathered over processes)
        comps = [c for _, _, cs in rolls for c in cs]
        clen = [float(m.sum()) for _, g, _ in rolls for m in g.completion_mask]
        cols = {
            "total": _gather_floats([c.total for c in comps], self.acc.device),
            "format": _gather_floats([c.format for c in comps], self.acc.device),
            "answer": _gather_floats([c.answer for c in comps], self.acc.device),
            "ground": _gather_floats([c.ground for c in comps], self.acc.device),
            "parse_ok": _gather_floats([float(c.status in ("ok", "no_target")) for c in comps], self.acc.device),
            "len": _gather_floats(clen, self.acc.device),
        }
        scal = _gather_floats([loss_val, stats_acc["kl"], stats_acc["clip_frac"], times.generation, times.rewards,
                               times.update], self.acc.device)
        k = len(scal) // self.world
        scal = np.array(scal).reshape(self.world, k).mean(0)
        rec = {"step": self.step}
        for name in ("total", "format", "answer", "ground"):
            rec[f"reward/{name}"] = float(np.mean(cols[name]))
            rec[f"reward/{name}_std"] = float(np.std(cols[name]))
        rec.update({"parse_ok": float(np.mean(cols["parse_ok"])), "kl": float(scal[1]), "loss": float(scal[0]),
                    "clip_frac": float(scal[2]), "completion_len": float(np.mean(cols["len"])),
                    "grad_norm": float(gn), "lr": float(self.sched.get_last_lr()[0]),
                    "time/generation": float(scal[3]), "time/rewards": float(scal[4]), "time/update": float(scal[5]),
                    "completions": n_total})
        return rec

    def train(self) -> dict:
        a = self.settings
        last = {}
        bar = progress(total=a.steps, initial=self.step, desc="grpo", quiet=a.quiet,
                       disable=not self.acc.is_main_process)
        t_start, step0 = time.perf_counter(), self.step
        while self.step < a.steps:
            t0 = time.perf_counter()
            last = self.train_step()
            last["step_s"] = time.perf_counter() - t0
            el = time.perf_counter() - t_start
            last["elapsed_s"] = round(el, 1)
            last["eta_s"] = round(el / max(1, self.step - step0) * (a.steps - self.step), 1)
            self.log.log(last)
            bar.set_postfix(reward=f"{last['reward/total']:.3f}", kl=f"{last['kl']:.3g}")
            bar.update(1)
            if a.save_every and self.step % a.save_every == 0 and self.step < a.steps:
                self.save_checkpoint()
        bar.close()
        self.log.close()
        if a.dump_replica_weights:  # every process writes its own copy (replica consistency checks)
            from safetensors.torch import save_file

            self.out.mkdir(parents=True, exist_ok=True)
            save_file({n: p.detach().cpu().contiguous() for n, p in self.named_params},
                      str(self.out / f"replica-{self.rank}.safetensors"))
        ck = self.save_checkpoint(final=True)
        if self.acc.is_main_process:
            print(json.dumps({"model_dir": str(ck), "steps": self.step,
                              "final_reward": last.get("reward/total")}))
        return last


def run_grpo(s: GrpoSettings) -> dict:
    return GRPOTrainer(s).train()
