"""Does the first 4096x3072 frame of a best-effort camera arrive, and is a query answered about it?

    python bench/first_big_frame.py [--runs 4] [--profile config/fastdds_shm.xml] [--width 4096 --height 3072]

Each run starts a fresh node (`earl-launch`, embedded model, default best-effort intake), publishes
one 640x480 frame and, a second later, one large rgb8 frame (best effort, as a camera driver does),
then asks a query about "now" and reports which frame the answer is about. With the shipped profile
the answer is about the large frame; with the earlier 32 MB profile (`git show 08b4c0b~1:config/fastdds_shm.xml`)
the large frame was lost and the query failed FRAME_TOO_OLD. Loopback only; stops by itself.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def one_run(profile: Path, size: tuple[int, int], log: Path) -> dict:
    import rclpy
    from PIL import Image as PILImage
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from earl_interfaces.srv import Query
    from earl_ros.ros.bags import read_image_bag
    from earl_ros.ros.conversions import array_to_image, ns_to_stamp

    node = subprocess.Popen([sys.executable, "-m", "earl_ros.cli.launch", "--namespace", "earl_big", "--camera-topic",
                             "/big/camera"], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=dict(os.environ))
    rclpy.init()
    n = Node("first_big_frame")
    try:
        pub = n.create_publisher(Image, "/big/camera", qos_profile_sensor_data)
        cli = n.create_client(Query, "/earl_big/query")
        if not cli.wait_for_service(timeout_sec=120):
            return {"error": "node did not come up"}
        while pub.get_subscription_count() < 1:
            rclpy.spin_once(n, timeout_sec=0.05)
        scene = next(iter(read_image_bag(REPO / "data" / "demo" / "clip")))[0]
        stamps = {}
        for name, wh in (("640x480", (640, 480)), (f"{size[0]}x{size[1]}", size)):
            msg = array_to_image(np.asarray(PILImage.fromarray(scene).resize(wh)), "rgb8")
            stamps[name] = time.time_ns()
            msg.header.stamp = ns_to_stamp(stamps[name])
            pub.publish(msg)
            time.sleep(1.0)
        fut = cli.call_async(Query.Request(query="which hand is holding something?", publish=False))
        rclpy.spin_until_future_complete(n, fut, timeout_sec=120)
        r = fut.result()
        got = r.header.stamp.sec * 1_000_000_000 + r.header.stamp.nanosec
        about = next((k for k, v in stamps.items() if v == got), "none")
        return {"code": r.error_code, "about": about, "mask": f"{r.mask.width}x{r.mask.height}"}
    finally:
        n.destroy_node()
        rclpy.try_shutdown()
        node.terminate()
        node.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--profile", default=str(REPO / "config" / "fastdds_shm.xml"))
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--height", type=int, default=3072)
    a = ap.parse_args(argv)
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", FASTDDS_DEFAULT_PROFILES_FILE=str(Path(a.profile).resolve()))
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    print(f"profile {a.profile}; a 640x480 frame, then a {a.width}x{a.height} rgb8 frame, then a query")
    print("| run | error_code | answer about | mask |\n|---|---|---|---|")
    for i in range(a.runs):
        r = one_run(Path(a.profile), (a.width, a.height), Path(f"/tmp/first_big_frame_node{i}.log"))
        print(f"| {i} | {r.get('code', r.get('error'))} | {r.get('about', '-')} | {r.get('mask', '-')} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
