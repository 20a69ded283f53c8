"""Camera pixel layouts -> the pipeline's RGB uint8, without any ROS message type.

Kept apart from `earl_ros.ros.conversions` (which validates and wraps sensor_msgs) so that the
frame buffer and its lazy RGB conversion can live in the ROS-free session layer.
"""
from __future__ import annotations

import numpy as np

from earl_ros.model.errors import InvalidImageError, UnsupportedEncodingError

# encoding -> channels (all 8-bit)
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS = tuple(CHANNELS)


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """[H, W, C] native -> contiguous RGB uint8 [H, W, 3] (always a copy the caller owns)."""
    enc = encoding.strip().lower()
    if enc == "rgb8":
        return np.array(arr, dtype=np.uint8, copy=True, order="C")
    if enc == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if enc == "bgra8":
        return np.ascontiguousarray(arr[..., 2::-1])
    if enc == "mono8":
        return np.ascontiguousarray(np.repeat(arr[..., :1], 3, axis=2))
    raise UnsupportedEncodingError(f"image encoding {encoding!r} is not supported")


def decode_compressed(data, fmt: str = "") -> np.ndarray:
    """jpeg/png/... bytes -> RGB uint8 [H, W, 3] (raises InvalidImageError)."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise InvalidImageError("compressed image has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise InvalidImageError(f"compressed image (format {fmt!r}) could not be decoded")
    return np.ascontiguousarray(img[..., ::-1])
