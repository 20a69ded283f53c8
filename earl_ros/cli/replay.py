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

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="earl-replay", description=__doc__.split("\n\n")[0])
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
            raise SystemExit(f"earl-replay: error: no images ({', '.join(sorted(IMAGE_EXTS))}) in {source}")
        for f in files:
            yield load_image(f), None
    else:
        import cv2

        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise SystemExit(f"earl-replay: error: cannot open {source} as a video, bag or image folder")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    source = Path(args.source)
    if not source.exists():
        print(f"earl-replay: error: {source} does not exist", file=sys.stderr)
        return 2
    if args.rate <= 0:
        print("earl-replay: error: --rate must be > 0", file=sys.stderr)
        return 2
    size = (args.width, args.height) if args.width > 0 and args.height > 0 else None
    from earl_ros.ros.env import safe_env

    safe_env(shm=not args.no_shm)
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from earl_ros.ros.conversions import array_to_image, ns_to_stamp

    rclpy.init(args=["earl-replay"])
    node = Node("earl_replay", use_global_arguments=False)
    qos = QoSProfile(depth=args.depth, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, args.topic, qos)
    clock = node.get_clock()
    sent, last_ns = 0, 0
    log = (lambda *a: None) if args.quiet else (lambda *a: print("[earl-replay]", *a, file=sys.stderr, flush=True))
    try:
        if args.wait_subscribers > 0:
            deadline = time.monotonic() + args.wait_timeout
            while pub.get_subscription_count() < args.wait_subscribers and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            if pub.get_subscription_count() < args.wait_subscribers:
                log(f"warning: {pub.get_subscription_count()} subscriber(s) after {args.wait_timeout} s; publishing anyway")
        period = 1.0 / args.rate
        t_next = time.monotonic()
        log(f"publishing {source} ({kind_of(source)}) on {args.topic} at {args.rate} Hz")
        while rclpy.ok():
            any_frame = False
            for rgb, bag_frame_id in iter_source(source, args.bag_topic):
                any_frame = True
                now = time.monotonic()
                if now < t_next:
                    time.sleep(t_next - now)
                t_next = max(t_next + period, time.monotonic() - period)  # no burst after a stall
                stamp_ns = max(clock.now().nanoseconds, last_ns + 1)
                last_ns = stamp_ns
                msg = array_to_image(_convert(rgb, args.encoding, size), args.encoding)
                msg.header.stamp = ns_to_stamp(stamp_ns)
                msg.header.frame_id = args.frame_id or bag_frame_id or "camera"
                pub.publish(msg)
                sent += 1
                if args.max_frames and sent >= args.max_frames or not rclpy.ok():
                    break
            if not any_frame:
                print(f"earl-replay: error: {source} holds no frames", file=sys.stderr)
                return 2
            if not args.loop or (args.max_frames and sent >= args.max_frames):
                break
        # let reliable readers fetch the last samples before the writer goes away
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and rclpy.ok():
            try:
                if pub.wait_for_all_acked(timeout=rclpy.duration.Duration(seconds=0.2)):
                    break
            except Exception:  # noqa: BLE001 - best-effort publishers have nothing to ack
                break
        log(f"published {sent} frames")
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        log(f"interrupted after {sent} frames")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
