"""The `earl` ROS 2 node: camera in, rolling interaction description, `query` service out.

Threads (see README.md, "ROS interface"):
- main thread: SingleThreadedExecutor spinning node `earl` (image intake, parameters,
  /diagnostics timer). Intake callbacks only validate and buffer; nothing heavy runs here.
- coarse worker: takes the newest frame, runs `pipeline.describe`, publishes `interaction`.
- query executor thread: node `earl_query` (same namespace) serves the `query` service on its own
  SingleThreadedExecutor. Its handler only validates a request, picks the frame and admits it to
  the FIFO query queue (or answers at once: a validation error, or BUSY when the queue is full);
  the executor is never blocked, so requests never pile up in DDS, where they could be overwritten.
- query workers (`query_workers` threads): answer queued requests in arrival order.
All published messages carry the source frame's header.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from collections import Counter, deque

import numpy as np
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, DurabilityPolicy
from rclpy.task import Future
from rcl_interfaces.msg import SetParametersResult

from earl_ros.live.query_queue import QueryQueue, Ticket
from earl_ros.model.errors import (
    BusyError,
    EarlError,
    EmptyQueryError,
    FrameTooOldError,
    StaleDescriptionError,
)
from earl_ros.model.images import check_frame_shape

from . import params as P
from . import response_retry
from .conversions import image_to_array, stamp_to_ns
from .diagnostics import PipelineHealth, diagnostic_array
from .errors import InvalidRequestError, QueryTooLongError
from .frames import Frame, FrameBuffer
from .result_publisher import ResultPublisher
from .results import fill_result, set_timings

SERVICE_NAME = "query"
QUERY_NODE_NAME = "earl_query"


# Requests are taken off DDS as they arrive and queued in the node (QueryQueue), so the service's
# DDS history must never overwrite one that is not taken yet: keep all, reliable.
SERVICE_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
EXPIRY_PERIOD_S = 0.1  # how often queued requests are checked against query_timeout


class _Pending:
    """What a queued request carries to the worker that answers it."""

    __slots__ = ("request", "response", "query", "frame", "future", "t_start", "timings")

    def __init__(self, request, response, query: str, frame: Frame, t_start: float, timings: dict):
        self.request, self.response, self.query, self.frame = request, response, query, frame
        self.future = Future()
        self.t_start, self.timings = t_start, timings


class _StartupFailed(Exception):
    pass


class StartupError(RuntimeError):
    """A configuration problem found at startup; main() prints it as one line and exits 2."""


class EarlNode(Node):
    def __init__(self, pipeline=None, pipeline_factory=None, **node_kwargs):
        super().__init__("earl", **node_kwargs)
        self._declare_parameters()
        self.pipeline = pipeline if pipeline is not None else self._load_pipeline(pipeline_factory)
        self.model_id = str(getattr(self.pipeline, "model_id", ""))
        self.descriptor_dim = int(getattr(self.pipeline, "descriptor_dim", 0))

        # ---- state
        self.frames = FrameBuffer(self._p("buffer_size"), self._p("buffer_max_mb") << 20)
        self._desc_lock = threading.Lock()
        self._interaction = None  # earl_ros.model.types.Interaction of the rolling description
        self._interaction_header = None
        self._interaction_seq = 0
        self._coarse_stats = {"passes": 0, "errors": 0, "skipped_frames": 0, "last_error": ""}
        self._coarse_latency = deque(maxlen=200)
        self._coarse_lag = deque(maxlen=200)
        self._intake_ms = deque(maxlen=2000)
        self._transport_ms = deque(maxlen=2000)  # header stamp -> intake callback (same-clock sources)
        self._query_ms = deque(maxlen=200)
        self._query_counts: Counter = Counter()
        self._query_lock = threading.Lock()
        self.queue = QueryQueue(self._p("max_pending_queries"), self._on_ticket_refused)
        self._stop = threading.Event()

        self._create_publishers()
        self._create_camera_input()
        self.diag_timer = self.create_timer(self._p("diagnostics_period"), self._publish_diagnostics)
        self._create_query_service()
        self._coarse_thread = threading.Thread(target=self._coarse_loop, name="earl-coarse", daemon=True)

    def _declare_parameters(self) -> None:
        for p in P.PARAMS:
            self.declare_parameter(p.name, p.default, P.descriptor(p))
        for p in P.PARAMS:
            err = P.validate(p.name, self.get_parameter(p.name).value)
            if err:
                raise StartupError(err + " (fix it in the params file, e.g. config/earl.yaml)")
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load_pipeline(self, pipeline_factory):
        """The model layer's pipeline from `model_dir` (fails fast with its one-line error)."""
        model_dir = self._p("model_dir")
        if not model_dir:
            from earl_ros.model.manifest import default_model_dir

            model_dir = str(default_model_dir() or "")
        if not model_dir:
            raise StartupError("parameter model_dir is empty: pass --model DIR to earl-launch, "
                               "model_dir:=DIR to the launch file, or set it in the params file")
        if pipeline_factory is None:
            from earl_ros.model.pipeline import EarlPipeline

            pipeline_factory = EarlPipeline.from_dir
        dtype = None if self._p("dtype") == "auto" else self._p("dtype")
        return pipeline_factory(model_dir, device=self._p("device"), mask_backend=self._p("mask_backend"),
                                dtype=dtype)

    def _create_publishers(self) -> None:
        """Relative names: the namespace comes from the launcher."""
        from earl_interfaces.msg import InteractionDescription, QueryResult
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        out_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
        self.pub_interaction = self.create_publisher(InteractionDescription, "interaction", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        pubs = {"answer": self.create_publisher(QueryResult, "answer", 10),
                "mask": self.create_publisher(Image, "mask", out_qos),
                "overlay": self.create_publisher(Image, "overlay", out_qos)}
        self.results = ResultPublisher(self._publish, pubs, self._p, self.get_logger(), self._stop)

    def _create_camera_input(self) -> None:
        """Camera input on this node, spun by the SingleThreadedExecutor in main()."""
        from sensor_msgs.msg import Image

        in_qos = QoSProfile(
            depth=self._p("qos_depth"), history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE,
            reliability=(ReliabilityPolicy.BEST_EFFORT if self._p("qos_reliability") == "best_effort"
                         else ReliabilityPolicy.RELIABLE),
        )
        if self._p("image_transport") == "compressed":
            from sensor_msgs.msg import CompressedImage

            self.sub = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, in_qos)
        else:
            self.sub = self.create_subscription(Image, "image", self._on_image, in_qos)

    def _create_query_service(self) -> None:
        """The query service on its own node + executor (never blocks intake) and the query workers."""
        from earl_interfaces.srv import Query

        self.query_node = Node(QUERY_NODE_NAME, namespace=self.get_namespace(), context=self.context,
                               use_global_arguments=False, start_parameter_services=False)
        self.query_srv = self.query_node.create_service(
            Query, SERVICE_NAME, self._on_query, qos_profile=SERVICE_QOS, callback_group=ReentrantCallbackGroup())
        response_retry.install(self.query_srv, self._on_response_event)
        # a worker that finishes a request wakes the executor, which then sends the response
        self._wake = self.query_node.create_guard_condition(lambda: None)
        self.query_node.create_timer(EXPIRY_PERIOD_S, self.queue.expire_overdue)
        self.query_executor = SingleThreadedExecutor(context=self.context)
        self.query_executor.add_node(self.query_node)
        self._query_thread = threading.Thread(target=self._spin_queries, name="earl-query", daemon=True)
        self._workers = [threading.Thread(target=self._query_worker, name=f"earl-worker-{i}", daemon=True)
                         for i in range(self._p("query_workers"))]

    # ================================================================ lifecycle
    def start(self) -> None:
        for w in self._workers:
            w.start()
        self._query_thread.start()
        self._coarse_thread.start()
        self.results.thread.start()
        self.get_logger().info(
            f"earl ready: model {self.model_id!r}, service {self.query_srv.service_name}, "
            f"image topic {self.sub.topic_name}")

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.queue.close()
        self.frames.wake_all()
        self.results.wake()
        try:
            self.query_executor.shutdown(timeout_sec=timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        for t in (self._coarse_thread, self._query_thread, self.results.thread, *self._workers):
            if t.is_alive():
                t.join(timeout)

    def destroy_node(self):
        try:
            self.query_node.destroy_node()
        except Exception:  # noqa: BLE001 - the main node is destroyed regardless
            pass
        return super().destroy_node()

    def _spin_queries(self) -> None:
        try:
            self.query_executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass
        except Exception:  # noqa: BLE001
            if not self._shutting_down():
                self.get_logger().error("query executor stopped:\n" + traceback.format_exc())

    def _shutting_down(self) -> bool:
        return self._stop.is_set() or not self.context.ok()

    def _publish(self, pub, msg) -> None:
        """Publish from a worker thread; a publish racing SIGINT/SIGTERM is dropped quietly."""
        try:
            pub.publish(msg)
        except Exception:  # noqa: BLE001
            if self._shutting_down():
                return
            raise

    def _p(self, name):
        return self.get_parameter(name).value

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        for c in changes:
            err = P.validate(c.name, c.value)
            if err:
                return SetParametersResult(successful=False, reason=err)
        for c in changes:
            if c.name == "buffer_size":
                self.frames.set_capacity(c.value)
            elif c.name == "buffer_max_mb":
                self.frames.set_max_bytes(c.value << 20)
        return SetParametersResult(successful=True)

    # ================================================================ intake (executor thread)
    def _on_image(self, msg) -> None:
        t0 = time.perf_counter()
        seq = self.frames.next_seq()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            arr = image_to_array(msg)
            check_frame_shape(*arr.shape[:2])
        except EarlError as e:
            self.frames.reject(stamp_ns, seq, e)
            self.get_logger().warning(f"rejected frame: {e}", throttle_duration_sec=5.0)
            return
        self.frames.put(Frame(msg.header, stamp_ns, seq, msg.encoding.strip().lower(), arr))
        self._intake_ms.append((time.perf_counter() - t0) * 1e3)
        self._transport_ms.append((time.time_ns() - stamp_ns) * 1e-6)

    def _on_compressed(self, msg) -> None:
        t0 = time.perf_counter()
        seq = self.frames.next_seq()
        self.frames.put(Frame(msg.header, stamp_to_ns(msg.header.stamp), seq, "compressed", msg))
        self._intake_ms.append((time.perf_counter() - t0) * 1e3)

    def _frame_age_s(self, frame: Frame) -> float:
        return (self.get_clock().now().nanoseconds - frame.stamp_ns) * 1e-9

    # ================================================================ coarse worker
    def _coarse_loop(self) -> None:
        try:
            self._coarse_loop_inner()
        except Exception:  # noqa: BLE001
            if not self._shutting_down():
                self._coarse_stats["last_error"] = "coarse worker stopped: " + traceback.format_exc(limit=1)
                self.get_logger().error("coarse worker stopped:\n" + traceback.format_exc())

    def _coarse_loop_inner(self) -> None:
        last_seq, last_start = 0, 0.0
        while not self._shutting_down():
            if not self._p("coarse_enabled"):
                self._stop.wait(0.2)
                continue
            period = self._p("coarse_period")
            wait = last_start + period - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 0.5))
                continue
            frame = self.frames.wait_newer(last_seq, timeout=0.5)
            if frame is None or self._stop.is_set():
                continue
            if last_seq:
                self._coarse_stats["skipped_frames"] += max(0, frame.seq - last_seq - 1)
            last_seq, last_start = frame.seq, time.monotonic()
            try:
                rgb = frame.rgb()
                inter = self.pipeline.describe(rgb, stamp=frame.stamp)
            except EarlError as e:
                self._coarse_stats["errors"] += 1
                self._coarse_stats["last_error"] = str(e)
                if e.code in ("INVALID_IMAGE", "UNSUPPORTED_ENCODING"):
                    self.frames.reject(frame.stamp_ns, frame.seq, e, already_received=True)
                self.get_logger().warning(f"coarse pass failed: {e}", throttle_duration_sec=5.0)
                continue
            except Exception as e:  # noqa: BLE001 - the node never dies on input
                self._coarse_stats["errors"] += 1
                self._coarse_stats["last_error"] = f"{type(e).__name__}: {e}"
                self.get_logger().error("coarse pass crashed:\n" + traceback.format_exc(),
                                        throttle_duration_sec=5.0)
                continue
            if self._shutting_down():
                break
            try:
                self._set_interaction(inter, frame)
            except Exception:  # noqa: BLE001
                if self._shutting_down():
                    break
                self.get_logger().error("publishing a description failed:\n" + traceback.format_exc(),
                                        throttle_duration_sec=5.0)

    def _set_interaction(self, inter, frame: Frame) -> None:
        from earl_interfaces.msg import InteractionDescription

        if inter.stamp is None:
            inter.stamp = frame.stamp
        with self._desc_lock:
            if self._interaction_seq > frame.seq:
                return  # never replace the description of a later frame (by arrival order)
            self._interaction, self._interaction_header = inter, frame.header
            self._interaction_seq = frame.seq
        lag = self._frame_age_s(frame)
        self._coarse_stats["passes"] += 1
        self._coarse_latency.append(float(inter.latency_ms))
        self._coarse_lag.append(lag)
        msg = InteractionDescription(
            header=frame.header, description=inter.text,
            descriptor_dim=int(np.asarray(inter.descriptor).size), model_id=self.model_id,
            latency_ms=float(inter.latency_ms), lag_s=float(lag))
        self._publish(self.pub_interaction, msg)

    # ================================================================ queries: admission (query executor)
    def _on_response_event(self, event: str, attempts: int) -> None:
        """Counted under queries_by_code (RESPONSE_RESENT / RESPONSE_LOST) in /diagnostics."""
        with self._query_lock:
            self._query_counts["RESPONSE_" + event.upper()] += 1
        if event == "lost":
            self.get_logger().error(f"a query response could not be delivered after {attempts} attempts: "
                                    "the client's response reader never matched (client gone?)")
        else:
            self.get_logger().info(f"query response delivered on attempt {attempts} (client was still matching)")

    async def _on_query(self, request, response):
        """Admit the request to the queue (or answer it at once) and wait, without blocking, for its answer.

        A coroutine: rclpy's executor resumes it when a worker has answered (the worker triggers
        `_wake`), then sends the response. Every request leaves here with exactly one response.
        """
        t_start = time.perf_counter()
        try:
            pending = self._admit(request, response, t_start)
            self.queue.submit(pending, self._p("query_timeout"))
        except EarlError as e:
            self._finish(response, t_start, e)
            return response
        await pending.future
        return response

    def _admit(self, request, response, t_start: float) -> _Pending:
        """Validate the request and pick its frame now (the frame current when it was asked)."""
        query, stamp_ns = self._check_query(request)
        frame = self.frames.select(stamp_ns, int(self._p("stamp_tolerance") * 1e9))
        response.header = frame.header
        max_age = self._p("max_frame_age")
        arrived = time.monotonic() - frame.received_mono
        if stamp_ns == 0 and max_age > 0 and arrived > max_age:
            raise FrameTooOldError(
                f"the newest camera frame arrived {arrived:.2f} s ago (max_frame_age {max_age} s): the camera "
                "stalled or newer frames were lost in transport (see frames_rejected in /diagnostics)")
        return _Pending(request, response, query, frame, t_start, {"frame_age": self._frame_age_s(frame) * 1e3})

    def _check_query(self, request) -> tuple[str, int]:
        raw = request.query
        nbytes = len(raw.encode("utf-8", "surrogatepass"))
        limit = self._p("max_query_bytes")
        if nbytes > limit:
            raise QueryTooLongError(f"query is {nbytes} bytes; the limit is {limit} (parameter max_query_bytes)")
        query = raw.strip()
        if not query:
            raise EmptyQueryError("query is empty")
        st = request.stamp
        if st.nanosec >= 1_000_000_000 or st.sec < 0:
            raise InvalidRequestError(f"invalid stamp sec={st.sec} nanosec={st.nanosec}")
        return query, stamp_to_ns(st)

    def _finish(self, response, t_start: float, error: Exception | None) -> None:
        """Set the response's status fields and count the outcome (once per request)."""
        code = "OK"
        if error is None:
            response.success, response.error_code, response.message = True, "OK", ""
        elif isinstance(error, EarlError):
            code = error.code
            response.success, response.error_code, response.message = False, error.code, error.message
        else:
            code = "INTERNAL"
            response.success, response.error_code = False, "INTERNAL"
            response.message = f"{type(error).__name__}: {error}"
        with self._query_lock:
            self._query_counts[code] += 1
            if code == "OK":
                self._query_ms.append((time.perf_counter() - t_start) * 1e3)
        if not response.success:
            self.get_logger().info(f"query failed: {response.error_code}: {response.message[:200]}")

    def _release(self, pending: _Pending) -> None:
        """Hand the finished response back to the waiting coroutine and wake the executor."""
        pending.future.set_result(True)
        try:
            self._wake.trigger()
        except Exception:  # noqa: BLE001 - the guard condition is gone once the node is destroyed
            if not self._shutting_down():
                raise

    def _on_ticket_refused(self, ticket: Ticket, error: BusyError) -> None:
        """The queue ended a waiting request (query_timeout, shutdown): it is answered BUSY."""
        self._finish(ticket.payload.response, ticket.payload.t_start, error)
        self._release(ticket.payload)

    # ================================================================ queries: answering (workers)
    def _query_worker(self) -> None:
        while not self._shutting_down():
            ticket = self.queue.take(timeout_s=0.5)
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
                if not self._shutting_down():
                    self.get_logger().error("query crashed:\n" + traceback.format_exc())
            self.queue.done(ticket)
            self._finish(pending.response, pending.t_start, error)
            self._release(pending)

    def _interaction_for(self, frame: Frame, rgb, timings):
        max_age = self._p("max_description_age")
        with self._desc_lock:
            cur = self._interaction
        age = math.inf if cur is None or cur.stamp is None else abs(frame.stamp - cur.stamp)
        if cur is not None and (max_age <= 0 or age <= max_age):
            return cur, age
        policy = self._p("stale_policy")
        what = "no description yet" if cur is None else f"the description is {age:.2f} s from the frame"
        if policy == "refuse":
            raise StaleDescriptionError(f"{what} (max_description_age {max_age} s, stale_policy refuse)")
        if policy == "use" and cur is not None:
            return cur, age
        if policy == "describe":
            t = time.perf_counter()
            inter = self.pipeline.describe(rgb, stamp=frame.stamp)
            timings["describe"] = (time.perf_counter() - t) * 1e3
            if inter.stamp is None:
                inter.stamp = frame.stamp
            self._set_interaction(inter, frame)
            return inter, 0.0
        from earl_ros.model.types import Interaction

        return Interaction.empty(self.descriptor_dim), math.inf

    def _answer(self, p: _Pending) -> None:
        from earl_ros.model.pipeline import require_answer

        frame, timings, res = p.frame, p.timings, p.response.result
        t = time.perf_counter()
        rgb = frame.rgb()
        timings["ros_convert"] = (time.perf_counter() - t) * 1e3
        inter, age = self._interaction_for(frame, rgb, timings)
        t = time.perf_counter()
        g = self.pipeline.answer(rgb, p.query, interaction=inter, stamp=frame.stamp)
        timings["model"] = (time.perf_counter() - t) * 1e3
        res.parse_status = str(g.parse_status)
        try:
            require_answer(g)
            t = time.perf_counter()
            mask_msg = fill_result(res, frame.header, p.query, g, inter.text, age, rgb.shape[:2])
            if p.request.return_mask:
                p.response.mask = mask_msg
            timings["ros_build"] = (time.perf_counter() - t) * 1e3
        finally:  # an output that is no answer still reports where its time went
            timings["total"] = (time.perf_counter() - p.t_start) * 1e3
            set_timings(res, timings, g.timings_ms)
        if p.request.publish:
            # answer / mask / overlay go out from the publisher thread: drawing the overlay must
            # not delay the service response
            self.results.enqueue(res, mask_msg, rgb, g, frame.header)

    # ================================================================ diagnostics
    def _health(self) -> PipelineHealth:
        snap = self.frames.snapshot()
        latest = snap["latest"]
        with self._desc_lock:
            inter = self._interaction
        desc_age = (latest.stamp - inter.stamp) if (latest is not None and inter is not None
                                                    and inter.stamp is not None) else float("nan")
        with self._query_lock:
            qms, qcounts = list(self._query_ms), dict(self._query_counts)
        return PipelineHealth(
            model_id=self.model_id, device=self._p("device"), mask_backend=self._p("mask_backend"),
            frames=snap, frame_age_s=self._frame_age_s(latest) if latest is not None else float("nan"),
            description_age_s=desc_age, queue=self.queue.stats(), query_counts=qcounts, query_ms=qms,
            coarse=dict(self._coarse_stats), coarse_latency_ms=list(self._coarse_latency),
            coarse_lag_s=self._coarse_lag[-1] if self._coarse_lag else float("nan"),
            intake_ms=list(self._intake_ms), transport_ms=list(self._transport_ms), publish_ms=list(self.results.publish_ms),
            results_not_published=self.results.dropped, coarse_alive=self._coarse_thread.is_alive(),
            coarse_enabled=self._p("coarse_enabled"),
            workers_alive=self._query_thread.is_alive() and all(w.is_alive() for w in self._workers))

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(diagnostic_array(self._health(), f"{self.get_fully_qualified_name()}: pipeline",
                                               self.get_clock().now().to_msg()))


def _quiet_model_loading() -> None:
    """Weight-loading progress bars would fill the node's log (a launch file's screen) at every start."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    hf_logging.disable_progress_bar()


def main(argv=None) -> int:
    """Entry point of the `earl` executable. Exits the process (os._exit) when done."""
    args = sys.argv if argv is None else argv
    _quiet_model_loading()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        try:
            node = EarlNode()
        except (StartupError, EarlError, ParameterException, ValueError, OSError) as e:
            print(f"earl: error: {e}", file=sys.stderr, flush=True)
            code = 2
        if node is None:
            raise _StartupFailed
        node.start()
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        try:
            executor.spin()
        except _rclpy.RCLError:
            # SIGINT/SIGTERM shut the context down; when that races with the executor building its
            # wait set, rclpy raises RCLError instead of ExternalShutdownException: the same clean stop.
            if node.context.ok():
                raise
        finally:
            executor.shutdown(timeout_sec=1.0)
    except (KeyboardInterrupt, ExternalShutdownException, _StartupFailed):
        pass
    finally:
        if node is not None:
            node.stop()
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        rclpy.try_shutdown()
    # Everything is stopped and destroyed; skip the interpreter's slow teardown of torch and
    # transformers objects (seconds on a busy machine) so SIGTERM exits promptly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
