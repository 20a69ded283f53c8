"""Export a segmenter's decoder and measure parity with PyTorch.

Parity is measured on the decoder alone, from the same image embeddings, on random boxes over a
deterministic synthetic test image (non-square, so the box transform and the upscaling are
exercised): max |logit difference| of the low-resolution masks, max |IoU-score difference|, and the
IoU of the binarized full-size masks (both upscaled by the same `Segmenter.upscale_logits`).
onnxruntime must match PyTorch to <= 1e-4 with mask IoU 1.0 over decided pixels (see THRESHOLDS;
the strict all-pixel IoU and the number of flipped pixels are reported too). TensorRT (when
requested) is held to precision-dependent thresholds (fp32: 1e-3; fp16: mask IoU >= 0.98).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from earl_ros.model.decoder_io import DECODER_ONNX_NAME
from earl_ros.model.segmenter import Segmenter

from .onnx_export import DEFAULT_OPSET, export_decoder_onnx, file_sha256

log = logging.getLogger(__name__)

# decision_margin: a full-size pixel whose PyTorch logit is within this distance of the 0 threshold
# is "undecided": a backend that is inside the logit tolerance may legitimately binarize it either way
# (PyTorch float32 itself is only ~4e-6 away from a float64 evaluation of the tiny SAM 2 decoder).
# The gate is on the IoU over decided pixels; the strict IoU over all pixels is reported beside it.
THRESHOLDS = {
    "onnxruntime": {"max_abs_logit_diff": 1e-4, "mask_iou_min": 1.0, "decision_margin": 1e-4},
    "tensorrt-fp32": {"max_abs_logit_diff": 1e-3, "mask_iou_min": 1.0, "decision_margin": 1e-3},
    "tensorrt-fp16": {"max_abs_logit_diff": None, "mask_iou_min": 0.98, "decision_margin": 5e-2},
}


def make_test_image(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """Deterministic RGB test frame: smooth gradients, a few filled rectangles and some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], axis=-1)
    for _ in range(4):
        x1, y1 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        x2, y2 = x1 + rng.integers(w // 8, w // 2), y1 + rng.integers(h // 8, h // 2)
        img[y1:y2, x1:x2] = rng.integers(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_boxes(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """n valid boxes (x1,y1,x2,y2) in original pixels."""
    rng = np.random.default_rng(seed)
    h, w = hw
    x1 = rng.uniform(0, w * 0.7, n)
    y1 = rng.uniform(0, h * 0.7, n)
    x2 = np.minimum(x1 + rng.uniform(w * 0.05, w * 0.5, n), w - 1)
    y2 = np.minimum(y1 + rng.uniform(h * 0.05, h * 0.5, n), h - 1)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def mask_iou(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-item IoU of bool masks [N,H,W] (only over `valid` pixels if given); two empty masks -> 1."""
    if valid is not None:
        a, b = a & valid, b & valid
    inter = np.logical_and(a, b).reshape(len(a), -1).sum(1)
    union = np.logical_or(a, b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare_backends(seg: Segmenter, other, img: np.ndarray, box_counts=(1, 5), seed: int = 0,
                     decision_margin: float = 1e-4) -> dict:
    """Decoder parity of `other` (a Segmenter backend) against `seg`'s torch backend on `img`."""
    import torch

    seg.set_image(img, key=("parity", seed))
    emb = seg.embeddings()
    prepared = other.prepare(emb)
    hw = img.shape[:2]
    per = []
    for i, n in enumerate(box_counts):
        boxes = random_boxes(n, hw, seed=seed + 1000 * i + n)
        bm = seg.boxes_to_model(boxes, hw)
        ref_l, ref_s = seg.backend.run(emb, bm)
        t0 = time.perf_counter()
        got_l, got_s = other.run(prepared, bm)
        ms = (time.perf_counter() - t0) * 1e3
        ref_l, got_l = ref_l.float().cpu(), torch.as_tensor(got_l).float().cpu()
        ref_s, got_s = ref_s.float().cpu(), torch.as_tensor(got_s).float().cpu()
        ref_full = seg.upscale_logits(ref_l, hw).numpy()
        ref_m = ref_full > 0
        got_m = (seg.upscale_logits(got_l, hw) > 0).numpy()
        ious = mask_iou(ref_m, got_m)
        decided = np.abs(ref_full) > decision_margin
        ious_decided = mask_iou(ref_m, got_m, valid=decided)
        flipped = ref_m != got_m
        per.append({
            "num_boxes": int(n),
            "max_abs_logit_diff": float((ref_l - got_l).abs().max()),
            "max_abs_iou_score_diff": float((ref_s - got_s).abs().max()),
            "mask_iou_min": float(ious.min()),
            "mask_iou_mean": float(ious.mean()),
            "mask_iou_min_decided": float(ious_decided.min()),
            "flipped_pixels": int(flipped.sum()),
            "flipped_max_abs_ref_logit": float(np.abs(ref_full[flipped]).max()) if flipped.any() else 0.0,
            "undecided_pixels": int((~decided).sum()),
            "mask_fraction_mean": float(ref_m.mean()),
            "decoder_ms": round(ms, 3),
        })
    return {
        "max_abs_logit_diff": max(p["max_abs_logit_diff"] for p in per),
        "max_abs_iou_score_diff": max(p["max_abs_iou_score_diff"] for p in per),
        "mask_iou_min": min(p["mask_iou_min"] for p in per),
        "mask_iou_mean": float(np.mean([p["mask_iou_mean"] for p in per])),
        "mask_iou_min_decided": min(p["mask_iou_min_decided"] for p in per),
        "flipped_pixels": sum(p["flipped_pixels"] for p in per),
        "flipped_max_abs_ref_logit": max(p["flipped_max_abs_ref_logit"] for p in per),
        "decision_margin": float(decision_margin),
        "per_box_count": per,
    }


def _passes(result: dict, thr: dict) -> bool:
    ok = result["mask_iou_min_decided"] >= thr["mask_iou_min"]
    if thr.get("max_abs_logit_diff") is not None:
        ok = ok and result["max_abs_logit_diff"] <= thr["max_abs_logit_diff"]
    return bool(ok)


def export_and_check(seg_dir, out_dir, opset: int = DEFAULT_OPSET, tensorrt: bool = False, fp16: bool = False,
                     providers=None, box_counts=(1, 5), seed: int = 0, image: np.ndarray | None = None,
                     engine_cache_dir=None) -> dict:
    """Export `seg_dir`'s decoder to `out_dir`/decoder.onnx (+ TensorRT engine) and return the parity report.

    With tensorrt=True the TensorRT check runs first (BackendUnavailableError where it is missing),
    before anything is written. The report is also written to `out_dir`/parity.json.
    """
    from earl_ros.model.ort_runner import OrtDecoderBackend

    if tensorrt:
        from earl_ros.model.tensorrt_runner import require_tensorrt

        require_tensorrt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg = Segmenter.from_pretrained(seg_dir, backend="torch", device="cpu")
    onnx_path = export_decoder_onnx(seg.model, seg.kind, out / DECODER_ONNX_NAME, opset=opset)
    img = make_test_image(seed=seed) if image is None else image
    report = {
        "segmenter": seg.kind,
        "model": str(Path(seg_dir).resolve()),
        "onnx": str(onnx_path.resolve()),
        "onnx_sha256": file_sha256(onnx_path),
        "opset": int(opset),
        "image_hw": list(img.shape[:2]),
        "box_counts": list(box_counts),
        "thresholds": {},
        "backends": {},
    }
    ort_be = OrtDecoderBackend(onnx_path, seg.kind, providers=providers)
    res = compare_backends(seg, ort_be, img, box_counts=box_counts, seed=seed,
                           decision_margin=THRESHOLDS["onnxruntime"]["decision_margin"])
    res["providers"] = ort_be.providers
    res["pass"] = _passes(res, THRESHOLDS["onnxruntime"])
    report["backends"]["onnxruntime"] = res
    report["thresholds"]["onnxruntime"] = THRESHOLDS["onnxruntime"]
    if tensorrt:
        from earl_ros.model.tensorrt_runner import TrtDecoderBackend

        cache = engine_cache_dir if engine_cache_dir is not None else out
        trt_be = TrtDecoderBackend(onnx_path, seg.kind, fp16=fp16, cache_dir=cache)
        name = "tensorrt-fp16" if fp16 else "tensorrt-fp32"
        res = compare_backends(seg, trt_be, img, box_counts=box_counts, seed=seed,
                               decision_margin=THRESHOLDS[name]["decision_margin"])
        res["engine"] = str(trt_be.runner.engine_path)
        res["engine_key"] = trt_be.runner.key
        res["pass"] = _passes(res, THRESHOLDS[name])
        report["backends"][name] = res
        report["thresholds"][name] = THRESHOLDS[name]
    report["pass"] = all(b["pass"] for b in report["backends"].values())
    (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["export_and_check", "compare_backends", "mask_iou", "random_boxes", "make_test_image", "THRESHOLDS"]
