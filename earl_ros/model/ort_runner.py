"""onnxruntime backend for the exported mask decoder.

Providers are configurable. Default: CUDA then CPU where onnxruntime offers them (TensorRT EP only
when asked for explicitly: it builds engines at session start). onnxruntime-gpu lists CUDA/TensorRT
as *available* even on a machine without a GPU and then quietly runs on CPU, so after creating the
session we read `session.get_providers()` and log what was actually selected; `.providers` holds it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .decoder_io import BOXES_INPUT, EMBED_INPUTS, OUTPUTS
from .errors import BackendUnavailableError, ModelDirError

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}


def normalize_providers(providers) -> list:
    """'cuda,cpu' / ['cuda', 'CPUExecutionProvider'] / [('CUDAExecutionProvider', {...})] -> ORT list."""
    if providers is None:
        return []
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    out = []
    for p in providers:
        if isinstance(p, (tuple, list)):
            out.append((PROVIDER_ALIASES.get(str(p[0]).lower(), p[0]), dict(p[1])))
        else:
            out.append(PROVIDER_ALIASES.get(str(p).lower(), str(p)))
    return out


def default_providers(available: Sequence[str]) -> list[str]:
    prefs = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = [p for p in prefs if p in available]
    return chosen or list(available)


class OrtDecoderRunner:
    """Runs decoder.onnx: feeds dict of float32 numpy -> (low_res_masks [N,h,w], iou_scores [N])."""

    def __init__(self, onnx_path, providers=None, intra_op_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a hard requirement
            raise BackendUnavailableError(f"onnxruntime is not installed: {e}") from e
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise ModelDirError(f"exported mask decoder not found: {self.onnx_path}")
        available = ort.get_available_providers()
        requested = normalize_providers(providers) or default_providers(available)
        names = [p[0] if isinstance(p, tuple) else p for p in requested]
        missing = [n for n in names if n not in available]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime providers {missing} are not available here (available: {available})"
            )
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if intra_op_threads:
            so.intra_op_num_threads = int(intra_op_threads)
        self.session = ort.InferenceSession(str(self.onnx_path), sess_options=so, providers=requested)
        self.requested = names
        self.providers = list(self.session.get_providers())
        if self.providers[: 1] != names[: 1]:
            log.warning(
                "onnxruntime: requested providers %s but the session runs on %s (first choice not selected)",
                names, self.providers,
            )
        log.info("onnxruntime mask decoder %s: providers selected %s", self.onnx_path.name, self.providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
        f = {k: np.ascontiguousarray(feeds[k], dtype=np.float32) for k in self.input_names}
        masks, iou = self.session.run(list(OUTPUTS), f)
        return masks, iou


class OrtDecoderBackend:
    """Segmenter backend: embeddings converted to numpy once per frame, one session call per predict."""

    name = "onnxruntime"

    def __init__(self, onnx_path, kind: str, providers=None, intra_op_threads: int | None = None):
        self.kind = kind
        self.runner = OrtDecoderRunner(onnx_path, providers=providers, intra_op_threads=intra_op_threads)
        expected = set(EMBED_INPUTS[kind]) | {BOXES_INPUT}
        if set(self.runner.input_names) != expected:
            raise ModelDirError(
                f"{onnx_path}: decoder inputs {self.runner.input_names} do not match a {kind} decoder "
                f"({sorted(expected)}); re-export it with earl-export for this segmenter"
            )

    @property
    def providers(self) -> list[str]:
        return self.runner.providers

    def prepare(self, emb: dict) -> dict:
        return {k: v.detach().float().cpu().numpy() for k, v in emb.items()}

    def run(self, prepared: dict, boxes_model: np.ndarray):
        import torch

        feeds = dict(prepared)
        feeds[BOXES_INPUT] = np.asarray(boxes_model, dtype=np.float32).reshape(-1, 4)
        masks, iou = self.runner.run(feeds)
        return torch.from_numpy(masks), torch.from_numpy(iou)


__all__ = ["OrtDecoderRunner", "OrtDecoderBackend", "normalize_providers", "default_providers"]
