"""Resend a service response that Fast DDS refused because the client was not fully matched yet.

rmw_fastrtps waits only 100 ms for the server to discover a new client's response reader and then
drops the response; rclpy turns that into a RuntimeWarning, so the client waits for its timeout
(ros2/rmw_fastrtps#390, #467). Clients that start together on a loaded machine hit this. rclpy has no
hook for it, so the service's `send_response` is wrapped: resend until the reader is matched, for a
bounded time, and count every resend and every response still lost.
"""
from __future__ import annotations

import threading
import time
import warnings
from typing import Callable

TIMEOUT_WARNING = "failed to send response (timeout)"


def install(service, on_event: Callable[[str, int], None], give_up_after: float = 5.0,
            retry_pause: float = 0.02) -> None:
    """Wrap `service.send_response` (the method rclpy's executors call) with bounded resends.

    on_event("resent", attempts) after a response went out on a later attempt;
    on_event("lost", attempts) when it still could not be sent after `give_up_after` seconds.
    """
    original = service.send_response
    # warnings.catch_warnings swaps process-global state: one send at a time (each takes microseconds
    # unless the middleware is waiting for a match).
    lock = threading.Lock()

    def send_response(response, header) -> None:
        deadline = time.monotonic() + give_up_after
        attempts = 0
        while True:
            attempts += 1
            with lock, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                original(response, header)
            refused = False
            for w in caught:
                if TIMEOUT_WARNING in str(w.message):
                    refused = True
                else:  # not ours: hand it back to the normal warning machinery
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if not refused:
                if attempts > 1:
                    on_event("resent", attempts)
                return
            if time.monotonic() >= deadline:
                on_event("lost", attempts)
                return
            time.sleep(retry_pause)

    service.send_response = send_response
