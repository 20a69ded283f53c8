"""A loopback load client for the `query` service: one process, one client node, K requests.

    python -m earl_ros.ros.query_load [--namespace earl] [--requests 5] [--mode burst|closed]
                                      [--timeout 120] [--duration 30] [--query TEXT]

burst: all K requests are sent at once and awaited together (K outstanding).
closed: one request outstanding at a time, the next sent when the previous is answered, K times or
until --duration seconds have passed.
Prints one JSON object: per request its send and answer times (time.time(), so several processes
on one machine can be merged), round trip, error code and the node's queue wait (`ros_queue`
timing). A request with no answer within --timeout is reported with code "LOST". Used by the
tests and bench/ros_pipeline.py to check that a burst loses nothing and that waiting is fair.
DDS stays on this machine (earl_ros.ros.env.safe_env); the load stops by itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def _parse(argv):
    ap = argparse.ArgumentParser(prog="query_load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespace", default="earl")
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--mode", choices=("burst", "closed"), default="burst")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each answer")
    ap.add_argument("--duration", type=float, default=0.0, help="closed mode: stop after this many seconds")
    ap.add_argument("--query", default="which hand is holding something?")
    ap.add_argument("--start-at", type=float, default=0.0,
                    help="time.time() at which to send (lines several processes up); 0 = at once")
    return ap.parse_args(argv)


def _record(i, call, answered: bool) -> dict:
    rec = {"i": i, "sent": call["sent"], "answered": None, "code": "LOST", "round_trip_ms": None,
           "queue_ms": None, "service_ms": None, "empty_success": False}
    if not answered:
        return rec
    r = call["future"].result()
    timings = dict(zip(r.result.timing_names, r.result.timing_ms))
    rec.update(code=r.error_code, answered=call["answered"], round_trip_ms=(call["answered"] - call["sent"]) * 1e3,
               queue_ms=timings.get("ros_queue"),
               service_ms=(timings["total"] - timings.get("ros_queue", 0.0)) if "total" in timings else None,
               empty_success=bool(r.success and not r.result.answer and not r.result.no_target))
    return rec


class _LoadClient:
    def __init__(self, namespace: str):
        import rclpy
        from rclpy.node import Node

        from earl_ros.ros.spin import spin_in_background
        from earl_interfaces.srv import Query

        rclpy.init(args=["query_load"])
        self.node = Node("earl_query_load", use_global_arguments=False)
        self.cli = self.node.create_client(Query, f"/{namespace.strip('/')}/query")
        self.Request = Query.Request
        self.executor, self.thread = spin_in_background(self.node)

    def send(self, text: str) -> dict:
        """Send one request; the returned dict gains `answered` (time.time()) when the answer lands."""
        call = {"done": threading.Event(), "sent": time.time()}

        def landed(_f):
            call["answered"] = time.time()
            call["done"].set()

        call["future"] = self.cli.call_async(self.Request(query=text, publish=False, return_mask=False))
        call["future"].add_done_callback(landed)
        return call

    def close(self):
        import rclpy

        rclpy.try_shutdown()
        self.thread.join(5)


def run(args) -> dict:
    client = _LoadClient(args.namespace)
    try:
        if not client.cli.wait_for_service(timeout_sec=60.0):
            return {"error": "SERVICE_UNAVAILABLE", "requests": []}
        if args.start_at:
            time.sleep(max(0.0, args.start_at - time.time()))
        records = _burst(client, args) if args.mode == "burst" else _closed(client, args)
        return {"requests": records}
    finally:
        client.close()


def _burst(client, args) -> list:
    calls = [client.send(args.query) for _ in range(args.requests)]
    deadline = time.monotonic() + args.timeout
    return [_record(i, c, c["done"].wait(max(0.0, deadline - time.monotonic()))) for i, c in enumerate(calls)]


def _closed(client, args) -> list:
    out, end = [], time.monotonic() + (args.duration or 1e9)
    for i in range(args.requests):
        if time.monotonic() >= end:
            break
        call = client.send(args.query)
        out.append(_record(i, call, call["done"].wait(args.timeout)))
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    from earl_ros.ros.env import safe_env

    safe_env(quiet=True)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
