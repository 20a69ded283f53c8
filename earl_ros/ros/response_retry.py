"""Resend a service response that Fast DDS refused because the client was not fully matched yet.

rmw_fastrtps waits only 100 ms for the server to discover a new client's response reader and then
drops the response; rclpy turns that into a RuntimeWarning, so the client waits for its timeout
(ros2/rmw_fastrtps#390, #467). Clients that start together on a loaded machine hit this. rclpy has no
hook for it, so the service's `send_response` is wrapped: the first attempt runs inline; a refused
response is handed to a resender thread that retries it for a bounded time, so a client that
vanished never holds up the executor that takes the next requests. Every resend and every response
still lost is counted.
"""
from __future__ import annotations

import threading
import time
import warnings
from typing import Callable

TIMEOUT_WARNING = "failed to send response (timeout)"


class Resender:
    """The wrapped service's retry state; `wait_idle` lets tests and shutdown wait for it."""

    def __init__(self, send: Callable, on_event: Callable[[str, int], None], give_up_after: float,
                 retry_pause: float):
        self._send, self._on_event = send, on_event
        self.give_up_after, self.retry_pause = give_up_after, retry_pause
        # warnings.catch_warnings swaps process-global state: one send at a time (each takes
        # microseconds unless the middleware is waiting for a match).
        self._send_lock = threading.Lock()
        self._cv = threading.Condition()
        self._retries: list[list] = []  # [response, header, deadline, attempts]
        self._thread: threading.Thread | None = None

    def send_response(self, response, header) -> None:
        if self._attempt(response, header):
            return
        with self._cv:
            self._retries.append([response, header, time.monotonic() + self.give_up_after, 1])
            if self._thread is None:
                self._thread = threading.Thread(target=self._retry_loop, name="earl-resend", daemon=True)
                self._thread.start()
            self._cv.notify()

    def wait_idle(self, timeout: float) -> bool:
        """True once every refused response has gone out or been given up."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._retries or self._thread is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def _attempt(self, response, header) -> bool:
        """One send; False when the middleware refused it (client not matched)."""
        with self._send_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._send(response, header)
        refused = False
        for w in caught:
            if TIMEOUT_WARNING in str(w.message):
                refused = True
            else:  # not ours: hand it back to the normal warning machinery
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return not refused

    def _retry_loop(self) -> None:
        while True:
            with self._cv:
                if not self._retries:
                    self._thread = None
                    self._cv.notify_all()
                    return
                item = self._retries.pop(0)
            response, header, deadline, attempts = item
            attempts += 1
            if self._attempt(response, header):
                self._on_event("resent", attempts)
            elif time.monotonic() >= deadline:
                self._on_event("lost", attempts)
            else:
                item[3] = attempts
                time.sleep(self.retry_pause)
                with self._cv:
                    self._retries.append(item)
            with self._cv:
                self._cv.notify_all()


def install(service, on_event: Callable[[str, int], None], give_up_after: float = 5.0,
            retry_pause: float = 0.02) -> Resender:
    """Wrap `service.send_response` (the method rclpy's executors call) with bounded resends.

    on_event("resent", attempts) after a response went out on a later attempt;
    on_event("lost", attempts) when it still could not be sent after `give_up_after` seconds.
    """
    resender = Resender(service.send_response, on_event, give_up_after, retry_pause)
    service.send_response = resender.send_response
    return resender
