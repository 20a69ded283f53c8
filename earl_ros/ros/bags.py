"""Image bags (rosbag2, MCAP storage) written and read with `rosbags`, no ROS install needed.

write_image_bag(...) is what tests and the demo use to make a bag of camera frames;
read_image_bag(...) yields RGB frames from any rosbag2 bag (directory or .mcap file) holding
sensor_msgs/Image (rgb8/bgr8/rgba8/bgra8/mono8) or sensor_msgs/CompressedImage messages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from earl_ros.model.errors import InvalidImageError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))


def _write_bag(path, frames: Iterable[np.ndarray], topic: str, msgtype: str, rate: float, frame_id: str,
               start_ns: int, fields: Callable[[int, np.ndarray], dict]) -> Path:
    """One rosbag2 MCAP bag of image messages stamped start_ns + i / rate; `fields(i, rgb)` gives
    each message's fields other than the header."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = _typestore()
    Msg, Header, Time = ts.types[msgtype], ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    path = Path(path)
    period = int(round(1e9 / rate))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection(topic, msgtype, typestore=ts)
        for i, rgb in enumerate(frames):
            t = start_ns + i * period
            header = Header(stamp=Time(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000), frame_id=frame_id)
            w.write(conn, t, ts.serialize_cdr(Msg(header=header, **fields(i, rgb)), msgtype))
    return path


def write_image_bag(path, frames: Iterable[np.ndarray], topic: str = "/camera/image_raw",
                    rate: float = 30.0, frame_id: str = "camera", start_ns: int = 1_700_000_000_000_000_000,
                    encoding: str = "rgb8") -> Path:
    """Write RGB uint8 frames as sensor_msgs/Image to a rosbag2 MCAP bag directory `path`."""

    def fields(_i, rgb):
        a = np.ascontiguousarray(rgb, dtype=np.uint8)
        if encoding == "bgr8":
            a = np.ascontiguousarray(a[..., ::-1])
        elif encoding == "mono8":
            a = a[..., :1] if a.ndim == 3 else a[..., None]
        h, w, c = a.shape
        return dict(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * c, data=a.reshape(-1))

    return _write_bag(path, frames, topic, IMAGE, rate, frame_id, start_ns, fields)


def write_compressed_bag(path, frames: Iterable[np.ndarray], topic: str = "/camera/image_raw/compressed",
                         rate: float = 30.0, frame_id: str = "camera",
                         start_ns: int = 1_700_000_000_000_000_000, quality: int = 90) -> Path:
    """Write RGB uint8 frames as JPEG sensor_msgs/CompressedImage: about 20x smaller than raw
    frames, which is what lets a demo clip live in git."""
    import cv2

    def fields(i, rgb):
        ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise InvalidImageError(f"frame {i}: JPEG encoding failed")
        return dict(format="rgb8; jpeg compressed bgr8", data=jpg.reshape(-1))

    return _write_bag(path, frames, topic, COMPRESSED, rate, frame_id, start_ns, fields)


def read_image_bag(path, topic: str | None = None) -> Iterator[tuple[np.ndarray, int, str]]:
    """Yield (rgb uint8 [H, W, 3], stamp_ns, frame_id) for every image message of `topic` (or of the
    first image topic) in a rosbag2 bag directory or a single .mcap file."""
    from rosbags.highlevel import AnyReader

    from .conversions import CHANNELS, to_rgb

    path = Path(path)
    with AnyReader([path], default_typestore=_typestore()) as reader:
        conns = [c for c in reader.connections if c.msgtype in (IMAGE, COMPRESSED)]
        if topic is not None:
            conns = [c for c in conns if c.topic == topic]
        if not conns:
            have = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
            raise InvalidImageError(f"{path}: no image topic{'' if topic is None else ' ' + topic} in the bag; "
                                    f"topics: {', '.join(have) or 'none'}")
        conns = [c for c in conns if c.topic == conns[0].topic]
        for conn, t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec) or int(t)
            if conn.msgtype == COMPRESSED:
                import cv2

                img = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
                if img is None:
                    raise InvalidImageError(f"{path}: undecodable compressed frame at {t}")
                yield np.ascontiguousarray(img[..., ::-1]), stamp, msg.header.frame_id
                continue
            enc = msg.encoding.lower()
            if enc not in CHANNELS:
                raise InvalidImageError(f"{path}: unsupported encoding {msg.encoding!r} on {conn.topic}")
            c = CHANNELS[enc]
            data = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * c]
            yield to_rgb(data.reshape(msg.height, msg.width, c), enc), stamp, msg.header.frame_id
