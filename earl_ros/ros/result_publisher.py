"""Publishes answered queries on `answer`, `mask` and `overlay` from its own thread.

Drawing the overlay takes milliseconds per frame; doing it here keeps it out of the service's
latency. The queue holds the last few results: when the thread falls behind, the oldest result is
not published and counted (`results_not_published` in /diagnostics), never silently lost.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from typing import Callable

from earl_ros.model.overlay import draw_overlay

from .conversions import array_to_image


class ResultPublisher:
    def __init__(self, publish: Callable, pubs: dict, enabled: Callable[[str], bool], logger,
                 stop: threading.Event, depth: int = 4):
        """publish(pub, msg) sends one message; pubs has "answer", "mask", "overlay"; enabled(name)
        reads the publish_mask / publish_overlay parameters at the time of publishing."""
        self._publish, self._pubs, self._enabled, self._log, self._stop = publish, pubs, enabled, logger, stop
        self._queue: deque = deque(maxlen=depth)
        self._cv = threading.Condition()
        self.dropped = 0
        self.publish_ms: deque = deque(maxlen=200)
        self.thread = threading.Thread(target=self._loop, name="earl-publish", daemon=True)

    def enqueue(self, res, mask_msg, rgb, grounding, header) -> None:
        with self._cv:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1  # the oldest result is not published (counted in /diagnostics)
            self._queue.append((res, mask_msg, rgb, grounding, header))
            self._cv.notify()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _next(self):
        with self._cv:
            while not self._queue and not self._stop.is_set():
                self._cv.wait(0.5)
            return None if self._stop.is_set() else self._queue.popleft()

    def _loop(self) -> None:
        while (item := self._next()) is not None:
            res, mask_msg, rgb, g, header = item
            try:
                t = time.perf_counter()
                self._publish(self._pubs["answer"], res)
                if self._enabled("publish_mask"):
                    self._publish(self._pubs["mask"], mask_msg)
                if self._enabled("publish_overlay"):
                    self._publish(self._pubs["overlay"], array_to_image(draw_overlay(rgb, g), "rgb8", header))
                self.publish_ms.append((time.perf_counter() - t) * 1e3)
            except Exception:  # noqa: BLE001 - never let visualisation kill the node
                if self._stop.is_set():
                    return
                self._log.error("publishing a result failed:\n" + traceback.format_exc(), throttle_duration_sec=5.0)
