"""Image input handling: one function turns anything a caller may hold into RGB uint8.

The models only ever see `np.uint8[H, W, 3]` RGB. Grayscale, RGBA/LA and palette images are
converted; zero-size, corrupt or otherwise undecodable inputs raise `InvalidImageError` (stable code
INVALID_IMAGE) so the ROS service and the CLI can report them instead of crashing.

Oversized frames: `fit_within(img, max_side)` downscales so the longer side is at most `max_side`
and returns the scale factor (new / old). The pipeline runs the VLMs on the downscaled frame and maps
boxes back to the original pixels with that scale; masks are produced at the original size.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InvalidImageError

# The smallest and most elongated frames the models take. 28 px is one merged Qwen2.5-VL patch
# (14 px x merge 2); below about 4 px transformers' processors even misread the layout (a 3-row
# frame looks channels-first). Qwen's processor refuses aspect ratios over 200, and after the
# downscale to `max_image_side` rounding pushes a 1:200 frame past that; 1:20 covers every camera
# (32:9 ultra-wide is 1:3.6) with a wide margin and leaves the segmenter's short side >= 50 px.
MIN_FRAME_SIDE = 28
MAX_FRAME_ASPECT = 20.0


def check_frame_shape(height: int, width: int) -> None:
    """Raise InvalidImageError (with the bound) for a frame the models cannot take."""
    h, w = int(height), int(width)
    if min(h, w) < MIN_FRAME_SIDE:
        raise InvalidImageError(
            f"frame is {w}x{h}; both sides must be at least {MIN_FRAME_SIDE} px")
    if max(h, w) / min(h, w) > MAX_FRAME_ASPECT:
        raise InvalidImageError(
            f"frame is {w}x{h} (aspect ratio {max(h, w) / min(h, w):.1f}); the most elongated frame the "
            f"models take is 1:{MAX_FRAME_ASPECT:g}")


def _from_pil(img: Image.Image) -> np.ndarray:
    try:
        img.load()
    except Exception as e:  # truncated / corrupt data surfaces on load
        raise InvalidImageError(f"cannot decode image: {e}") from None
    if img.width <= 0 or img.height <= 0:
        raise InvalidImageError(f"image has zero size ({img.width}x{img.height})")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Composite on black: transparent pixels carry no scene content.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        return _from_array(arr)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0 or arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"image array has zero size or bad shape {tuple(arr.shape)}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise InvalidImageError(f"image array must have 1, 3 or 4 channels, got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise InvalidImageError("image array contains NaN or infinite values")
        if np.issubdtype(arr.dtype, np.floating) and a.max(initial=0.0) <= 1.0 and a.min(initial=0.0) >= 0.0:
            a = a * 255.0  # float images in [0, 1]
        elif arr.dtype == np.uint16 or a.max(initial=0.0) > 255.0:
            a = a / max(a.max(), 1.0) * 255.0  # wide ranges: normalise to 8 bit
        arr = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.rint(arr[:, :, :3].astype(np.float32) * alpha).astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_image(src) -> np.ndarray:
    """path | bytes | PIL.Image | ndarray -> RGB np.uint8[H, W, 3]; raises InvalidImageError."""
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, Image.Image):
        return _from_pil(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise InvalidImageError("image bytes are empty")
        try:
            return _from_pil(Image.open(io.BytesIO(data)))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise InvalidImageError(f"cannot decode image bytes: {e}") from None
    if isinstance(src, (str, Path)):
        p = Path(src)
        if not p.is_file():
            raise InvalidImageError(f"image file not found: {p}")
        if p.stat().st_size == 0:
            raise InvalidImageError(f"image file is empty: {p}")
        try:
            with Image.open(p) as im:
                return _from_pil(im)
        except InvalidImageError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise InvalidImageError(f"cannot decode image file {p}: {e}") from None
    raise InvalidImageError(f"unsupported image input type {type(src).__name__}")


def fit_within(img: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so max(H, W) <= max_side (never upscale). Returns (image, scale = new / old)."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0
    scale = float(max_side) / float(max(h, w))
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    out = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out, scale
