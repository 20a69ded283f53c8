"""The query queue: every request admitted is answered exactly once, strictly in arrival order.

The ROS node takes each service request off DDS at once and hands it here. A request either
waits in this bounded FIFO (served by the query workers in arrival order) or is refused at once
with BUSY when `max_waiting` requests already wait; a waiting request that outlives its deadline
is refused with BUSY too. Each ticket is finished exactly once, whichever of the worker, the
expiry or the shutdown gets to it first, so `accepted == answered + in_flight` holds at every
moment. ROS-free: the payload is whatever the caller attaches.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from earl_ros.model.errors import BusyError, EarlError

WAIT_WINDOW = 500  # recent wait times kept for percentiles


@dataclass(eq=False)
class Ticket:
    """One admitted request. `payload` belongs to the caller; `finish` runs once, on any path."""

    seq: int
    payload: Any
    deadline: float  # time.monotonic() after which a still-waiting ticket is refused BUSY
    accepted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    _finished: bool = False

    @property
    def waited_s(self) -> float:
        end = self.started_at if self.started_at is not None else time.monotonic()
        return end - self.accepted_at


class QueryQueue:
    """Bounded FIFO of tickets with counters for /diagnostics.

    on_finish(ticket, error): called exactly once per ticket, outside the lock; `error` is None
    when a worker ran it (the worker reports its own outcome), else the error that ended it
    (BusyError: full, expired, shutting down; CancelledError: its caller cancelled it).
    """

    def __init__(self, max_waiting: int, on_finish: Callable[[Ticket, EarlError | None], None]):
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {max_waiting}")
        self.max_waiting = int(max_waiting)
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiting: deque[Ticket] = deque()
        self._seq = 0
        self._closed = False
        self.accepted = 0
        self.rejected_busy = 0
        self.expired = 0
        self.cancelled = 0
        self.answered = 0
        self.running = 0
        self._waits: deque[float] = deque(maxlen=WAIT_WINDOW)

    # ------------------------------------------------------------------ producer side
    def submit(self, payload: Any, timeout_s: float) -> Ticket:
        """Admit a request or raise BusyError (queue full or closed); never blocks."""
        with self._lock:
            if self._closed:
                self.rejected_busy += 1
                raise BusyError("the node is shutting down")
            if len(self._waiting) >= self.max_waiting:
                self.rejected_busy += 1
                raise BusyError(
                    f"{len(self._waiting)} queries are already waiting (max_pending_queries "
                    f"{self.max_waiting}) and {self.running} running; retry later")
            self._seq += 1
            ticket = Ticket(self._seq, payload, deadline=time.monotonic() + float(timeout_s))
            self._waiting.append(ticket)
            self.accepted += 1
            self._ready.notify()
            return ticket

    # ------------------------------------------------------------------ worker side
    def take(self, timeout_s: float) -> Ticket | None:
        """The oldest waiting ticket (marked running), or None after `timeout_s` or on close."""
        expired = []
        with self._ready:
            end = time.monotonic() + timeout_s
            while True:
                expired += self._pop_overdue(time.monotonic())
                if self._waiting or self._closed:
                    break
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            ticket = None
            if self._waiting and not self._closed:
                ticket = self._waiting.popleft()
                ticket.started_at = time.monotonic()
                self.running += 1
                self._waits.append(ticket.waited_s)
        self._finish_expired(expired)
        return ticket

    def done(self, ticket: Ticket) -> None:
        """A worker finished `ticket` (it has answered the request itself)."""
        with self._lock:
            if ticket._finished:
                return
            ticket._finished = True
            self.running -= 1
            self.answered += 1

    def cancel(self, ticket: Ticket, error: EarlError) -> bool:
        """Take a still-waiting ticket out and finish it with `error`; False when a worker already
        has it (the worker answers it) or it is finished."""
        with self._lock:
            if ticket._finished or ticket.started_at is not None or ticket not in self._waiting:
                return False
            self._waiting.remove(ticket)
            ticket._finished = True
            self.cancelled += 1
            self.answered += 1
        self._on_finish(ticket, error)
        return True

    # ------------------------------------------------------------------ housekeeping
    def expire_overdue(self) -> int:
        """Refuse (BUSY) every waiting ticket past its deadline; returns how many."""
        with self._lock:
            expired = self._pop_overdue(time.monotonic())
        self._finish_expired(expired)
        return len(expired)

    def close(self) -> None:
        """Refuse everything still waiting and every later submit; wake idle workers."""
        with self._ready:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            for t in left:
                t._finished = True
                self.answered += 1
            self._ready.notify_all()
        for t in left:
            self._on_finish(t, BusyError("the node is shutting down"))

    def _pop_overdue(self, now: float) -> list[Ticket]:
        keep, gone = deque(), []
        for t in self._waiting:
            (gone if now >= t.deadline else keep).append(t)
        if gone:
            self._waiting = keep
            for t in gone:
                t._finished = True
                self.expired += 1
                self.answered += 1
        return gone

    def _finish_expired(self, tickets: list[Ticket]) -> None:
        for t in tickets:
            self._on_finish(t, BusyError(
                f"waited {t.waited_s:.1f} s without a free query worker (query_timeout); retry later"))

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict:
        """Counters and wait-time percentiles (seconds); accepted == answered + in_flight."""
        with self._lock:
            waits = sorted(self._waits)
            waiting = len(self._waiting)
            out = {"accepted": self.accepted, "rejected_busy": self.rejected_busy, "expired": self.expired,
                   "cancelled": self.cancelled, "answered": self.answered, "waiting": waiting,
                   "running": self.running, "in_flight": waiting + self.running}

        def pct(q):
            return waits[min(len(waits) - 1, int(q * len(waits)))] if waits else float("nan")

        out.update(wait_s_p50=pct(0.5), wait_s_p95=pct(0.95), wait_s_max=waits[-1] if waits else float("nan"))
        return out
