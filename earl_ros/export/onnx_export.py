"""ONNX export of the SAM / SAM 2 prompt encoder + mask decoder (the image encoder stays in PyTorch).

Graph (opset 17 by default, exported with the TorchScript exporter, `dynamo=False`):
  inputs   image_embeddings float32[1,C,h,w]            (SAM and SAM 2)
           boxes            float32[N,4]  x1,y1,x2,y2 in model-input pixels, N dynamic (>= 1)
           high_res_feats_0 float32[1,C/8,4h,4w]        (SAM 2 only)
           high_res_feats_1 float32[1,C/4,2h,2w]        (SAM 2 only)
  outputs  low_res_masks    float32[N,4h,4w]  single-mask logits
           iou_scores       float32[N]
Upscaling to the original image size is not in the graph: `Segmenter.upscale_logits` does it for
every backend (the full-image export path of the original SAM gives wrong masks for image sizes other
than the one used at export).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from earl_ros.model.decoder_io import BOXES_INPUT, EMBED_INPUTS, OUTPUTS, file_sha256
from earl_ros.model.segmenter import build_prompt_mask_decoder

log = logging.getLogger(__name__)
DEFAULT_OPSET = 17


def embedding_shapes(model, kind: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the decoder's embedding inputs for a SamModel / Sam2Model config."""
    pc = model.config.prompt_encoder_config
    c = int(pc.hidden_size)
    h = w = int(pc.image_size) // int(pc.patch_size)
    shapes = {"image_embeddings": (1, c, h, w)}
    if kind == "sam2":
        shapes["high_res_feats_0"] = (1, c // 8, 4 * h, 4 * w)
        shapes["high_res_feats_1"] = (1, c // 4, 2 * h, 2 * w)
    return shapes


def input_names(kind: str) -> list[str]:
    names = list(EMBED_INPUTS[kind])
    names.insert(1, BOXES_INPUT)  # forward(image_embeddings, boxes, [high_res_feats_0, high_res_feats_1])
    return names


def random_inputs(model, kind: str, n_boxes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random embeddings + valid boxes (model-input px), float32, for tracing and benchmarks."""
    rng = np.random.default_rng(seed)
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in embedding_shapes(model, kind).items()}
    size = float(model.config.prompt_encoder_config.image_size)
    xy = rng.uniform(0, size * 0.6, (n_boxes, 2))
    wh = rng.uniform(size * 0.1, size * 0.4, (n_boxes, 2))
    feeds[BOXES_INPUT] = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return feeds


def export_decoder_onnx(model, kind: str, out_path, opset: int = DEFAULT_OPSET) -> Path:
    """Export PromptMaskDecoder(model) to `out_path` (ONNX, dynamic number of boxes)."""
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module = build_prompt_mask_decoder(model, kind).cpu().eval()
    names = input_names(kind)
    feeds = random_inputs(model, kind, n_boxes=3, seed=0)  # N=3: never specialise on 1
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    dynamic_axes = {BOXES_INPUT: {0: "num_boxes"}, OUTPUTS[0]: {0: "num_boxes"}, OUTPUTS[1]: {0: "num_boxes"}}
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about python-constant shapes are expected: only N is dynamic, and it is
        # checked against N=1 and N=5 by the parity tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(out_path),
            input_names=names,
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic_axes,
            opset_version=int(opset),
            do_constant_folding=True,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(out_path))
    log.info("exported %s decoder to %s (opset %d, %.1f MB)", kind, out_path, opset, out_path.stat().st_size / 1e6)
    return out_path


__all__ = ["export_decoder_onnx", "embedding_shapes", "input_names", "random_inputs", "file_sha256", "DEFAULT_OPSET"]
