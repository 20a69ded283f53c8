"""Queries ahead of the background description: the coarse pass pauses between tokens while a query runs.

On a 2-core robot computer a description generated beside a query takes half the cores from it, and
the person waits for the answer, not for the description. So while any query is in its model stages,
a background pass stops at its next generation step (a transformers StoppingCriteria that blocks
instead of stopping) and goes on from the same token when the last query is done: same text, same
descriptor, only later. A paused pass still holds the coarse model; a query that needs that model
(no description yet, `stale_policy: describe`, or both stages on one shared base) marks itself as
waiting, and the paused pass then gives the model up by raising `Preempted` (the caller counts it
and describes again later).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import torch
from transformers import StoppingCriteria


class Preempted(Exception):
    """A background pass gave its model up to a query that needed it."""


class QueryPriority:
    """Who runs first when queries and the background description share the CPU."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._cond = threading.Condition()
        self._queries = 0  # queries in their model stages
        self._waiting = 0  # queries waiting for a model a paused background pass holds
        self.pauses = 0  # background passes that paused at least once
        self.paused_s = 0.0  # time background passes spent paused
        self.preempted = 0

    @contextmanager
    def query(self):
        """A query's model stages: background passes pause until every such block has ended."""
        with self._cond:
            self._queries += 1
        try:
            yield
        finally:
            with self._cond:
                self._queries -= 1
                self._cond.notify_all()

    @contextmanager
    def waiting_for_model(self):
        """A query blocked on a model lock: a background pass paused on that model gives it up."""
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1

    def busy(self) -> bool:
        return self.enabled and self._queries > 0

    def wait_idle(self, stop: threading.Event | None = None, poll_s: float = 0.05) -> None:
        """Block a background pass from starting while a query runs (its prefill cannot pause)."""
        with self._cond:
            while self.busy() and not (stop is not None and stop.is_set()):
                self._cond.wait(poll_s)

    def background_step(self) -> None:
        """Called between generation steps of a background pass: pause while queries run."""
        if not self.busy():
            return
        t0 = time.perf_counter()
        with self._cond:
            self.pauses += 1
            try:
                while self.busy():
                    if self._waiting:
                        self.preempted += 1
                        raise Preempted("the background description gave way to a query that needed its model")
                    self._cond.wait(0.05)
            finally:
                self.paused_s += time.perf_counter() - t0

    def stopping_criteria(self) -> "YieldToQueries":
        return YieldToQueries(self)


class YieldToQueries(StoppingCriteria):
    """A stopping criterion that never stops a sequence: it only holds generation while queries run."""

    def __init__(self, priority: QueryPriority):
        self.priority = priority

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.priority.background_step()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
