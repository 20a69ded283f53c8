#!/usr/bin/env python3
"""Mask-decoder latency: PyTorch vs onnxruntime (vs TensorRT where present).

Times the prompt encoder + mask decoder only (what the backends differ in; the image encoder runs
once per frame in PyTorch for all of them), from fixed image embeddings, for one box per call and
for a batch of 4 boxes (per-box latency = call latency / boxes). Configurations:
  tiny-sam / tiny-sam2      the test checkpoints (earl_ros.model.tiny_sam)
  sam-vit_b decoder         SAM decoder at real size: 256-d, 64x64 embedding, 256x256 logits
  sam2-hiera_large decoder  SAM 2 decoder at real size: 256-d, 64x64 embedding + 32x256x256 and
                            64x128x128 high-res features
SAM's decoder is the same size for vit_b/l/h and SAM 2's for every Hiera size, so the image encoder
is built tiny (never run) and the weights are random: timing only.

    python bench/mask_decoder.py [--threads N] [--budget-s 4] [--out bench/results/mask_decoder.md]

Bounded: each (config, boxes) group runs its backends round-robin for about --budget-s seconds per
backend (at least 5, at most 200 timed calls each), so machine load hits every backend alike.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))



def _real_sam_decoder_model():
    """SamModel with a real-size prompt encoder + mask decoder (vit_b..h share it) and a tiny ViT."""
    import torch
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, output_channels=256, num_hidden_layers=1, num_attention_heads=1,
                             image_size=1024, patch_size=16, window_size=0, global_attn_indexes=[0],
                             num_pos_feats=128)
    cfg = SamConfig(vision_config=vision, prompt_encoder_config=SamPromptEncoderConfig(),
                    mask_decoder_config=SamMaskDecoderConfig())
    return SamModel(cfg).eval()


def _real_sam2_decoder_model():
    """Sam2Model with a real-size prompt encoder + mask decoder (every Hiera size shares it), tiny Hiera."""
    import torch
    from transformers import Sam2Config, Sam2MaskDecoderConfig, Sam2Model, Sam2PromptEncoderConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    torch.manual_seed(0)
    backbone = Sam2HieraDetConfig(hidden_size=8, num_attention_heads=1, image_size=[1024, 1024],
                                  blocks_per_stage=[1, 1, 1, 1], embed_dim_per_stage=[8, 16, 32, 64],
                                  num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[8, 4, 4, 2],
                                  global_attention_blocks=[], window_positional_embedding_background_size=[4, 4])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                              backbone_feature_sizes=[[256, 256], [128, 128], [64, 64]], fpn_hidden_size=256)
    cfg = Sam2Config(vision_config=vision, prompt_encoder_config=Sam2PromptEncoderConfig(),
                     mask_decoder_config=Sam2MaskDecoderConfig())
    return Sam2Model(cfg).eval()


def _tiny(kind):
    from transformers import Sam2Model, SamModel

    from earl_ros.model.tiny_sam import tiny_sam2_config, tiny_sam_config

    import torch

    torch.manual_seed(0)
    return (SamModel(tiny_sam_config()) if kind == "sam" else Sam2Model(tiny_sam2_config())).eval()


CONFIGS = {
    "tiny-sam": ("sam", lambda: _tiny("sam")),
    "tiny-sam2": ("sam2", lambda: _tiny("sam2")),
    "sam-vit_b decoder": ("sam", _real_sam_decoder_model),
    "sam2-hiera_large decoder": ("sam2", _real_sam2_decoder_model),
}


def _time_group(fns: dict, budget_s: float, min_iters=5, max_iters=200) -> dict:
    """Time several backends round-robin (one call each per round), so that load from other
    processes on a shared machine hits all of them alike and the ratios stay meaningful."""
    for fn in fns.values():  # warm-up (allocations, ORT arena, lazy init)
        for _ in range(3):
            fn()
    times = {k: [] for k in fns}
    t_end = time.perf_counter() + budget_s * len(fns)
    rounds = 0
    while rounds < max_iters and (rounds < min_iters or time.perf_counter() < t_end):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = (statistics.median(ts), ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))], len(ts))
    return out


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _machine_info(ort_providers, load_before: str):
    import onnxruntime as ort
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} logical cores, {gpu}; python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {ort.__version__} ({', '.join(ort_providers)}); "
            f"{torch.get_num_threads()} CPU thread(s) for both; 1/5/15-min load average before the run {load_before}, after {_load()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for torch and onnxruntime alike (default 1: on shared machines more "
                         "threads mostly measure the neighbours)")
    ap.add_argument("--budget-s", type=float, default=4.0, help="seconds per (config, backend, boxes) cell")
    ap.add_argument("--boxes", default="1,4", help="boxes per call (default 1,4)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of: " + ", ".join(CONFIGS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "mask_decoder.md"))
    args = ap.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    from earl_ros.export.onnx_export import export_decoder_onnx, random_inputs
    from earl_ros.model.ort_runner import OrtDecoderBackend
    from earl_ros.model.tensorrt_runner import tensorrt_available
    from earl_ros.model.decoder_io import EMBED_INPUTS
    from earl_ros.model.segmenter import TorchDecoderBackend

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    use_trt = tensorrt_available() and torch.cuda.is_available()
    counts = [int(x) for x in args.boxes.split(",")]
    load_before = _load()
    t_start = time.perf_counter()
    rows, ort_providers = [], ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory(prefix="earl-bench-") as tmp:
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            kind, make = CONFIGS[name]
            model = make()
            onnx = export_decoder_onnx(model, kind, Path(tmp) / name.replace(" ", "_") / "decoder.onnx")
            feeds = random_inputs(model, kind, max(counts), seed=0)
            emb = {k: torch.from_numpy(feeds[k]) for k in EMBED_INPUTS[kind]}
            backends = [("torch-cpu", TorchDecoderBackend(model, kind, "cpu"))]
            ort_be = OrtDecoderBackend(onnx, kind, intra_op_threads=args.threads)
            ort_providers = ort_be.providers
            backends.append(("onnxruntime", ort_be))
            if torch.cuda.is_available():
                backends.append(("torch-cuda", TorchDecoderBackend(model, kind, "cuda")))
            if use_trt:
                from earl_ros.model.tensorrt_runner import TrtDecoderBackend

                backends.append(("tensorrt-fp32", TrtDecoderBackend(onnx, kind, cache_dir=Path(tmp) / "trt")))
                backends.append(("tensorrt-fp16", TrtDecoderBackend(onnx, kind, fp16=True, cache_dir=Path(tmp) / "trt")))
            for n in counts:
                boxes = feeds["boxes"][:n]
                fns = {}
                for bname, be in backends:
                    prepared = be.prepare({k: v.to("cuda") if bname == "torch-cuda" else v for k, v in emb.items()})

                    def call(be=be, prepared=prepared, bname=bname):
                        out = be.run(prepared, boxes)
                        if bname.startswith(("torch-cuda", "tensorrt")):
                            torch.cuda.synchronize()
                        return out

                    fns[bname] = call
                with torch.inference_mode():
                    res = _time_group(fns, args.budget_s)
                ref = res["torch-cpu"][0]
                for bname, (p50, p95, iters) in res.items():
                    rows.append((name, n, bname, p50, p95, p50 / n, ref / p50, iters))
                    print(f"  {name:26s} N={n} {bname:14s} p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  ({iters} calls)",
                          file=sys.stderr, flush=True)
            del model, backends
    elapsed = time.perf_counter() - t_start
    info = _machine_info(ort_providers, load_before)
    lines = [
        f"Mask decoder (prompt encoder + mask decoder) latency, random weights. Machine: {info}. "
        f"Per-cell budget {args.budget_s:g} s; total {elapsed:.0f} s. Speed-up = torch-cpu p50 / backend p50 "
        "(same config, same box count). Produced by `python bench/mask_decoder.py`.",
        "",
        "| config | boxes/call | backend | p50 ms | p95 ms | per-box p50 ms | speed-up vs torch-cpu | calls |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, n, bname, p50, p95, per_box, ratio, iters in rows:
        lines.append(f"| {name} | {n} | {bname} | {p50:.2f} | {p95:.2f} | {per_box:.2f} | {ratio:.2f}x | {iters} |")
    if not use_trt:
        lines += ["", "TensorRT: not measured (tensorrt not importable or no CUDA device on this machine)."]
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
