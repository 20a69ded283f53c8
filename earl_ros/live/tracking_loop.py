"""The live session's tracking: start tracks from a tracked answer, follow them on the newest frames.

Kept apart from the session's query and description logic: it only shares the frame buffer and the
segmenter. It never touches frame intake (it reads the newest buffered frame, skipping any it was too
slow for), and runs at most `tracking_rate` updates a second.

Every `track_reask_period` seconds a tracked question is answered again, on its own thread so that
updates go on meanwhile, and the next update first puts the question's tracks right from that answer
(EntityTracker.reground): the embedded model's first answer names the wrong entity often enough that
following it for ever loses to asking again on every frame (bench/tracking.py).
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
_TRACKER_SETTINGS = {"max_tracks": "max_tracks", "tracking_method": "method", "tracking_segment_every": "segment_every",
                     "track_reask_min_score": "reground_min_score"}


class LiveTracking:
    def __init__(self, segmenter, frames: FrameBuffer, settings: Callable[[str], object],
                 log: Callable[[str, str], None], video=None, reask: Callable | None = None):
        """reask(rgb, question, stamp) -> Grounding: answers a tracked question again (None: never)."""
        self.frames, self.setting, self.log, self._reask = frames, settings, log, reask
        self.tracker = EntityTracker(segmenter, TrackerSettings(
            **{field: settings(name) for name, field in _TRACKER_SETTINGS.items()}), video=video)
        self.updates = 0
        self.lost = 0
        self.errors = 0
        self.update_ms: deque = deque(maxlen=200)
        self.reasks = 0  # tracked questions answered again
        self.reask_errors = 0
        self._lock = threading.Lock()
        self._questions: dict[str, set[int]] = {}  # tracked question -> its track ids
        self._answers: list = []  # (grounding, rgb it was computed on, question) for the next update

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

    def start(self, grounding, rgb, question: str | None = None) -> list[int]:
        """Track ids started for a tracked answer (`track_mode` says replace or add). `question` is
        asked again every `track_reask_period` s until its tracks are stopped or replaced: a track
        lost meanwhile (the hand left the frame) comes back, with a new id, when an answer names its
        entity again. At most `max_tracks` questions are kept, the oldest dropped first."""
        replace = self.setting("track_mode") == "replace"
        ids = [t.id for t in self.tracker.start(grounding, rgb, replace=replace)]
        with self._lock:
            if replace:
                self._questions = {}
            if question and ids:
                self._questions[question] = self._questions.pop(question, set()) | set(ids)
                while len(self._questions) > self.setting("max_tracks"):
                    self._questions.pop(next(iter(self._questions)))
        return ids

    def stop(self, ids: list[int]) -> list[int]:
        """End tracks by id (none: all); a question whose last tracks are stopped is not asked again."""
        ended = set(self.tracker.stop(ids))
        live = {t.id for t in self.tracker.tracks()}
        with self._lock:
            self._questions = {q: q_ids & live for q, q_ids in self._questions.items()
                               if ids and not (q_ids & ended and not q_ids & live)}
        return sorted(ended)

    def running(self) -> int:
        return len(self.tracker.tracks())

    def run(self, stop: threading.Event, on_update: Callable[[TrackUpdate, Frame], None]) -> None:
        """The tracking worker: while tracks run, update them on the newest frame, rate-limited. Its
        re-ask thread ends with it (a deactivated node runs no model work in the background)."""
        reasker = threading.Thread(target=self._reask_loop, args=(stop,), name="earl-track-reask", daemon=True)
        if self._reask is not None:
            reasker.start()
        try:
            self._follow(stop, on_update)
        finally:
            if reasker.is_alive():
                reasker.join(10.0)

    def _follow(self, stop: threading.Event, on_update: Callable[[TrackUpdate, Frame], None]) -> None:
        last_seq, due = 0, 0.0
        while not stop.is_set():
            if not self.tracker.tracks() and not self._answers:
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
            self._reground()
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

    # ------------------------------------------------------------------ asking again
    def _live_questions(self) -> list[str]:
        with self._lock:
            return list(self._questions)

    def _reask_loop(self, stop: threading.Event) -> None:
        """Answer the live tracked questions again in turn, one every `track_reask_period` s."""
        turn, due = 0, time.monotonic()
        while not stop.is_set():
            period, questions = self.setting("track_reask_period"), self._live_questions()
            frame = self.frames.latest()
            if period <= 0 or not questions or frame is None or time.monotonic() < due:
                due = time.monotonic() + period if not questions else due
                stop.wait(0.05)
                continue
            due = time.monotonic() + period
            question, turn = questions[turn % len(questions)], turn + 1
            self._answer_again(frame, question)

    def _answer_again(self, frame: Frame, question: str) -> None:
        try:
            rgb = frame.rgb()
            g = self._reask(rgb, question, frame.stamp)
        except Exception:  # noqa: BLE001 - a failed re-ask leaves the tracks as they are
            self.reask_errors += 1
            self.log("warning", "asking a tracked question again failed:\n" + traceback.format_exc(limit=2))
            return
        self.reasks += 1
        with self._lock:
            self._answers.append((g, rgb, question))

    def _reground(self) -> None:
        """Apply the answers asked again since the last update (on the tracking thread: see reground)."""
        with self._lock:
            answers, self._answers = self._answers, []
        for g, rgb, question in answers:
            live = {t.id for t in self.tracker.tracks()}
            with self._lock:
                if question not in self._questions:
                    continue  # its tracks were stopped or replaced while it was being answered
                ids = self._questions[question] & live
            named = {t.id for t in self.tracker.reground(g, rgb, ids)}
            live = {t.id for t in self.tracker.tracks()}
            with self._lock:
                if question in self._questions:
                    self._questions[question] = (ids | named) & live
