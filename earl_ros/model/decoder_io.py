"""The mask decoder's runtime contract: the tensor names every backend (torch, onnxruntime, TensorRT)
reads and writes, and the file hash that keys cached engines.

One home for it, used by the segmenter and its runtime backends (`ort_runner`, `tensorrt_runner`)
and by `earl_ros/export`, which only exports and checks parity.
"""
from __future__ import annotations

import hashlib

EMBED_INPUTS = {"sam": ("image_embeddings",), "sam2": ("image_embeddings", "high_res_feats_0", "high_res_feats_1")}
BOXES_INPUT = "boxes"
OUTPUTS = ("low_res_masks", "iou_scores")
DECODER_ONNX_NAME = "decoder.onnx"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
