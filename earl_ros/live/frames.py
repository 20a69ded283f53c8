"""Frame intake state: the latest-frame slot, a ring buffer by stamp, and intake counters.

Thread-safe: the intake callback (executor thread) writes, the coarse worker and the query
workers read. Frames hold the validated native-layout array (a view on the message data) or the
compressed bytes; RGB conversion happens in the worker that needs it, keeping intake cheap.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from earl_ros.model.errors import EarlError, InvalidImageError, NoFrameError, StampNotBufferedError

from .pixels import decode_compressed, to_rgb


@dataclass
class Frame:
    header: object  # the source message's header (std_msgs/Header in the node), carried to every output
    stamp_ns: int
    seq: int  # intake order
    encoding: str  # raw encoding, or "compressed"
    data: object  # np.ndarray [H, W, C] (raw), or a compressed message (`.data` bytes, `.format`)
    received_mono: float = field(default_factory=time.monotonic)
    _rgb: np.ndarray | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def stamp(self) -> float:
        return self.stamp_ns * 1e-9

    @property
    def nbytes(self) -> int:
        """Bytes this frame keeps alive in the buffer (pixels, or the compressed payload)."""
        if isinstance(self.data, np.ndarray):
            return int(self.data.nbytes)
        return len(getattr(self.data, "data", b""))

    def rgb(self) -> np.ndarray:
        """RGB uint8 [H, W, 3], converted once and cached (raises InvalidImageError)."""
        with self._lock:
            if self._rgb is None:
                if self.encoding == "compressed":
                    self._rgb = decode_compressed(self.data.data, self.data.format)
                else:
                    self._rgb = to_rgb(self.data, self.encoding)
            return self._rgb


@dataclass
class Rejection:
    stamp_ns: int
    seq: int
    error: EarlError


class FrameBuffer:
    """Latest slot + ring buffer of the last `capacity` valid frames, ordered by stamp.

    The buffer is bounded twice: by frame count and by bytes (`max_bytes`), so a camera that
    switches to 4K does not multiply the node's memory; the oldest frames go first, the newest
    always stays.
    """

    # A stamp this far before the newest one means the source restarted (a looping bag, a new
    # camera session): the buffer is cleared instead of mixing two timelines.
    TIME_JUMP_NS = 5_000_000_000

    def __init__(self, capacity: int = 30, max_bytes: int = 512 << 20):
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._capacity = max(1, int(capacity))
        self._max_bytes = max(1, int(max_bytes))
        self._bytes = 0
        self._frames: list[Frame] = []  # sorted by stamp_ns
        self._latest: Frame | None = None
        self._rejected: Rejection | None = None
        self._seq = 0
        self.counters: Counter = Counter()
        self.rejections_by_code: Counter = Counter()
        self._arrivals: list[float] = []  # monotonic receive times (rate window)

    # ---------------------------------------------------------------- intake side
    def set_capacity(self, capacity: int) -> None:
        with self._lock:
            self._capacity = max(1, int(capacity))
            self._evict()

    def set_max_bytes(self, max_bytes: int) -> None:
        with self._lock:
            self._max_bytes = max(1, int(max_bytes))
            self._evict()

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def put(self, frame: Frame) -> None:
        with self._lock:
            self.counters["received"] += 1
            self._note_arrival(frame.received_mono)
            if self._latest is not None:
                if frame.stamp_ns < self._latest.stamp_ns - self.TIME_JUMP_NS:
                    self.counters["time_jumps"] += 1
                    self.counters["evicted"] += len(self._frames)
                    self._frames.clear()
                    self._bytes = 0
                elif frame.stamp_ns < self._latest.stamp_ns:
                    self.counters["out_of_order"] += 1
            i = bisect.bisect_left([f.stamp_ns for f in self._frames], frame.stamp_ns)
            if i < len(self._frames) and self._frames[i].stamp_ns == frame.stamp_ns:
                self.counters["duplicate_stamp"] += 1
                self._bytes -= self._frames[i].nbytes
                self._frames[i] = frame
            else:
                self._frames.insert(i, frame)
            self._bytes += frame.nbytes
            self._evict()
            if self._latest is None or frame.seq > self._latest.seq:
                self._latest = frame
            if self._rejected is not None and frame.seq > self._rejected.seq:
                self._rejected = None
            self._new.notify_all()

    def reject(self, stamp_ns: int, seq: int, error: EarlError, already_received: bool = False) -> None:
        """Record a frame that failed validation (or, already_received=True, failed decoding later)."""
        with self._lock:
            if not already_received:
                self.counters["received"] += 1
                self._note_arrival(time.monotonic())
            self.counters["rejected"] += 1
            self.rejections_by_code[error.code] += 1
            self._rejected = Rejection(stamp_ns, seq, error)
            self._new.notify_all()  # a query waiting for this stamp gets the rejection now

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _evict(self) -> None:
        """Drop the oldest frames beyond the count bound, then while over the byte bound."""
        n = max(0, len(self._frames) - self._capacity)
        freed = sum(f.nbytes for f in self._frames[:n])
        while n < len(self._frames) - 1 and self._bytes - freed > self._max_bytes:
            freed += self._frames[n].nbytes
            n += 1
        if n:
            del self._frames[:n]
            self._bytes -= freed
            self.counters["evicted"] += n

    def _note_arrival(self, t: float) -> None:
        self._arrivals.append(t)
        if len(self._arrivals) > 512:
            del self._arrivals[:256]

    # ---------------------------------------------------------------- reader side
    def latest(self) -> Frame | None:
        with self._lock:
            return self._latest

    def wait_newer(self, seq: int, timeout: float) -> Frame | None:
        """Block until a frame with seq > `seq` is in the latest slot (or timeout)."""
        with self._new:
            if self._latest is None or self._latest.seq <= seq:
                self._new.wait(timeout)
            f = self._latest
            return f if f is not None and f.seq > seq else None

    def wake_all(self) -> None:
        with self._new:
            self._new.notify_all()

    def select(self, stamp_ns: int = 0, tolerance_ns: int = 50_000_000, wait_s: float = 0.0) -> Frame:
        """The frame a query is about: latest (stamp 0) or the buffered frame nearest `stamp_ns`.

        A stamp newer than every buffered frame waits up to `wait_s` for its frame: a client
        subscribed to the same camera can see a frame before this buffer has it.
        Raises NoFrameError, StampNotBufferedError, or the intake error of the newest frame when
        that frame was rejected (a query about "now" must not silently use an older frame).
        """
        deadline = time.monotonic() + wait_s
        with self._new:
            waited = False
            while self._ahead_of_buffer(stamp_ns, tolerance_ns):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waited = True
                self._new.wait(left)
            if waited:
                self.counters["stamp_waits"] += 1
            return self._select_locked(stamp_ns, tolerance_ns)

    def _rejected_near(self, stamp_ns: int, tolerance_ns: int) -> Rejection | None:
        rej = self._rejected
        return rej if rej is not None and abs(rej.stamp_ns - stamp_ns) <= tolerance_ns else None

    def _ahead_of_buffer(self, stamp_ns: int, tolerance_ns: int) -> bool:
        """A stamp past every buffered frame whose frame was not rejected: it may still arrive."""
        return bool(stamp_ns and self._frames and stamp_ns - tolerance_ns > self._frames[-1].stamp_ns
                    and self._rejected_near(stamp_ns, tolerance_ns) is None)

    def _select_locked(self, stamp_ns: int, tolerance_ns: int) -> Frame:
        rej = self._rejected
        if stamp_ns == 0:
            if rej is not None and (self._latest is None or rej.seq > self._latest.seq):
                raise type(rej.error)(
                    f"the latest camera frame (stamp {rej.stamp_ns * 1e-9:.3f}) was rejected: "
                    f"{rej.error.message}"
                )
            if self._latest is None:
                raise NoFrameError("no camera frame received yet; is the camera topic remapped to 'image'?")
            return self._latest
        near = self._rejected_near(stamp_ns, tolerance_ns)
        if not self._frames:
            if near is not None:
                raise type(near.error)(f"the requested frame was rejected: {near.error.message}")
            raise NoFrameError("no camera frame received yet")
        stamps = [f.stamp_ns for f in self._frames]
        i = bisect.bisect_left(stamps, stamp_ns)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(stamps) and (best is None or abs(stamps[j] - stamp_ns) < abs(stamps[best] - stamp_ns)):
                best = j
        if best is not None and abs(stamps[best] - stamp_ns) <= tolerance_ns:
            return self._frames[best]
        if near is not None:
            raise type(near.error)(f"the requested frame was rejected: {near.error.message}")
        raise StampNotBufferedError(
            f"no buffered frame within {tolerance_ns * 1e-9:.3f} s of stamp {stamp_ns * 1e-9:.6f}; "
            f"the buffer holds {len(stamps)} frames from {stamps[0] * 1e-9:.6f} to {stamps[-1] * 1e-9:.6f}"
        )

    def snapshot(self) -> dict:
        """Counters and the input rate over the last 2 s (for /diagnostics)."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._arrivals if now - t <= 2.0]
            rate = 0.0
            if len(recent) >= 2:
                rate = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)
            return {
                "counters": dict(self.counters),
                "rejections": dict(self.rejections_by_code),
                "rate_hz": rate,
                "buffered": len(self._frames),
                "buffered_bytes": self._bytes,
                "latest": self._latest,
                "last_rejection": self._rejected,
            }


__all__ = ["Frame", "FrameBuffer", "Rejection", "InvalidImageError"]
