"""The `query` service and `ask` action of the `earl` node: their own node and executor thread, and the
query workers.

The service runs on node `earl_query` (same namespace) with its own SingleThreadedExecutor, so image
intake never waits for it and it never waits for a model. Its handler only checks a request, picks
the frame and admits it to the session's FIFO queue (or answers at once: a request error, or BUSY
when the queue is full); the executor is never blocked, so requests never pile up in DDS, where
they could be overwritten. `query_workers` threads answer the queue in arrival order.
"""
from __future__ import annotations

import threading
import time
import traceback

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from earl_ros.live.session import PendingQuery
from earl_ros.model.errors import EarlError

from . import response_retry
from .ask_action import AskAction
from .results import fill_result, set_timings

SERVICE_NAME = "query"
QUERY_NODE_NAME = "earl_query"

# Requests are taken off DDS as they arrive and queued in the session, so the service's DDS history
# must never overwrite one that is not taken yet: keep all, reliable.
SERVICE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
EXPIRY_PERIOD_S = 0.1  # how often queued requests are checked against query_timeout


class QueryServer:
    def __init__(self, node):
        """`node`: the EarlNode whose session, parameters, results publisher and logger this serves."""
        from earl_interfaces.srv import Query

        self.node, self.session, self.log = node, node.session, node.get_logger()
        self.query_node = Node(QUERY_NODE_NAME, namespace=node.get_namespace(), context=node.context,
                               use_global_arguments=False, start_parameter_services=False)
        self.service = self.query_node.create_service(
            Query, SERVICE_NAME, self._on_query, qos_profile=SERVICE_QOS, callback_group=ReentrantCallbackGroup())
        response_retry.install(self.service, self._on_response_event)
        self.ask = AskAction(self)
        # a worker that finishes a request wakes the executor, which then sends the response
        self._wake = self.query_node.create_guard_condition(lambda: None)
        self.query_node.create_timer(EXPIRY_PERIOD_S, self.session.queue.expire_overdue)
        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(self.query_node)
        self.threads = [threading.Thread(target=self._spin, name="earl-query", daemon=True)]
        self.threads += [threading.Thread(target=self._work, name=f"earl-worker-{i}", daemon=True)
                         for i in range(node.get_parameter("query_workers").value)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def shutdown(self, timeout: float) -> None:
        try:
            self.executor.shutdown(timeout_sec=timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass

    def destroy(self) -> None:
        try:
            self.ask.destroy()
            self.query_node.destroy_node()
        except Exception:  # noqa: BLE001 - the main node is destroyed regardless
            pass

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception:  # noqa: BLE001
            if not self.node.shutting_down():
                self.log.error("query executor stopped:\n" + traceback.format_exc())

    # ================================================================ admission (query executor)
    def _on_response_event(self, event: str, attempts: int) -> None:
        """Counted under queries_by_code (RESPONSE_RESENT / RESPONSE_LOST) in /diagnostics."""
        self.session.stats.count_query("RESPONSE_" + event.upper())
        if event == "lost":
            self.log.error(f"a query response could not be delivered after {attempts} attempts: "
                           "the client's response reader never matched (client gone?)")
        else:
            self.log.info(f"query response delivered on attempt {attempts} (client was still matching)")

    async def _on_query(self, request, response):
        """Admit the request to the queue (or answer it at once) and wait, without blocking, for its answer.

        A coroutine: rclpy's executor resumes it when a worker has answered (the worker triggers
        `_wake`), then sends the response. Every request leaves here with exactly one response.
        """
        pending = self.admit(request, response, time.perf_counter())
        if pending is not None:
            await pending.future
        return response

    def admit(self, request, response, t_start: float, progress=None) -> PendingQuery | None:
        """Check a `query` request or `ask` goal, pick its frame and queue it; None when it was answered
        at once (its error is in `response`). `progress` (the action's) reports `queued` first."""
        s = self.session
        try:
            self.node.require_active()
            query, stamp_ns = s.check_query(request.query, request.stamp.sec, request.stamp.nanosec)
            frame = s.frame_for(stamp_ns)
            response.header = frame.header
            s.check_frame_age(frame, stamp_ns)
            if progress is not None:
                progress.stage("queued")  # before admission: a worker may take it at once
            return s.admit(request, response, query, frame, t_start, Future(), progress)
        except EarlError as e:
            self.finish_response(response, t_start, e)
            return None

    def finish_response(self, response, t_start: float, error: Exception | None) -> None:
        """Set the response's status fields from the session's outcome (counted once per request)."""
        code, message = self.session.outcome(error, t_start)
        response.success, response.error_code, response.message = code == "OK", code, message

    def _release(self, pending: PendingQuery) -> None:
        """Hand the finished response back to the waiting coroutine and wake the executor."""
        pending.future.set_result(True)
        try:
            self._wake.trigger()
        except Exception:  # noqa: BLE001 - the guard condition is gone once the node is destroyed
            if not self.node.shutting_down():
                raise

    def on_refused(self, pending: PendingQuery, error: EarlError) -> None:
        """The queue ended a waiting request: BUSY (query_timeout, shutdown) or CANCELLED (the action's cancel)."""
        self.finish_response(pending.response, pending.t_start, error)
        self._release(pending)

    # ================================================================ answering (workers)
    def _work(self) -> None:
        queue = self.session.queue
        while not self.node.shutting_down():
            ticket = queue.take(timeout_s=0.5)
            if ticket is None:
                continue
            pending, error = ticket.payload, None
            pending.timings["ros_queue"] = ticket.waited_s * 1e3
            try:
                self._answer(pending)
            except EarlError as e:
                error = e
            except Exception as e:  # noqa: BLE001 - the node never dies on input
                error = e
                if not self.node.shutting_down():
                    self.log.error("query crashed:\n" + traceback.format_exc())
            queue.done(ticket)
            self.finish_response(pending.response, pending.t_start, error)
            self._release(pending)

    def _answer(self, p: PendingQuery) -> None:
        from earl_ros.model.types import require_answer

        ans = self.session.answer(p)
        g, timings, res = ans.grounding, p.timings, p.response.result
        res.parse_status = str(g.parse_status)
        try:
            require_answer(g)
            t = time.perf_counter()
            mask_msg = fill_result(res, p.frame.header, p.query, g, ans.interaction.text, ans.description_age,
                                   ans.rgb.shape[:2])
            if p.request.return_mask:
                p.response.mask = mask_msg
            if p.request.track and self.session.tracking is not None:
                p.response.track_ids = self.session.tracking.start(g, ans.rgb, question=p.query)
            timings["ros_build"] = (time.perf_counter() - t) * 1e3
        finally:  # an output that is no answer still reports where its time went
            timings["total"] = (time.perf_counter() - p.t_start) * 1e3
            set_timings(res, timings, g.timings_ms)
        if p.request.publish:
            # answer / mask / overlay go out from the publisher thread: drawing the overlay must
            # not delay the service response
            self.node.results.enqueue(res, mask_msg, ans.rgb, g, p.frame.header)
