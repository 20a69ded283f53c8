"""Boxes -> masks with a frozen SAM-family segmenter (transformers SamModel / Sam2Model).

Design (see docs/export.md):
- The image encoder always runs in PyTorch, once per frame: `set_image(img, key)` computes the image
  embedding (plus SAM 2's two high-resolution feature maps) and caches it by `key` (a frame stamp or
  any hashable; `None` = a hash of the pixels). A small LRU keeps the last few frames, so queries
  against a buffered frame do not re-encode.
- Everything around the decoder is ours and shared by every backend: image preprocessing (resize,
  rescale, normalise, pad, read from the checkpoint's processor config; no torchvision), the box
  transform original pixels -> model-input pixels, and the upscaling of the low-resolution mask
  logits back to the original image size (+ threshold at 0).
- A backend only runs prompt encoder + mask decoder: (embeddings, boxes in model-input pixels
  float32[N,4]) -> (low-res logits float32[N,h,w], IoU scores float32[N]). `torch` runs
  `PromptMaskDecoder` below; `onnxruntime` and `tensorrt` run the ONNX export of that same module
  (earl_ros/export, imported lazily so the torch path never needs onnx/tensorrt).
- Single-mask output, box prompt only (METHOD.md section 1). SAM 2 keeps its "dynamic multimask via
  stability" fallback exactly as the checkpoint's single-mask path does.
- Thread-safe: one re-entrant lock around the cache and every model call.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .decoder_io import BOXES_INPUT, DECODER_ONNX_NAME, EMBED_INPUTS, OUTPUTS
from .errors import BackendUnavailableError, InvalidImageError, ModelDirError, NoFrameError
from .manifest import MAX_BOX_REFINE, valid_box_refine

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Checkpoint inspection
# --------------------------------------------------------------------------------------------
def detect_kind(path) -> str:
    """'sam' or 'sam2' from a HF checkpoint directory's config.json (ModelDirError otherwise)."""
    p = Path(path)
    if not p.is_dir():
        raise ModelDirError(f"segmenter directory not found: {p}")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ModelDirError(f"segmenter config missing: {cfg} (expected a Hugging Face SAM / SAM 2 directory)")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type", "")
    except (OSError, ValueError) as e:
        raise ModelDirError(f"unreadable segmenter config {cfg}: {e}") from e
    if model_type == "sam":
        return "sam"
    if model_type in ("sam2", "sam2_video"):
        return "sam2"
    raise ModelDirError(f"{cfg}: model_type {model_type!r} is not a SAM or SAM 2 checkpoint")


def _weights_present(p: Path) -> bool:
    return any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").is_file()


def read_preprocess_config(path, kind: str, model_config) -> dict:
    """Preprocessing parameters from preprocessor_config.json / processor_config.json, with model defaults.

    Returns {"mode": "longest_edge"|"square", "size": int or (h, w), "pad": (h, w) | None,
    "mean", "std", "rescale"}.
    """
    p = Path(path)
    cfg: dict[str, Any] = {}
    if (p / "preprocessor_config.json").is_file():
        cfg = json.loads((p / "preprocessor_config.json").read_text())
    elif (p / "processor_config.json").is_file():
        cfg = json.loads((p / "processor_config.json").read_text()).get("image_processor", {}) or {}
    image_size = int(model_config.prompt_encoder_config.image_size)
    size = cfg.get("size") or {}
    mean = tuple(float(x) for x in (cfg.get("image_mean") or IMAGENET_MEAN))
    std = tuple(float(x) for x in (cfg.get("image_std") or IMAGENET_STD))
    rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    if not cfg.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if kind == "sam":
        longest = int(size.get("longest_edge", image_size))
        pad = cfg.get("pad_size") or {"height": image_size, "width": image_size}
        return {"mode": "longest_edge", "size": longest, "pad": (int(pad["height"]), int(pad["width"])),
                "mean": mean, "std": std, "rescale": rescale}
    h = int(size.get("height", image_size))
    w = int(size.get("width", image_size))
    return {"mode": "square", "size": (h, w), "pad": None, "mean": mean, "std": std, "rescale": rescale}


def _sam_resized_hw(hw: tuple[int, int], longest_edge: int) -> tuple[int, int]:
    """Same rounding as transformers' SamImageProcessor._get_preprocess_shape."""
    h, w = hw
    scale = longest_edge * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


# --------------------------------------------------------------------------------------------
# The decoder module (what the torch backend runs and what earl_ros/export exports)
# --------------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def build_prompt_mask_decoder(model, kind: str):
    """nn.Module: (embeddings..., boxes float32[N,4] in model-input px) -> (logits [N,h,w], iou [N]).

    The N boxes become the batch dimension (one box per item, the image embedding broadcast), which
    keeps the graph free of data-dependent repeats, so the ONNX export has a clean dynamic N.
    Shares (does not copy) the prompt encoder / mask decoder weights of `model`.
    """
    torch = _torch()
    nn = torch.nn

    class PromptMaskDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.kind = kind
            self.prompt_encoder = model.prompt_encoder
            self.mask_decoder = model.mask_decoder
            with torch.no_grad():
                pe = model.get_image_wide_positional_embeddings().detach().clone()
            self.register_buffer("image_pe", pe, persistent=False)

        def _prompt(self, boxes):
            n = boxes.shape[0]
            sparse, dense = self.prompt_encoder(
                input_points=None, input_labels=None, input_boxes=boxes.reshape(n, 1, 4), input_masks=None
            )
            return n, sparse, dense

        def forward(self, image_embeddings, boxes, high_res_feats_0=None, high_res_feats_1=None):
            n, sparse, dense = self._prompt(boxes)
            emb = image_embeddings.expand(n, -1, -1, -1)
            pe = self.image_pe.to(emb.dtype).expand(n, -1, -1, -1)
            if self.kind == "sam":
                masks, iou = self.mask_decoder(
                    image_embeddings=emb,
                    image_positional_embeddings=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                )
            else:
                feats = [high_res_feats_0.expand(n, -1, -1, -1), high_res_feats_1.expand(n, -1, -1, -1)]
                masks, iou, _, _ = self.mask_decoder(
                    image_embeddings=emb,
                    image_positional_embeddings=pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                    high_resolution_features=feats,
                )
            # masks [N, 1, 1, h, w], iou [N, 1, 1]
            return masks[:, 0, 0], iou[:, 0, 0]

    return PromptMaskDecoder().eval()


# --------------------------------------------------------------------------------------------
def mask_boxes(masks: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Tight [x1, y1, x2, y2) boxes of bool masks [N,H,W]; an empty mask keeps its fallback box."""
    out = np.asarray(fallback, dtype=np.float32).copy()
    for i, m in enumerate(masks):
        cols, rows = np.flatnonzero(m.any(axis=0)), np.flatnonzero(m.any(axis=1))
        if cols.size:
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


# --------------------------------------------------------------------------------------------
# Backends: only prompt encoder + mask decoder differ
class TorchDecoderBackend:
    name = "torch"

    def __init__(self, model, kind: str, device):
        self.kind = kind
        self.device = device
        self.module = build_prompt_mask_decoder(model, kind).to(device)

    def prepare(self, emb: dict):
        return emb  # torch tensors on self.device already

    def run(self, prepared: dict, boxes_model: np.ndarray):
        torch = _torch()
        with torch.inference_mode():
            b = torch.as_tensor(boxes_model, dtype=torch.float32, device=self.device)
            e = prepared
            if self.kind == "sam":
                logits, iou = self.module(e["image_embeddings"], b)
            else:
                logits, iou = self.module(e["image_embeddings"], b, e["high_res_feats_0"], e["high_res_feats_1"])
        return logits.float(), iou.float()


def _resolve_decoder_path(seg_dir: Path, decoder_path) -> Path:
    if decoder_path is None:
        cand = seg_dir / DECODER_ONNX_NAME
    else:
        cand = Path(decoder_path)
        if cand.is_dir():
            cand = cand / DECODER_ONNX_NAME
    if not cand.is_file():
        raise ModelDirError(
            f"exported mask decoder not found: {cand}. Run `earl-export --model <model dir> --out <dir>` "
            "and point `segmenter.decoder_onnx` in earl.yaml (or decoder_path) at the written decoder.onnx"
        )
    return cand


# --------------------------------------------------------------------------------------------
# Segmenter
# --------------------------------------------------------------------------------------------
class Segmenter:
    """Promptable segmenter: one image embedding per frame, one decoder call for all boxes of a frame."""

    def __init__(self, model, kind: str, preprocess: dict, backend, device="cpu", cache_size: int = 4,
                 path: Path | None = None):
        self.model = model
        self.kind = kind
        self.preprocess = preprocess
        self.backend = backend
        self.backend_name = backend.name
        self.device = device
        self.path = path
        self.cache_size = max(1, int(cache_size))
        self.encoder_calls = 0  # how many times the image encoder ran (tests and diagnostics)
        self._cache: "OrderedDict[Any, tuple]" = OrderedDict()
        self._current = None  # (key, image_hw, resized_hw, prepared)
        self._lock = threading.RLock()

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, backend: str = "torch", device: str = "cpu", decoder_path=None,
                        providers: Sequence[str] | None = None, fp16: bool = False, cache_size: int = 4,
                        engine_cache_dir=None, max_boxes: int = 16) -> "Segmenter":
        """Load a local HF SAM / SAM 2 directory.

        backend: "torch" | "onnxruntime" (needs the exported decoder: decoder_path = decoder.onnx or
        the directory holding it; default <path>/decoder.onnx) | "tensorrt" (native engine built from
        that ONNX file and cached; fp16, engine_cache_dir, max_boxes apply). providers: onnxruntime
        execution providers (default: CUDA then CPU where available). Never falls back silently.
        """
        if backend not in BACKENDS:
            raise BackendUnavailableError(f"unknown mask backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        p = Path(path)
        kind = detect_kind(p)
        if not _weights_present(p):
            raise ModelDirError(f"segmenter weights missing in {p} (expected model.safetensors)")
        onnx_path = None
        if backend == "tensorrt":
            # check before anything heavy: a clear error, never a silent fallback
            from .tensorrt_runner import require_tensorrt

            require_tensorrt()
        if backend in ("onnxruntime", "tensorrt"):
            onnx_path = _resolve_decoder_path(p, decoder_path)

        if kind == "sam":
            from transformers import SamModel as cls_model
        else:
            from transformers import Sam2Model as cls_model
        try:
            model = cls_model.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelDirError(f"cannot load segmenter from {p}: {e}") from e
        model = model.to(device).eval()
        preprocess = read_preprocess_config(p, kind, model.config)

        if backend == "torch":
            be = TorchDecoderBackend(model, kind, device)
        elif backend == "onnxruntime":
            from .ort_runner import OrtDecoderBackend

            be = OrtDecoderBackend(onnx_path, kind, providers=providers)
        else:
            from .tensorrt_runner import TrtDecoderBackend

            be = TrtDecoderBackend(onnx_path, kind, fp16=fp16, cache_dir=engine_cache_dir, max_boxes=max_boxes)
        return cls(model, kind, preprocess, be, device=device, cache_size=cache_size, path=p)

    # ---- geometry shared by all backends -----------------------------------------------------
    def model_input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Size of the (unpadded) resized image the encoder sees, for an original (H, W)."""
        pp = self.preprocess
        if pp["mode"] == "longest_edge":
            return _sam_resized_hw(image_hw, pp["size"])
        return tuple(pp["size"])

    def boxes_to_model(self, boxes, image_hw: tuple[int, int]) -> np.ndarray:
        """Original-pixel boxes (x1,y1,x2,y2) -> model-input pixels (what the prompt encoder takes)."""
        from .coordinates import scale_boxes  # here: importing this module must not load torch

        h, w = image_hw
        nh, nw = self.model_input_hw(image_hw)
        return scale_boxes(boxes, (nw / w, nh / h)).astype(np.float32)

    def boxes_from_model(self, boxes, image_hw: tuple[int, int]) -> np.ndarray:
        """Inverse of boxes_to_model."""
        from .coordinates import scale_boxes

        h, w = image_hw
        nh, nw = self.model_input_hw(image_hw)
        return scale_boxes(boxes, (w / nw, h / nh))

    def upscale_logits(self, logits, image_hw: tuple[int, int]):
        """Low-res logits [N,h,w] (torch) -> full-size logits [N,H,W] (float32 torch, same device)."""
        torch = _torch()
        F = torch.nn.functional
        x = logits.float()[:, None]
        pp = self.preprocess
        if pp["mode"] == "longest_edge":
            ph, pw = pp["pad"]
            nh, nw = self.model_input_hw(image_hw)
            x = F.interpolate(x, size=(ph, pw), mode="bilinear", align_corners=False)
            x = x[..., :nh, :nw]
        x = F.interpolate(x, size=tuple(int(v) for v in image_hw), mode="bilinear", align_corners=False)
        return x[:, 0]

    def preprocess_image(self, img: np.ndarray):
        """uint8[H,W,3] -> (pixel_values float32[1,3,h,w] torch, resized (h, w))."""
        from PIL import Image

        torch = _torch()
        pp = self.preprocess
        h, w = img.shape[:2]
        if pp["mode"] == "longest_edge":
            nh, nw = _sam_resized_hw((h, w), pp["size"])
        else:
            nh, nw = pp["size"]
        pil = Image.fromarray(img)
        if (nh, nw) != (h, w):
            pil = pil.resize((nw, nh), resample=Image.BILINEAR)
        x = np.asarray(pil, dtype=np.float32) * pp["rescale"]
        x = (x - np.asarray(pp["mean"], np.float32)) / np.asarray(pp["std"], np.float32)
        if pp["pad"] is not None:
            ph, pw = pp["pad"]
            out = np.zeros((ph, pw, 3), np.float32)
            out[:nh, :nw] = x
            x = out
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        return t.to(self.device), (nh, nw)

    # ---- image embedding ---------------------------------------------------------------------
    @staticmethod
    def _check_image(img) -> np.ndarray:
        if not isinstance(img, np.ndarray):
            raise InvalidImageError(f"segmenter expects a numpy uint8[H,W,3] image, got {type(img).__name__}")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            raise InvalidImageError(f"segmenter expects uint8[H,W,3] with H, W > 0, got shape {img.shape}")
        if img.dtype != np.uint8:
            raise InvalidImageError(f"segmenter expects dtype uint8, got {img.dtype}")
        return np.ascontiguousarray(img)

    @staticmethod
    def image_key(img: np.ndarray) -> str:
        """Content key used when set_image is called without one."""
        h = hashlib.blake2b(img.tobytes(), digest_size=16)
        h.update(repr(img.shape).encode())
        return "px:" + h.hexdigest()

    def _encode(self, img: np.ndarray) -> tuple[dict, tuple[int, int]]:
        torch = _torch()
        px, resized = self.preprocess_image(img)
        with torch.inference_mode():
            self.encoder_calls += 1
            out = self.model.get_image_embeddings(px)
        if self.kind == "sam":
            emb = {"image_embeddings": out}
        else:  # [s0 (1,C/8,4h,4w), s1 (1,C/4,2h,2w), last (1,C,h,w)]
            emb = {"image_embeddings": out[-1], "high_res_feats_0": out[0], "high_res_feats_1": out[1]}
        emb = {k: v.float().contiguous() for k, v in emb.items()}
        return emb, resized

    def set_image(self, img: np.ndarray, key=None) -> None:
        """Make `img` the current frame; the encoder runs only if `key` is not cached."""
        img = self._check_image(img)
        if key is None:
            key = self.image_key(img)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            else:
                emb, resized = self._encode(img)
                hit = (tuple(img.shape[:2]), resized, self.backend.prepare(emb), emb)
                self._cache[key] = hit
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            self._current = (key,) + hit

    @property
    def current_key(self):
        return None if self._current is None else self._current[0]

    def embeddings(self) -> dict:
        """The current frame's embeddings (torch tensors; read-only use)."""
        with self._lock:
            if self._current is None:
                raise NoFrameError("Segmenter.set_image must be called before asking for embeddings")
            return self._current[4]

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._current = None

    # ---- prediction --------------------------------------------------------------------------
    def predict_logits(self, boxes):
        """Boxes (original px) -> (low-res logits torch [N,h,w], iou torch [N]) for the current frame."""
        b = np.asarray(boxes, dtype=np.float32)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ValueError("boxes must be finite")
        with self._lock:
            if self._current is None:
                raise NoFrameError("Segmenter.set_image must be called before predict")
            _, image_hw, _, prepared, _ = self._current
            bm = self.boxes_to_model(b, image_hw)
            return self.backend.run(prepared, bm)

    def predict(self, boxes, refine: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Boxes float[N,4] (x1,y1,x2,y2, original px) -> (masks bool[N,H,W], scores float32[N]).

        refine: how many times to prompt again with each mask's own bounding box. A rough box (a small
        language model's coordinates) gives a mask that covers the object only in part but overflows
        the box where the object does; the mask's box is then closer to the object than the prompt
        was. Still one box prompt per entity, as EARL specifies; 0 = the answer's boxes only.
        """
        if not valid_box_refine(refine):
            raise ValueError(f"refine must be an integer in 0..{MAX_BOX_REFINE}, got {refine!r}")
        with self._lock:
            if self._current is None:
                raise NoFrameError("Segmenter.set_image must be called before predict")
            image_hw = self._current[1]
            b = np.asarray(boxes, dtype=np.float32)
            if b.size == 0:
                return np.zeros((0,) + image_hw, dtype=bool), np.zeros((0,), dtype=np.float32)
            masks, scores = self._predict_once(b, image_hw)
            for _ in range(refine):
                nb = mask_boxes(masks, fallback=b)
                if np.array_equal(nb, b):
                    break  # converged: the masks already fill their prompts
                b = nb
                masks, scores = self._predict_once(b, image_hw)
        return masks, scores

    def _predict_once(self, b: np.ndarray, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        logits, iou = self.predict_logits(b)
        full = self.upscale_logits(logits, image_hw)
        return (full > 0.0).cpu().numpy(), iou.float().cpu().numpy().astype(np.float32)

    def segment(self, img: np.ndarray, boxes, key=None, refine: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """set_image + predict under one lock (no other thread can switch the frame in between)."""
        with self._lock:
            self.set_image(img, key=key)
            return self.predict(boxes, refine=refine)

    def __repr__(self) -> str:
        return f"Segmenter(kind={self.kind!r}, backend={self.backend_name!r}, device={self.device!r}, path={self.path})"


__all__ = [
    "BACKENDS",
    "Segmenter",
    "TorchDecoderBackend",
    "build_prompt_mask_decoder",
    "detect_kind",
    "read_preprocess_config",
    "EMBED_INPUTS",
    "BOXES_INPUT",
    "OUTPUTS",
    "DECODER_ONNX_NAME",
]
