"""earl-query: ask the running earl node a question; prints the JSON contract.

    earl-query "which hand is holding something?" [--save-mask mask.png] [--timeout 30]
               [--stamp SEC] [--namespace earl] [--no-publish]

Exit status: 0 success; 1 the node answered success=false (the JSON on stdout, and one
`earl-query: error: CODE: message` line on stderr); 2 bad input, no service or a timeout (one
`earl-query: error:` line on stderr; EARL_DEBUG=1 adds the traceback).
"""
from __future__ import annotations

import json
import os
import sys
import time

from earl_ros.cli.errors import CliError, Parser, report, run_reporting


def parse_args(argv=None):
    ap = Parser(prog="earl-query", description=__doc__.split("\n\n")[0])
    ap.add_argument("text", help="the question")
    ap.add_argument("--save-mask", metavar="PNG", help="write the mono8 label map (0 background, i = entity i)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the service and the answer")
    ap.add_argument("--stamp", type=float, default=0.0, help="answer about the buffered frame nearest this stamp (s)")
    ap.add_argument("--namespace", default="earl", help="node namespace (service <ns>/query; default %(default)s)")
    ap.add_argument("--no-publish", action="store_true", help="do not publish the result on answer/mask/overlay")
    ap.add_argument("--track", action="store_true",
                    help="keep segmenting the answer's entities on later frames (topic tracks; the ids are in "
                         "track_ids; end them with the service <ns>/track/stop)")
    ap.add_argument("--no-shm", action="store_true", help="do not set the shared-memory Fast DDS profile")
    return ap.parse_args(argv)


def _fail(code: str, message: str) -> dict:
    return {"success": False, "error_code": code, "message": message, "stamp": 0.0, "answer": "",
            "entities": [], "boxes": [], "scores": [], "no_target": False, "description": "", "timings_ms": {}}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.text.strip():
        return report("earl-query", CliError("the question is empty"))
    return run_reporting("earl-query", _ask, args)


def _unanswered(code: str, message: str) -> int:
    """No answer came back: the JSON contract on stdout (scripts parse it), the error line on stderr."""
    print(json.dumps(_fail(code, message), indent=2))
    print(f"earl-query: error: {code}: {message}", file=sys.stderr)
    return 2


def _ask(args) -> int:
    from earl_ros.ros.env import safe_env

    safe_env(shm=not args.no_shm)
    import rclpy
    from rclpy.node import Node

    from earl_interfaces.srv import Query
    from earl_ros.ros.client import call, make_request, mask_array, response_to_json

    ns = "/" + args.namespace.strip("/") if args.namespace.strip("/") else ""
    service = f"{ns}/query"
    rclpy.init(args=["earl-query"])
    node = Node(f"earl_query_client_{os.getpid()}", use_global_arguments=False)
    try:
        t0 = time.monotonic()
        cli = node.create_client(Query, service)
        if not cli.wait_for_service(timeout_sec=args.timeout):
            return _unanswered("SERVICE_UNAVAILABLE", f"service {service} not available after {args.timeout} s"
                               " (is earl-launch running with the same ROS_DOMAIN_ID?)")
        left = max(0.1, args.timeout - (time.monotonic() - t0))
        t_call = time.monotonic()
        resp = call(node, cli, make_request(args.text, args.stamp, publish=not args.no_publish, track=args.track), left)
        if resp is None:
            return _unanswered("TIMEOUT", f"no response from {service} within {args.timeout} s")
        out = response_to_json(resp)
        out["round_trip_ms"] = round((time.monotonic() - t_call) * 1e3, 2)
        if args.save_mask:
            m = mask_array(resp)
            if m is not None:
                from PIL import Image

                Image.fromarray(m).save(args.save_mask)
                out["mask_path"] = args.save_mask
        print(json.dumps(out, indent=2))
        if not resp.success:
            print(f"earl-query: error: {resp.error_code}: {resp.message}", file=sys.stderr)
            return 1
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
