"""The live session's tracking: start tracks from a tracked answer, follow them on the newest frames.

Kept apart from the session's query and description logic: it only shares the frame buffer and the
segmenter. It never touches frame intake (it reads the newest buffered frame, skipping any it was too
slow for), and runs at most `tracking_rate` updates a second.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from typing import Callable

from .frames import Frame, FrameBuffer
from .tracking import EntityTracker, TrackerSettings, TrackUpdate

# settings of the tracker that follow the node's parameters at run time
_TRACKER_SETTINGS = {"max_tracks": "max_tracks", "tracking_method": "method", "tracking_segment_every": "segment_every"}


class LiveTracking:
    def __init__(self, segmenter, frames: FrameBuffer, settings: Callable[[str], object],
                 log: Callable[[str, str], None], video=None):
        self.frames, self.setting, self.log = frames, settings, log
        self.tracker = EntityTracker(segmenter, TrackerSettings(
            **{field: settings(name) for name, field in _TRACKER_SETTINGS.items()}), video=video)
        self.updates = 0
        self.lost = 0
        self.errors = 0
        self.update_ms: deque = deque(maxlen=200)

    def check_setting(self, name: str, value) -> str | None:
        if name == "tracking_method":
            try:
                self.tracker.check_method(value)
            except ValueError as e:
                return str(e)
        return None

    def apply_setting(self, name: str, value) -> None:
        if name in _TRACKER_SETTINGS:
            setattr(self.tracker.settings, _TRACKER_SETTINGS[name], value)

    def start(self, grounding, rgb) -> list[int]:
        """Track ids started for a tracked answer (`track_mode` says replace or add)."""
        started = self.tracker.start(grounding, rgb, replace=self.setting("track_mode") == "replace")
        return [t.id for t in started]

    def stop(self, ids: list[int]) -> list[int]:
        return self.tracker.stop(ids)

    def running(self) -> int:
        return len(self.tracker.tracks())

    def run(self, stop: threading.Event, on_update: Callable[[TrackUpdate, Frame], None]) -> None:
        """The tracking worker: while tracks run, update them on the newest frame, rate-limited."""
        last_seq, due = 0, 0.0
        while not stop.is_set():
            if not self.tracker.tracks():
                stop.wait(0.05)
                continue
            wait = due - time.monotonic()
            if wait > 0:
                stop.wait(min(wait, 0.2))
                continue
            frame = self.frames.wait_newer(last_seq, timeout=0.2)
            if frame is None or stop.is_set():
                continue
            # the next update is due one period after this one was (not after the frame came): waiting
            # for a frame does not slow the rate below tracking_rate; a late worker does not burst
            period, now = 1.0 / self.setting("tracking_rate"), time.monotonic()
            last_seq, due = frame.seq, (due + period if now - due < period else now + period)
            up = self._update(frame)
            if up is not None:
                on_update(up, frame)

    def _update(self, frame: Frame) -> TrackUpdate | None:
        t = time.perf_counter()
        try:
            up = self.tracker.update(frame.rgb(), key=frame.stamp)
        except Exception:  # noqa: BLE001 - one bad frame must not end tracking
            self.errors += 1
            self.log("error", "track update failed:\n" + traceback.format_exc())
            return None
        if up is not None:
            self.update_ms.append((time.perf_counter() - t) * 1e3)
            self.updates += 1
            self.lost += sum(tr.state == "lost" for tr in up.tracks)
        return up
