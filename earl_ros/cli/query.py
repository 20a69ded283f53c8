"""earl-query: ask the running earl node a question; prints the JSON contract.

    earl-query "which hand is holding something?" [--save-mask mask.png] [--timeout 30]
               [--stamp SEC] [--namespace earl] [--no-publish] [--track] [--stream]

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
    ap.add_argument("--stream", action="store_true",
                    help="ask through the `ask` action: print the stage and the answer text on stderr as they are "
                         "generated (Ctrl-C cancels the goal); the JSON adds first_token_ms")
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

    rclpy.init(args=["earl-query"])
    node = Node(f"earl_query_client_{os.getpid()}", use_global_arguments=False)
    try:
        return (_ask_streamed if args.stream else _ask_service)(args, node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _namespace(args) -> str:
    return "/" + args.namespace.strip("/") if args.namespace.strip("/") else ""


def _ask_service(args, node) -> int:
    from earl_interfaces.srv import Query
    from earl_ros.ros.client import call, make_request

    service = f"{_namespace(args)}/query"
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
    return _report(args, resp, {"round_trip_ms": round((time.monotonic() - t_call) * 1e3, 2)})


def _ask_streamed(args, node) -> int:
    """The `ask` action: stages and the answer text on stderr as they arrive, the JSON at the end."""
    from rclpy.action import ActionClient

    from earl_interfaces.action import Ask
    from earl_ros.ros.client import ask, make_goal

    action = f"{_namespace(args)}/ask"
    t0 = time.monotonic()
    cli = ActionClient(node, Ask, action)
    if not cli.wait_for_server(timeout_sec=args.timeout):
        return _unanswered("SERVICE_UNAVAILABLE", f"action {action} not available after {args.timeout} s"
                           " (is earl-launch running with the same ROS_DOMAIN_ID?)")
    left = max(0.1, args.timeout - (time.monotonic() - t0))
    t_call = time.monotonic()
    shown = StreamPrinter(t_call)
    goal = make_goal(args.text, args.stamp, publish=not args.no_publish, track=args.track)
    res = ask(node, cli, goal, left, on_feedback=shown)
    shown.close()
    if res is None:
        return _unanswered("TIMEOUT", f"no result from {action} within {args.timeout} s (the goal was cancelled)")
    extra = {"round_trip_ms": round((time.monotonic() - t_call) * 1e3, 2)}
    if shown.first_token_s is not None:
        extra["first_token_ms"] = round(shown.first_token_s * 1e3, 2)
    return _report(args, res, extra)


class StreamPrinter:
    """Feedback on stderr: `[stage]` lines, then the answer text growing in place of the last line."""

    def __init__(self, t0: float):
        self.t0, self.first_token_s, self._printed, self._stage = t0, None, "", ""

    def __call__(self, fb) -> None:
        if fb.stage != self._stage:
            self.close()
            self._stage = fb.stage
            print(f"[{fb.stage}] {time.monotonic() - self.t0:.2f} s", file=sys.stderr, flush=True)
        if fb.tokens and self.first_token_s is None:
            self.first_token_s = time.monotonic() - self.t0
        if fb.text.startswith(self._printed):
            sys.stderr.write(fb.text[len(self._printed):])
        else:  # a character completed differently: write the line again
            sys.stderr.write("\n" + fb.text)
        self._printed = fb.text
        sys.stderr.flush()

    def close(self) -> None:
        if self._printed:
            sys.stderr.write("\n")
            self._printed = ""


def _report(args, resp, extra: dict) -> int:
    from earl_ros.ros.client import mask_array, response_to_json

    out = {**response_to_json(resp), **extra}
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

if __name__ == "__main__":
    sys.exit(main())
