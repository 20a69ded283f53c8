"""earl-replay: publish camera frames from an MCAP bag, a video file or an image folder.

    earl-replay SOURCE [--topic /camera/image_raw] [--rate 30] [--loop] [--frame-id camera]
                [--max-frames N] [--width W --height H] [--encoding rgb8|bgr8|...]
                [--qos reliable|best_effort] [--wait-subscribers N] [--bag-topic T] [--no-shm]

SOURCE: a rosbag2 bag (directory with metadata.yaml, or a .mcap file), a video file (anything
OpenCV reads), or a folder of images (png/jpg/jpeg/bmp, sorted by name). Every frame gets a fresh
header: stamp = publish time (strictly increasing), frame_id from --frame-id (default: the bag's,
else "camera"). Stops after the source ends (or --max-frames), or on SIGINT/SIGTERM.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from earl_ros.cli.errors import CliError, Parser, run_reporting

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}
# sensor_msgs/Image fields besides the pixels (header, sizes, encoding string), CDR-serialised,
# plus the RTPS submessage headers: generously rounded up.
MESSAGE_OVERHEAD = 4096


def parse_args(argv=None):
    ap = Parser(prog="earl-replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="bag directory / .mcap file, video file, or image folder")
    ap.add_argument("--topic", default="/camera/image_raw", help="topic to publish on (default %(default)s)")
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second (default %(default)s)")
    ap.add_argument("--loop", action="store_true", help="start over at the end of the source")
    ap.add_argument("--frame-id", default=None, help="header.frame_id (default: from the bag, else camera)")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = no limit)")
    ap.add_argument("--width", type=int, default=0, help="resize to this width (with --height)")
    ap.add_argument("--height", type=int, default=0, help="resize to this height (with --width)")
    ap.add_argument("--encoding", default="rgb8", choices=["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
    ap.add_argument("--qos", default="reliable", choices=["reliable", "best_effort"])
    ap.add_argument("--depth", type=int, default=5, help="publisher history depth")
    ap.add_argument("--wait-subscribers", type=int, default=0,
                    help="wait (up to --wait-timeout s) for this many subscribers before publishing")
    ap.add_argument("--wait-timeout", type=float, default=20.0)
    ap.add_argument("--bag-topic", default=None, help="image topic inside the bag (default: the first)")
    ap.add_argument("--no-shm", action="store_true", help="do not set the shared-memory Fast DDS profile")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def kind_of(source: Path) -> str:
    if source.is_dir():
        if (source / "metadata.yaml").is_file() or any(source.glob("*.mcap")):
            return "bag"
        return "folder"
    if source.suffix.lower() == ".mcap":
        return "bag"
    if source.suffix.lower() in IMAGE_EXTS:
        return "folder"
    return "video"


def iter_source(source: Path, bag_topic: str | None = None) -> Iterator[tuple[np.ndarray, str | None]]:
    """One pass over the source: (rgb uint8 [H, W, 3], frame_id or None)."""
    kind = kind_of(source)
    if kind == "bag":
        from earl_ros.ros.bags import read_image_bag

        for rgb, _stamp, frame_id in read_image_bag(source, bag_topic):
            yield rgb, frame_id or None
    elif kind == "folder":
        from earl_ros.model.images import load_image

        files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise CliError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {source}")
        for f in files:
            yield load_image(f), None
    else:
        import cv2

        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise CliError(f"cannot open {source} as a video, bag or image folder")
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield np.ascontiguousarray(bgr[..., ::-1]), None
        finally:
            cap.release()


def _convert(rgb: np.ndarray, encoding: str, size: tuple[int, int] | None) -> np.ndarray:
    if size is not None and (rgb.shape[1], rgb.shape[0]) != size:
        import cv2

        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding in ("rgba8", "bgra8"):
        base = rgb if encoding == "rgba8" else rgb[..., ::-1]
        return np.concatenate([base, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if encoding == "mono8":
        return np.ascontiguousarray(rgb.mean(axis=2).astype(np.uint8))
    return np.ascontiguousarray(rgb)


def _too_large(msg, limit: int | None, encoding: str) -> bool:
    """Print why and return True when the frame exceeds what the shared-memory profile carries."""
    if limit is None or len(msg.data) + MESSAGE_OVERHEAD <= limit:
        return False
    print(f"earl-replay: error: a {msg.width}x{msg.height} {encoding} frame is {len(msg.data) / 1e6:.1f} MB; the "
          f"shared-memory profile ({os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE')}) carries at most "
          f"{(limit - MESSAGE_OVERHEAD) / 1e6:.1f} MB per frame. Resize with --width/--height, or raise "
          "segment_size and maxMessageSize in the profile", file=sys.stderr)
    return True


class _Replay:
    """One replay run: a publisher, the source, and the count of frames sent."""

    def __init__(self, args, source: Path):
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from earl_ros.ros.env import shm_message_limit

        self.args, self.source, self.sent, self._last_ns = args, source, 0, 0
        self.size = (args.width, args.height) if args.width > 0 and args.height > 0 else None
        self.limit = shm_message_limit()
        rclpy.init(args=["earl-replay"])
        self.node = Node("earl_replay", use_global_arguments=False)
        qos = QoSProfile(depth=args.depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        self.pub = self.node.create_publisher(Image, args.topic, qos)
        self.log = (lambda *a: None) if args.quiet else (lambda *a: print("[earl-replay]", *a, file=sys.stderr, flush=True))

    def wait_for_subscribers(self) -> None:
        import rclpy

        n, deadline = self.args.wait_subscribers, time.monotonic() + self.args.wait_timeout
        while n > 0 and self.pub.get_subscription_count() < n and time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
        if self.pub.get_subscription_count() < n:
            self.log(f"warning: {self.pub.get_subscription_count()} subscriber(s) after {self.args.wait_timeout} s; "
                     "publishing anyway")

    def run(self) -> int:
        """Publish until the source ends (or --max-frames, or a signal); the exit status."""
        import rclpy

        args, period, t_next = self.args, 1.0 / self.args.rate, time.monotonic()
        self.log(f"publishing {self.source} ({kind_of(self.source)}) on {args.topic} at {args.rate} Hz")
        while rclpy.ok():
            any_frame = False
            for rgb, bag_frame_id in iter_source(self.source, args.bag_topic):
                any_frame = True
                time.sleep(max(0.0, t_next - time.monotonic()))
                t_next = max(t_next + period, time.monotonic() - period)  # no burst after a stall
                status = self._publish_one(rgb, bag_frame_id)
                if status is not None:
                    return status
                if self._enough() or not rclpy.ok():
                    break
            if not any_frame:
                print(f"earl-replay: error: {self.source} holds no frames", file=sys.stderr)
                return 2
            if not args.loop or self._enough():
                break
        self._flush()
        self.log(f"published {self.sent} frames")
        return 0

    def _enough(self) -> bool:
        return bool(self.args.max_frames and self.sent >= self.args.max_frames)

    def _publish_one(self, rgb, bag_frame_id) -> int | None:
        """Publish one frame; an exit status when replay must stop (frame too large), else None."""
        import rclpy
        from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

        from earl_ros.ros.conversions import array_to_image, ns_to_stamp

        msg = array_to_image(_convert(rgb, self.args.encoding, self.size), self.args.encoding)
        if _too_large(msg, self.limit, self.args.encoding):
            return 2
        self._last_ns = max(self.node.get_clock().now().nanoseconds, self._last_ns + 1)
        msg.header.stamp = ns_to_stamp(self._last_ns)
        msg.header.frame_id = self.args.frame_id or bag_frame_id or "camera"
        try:
            self.pub.publish(msg)
        except _rclpy.RCLError:
            if rclpy.ok():
                raise
            return 0  # SIGINT/SIGTERM shut the context down between ok() and publish()
        self.sent += 1
        return None

    def _flush(self) -> None:
        """Let reliable readers fetch the last samples before the writer goes away."""
        import rclpy

        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and rclpy.ok():
            try:
                if self.pub.wait_for_all_acked(timeout=rclpy.duration.Duration(seconds=0.2)):
                    break
            except Exception:  # noqa: BLE001 - best-effort publishers have nothing to ack
                break

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown()


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting("earl-replay", _replay, args)


def _replay(args) -> int:
    source = Path(args.source)
    if not source.exists():
        raise CliError(f"{source} does not exist")
    if args.rate <= 0:
        raise CliError("--rate must be > 0")
    from earl_ros.ros.env import safe_env

    safe_env(shm=not args.no_shm)
    from rclpy.executors import ExternalShutdownException

    replay = _Replay(args, source)
    try:
        replay.wait_for_subscribers()
        return replay.run()
    except (KeyboardInterrupt, ExternalShutdownException):
        replay.log(f"interrupted after {replay.sent} frames")
        return 0
    finally:
        replay.close()


if __name__ == "__main__":
    sys.exit(main())
