"""The `earl` ROS 2 node: camera in, rolling interaction description, `query` service out.

Threads (see README.md, "ROS interface"):
- main thread: SingleThreadedExecutor spinning node `earl` (image intake, parameters,
  /diagnostics timer). Intake callbacks only validate and buffer; nothing heavy runs here.
- coarse worker: takes the newest frame, runs `pipeline.describe`, publishes `interaction`.
- query executor thread(s): node `earl_query` (same namespace) serves the `query` service on its
  own executor, so a query never blocks intake; model calls are limited to `query_workers`.
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
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, DurabilityPolicy
from rcl_interfaces.msg import SetParametersResult

from earl_ros.model.overlay import draw_overlay
from earl_ros.model.errors import (
    BusyError,
    EarlError,
    EmptyQueryError,
    StaleDescriptionError,
)

from . import params as P
from . import response_retry
from .conversions import array_to_image, image_to_array, stamp_to_ns
from .errors import InvalidRequestError, QueryTooLongError
from .frames import Frame, FrameBuffer

SERVICE_NAME = "query"
QUERY_NODE_NAME = "earl_query"


def _percentile(values, q):
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class _StartupFailed(Exception):
    pass


class StartupError(RuntimeError):
    """A configuration problem found at startup; main() prints it as one line and exits 2."""


class EarlNode(Node):
    def __init__(self, pipeline=None, pipeline_factory=None, **node_kwargs):
        super().__init__("earl", **node_kwargs)
        for p in P.PARAMS:
            self.declare_parameter(p.name, p.default, P.descriptor(p))
        for p in P.PARAMS:
            err = P.validate(p.name, self.get_parameter(p.name).value)
            if err:
                raise StartupError(err + " (fix it in the params file, e.g. config/earl.yaml)")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        g = lambda n: self.get_parameter(n).value  # noqa: E731

        # ---- model (fail fast with the model layer's one-line error)
        if pipeline is None:
            model_dir = g("model_dir")
            if not model_dir:
                from earl_ros.model.manifest import default_model_dir

                model_dir = str(default_model_dir() or "")
            if not model_dir:
                raise StartupError("parameter model_dir is empty: pass --model DIR to earl-launch, "
                                   "model_dir:=DIR to the launch file, or set it in the params file")
            if pipeline_factory is None:
                from earl_ros.model.pipeline import EarlPipeline

                pipeline_factory = EarlPipeline.from_dir
            pipeline = pipeline_factory(model_dir, device=g("device"), mask_backend=g("mask_backend"))
        self.pipeline = pipeline
        self.model_id = str(getattr(pipeline, "model_id", ""))
        self.descriptor_dim = int(getattr(pipeline, "descriptor_dim", 0))

        # ---- state
        self.frames = FrameBuffer(g("buffer_size"))
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
        self._model_slots = threading.Semaphore(g("query_workers"))
        self._stop = threading.Event()
        self._pub_queue: deque = deque(maxlen=4)
        self._pub_cv = threading.Condition()
        self._pub_dropped = 0
        self._pub_ms = deque(maxlen=200)

        # ---- publishers (relative names: namespace from the launcher)
        from earl_interfaces.msg import InteractionDescription, QueryResult
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        out_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
        self.pub_interaction = self.create_publisher(InteractionDescription, "interaction", 10)
        self.pub_answer = self.create_publisher(QueryResult, "answer", 10)
        self.pub_mask = self.create_publisher(Image, "mask", out_qos)
        self.pub_overlay = self.create_publisher(Image, "overlay", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # ---- camera input on this node (SingleThreadedExecutor in main())
        in_qos = QoSProfile(
            depth=g("qos_depth"), history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE,
            reliability=(ReliabilityPolicy.BEST_EFFORT if g("qos_reliability") == "best_effort"
                         else ReliabilityPolicy.RELIABLE),
        )
        if g("image_transport") == "compressed":
            from sensor_msgs.msg import CompressedImage

            self.sub = self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, in_qos)
        else:
            self.sub = self.create_subscription(Image, "image", self._on_image, in_qos)
        self.diag_timer = self.create_timer(g("diagnostics_period"), self._publish_diagnostics)

        # ---- query service on its own node + executor (never blocks intake)
        from earl_interfaces.srv import Query

        self.query_node = Node(QUERY_NODE_NAME, namespace=self.get_namespace(), context=self.context,
                               use_global_arguments=False, start_parameter_services=False)
        self.query_srv = self.query_node.create_service(
            Query, SERVICE_NAME, self._on_query, callback_group=ReentrantCallbackGroup())
        response_retry.install(self.query_srv, self._on_response_event)
        self.query_executor = MultiThreadedExecutor(num_threads=g("max_pending_queries"), context=self.context)
        self.query_executor.add_node(self.query_node)
        self._query_thread = threading.Thread(target=self._spin_queries, name="earl-query", daemon=True)
        self._coarse_thread = threading.Thread(target=self._coarse_loop, name="earl-coarse", daemon=True)
        self._pub_thread = threading.Thread(target=self._publish_loop, name="earl-publish", daemon=True)

    # ================================================================ lifecycle
    def start(self) -> None:
        self._query_thread.start()
        self._coarse_thread.start()
        self._pub_thread.start()
        self.get_logger().info(
            f"earl ready: model {self.model_id!r}, service {self.query_srv.service_name}, "
            f"image topic {self.sub.topic_name}")

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.frames.wake_all()
        with self._pub_cv:
            self._pub_cv.notify_all()
        try:
            self.query_executor.shutdown(timeout_sec=timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        for t in (self._coarse_thread, self._query_thread, self._pub_thread):
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
        return SetParametersResult(successful=True)

    # ================================================================ intake (executor thread)
    def _on_image(self, msg) -> None:
        t0 = time.perf_counter()
        seq = self.frames.next_seq()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            arr = image_to_array(msg)
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

    # ================================================================ queries (query executor)
    def _on_response_event(self, event: str, attempts: int) -> None:
        """Counted under queries_by_code (RESPONSE_RESENT / RESPONSE_LOST) in /diagnostics."""
        with self._query_lock:
            self._query_counts["RESPONSE_" + event.upper()] += 1
        if event == "lost":
            self.get_logger().error(f"a query response could not be delivered after {attempts} attempts: "
                                    "the client's response reader never matched (client gone?)")
        else:
            self.get_logger().info(f"query response delivered on attempt {attempts} (client was still matching)")

    def _on_query(self, request, response):
        t_start = time.perf_counter()
        code = "OK"
        try:
            self._answer(request, response, t_start)
            response.success, response.error_code, response.message = True, "OK", ""
        except EarlError as e:
            code = e.code
            response.success, response.error_code, response.message = False, e.code, e.message
        except Exception as e:  # noqa: BLE001 - the node never dies on input
            code = "INTERNAL"
            response.success, response.error_code = False, "INTERNAL"
            response.message = f"{type(e).__name__}: {e}"
            if not self._shutting_down():
                self.get_logger().error("query crashed:\n" + traceback.format_exc())
        total = (time.perf_counter() - t_start) * 1e3
        with self._query_lock:
            self._query_counts[code] += 1
            if code == "OK":
                self._query_ms.append(total)
        if not response.success:
            self.get_logger().info(f"query failed: {response.error_code}: {response.message[:200]}")
        return response

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

    def _answer(self, request, response, t_start: float) -> None:
        from sensor_msgs.msg import RegionOfInterest

        timings: dict[str, float] = {}
        query, stamp_ns = self._check_query(request)
        frame = self.frames.select(stamp_ns, int(self._p("stamp_tolerance") * 1e9))
        response.header = frame.header
        timings["frame_age"] = self._frame_age_s(frame) * 1e3

        t = time.perf_counter()
        limit = self._p("query_timeout")
        deadline = t + limit
        while not self._model_slots.acquire(timeout=min(0.1, limit)):
            if self._shutting_down():
                raise BusyError("the node is shutting down")
            if time.perf_counter() >= deadline:
                raise BusyError(f"no query worker free within {limit} s; retry later")
        try:
            timings["ros_queue"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            rgb = frame.rgb()
            timings["ros_convert"] = (time.perf_counter() - t) * 1e3
            inter, age = self._interaction_for(frame, rgb, timings)
            t = time.perf_counter()
            g = self.pipeline.answer(rgb, query, interaction=inter, stamp=frame.stamp)
            timings["model"] = (time.perf_counter() - t) * 1e3
        finally:
            self._model_slots.release()

        t = time.perf_counter()
        res = response.result
        res.header = frame.header
        res.query = query
        res.query_truncated = bool(g.query_truncated)
        res.answer = g.answer
        res.entities = [str(e) for e in g.entities]
        h, w = rgb.shape[:2]
        boxes = []
        for b in np.asarray(g.boxes).reshape(-1, 4):
            x1, y1, x2, y2 = (int(v) for v in b)
            x1, y1 = max(0, min(x1, w)), max(0, min(y1, h))
            x2, y2 = max(x1, min(x2, w)), max(y1, min(y2, h))
            boxes.append(RegionOfInterest(x_offset=x1, y_offset=y1, width=x2 - x1, height=y2 - y1))
        res.boxes = boxes
        res.scores = [float(s) for s in g.scores]
        res.no_target = bool(g.no_target)
        res.description = g.description or inter.text
        res.description_age_s = float(age) if math.isfinite(age) else -1.0
        labels = g.label_map() if g.image_size and g.image_size[0] else np.zeros((h, w), np.uint8)
        mask_msg = array_to_image(labels, "mono8", frame.header)
        if request.return_mask:
            response.mask = mask_msg
        timings["ros_build"] = (time.perf_counter() - t) * 1e3

        for k, v in (g.timings_ms or {}).items():
            timings.setdefault(f"model.{k}", float(v))
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        res.timing_names = list(timings)
        res.timing_ms = [float(v) for v in timings.values()]
        if request.publish:
            # answer / mask / overlay go out from the publisher thread: drawing the overlay must
            # not delay the service response
            self._enqueue_publish((res, mask_msg, rgb, g, frame.header))

    # ================================================================ result publisher thread
    def _enqueue_publish(self, item) -> None:
        with self._pub_cv:
            if len(self._pub_queue) == self._pub_queue.maxlen:
                self._pub_dropped += 1  # oldest result not published (counted in /diagnostics)
            self._pub_queue.append(item)
            self._pub_cv.notify()

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            with self._pub_cv:
                while not self._pub_queue and not self._stop.is_set():
                    self._pub_cv.wait(0.5)
                if self._stop.is_set():
                    return
                res, mask_msg, rgb, g, header = self._pub_queue.popleft()
            try:
                t = time.perf_counter()
                self._publish(self.pub_answer, res)
                if self._p("publish_mask"):
                    self._publish(self.pub_mask, mask_msg)
                if self._p("publish_overlay"):
                    self._publish(self.pub_overlay, array_to_image(draw_overlay(rgb, g), "rgb8", header))
                self._pub_ms.append((time.perf_counter() - t) * 1e3)
            except Exception:  # noqa: BLE001 - never let visualisation kill the node
                if self._shutting_down():
                    return
                self.get_logger().error("publishing a result failed:\n" + traceback.format_exc(),
                                        throttle_duration_sec=5.0)

    # ================================================================ diagnostics
    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        snap = self.frames.snapshot()
        c = snap["counters"]
        latest = snap["latest"]
        age = self._frame_age_s(latest) if latest is not None else float("nan")
        with self._desc_lock:
            inter = self._interaction
        desc_age = (latest.stamp - inter.stamp) if (latest is not None and inter is not None
                                                    and inter.stamp is not None) else float("nan")
        intake = list(self._intake_ms)
        with self._query_lock:
            qms = list(self._query_ms)
            qcounts = dict(self._query_counts)
        coarse_alive = self._coarse_thread.is_alive()
        query_alive = self._query_thread.is_alive()
        values = {
            "model_id": self.model_id,
            "device": self._p("device"),
            "mask_backend": self._p("mask_backend"),
            "input_rate_hz": f"{snap['rate_hz']:.2f}",
            "frames_received": c.get("received", 0),
            "frames_accepted": c.get("received", 0) - c.get("rejected", 0),
            "frames_rejected": c.get("rejected", 0),
            "frames_rejected_by_code": ",".join(f"{k}={v}" for k, v in sorted(snap["rejections"].items())),
            "last_rejection": "" if snap["last_rejection"] is None else str(snap["last_rejection"].error),
            "frames_out_of_order": c.get("out_of_order", 0),
            "frames_duplicate_stamp": c.get("duplicate_stamp", 0),
            "frames_evicted_from_buffer": c.get("evicted", 0),
            "time_jumps": c.get("time_jumps", 0),
            "frames_buffered": snap["buffered"],
            "frames_not_described": self._coarse_stats["skipped_frames"],
            "frame_age_s": f"{age:.3f}",
            "intake_ms_p50": f"{_percentile(intake, 50):.3f}",
            "intake_ms_p99": f"{_percentile(intake, 99):.3f}",
            "stamp_to_intake_ms_p50": f"{_percentile(list(self._transport_ms), 50):.2f}",
            "stamp_to_intake_ms_p99": f"{_percentile(list(self._transport_ms), 99):.2f}",
            "coarse_passes": self._coarse_stats["passes"],
            "coarse_errors": self._coarse_stats["errors"],
            "coarse_last_error": self._coarse_stats["last_error"],
            "coarse_latency_ms_p50": f"{_percentile(list(self._coarse_latency), 50):.1f}",
            "coarse_lag_s": f"{self._coarse_lag[-1]:.3f}" if self._coarse_lag else "nan",
            "description_age_s": f"{desc_age:.3f}",
            "query_latency_ms_p50": f"{_percentile(qms, 50):.1f}",
            "query_latency_ms_p95": f"{_percentile(qms, 95):.1f}",
            "results_publish_ms_p50": f"{_percentile(list(self._pub_ms), 50):.1f}",
            "results_not_published": self._pub_dropped,
            "queries_by_code": ",".join(f"{k}={v}" for k, v in sorted(qcounts.items())),
            "coarse_worker_alive": coarse_alive,
            "query_executor_alive": query_alive,
        }
        level, message = DiagnosticStatus.OK, "ok"
        if not query_alive or (self._p("coarse_enabled") and not coarse_alive):
            level, message = DiagnosticStatus.ERROR, "a worker thread stopped"
        elif latest is None:
            level, message = DiagnosticStatus.WARN, "no camera frames yet"
        elif age > 2.0 and snap["rate_hz"] == 0.0:
            level, message = DiagnosticStatus.WARN, f"no camera frame for {age:.1f} s"
        elif snap["last_rejection"] is not None:
            level, message = DiagnosticStatus.WARN, f"latest frame rejected: {snap['last_rejection'].error}"
        st = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: pipeline",
                              message=message, hardware_id=self.model_id,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)


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
