"""Shared helpers of the training commands: seeding, model dirs, logging, data prep."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from earl_ros.model.manifest import MANIFEST_NAME, write_manifest
from training.errors import TrainingError

# Tokens a response/coarse model must never sample: a sampled <|image_pad|> in a completion breaks
# the teacher-forced re-scoring (the model counts image tokens in the whole sequence).
_NEVER_SAMPLE = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


# ----------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def suppress_special_tokens(stage) -> list[int]:
    """Forbid sampling image/vision placeholder tokens (saved with the generation config)."""
    tok = stage.tokenizer
    ids = []
    for t in _NEVER_SAMPLE:
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.append(int(i))
    gc = stage.base_model.generation_config
    gc.suppress_tokens = sorted(set(list(gc.suppress_tokens or []) + ids))
    return ids


def lr_lambda(total_steps: int, warmup_ratio: float, schedule: str = "linear"):
    warm = max(1, int(math.ceil(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            prog = (step - warm) / max(1, total_steps - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return f


# ----------------------------------------------------------------------------------------------
# model dirs

def read_manifest_raw(model_dir: str | Path) -> dict:
    p = Path(model_dir) / MANIFEST_NAME
    if not p.is_file():
        raise TrainingError(f"{p} is missing: --model must be an EARL model dir (build a tiny one with "
                         "`python -m earl_ros.model.tiny DIR`)")
    return yaml.safe_load(p.read_text())


def _abs(root: Path, v):
    if v in (None, "", "null"):
        return None
    p = Path(str(v)).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def derive_model_dir(src_dir: str | Path, out_dir: str | Path, coarse: dict | None = None,
                     response: dict | None = None, name: str | None = None, extra: dict | None = None,
                     limits: dict | None = None, segmenter: dict | None = None) -> Path:
    """Write out_dir/earl.yaml: the source manifest with every path made absolute, then the given
    section overrides (paths in overrides are relative to out_dir). Unchanged parts are not copied."""
    src, out = Path(src_dir).resolve(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = read_manifest_raw(src)
    data = dict(raw)
    c = dict(raw["coarse"])
    c["path"], c["lora"] = _abs(src, c.get("path")), _abs(src, c.get("lora"))
    r = dict(raw["response"])
    r["path"], r["lora"], r["afs"] = _abs(src, r.get("path")), _abs(src, r.get("lora")), _abs(src, r.get("afs"))
    s = dict(raw["segmenter"])
    s["path"], s["decoder_onnx"] = _abs(src, s.get("path")), _abs(src, s.get("decoder_onnx"))
    if s.get("video_memory"):
        s["video_memory"] = _abs(src, s["video_memory"])
    c.update(coarse or {})
    r.update(response or {})
    s.update(segmenter or {})
    data.update(coarse=c, response=r, segmenter=s)
    if limits:
        data["limits"] = {**(raw.get("limits") or {}), **limits}
    if name:
        data["name"] = name
    data.setdefault("training", {})
    data["training"] = {**(data.get("training") or {}), **(extra or {}), "derived_from": str(src)}
    write_manifest(out, data)
    return out


def manifest_paths(model_dir: str | Path) -> dict:
    """Absolute paths of the parts of a model dir."""
    from earl_ros.model.manifest import Manifest

    m = Manifest.load(model_dir)
    return {"coarse": m.coarse.path, "coarse_lora": m.coarse.lora, "pooling": m.coarse.pooling,
            "response": m.response.path, "response_lora": m.response.lora, "afs": m.response.afs,
            "afs_alpha": m.response.afs_alpha, "segmenter": m.segmenter.path, "limits": m.limits}


# ----------------------------------------------------------------------------------------------
# logging

def _keep_records_up_to(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and not (json.loads(line).get("step") or 0) > step]
    path.write_text("".join(line + "\n" for line in kept))


class JsonlLogger:
    """One JSON object per line in out_dir/log.jsonl, a compact line on stderr, and (with
    `tensorboard=DIR`) the same scalars as TensorBoard events in DIR (training/tracking.py)."""

    def __init__(self, path: str | Path | None, echo: bool = True, append: bool = False,
                 tensorboard: str | Path | None = None, resume_step: int | None = None):
        """resume_step: the run continues from a checkpoint at that step, so the log is kept up to it
        (records an interrupted run wrote after its checkpoint are dropped) and continues after it."""
        self.path = Path(path) if path else None
        self.echo = echo
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                _keep_records_up_to(self.path, resume_step)
            elif not append and self.path.exists():
                self.path.unlink()
        self.mirror = None
        if tensorboard is not None:
            from training.tracking import TensorBoardMirror

            self.mirror = TensorBoardMirror(tensorboard, None if resume_step is None else resume_step + 1)

    def log(self, rec: dict) -> None:
        rec = {"time": round(time.time(), 3), **rec}
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if self.mirror is not None:
            self.mirror.log(rec)
        if self.echo:
            keys = [k for k in rec if k not in ("time",)]
            parts = [f"{k}={rec[k]:.4g}" if isinstance(rec[k], float) else f"{k}={rec[k]}" for k in keys]
            print(" ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()


def torch_threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(int(n))


def env_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ----------------------------------------------------------------------------------------------
# descriptors file

def save_descriptors(path: str | Path, descriptors: dict[str, np.ndarray], texts: dict[str, str] | None = None,
                     meta: dict | None = None) -> Path:
    """safetensors file: one float32 [D] tensor per image id; texts (descriptions) in a JSON sidecar."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md = {k: str(v) for k, v in (meta or {}).items()}
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in descriptors.items()}, str(path), metadata=md)
    if texts is not None:
        path.with_suffix(".texts.json").write_text(json.dumps(texts, indent=1, sort_keys=True))
    return path


def load_descriptors(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))
