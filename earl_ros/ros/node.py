"""The `earl` ROS 2 node: camera in, rolling interaction description, `query` service out.

A lifecycle node: configure loads the models and creates the outputs and services; activate
subscribes to the camera and starts the background workers; deactivate stops intake and
answers new requests INACTIVE (models kept); cleanup frees the models; shutdown ends main().
`autostart` (default true) configures and activates at startup.

Threads (see README.md, "ROS interface"):
- main thread: SingleThreadedExecutor spinning node `earl` (image intake, parameters,
  /diagnostics timer). Intake callbacks only validate and buffer; nothing heavy runs here.
- coarse worker: takes the newest frame, runs `pipeline.describe`, publishes `interaction`.
- tracking worker: while tracked queries' entities are followed, updates them on the newest frame
  (at most `tracking_rate` Hz) and publishes `tracks` and `tracks/mask`.
- query executor thread and query workers: the `query` service (earl_ros/ros/query_server.py).
All published messages carry the source frame's header. What a frame, a description or a request
means is decided by the ROS-free live session (earl_ros/live/session.py); this module is wiring.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.task import Future
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, DurabilityPolicy
from rcl_interfaces.msg import SetParametersResult

from earl_ros.live.errors import InactiveError
from earl_ros.live.session import LiveSession
from earl_ros.model.errors import EarlError, debug_tracebacks

from . import params as P
from .conversions import image_to_array, stamp_to_ns
from .diagnostics import diagnostic_array, state_only_array
from .memory import release_freed_memory
from .query_server import QueryServer
from .outputs import NodeOutputs
from .process import StartupError, run_node_process


class EarlNode(LifecycleNode):
    def __init__(self, pipeline=None, pipeline_factory=None, **node_kwargs):
        """pipeline: use this one instead of loading `model_dir` at configure (tests, tools)."""
        super().__init__("earl", **node_kwargs)
        self._given_pipeline, self._pipeline_factory = pipeline, pipeline_factory
        self.pipeline = self.session = self.queries = self.results = self.outputs = self.sub = None
        self.model_id, self.configure_error = "", ""
        self._stop = threading.Event()  # per configuration: query workers, result publisher
        self._stop.set()
        self._run_stop = threading.Event()  # per activation: coarse and tracking workers
        self._active = False
        self._workers: list[threading.Thread] = []
        self.finished = Future()  # done after the shutdown transition: main() returns
        self._declare_parameters()  # after the attributes: a bad value raises, and rclpy destroys the node
        from diagnostic_msgs.msg import DiagnosticArray

        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.diag_timer = self.create_timer(self._p("diagnostics_period"), self._publish_diagnostics)

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

    # ================================================================ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the models and create outputs, services and query workers; a failure is its one-line
        error (logged, kept in configure_error) and the node stays unconfigured."""
        try:
            self.pipeline = (self._given_pipeline if self._given_pipeline is not None
                             else self._load_pipeline(self._pipeline_factory))
        except (StartupError, EarlError, ValueError, OSError) as e:
            if debug_tracebacks():
                traceback.print_exc()
            self.configure_error = str(e)
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self._stop = threading.Event()
        self.session = LiveSession(self.pipeline, self._p, now_ns=lambda: self.get_clock().now().nanoseconds,
                                   log=self._log, on_refused=lambda p, e: self.queries.on_refused(p, e),
                                   on_description=lambda *a: self.outputs.description(*a))
        self.model_id = self.session.model_id
        self.frames, self.queue = self.session.frames, self.session.queue
        self.outputs = NodeOutputs(self, self.session)
        self.results = self.outputs.results
        self.queries = QueryServer(self)
        self.queries.start()
        self.results.thread.start()
        self.get_logger().info(f"earl configured: model {self.model_id!r}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._run_stop = threading.Event()
        self._create_camera_input()
        self._workers = [threading.Thread(target=self._run_coarse, name="earl-coarse", daemon=True),
                         threading.Thread(target=self._run_tracking, name="earl-tracking", daemon=True)]
        for t in self._workers:
            t.start()
        self._active = True
        self.get_logger().info(f"earl ready: model {self.model_id!r}, service {self.queries.service.service_name}, "
                               f"image topic {self.sub.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.stop()
        if not self.finished.done():
            self.finished.set_result(True)
        return TransitionCallbackReturn.SUCCESS

    def start(self) -> None:
        """Configure and activate (what `autostart` does); StartupError with the one-line reason."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise StartupError(self.configure_error or "configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise StartupError("activate failed")

    def stop(self, timeout: float = 2.0) -> None:
        """Deactivate and release whatever is running (SIGTERM, shutdown)."""
        self._deactivate(timeout)
        self._release(timeout)

    def _deactivate(self, timeout: float = 2.0) -> None:
        """Stop intake and the background workers; new requests are answered INACTIVE."""
        self._active = False
        self._run_stop.set()
        if self.session is not None:
            self.frames.wake_all()
        for t in self._workers:
            t.join(timeout)
        self._workers = []
        if self.sub is not None:
            self.destroy_subscription(self.sub)
            self.sub = None

    def _release(self, timeout: float = 2.0) -> None:
        """Stop the query workers and free the models (RSS and GPU memory go back)."""
        if self.session is None:
            return
        self._stop.set()
        self.queue.close()
        self.results.wake()
        self.queries.shutdown(timeout)
        for t in (self.results.thread, *self.queries.threads):
            if t.is_alive():
                t.join(timeout)
        self.queries.destroy()
        self.outputs.destroy()
        self.pipeline = self.session = self.queries = self.results = self.outputs = self.frames = self.queue = None
        release_freed_memory()

    def require_active(self) -> None:
        """Called by the query service and the ask action before a request is admitted."""
        if not self._active:
            raise InactiveError("the node is inactive (lifecycle): activate it to serve queries")

    def destroy_node(self):
        if getattr(self, "queries", None) is not None:
            self.queries.destroy()
        return super().destroy_node()

    def shutting_down(self) -> bool:
        return self._stop.is_set() or not self.context.ok()

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    def publish_safely(self, pub, msg) -> None:
        """Publish from a worker thread; a publish racing SIGINT/SIGTERM is dropped quietly."""
        try:
            pub.publish(msg)
        except Exception:  # noqa: BLE001
            if self.shutting_down():
                return
            raise

    def get_parameter_value(self, name):
        return self.get_parameter(name).value

    _p = get_parameter_value

    def _log(self, level: str, message: str) -> None:
        """The session's log lines; repeated warnings and errors at most every 5 s (one bad input per frame)."""
        log = getattr(self.get_logger(), level)
        if level == "info":
            log(message)
        else:
            log(message, throttle_duration_sec=5.0)

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        for c in changes:
            err = P.validate(c.name, c.value) or (self.session.check_setting(c.name, c.value)
                                                    if self.session is not None else None)
            if err:
                return SetParametersResult(successful=False, reason=err)
        for c in changes:
            if self.session is not None:
                self.session.apply_setting(c.name, c.value)
        return SetParametersResult(successful=True)

    # ================================================================ intake (executor thread)
    def _on_image(self, msg) -> None:
        t0 = time.perf_counter()
        self.session.accept_frame(msg.header, stamp_to_ns(msg.header.stamp), msg.encoding.strip().lower(),
                                  lambda: image_to_array(msg), t0)

    def _on_compressed(self, msg) -> None:
        t0 = time.perf_counter()
        self.session.accept_frame(msg.header, stamp_to_ns(msg.header.stamp), "compressed", lambda: msg, t0)

    # ================================================================ coarse worker
    def _run_coarse(self) -> None:
        try:
            self.session.run_coarse(self._run_stop)
        except Exception:  # noqa: BLE001
            if not self.shutting_down():
                self.session.stats.coarse["last_error"] = "coarse worker stopped: " + traceback.format_exc(limit=1)
                self.get_logger().error("coarse worker stopped:\n" + traceback.format_exc())

    # ================================================================ tracking worker
    def _run_tracking(self) -> None:
        if self.session.tracking is None:  # a pipeline without a segmenter cannot track
            return
        self.session.tracking.run(self._run_stop, self.outputs.track_update)


    # ================================================================ diagnostics
    def _publish_diagnostics(self) -> None:
        name, stamp = f"{self.get_fully_qualified_name()}: pipeline", self.get_clock().now().to_msg()
        state = self._state_machine.current_state[1]
        if self.session is None:
            self.pub_diag.publish(state_only_array(name, stamp, state, self.configure_error))
            return
        alive = {"coarse": not self._active or self._workers[0].is_alive(),
                 "workers": all(t.is_alive() for t in self.queries.threads)}
        health = self.session.health(self._p("device"), self._p("mask_backend"), alive, self.results)
        self.pub_diag.publish(diagnostic_array(health, name, stamp, lifecycle_state=state))


def main(argv=None) -> int:
    """Entry point of the `earl` executable (earl_ros/ros/process.py: exits the process when done)."""
    return run_node_process(EarlNode, argv)


if __name__ == "__main__":
    sys.exit(main())
