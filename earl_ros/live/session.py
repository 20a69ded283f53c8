"""The live session: every decision the `earl` node makes, without ROS.

The node (earl_ros/ros/node.py) only moves data between DDS and this object: it hands over frames,
runs the threads, converts messages and publishes. What a frame, a description or a request
means (which frame a query is about, whether a description is too old to use, which error code a
request earns, how outcomes are counted) is decided here, so it can be tested without DDS.

Settings are read through a callable (the node passes its parameter getter) on every use, so a
runtime-tunable parameter changed with `ros2 param set` takes effect at once.
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from earl_ros.model.errors import (BusyError, CancelledError, EarlError, EmptyQueryError, FrameTooOldError,
                                   StaleDescriptionError)
from earl_ros.model.images import check_frame_shape
from earl_ros.model.priority import Preempted

from .errors import InvalidRequestError, QueryTooLongError
from .frames import Frame, FrameBuffer
from .health import PipelineHealth
from .query_queue import QueryQueue, Ticket
from .tracking_loop import LiveTracking

Settings = Callable[[str], Any]
Log = Callable[[str, str], None]  # (level: "info" | "warning" | "error", message)


def _no_log(level: str, message: str) -> None:
    pass


@dataclass
class PendingQuery:
    """A request admitted to the queue: the frame it is about and where its time went so far."""

    request: Any  # opaque to the session (the node's request message)
    response: Any  # opaque: filled by the node from the answer
    query: str
    frame: Frame
    t_start: float  # perf_counter at arrival
    timings: dict = field(default_factory=dict)
    future: Any = None  # the node's handle for waking the waiting service call
    progress: Any = None  # earl_ros.model.streaming.AnswerProgress: stages, text so far, cancel (the action)
    ticket: Any = None  # its place in the queue (a cancel takes it out while it waits)


@dataclass
class Answer:
    """What a worker computed for one request; the node turns it into the response message."""

    grounding: Any  # earl_ros.model.types.Grounding
    interaction: Any  # the description the answer used
    description_age: float  # seconds between that description and the frame (inf: none)
    rgb: Any  # the frame as RGB uint8


class RollingDescription:
    """The newest interaction description and the frame it describes.

    Replaced only by a description of a later frame (by arrival order): a slow on-demand describe
    for an old frame must not overwrite what the background worker wrote for a newer one.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.interaction = None
        self.header = None
        self._seq = 0

    def offer(self, inter, frame: Frame) -> bool:
        if inter.stamp is None:
            inter.stamp = frame.stamp
        with self._lock:
            if self._seq > frame.seq:
                return False
            self.interaction, self.header, self._seq = inter, frame.header, frame.seq
        return True

    def current(self):
        with self._lock:
            return self.interaction


class SessionStats:
    """Counters and timing windows behind /diagnostics (bounded: a long run keeps the newest)."""

    def __init__(self):
        self.coarse = {"passes": 0, "errors": 0, "skipped_frames": 0, "last_error": "", "preempted": 0}
        self.coarse_latency = deque(maxlen=200)
        self.coarse_lag = deque(maxlen=200)
        self.intake_ms = deque(maxlen=2000)
        self.transport_ms = deque(maxlen=2000)  # header stamp -> intake (same-clock sources)
        self.query_ms = deque(maxlen=200)
        self._query_counts: Counter = Counter()
        self._lock = threading.Lock()

    def count_query(self, code: str, elapsed_ms: float | None = None) -> None:
        with self._lock:
            self._query_counts[code] += 1
            if elapsed_ms is not None:
                self.query_ms.append(elapsed_ms)

    def queries(self) -> tuple[list, dict]:
        with self._lock:
            return list(self.query_ms), dict(self._query_counts)

    def coarse_failed(self, message: str) -> None:
        self.coarse["errors"] += 1
        self.coarse["last_error"] = message


class LiveSession:
    def __init__(self, pipeline, settings: Settings, now_ns: Callable[[], int] = time.time_ns, log: Log = _no_log,
                 on_refused: Callable[[PendingQuery, BusyError], None] | None = None,
                 on_description: Callable[[Any, Frame, float], None] | None = None):
        self.pipeline = pipeline
        self.setting, self.now_ns, self.log = settings, now_ns, log
        self.model_id = str(getattr(pipeline, "model_id", ""))
        self.descriptor_dim = int(getattr(pipeline, "descriptor_dim", 0))
        self.frames = FrameBuffer(settings("buffer_size"), settings("buffer_max_mb") << 20)
        self.description = RollingDescription()
        self.stats = SessionStats()
        self._on_refused = on_refused or (lambda pending, error: None)
        self._on_description = on_description or (lambda inter, frame, lag: None)
        self.queue = QueryQueue(settings("max_pending_queries"), self._refused)
        segmenter = getattr(pipeline, "segmenter", None)
        self.tracking = (LiveTracking(segmenter, self.frames, settings, log, getattr(pipeline, "video_memory", None),
                                      reask=self._answer_tracked_again) if segmenter is not None else None)
        self.apply_setting("coarse_yields_to_queries", settings("coarse_yields_to_queries"))

    # ================================================================ settings changed at runtime
    def check_setting(self, name: str, value) -> str | None:
        """Why the session cannot take `value` for `name` (None: it can): what the parameter's range
        alone cannot say, e.g. tracking by memory on a model without it."""
        return self.tracking.check_setting(name, value) if self.tracking is not None else None

    def apply_setting(self, name: str, value) -> None:
        if self.tracking is not None:
            self.tracking.apply_setting(name, value)
        if name == "coarse_yields_to_queries" and hasattr(self.pipeline, "priority"):
            self.pipeline.priority.enabled = bool(value)
        elif name == "buffer_size":
            self.frames.set_capacity(value)
        elif name == "buffer_max_mb":
            self.frames.set_max_bytes(value << 20)

    # ================================================================ intake
    def accept_frame(self, header, stamp_ns: int, encoding: str, decode: Callable[[], Any], t0: float) -> bool:
        """Buffer one camera frame; `decode()` yields the native array (raw) or the message (compressed).

        A frame that fails validation is counted as rejected with its code (never silently lost).
        """
        seq = self.frames.next_seq()
        try:
            data = decode()
            if encoding != "compressed":
                check_frame_shape(*data.shape[:2])
        except EarlError as e:
            self.frames.reject(stamp_ns, seq, e)
            self.log("warning", f"rejected frame: {e}")
            return False
        self.frames.put(Frame(header, stamp_ns, seq, encoding, data))
        self.stats.intake_ms.append((time.perf_counter() - t0) * 1e3)
        if encoding != "compressed":
            self.stats.transport_ms.append((time.time_ns() - stamp_ns) * 1e-6)
        return True

    def frame_age_s(self, frame: Frame) -> float:
        return (self.now_ns() - frame.stamp_ns) * 1e-9

    # ================================================================ background description
    def describe(self, frame: Frame):
        """One coarse pass on `frame`; None when it failed (counted and logged, never raised)."""
        try:
            return self.pipeline.describe(frame.rgb(), stamp=frame.stamp, background=True)
        except Preempted:  # a query needed the coarse model: describe again at the next period
            self.stats.coarse["preempted"] += 1
        except EarlError as e:
            self.stats.coarse_failed(str(e))
            if e.code in ("INVALID_IMAGE", "UNSUPPORTED_ENCODING"):
                self.frames.reject(frame.stamp_ns, frame.seq, e, already_received=True)
            self.log("warning", f"coarse pass failed: {e}")
        except Exception as e:  # noqa: BLE001 - the node never dies on input
            self.stats.coarse_failed(f"{type(e).__name__}: {e}")
            self.log("error", "coarse pass crashed:\n" + traceback.format_exc())
        return None

    def record_description(self, inter, frame: Frame) -> float | None:
        """Make `inter` the rolling description; its lag in seconds, or None if a newer one exists."""
        if not self.description.offer(inter, frame):
            return None
        lag = self.frame_age_s(frame)
        self.stats.coarse["passes"] += 1
        self.stats.coarse_latency.append(float(inter.latency_ms))
        self.stats.coarse_lag.append(lag)
        self._on_description(inter, frame, lag)
        return lag

    def next_coarse_frame(self, last_seq: int, timeout: float) -> Frame | None:
        """The newest frame after `last_seq` (counting the frames the worker never described)."""
        frame = self.frames.wait_newer(last_seq, timeout=timeout)
        if frame is not None and last_seq:
            self.stats.coarse["skipped_frames"] += max(0, frame.seq - last_seq - 1)
        return frame

    def run_coarse(self, stop: threading.Event) -> None:
        """The background worker: describe the newest frame every `coarse_period` s until `stop` is set."""
        last_seq, last_start = 0, 0.0
        while not stop.is_set():
            if not self.setting("coarse_enabled"):
                stop.wait(0.2)
                continue
            wait = last_start + self.setting("coarse_period") - time.monotonic()
            if wait > 0:
                stop.wait(min(wait, 0.5))
                continue
            frame = self.next_coarse_frame(last_seq, timeout=0.5)
            if frame is None or stop.is_set():
                continue
            last_seq, last_start = frame.seq, time.monotonic()
            inter = self.describe(frame)
            if inter is not None and not stop.is_set():
                self.record_description(inter, frame)

    # ================================================================ queries: admission
    def check_query(self, raw: str, sec: int, nanosec: int) -> tuple[str, int]:
        """(stripped query, stamp in ns; 0 = newest frame) or the request's error."""
        nbytes = len(raw.encode("utf-8", "surrogatepass"))
        limit = self.setting("max_query_bytes")
        if nbytes > limit:
            raise QueryTooLongError(f"query is {nbytes} bytes; the limit is {limit} (parameter max_query_bytes)")
        query = raw.strip()
        if not query:
            raise EmptyQueryError("query is empty")
        if nanosec >= 1_000_000_000 or sec < 0:
            raise InvalidRequestError(f"invalid stamp sec={sec} nanosec={nanosec}")
        return query, int(sec) * 1_000_000_000 + int(nanosec)

    def frame_for(self, stamp_ns: int) -> Frame:
        """The buffered frame a query names (0: the newest), within `stamp_tolerance`; a stamp past the
        newest buffered frame waits up to `stamp_wait` for it."""
        return self.frames.select(stamp_ns, int(self.setting("stamp_tolerance") * 1e9), self.setting("stamp_wait"))

    def check_frame_age(self, frame: Frame, stamp_ns: int) -> None:
        """A query about "now" must not silently get a stale frame: FrameTooOldError past `max_frame_age`."""
        max_age = self.setting("max_frame_age")
        arrived = time.monotonic() - frame.received_mono
        if stamp_ns == 0 and max_age > 0 and arrived > max_age:
            raise FrameTooOldError(
                f"the newest camera frame arrived {arrived:.2f} s ago (max_frame_age {max_age} s): the camera "
                "stalled or newer frames were lost in transport (see frames_rejected in /diagnostics)")

    def admit(self, request, response, query: str, frame: Frame, t_start: float, future=None,
              progress=None) -> PendingQuery:
        """Queue a checked query about `frame` (picked when it was asked); BusyError when the queue is full."""
        pending = PendingQuery(request, response, query, frame, t_start, {"frame_age": self.frame_age_s(frame) * 1e3},
                               future, progress)
        pending.ticket = self.queue.submit(pending, self.setting("query_timeout"))
        return pending

    def cancel(self, pending: PendingQuery) -> None:
        """Cancel a query: one still waiting leaves the queue at once (answered CANCELLED through the
        refusal path); a running one stops at its model's next token (pipeline.answer raises)."""
        if pending.progress is not None:
            pending.progress.cancel()
        if pending.ticket is not None:
            self.queue.cancel(pending.ticket, CancelledError("cancelled while queued"))

    def _refused(self, ticket: Ticket, error: BusyError) -> None:
        self._on_refused(ticket.payload, error)

    def outcome(self, error: Exception | None, t_start: float) -> tuple[str, str]:
        """(error code, message) of a finished request, counted once; ("OK", "") on success."""
        if error is None:
            code, message = "OK", ""
        elif isinstance(error, EarlError):
            code, message = error.code, error.message
        else:
            code, message = "INTERNAL", f"{type(error).__name__}: {error}"
        self.stats.count_query(code, (time.perf_counter() - t_start) * 1e3 if code == "OK" else None)
        if code != "OK":
            self.log("info", f"query failed: {code}: {message[:200]}")
        return code, message

    # ================================================================ queries: answering
    def interaction_for(self, frame: Frame, rgb, timings: dict, progress=None):
        """(description, its age in s) for a query about `frame`, applying `stale_policy`."""
        max_age = self.setting("max_description_age")
        cur = self.description.current()
        age = math.inf if cur is None or cur.stamp is None else abs(frame.stamp - cur.stamp)
        if cur is not None and (max_age <= 0 or age <= max_age):
            return cur, age
        policy = self.setting("stale_policy")
        what = "no description yet" if cur is None else f"the description is {age:.2f} s from the frame"
        if policy == "refuse":
            raise StaleDescriptionError(f"{what} (max_description_age {max_age} s, stale_policy refuse)")
        if policy == "use" and cur is not None:
            return cur, age
        if policy == "describe":
            if progress is not None:
                progress.stage("describing")
            t = time.perf_counter()
            inter = self.pipeline.describe(rgb, stamp=frame.stamp, progress=progress)
            timings["describe"] = (time.perf_counter() - t) * 1e3
            self.record_description(inter, frame)
            return inter, 0.0
        from earl_ros.model.types import Interaction

        return Interaction.empty(self.descriptor_dim), math.inf

    def _answer_tracked_again(self, rgb, question: str, stamp: float):
        """A tracked question answered again for its tracks (tracking_loop.py), with the rolling
        description as it is: background work, so no stale_policy and no description of its own."""
        from earl_ros.model.types import Interaction

        inter = self.description.current() or Interaction.empty(self.descriptor_dim)
        return self.pipeline.answer(rgb, question, interaction=inter, stamp=stamp)

    def answer(self, pending: PendingQuery) -> Answer:
        """Run the model on the pending query's frame; the grounding may still be unparseable."""
        frame, timings = pending.frame, pending.timings
        t = time.perf_counter()
        rgb = frame.rgb()
        timings["ros_convert"] = (time.perf_counter() - t) * 1e3
        inter, age = self.interaction_for(frame, rgb, timings, pending.progress)
        t = time.perf_counter()
        g = self.pipeline.answer(rgb, pending.query, interaction=inter, stamp=frame.stamp, progress=pending.progress)
        timings["model"] = (time.perf_counter() - t) * 1e3
        return Answer(g, inter, age, rgb)

    # ================================================================ health
    def _yielding(self) -> dict:
        """How often, and how long, the background description gave way to queries."""
        pr = getattr(self.pipeline, "priority", None)
        return {"pauses": pr.pauses if pr else 0, "paused_s": pr.paused_s if pr else 0.0}

    def health(self, device: str, mask_backend: str, threads: dict, publisher) -> PipelineHealth:
        """One snapshot for /diagnostics; `threads` says which workers are alive."""
        snap = self.frames.snapshot()
        latest, inter = snap["latest"], self.description.current()
        desc_age = (latest.stamp - inter.stamp) if (latest is not None and inter is not None
                                                    and inter.stamp is not None) else float("nan")
        qms, qcounts = self.stats.queries()
        st = self.stats
        return PipelineHealth(
            model_id=self.model_id, device=device, mask_backend=mask_backend,
            frames=snap, frame_age_s=self.frame_age_s(latest) if latest is not None else float("nan"),
            description_age_s=desc_age, queue=self.queue.stats(), query_counts=qcounts, query_ms=qms,
            coarse=dict(st.coarse) | self._yielding(), coarse_latency_ms=list(st.coarse_latency),
            coarse_lag_s=st.coarse_lag[-1] if st.coarse_lag else float("nan"),
            intake_ms=list(st.intake_ms), transport_ms=list(st.transport_ms),
            publish_ms=list(publisher.publish_ms), results_not_published=publisher.dropped,
            coarse_alive=threads["coarse"], coarse_enabled=self.setting("coarse_enabled"),
            workers_alive=threads["workers"], tracking=self._tracking_health())

    def _tracking_health(self) -> dict:
        tr = self.tracking
        if tr is None:
            return {}
        return {"running": tr.running(), "updates": tr.updates, "lost": tr.lost, "errors": tr.errors,
                "update_ms": list(tr.update_ms), "reasks": tr.reasks, "reask_errors": tr.reask_errors}
