"""Native TensorRT backend for the exported mask decoder.

- `import tensorrt` happens lazily (only when this backend is asked for); where it is missing,
  `require_tensorrt()` raises BackendUnavailableError: never a silent fallback to another backend.
- The engine is built from decoder.onnx (optionally fp16) with one optimization profile over the
  number of boxes (min 1, opt `opt_boxes`, max `max_boxes`; the embedding inputs have fixed shapes)
  and cached on disk. The cache key is a hash of: TensorRT version, GPU name (+ compute capability),
  SHA-256 of the ONNX file, precision and the shape profile, so a driver/TensorRT upgrade, another
  GPU, a re-export or a different profile each get their own engine. Building logs a loud WARNING
  (it takes tens of seconds to minutes); the engine is written atomically next to a JSON sidecar.
- Buffers: pycuda is not used (not installable here). Inputs/outputs are torch CUDA tensors;
  their `data_ptr()` goes to `context.set_tensor_address` and the engine runs on torch's current
  CUDA stream (`execute_async_v3`), so no extra CUDA binding is needed. Requires TensorRT >= 8.6
  (name-based tensor API).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .decoder_io import BOXES_INPUT, OUTPUTS, file_sha256
from .errors import BackendUnavailableError, ModelDirError

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("EARL_TRT_CACHE", Path.home() / ".cache" / "earl_ros" / "tensorrt"))


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


def require_tensorrt():
    """Import tensorrt and check for a CUDA device; BackendUnavailableError with the fix otherwise."""
    try:
        import tensorrt as trt
    except Exception as e:
        raise BackendUnavailableError(
            "mask backend 'tensorrt' requested but the tensorrt Python package is not importable "
            f"({type(e).__name__}: {e}). Install it on a CUDA machine (pip install '.[gpu]') "
            "or use the torch / onnxruntime mask backend"
        ) from e
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("mask backend 'tensorrt' needs a CUDA GPU; torch sees none")
    return trt


def engine_cache_key(onnx_sha256: str, precision: str, profile: dict, trt_version: str, gpu_name: str) -> str:
    """Stable hex key for an engine; every argument is part of it."""
    payload = json.dumps(
        {
            "tensorrt": str(trt_version),
            "gpu": str(gpu_name),
            "onnx_sha256": str(onnx_sha256),
            "precision": str(precision),
            "profile": profile,  # tuples serialise as lists
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def box_profile(min_boxes: int = 1, opt_boxes: int = 4, max_boxes: int = 16) -> dict:
    if not 1 <= min_boxes <= opt_boxes <= max_boxes:
        raise ValueError(f"need 1 <= min_boxes <= opt_boxes <= max_boxes, got {min_boxes}, {opt_boxes}, {max_boxes}")
    return {BOXES_INPUT: [(min_boxes, 4), (opt_boxes, 4), (max_boxes, 4)]}


def _gpu_name() -> str:
    import torch

    i = torch.cuda.current_device()
    cc = torch.cuda.get_device_capability(i)
    return f"{torch.cuda.get_device_name(i)} sm_{cc[0]}{cc[1]}"


def build_engine(onnx_path, fp16: bool = False, profile: dict | None = None, workspace_gb: float = 2.0) -> bytes:
    """Parse the ONNX file and build a serialized engine (slow; use `load_or_build_engine`)."""
    trt = require_tensorrt()
    profile = profile or box_profile()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelDirError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("TensorRT: this GPU has no fast fp16; building fp16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    elif hasattr(trt.BuilderFlag, "TF32"):
        # "fp32" means fp32: TensorRT enables TF32 tensor-core math by default on Ampere and later,
        # which alone moves SAM logits by ~1e-3.
        config.clear_flag(trt.BuilderFlag.TF32)
    opt = builder.create_optimization_profile()
    for name, (mn, op, mx) in profile.items():
        opt.set_shape(name, tuple(mn), tuple(op), tuple(mx))
    config.add_optimization_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(f"TensorRT engine build failed for {onnx_path} (see TensorRT log above)")
    return bytes(serialized)


def load_or_build_engine(onnx_path, fp16: bool = False, cache_dir=None, profile: dict | None = None):
    """(engine bytes, engine path, key): reuse a cached engine or build + cache one."""

    trt = require_tensorrt()
    profile = profile or box_profile()
    precision = "fp16" if fp16 else "fp32"
    onnx_hash = file_sha256(onnx_path)
    gpu = _gpu_name()
    key = engine_cache_key(onnx_hash, precision, profile, trt.__version__, gpu)
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"decoder-{precision}-{key}.engine"
    if path.is_file():
        log.info("TensorRT engine cache hit: %s", path)
        return path.read_bytes(), path, key
    log.warning(
        "BUILDING TensorRT engine for %s (%s, TensorRT %s, %s, boxes %s); this can take minutes, "
        "the result is cached at %s", onnx_path, precision, trt.__version__, gpu, profile[BOXES_INPUT], path,
    )
    t0 = time.perf_counter()
    data = build_engine(onnx_path, fp16=fp16, profile=profile)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    meta = {"key": key, "onnx": str(onnx_path), "onnx_sha256": onnx_hash, "precision": precision,
            "tensorrt": trt.__version__, "gpu": gpu, "profile": profile, "build_s": round(time.perf_counter() - t0, 2)}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    log.warning("TensorRT engine built in %.1f s: %s", meta["build_s"], path)
    return data, path, key


class TrtDecoderRunner:
    """Executes the engine with torch CUDA tensors as I/O buffers."""

    def __init__(self, onnx_path, fp16: bool = False, cache_dir=None, max_boxes: int = 16, opt_boxes: int = 4):
        trt = require_tensorrt()
        import torch

        self.torch = torch
        self.max_boxes = int(max_boxes)
        self.profile = box_profile(1, min(opt_boxes, max_boxes), max_boxes)
        data, self.engine_path, self.key = load_or_build_engine(onnx_path, fp16=fp16, cache_dir=cache_dir,
                                                                profile=self.profile)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendUnavailableError(f"TensorRT could not deserialize {self.engine_path}")
        self.context = self.engine.create_execution_context()
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._dtypes = {n: torch.from_numpy(np.zeros(0, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
                        for n in self.names}

    def run(self, feeds: dict):
        """feeds: name -> torch tensor or numpy; returns torch CUDA (low_res_masks, iou_scores)."""
        torch = self.torch
        n = int(feeds[BOXES_INPUT].shape[0])
        if n > self.max_boxes:  # split: the profile's max
            parts = [self.run({**feeds, BOXES_INPUT: feeds[BOXES_INPUT][i:i + self.max_boxes]})
                     for i in range(0, n, self.max_boxes)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        keep = []
        for name in self.inputs:
            t = torch.as_tensor(feeds[name], device=self.device).to(self._dtypes[name]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in OUTPUTS:
            shape = tuple(self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError("TensorRT execution failed")
        stream.synchronize()
        return outs[OUTPUTS[0]].float(), outs[OUTPUTS[1]].float()


class TrtDecoderBackend:
    """Segmenter backend: embeddings moved to the GPU once per frame."""

    name = "tensorrt"

    def __init__(self, onnx_path, kind: str, fp16: bool = False, cache_dir=None, max_boxes: int = 16):
        self.kind = kind
        if cache_dir is None:
            cache_dir = Path(onnx_path).parent / "tensorrt_cache" if os.access(Path(onnx_path).parent, os.W_OK) else None
        self.runner = TrtDecoderRunner(onnx_path, fp16=fp16, cache_dir=cache_dir, max_boxes=max_boxes)

    def prepare(self, emb: dict) -> dict:
        return {k: v.detach().float().to(self.runner.device).contiguous() for k, v in emb.items()}

    def run(self, prepared: dict, boxes_model: np.ndarray):
        feeds = dict(prepared)
        feeds[BOXES_INPUT] = np.asarray(boxes_model, dtype=np.float32).reshape(-1, 4)
        return self.runner.run(feeds)


__all__ = [
    "require_tensorrt", "tensorrt_available", "engine_cache_key", "box_profile", "build_engine",
    "load_or_build_engine", "TrtDecoderRunner", "TrtDecoderBackend", "DEFAULT_CACHE_DIR",
]
