"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Raw images are validated (encoding, size, step, data length) and wrapped as a zero-copy numpy
view in their native channel order; `to_rgb` converts to the pipeline's RGB uint8 layout. Every
failure raises a typed EarlError (UnsupportedEncodingError / InvalidImageError), never a bare
exception, so the node can count the frame as rejected and report the code.
"""
from __future__ import annotations

import array

import numpy as np

from earl_ros.live.pixels import CHANNELS, SUPPORTED_ENCODINGS, decode_compressed, to_rgb  # noqa: F401 (re-exported)
from earl_ros.model.errors import InvalidImageError, UnsupportedEncodingError


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, msg_type=None):
    """builtin_interfaces/Time from integer nanoseconds."""
    if msg_type is None:
        from builtin_interfaces.msg import Time as msg_type
    ns = int(ns)
    return msg_type(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_to_array(msg) -> np.ndarray:
    """Validate a sensor_msgs/Image and return a [H, W, C] uint8 view (native channel order).

    Raises UnsupportedEncodingError for encodings other than rgb8/bgr8/rgba8/bgra8/mono8 and
    InvalidImageError for zero sizes, a step smaller than width*channels, or a data length that
    is not height*step.
    """
    enc = (msg.encoding or "").strip().lower()
    if enc not in CHANNELS:
        raise UnsupportedEncodingError(
            f"image encoding {msg.encoding!r} is not supported; use one of {', '.join(SUPPORTED_ENCODINGS)}"
        )
    c = CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InvalidImageError(f"image has zero size ({w}x{h})")
    if step < w * c:
        raise InvalidImageError(f"image step {step} is smaller than width*channels = {w * c}")
    data = msg.data
    n = len(data)
    if n != h * step:
        raise InvalidImageError(
            f"image data length {n} does not match height*step = {h}*{step} = {h * step}"
        )
    buf = np.frombuffer(data, dtype=np.uint8)  # zero copy for array.array / bytes
    rows = buf.reshape(h, step)
    if step != w * c:
        rows = rows[:, : w * c]
    return rows.reshape(h, w, c)


def image_msg_to_rgb(msg) -> np.ndarray:
    return to_rgb(image_to_array(msg), msg.encoding)


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png/...) -> RGB uint8 [H, W, 3]."""
    return decode_compressed(msg.data, msg.format)


def _to_uint8_array(a: np.ndarray) -> array.array:
    return array.array("B", np.ascontiguousarray(a, dtype=np.uint8).tobytes())


def array_to_image(a: np.ndarray, encoding: str, header=None):
    """numpy uint8 [H, W] or [H, W, C] -> sensor_msgs/Image with the given header."""
    from sensor_msgs.msg import Image

    enc = encoding.strip().lower()
    if enc not in CHANNELS:
        raise UnsupportedEncodingError(f"cannot encode {encoding!r}")
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise InvalidImageError(f"array dtype {a.dtype} is not uint8")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] != CHANNELS[enc]:
        raise InvalidImageError(f"array shape {a.shape} does not fit encoding {enc}")
    h, w, c = a.shape
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.is_bigendian = h, w, enc, 0
    msg.step = w * c
    msg.data = _to_uint8_array(a)
    return msg


def array_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header=None, quality: int = 90):
    """RGB uint8 -> sensor_msgs/CompressedImage (jpeg or png)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise InvalidImageError("image could not be encoded")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = "png" if ext == ".png" else "jpeg"
    msg.data = array.array("B", buf.tobytes())
    return msg
