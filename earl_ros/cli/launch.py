"""earl-launch: start the `earl` node without `ros2 launch` (pip installations).

Same node and same parameters file (config/earl.yaml) as launch/earl.launch.py. Sets the shipped
shared-memory Fast DDS profile (unless --no-shm or FASTDDS_DEFAULT_PROFILES_FILE is already set)
and ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (unless set in the environment). SIGINT/SIGTERM are
forwarded to the node; the exit status is the node's.

    earl-launch --model DIR [--params FILE] [--namespace earl] [--camera-topic /camera/image_raw]
                [--no-shm] [--no-autostart] [--print] [-- extra node arguments, e.g. -p stale_policy:=refuse]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from earl_ros.cli.errors import CliError, Parser, run_reporting
from earl_ros.ros.env import safe_env, share_file

DEFAULT_CAMERA_TOPIC = "/camera/image_raw"
DEFAULT_NAMESPACE = "earl"


def build_command(args) -> list[str]:
    params = Path(args.params) if args.params else share_file("config", "earl.yaml")
    if not params.is_file():
        raise CliError(f"params file {params} not found")
    cmd = [sys.executable, "-m", "earl_ros.ros.node", "--ros-args",
           "-r", f"__ns:=/{args.namespace.strip('/')}" if args.namespace.strip("/") else "__ns:=/",
           "--params-file", str(params)]
    if args.model:
        model = Path(args.model).expanduser().resolve()
        cmd += ["-p", f"model_dir:={model}"]
    if args.camera_topic:
        cmd += ["-r", f"image:={args.camera_topic}", "-r", f"image/compressed:={args.camera_topic.rstrip('/')}/compressed"]
    if args.no_autostart:
        cmd += ["-p", "autostart:=false"]
    if args.log_level:
        cmd += ["--log-level", args.log_level]
    extra = [a for a in args.extra if a != "--"]
    if extra:
        cmd += [a for a in extra if a != "--ros-args"]
    return cmd


def parse_args(argv=None):
    ap = Parser(prog="earl-launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", help="parameters file (default: the shipped config/earl.yaml)")
    ap.add_argument("--model", help="model directory (sets parameter model_dir)")
    ap.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="node namespace (default: %(default)s)")
    ap.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC,
                    help="camera topic remapped to the node's `image` (default: %(default)s)")
    ap.add_argument("--no-shm", action="store_true", help="do not set the shared-memory Fast DDS profile")
    ap.add_argument("--no-autostart", action="store_true",
                    help="start the lifecycle node unconfigured: a lifecycle manager configures and activates it")
    ap.add_argument("--log-level", default=None, help="ROS log level (debug, info, warn, error)")
    ap.add_argument("--print", action="store_true", help="print the environment and command, do not run")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: extra node ROS arguments")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting("earl-launch", _launch, args)


def _launch(args) -> int:
    env = safe_env(dict(os.environ), shm=not args.no_shm)
    if args.no_shm and "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    cmd = build_command(args)
    if args.print:
        for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE"):
            print(f"{k}={env.get(k, '')}")
        print(" ".join(cmd))
        return 0
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, forward)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # pragma: no cover - handler above normally catches it
            forward(signal.SIGINT, None)


if __name__ == "__main__":
    sys.exit(main())
