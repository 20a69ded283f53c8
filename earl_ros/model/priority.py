"""Queries ahead of the background description: the coarse pass pauses while a query runs.

On a 2-core robot computer a description generated beside a query takes half the cores from it, and
the person waits for the answer, not for the description. So while any query is in its model stages,
a background pass stops before its next transformer block (a forward pre-hook on every vision and
language block, `pausable_blocks`) and goes on from the same block when the last query is done: same
text, same descriptor, only later. Pausing between tokens only was not enough: the image encoding,
the prefill and the descriptor's pooling forward are single forwards that a query arriving during
them had to wait out (bench/query_priority.py). A paused pass still holds the coarse model; a query
that needs that model (no description yet, `stale_policy: describe`, or both stages on one shared
base) marks itself as waiting, and the paused pass then gives the model up by raising `Preempted`
(the caller counts it and describes again later).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import torch


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
        """Block a background pass from starting while a query runs (it would only pause at its first block)."""
        with self._cond:
            while self.busy() and not (stop is not None and stop.is_set()):
                self._cond.wait(poll_s)

    def background_step(self) -> None:
        """Called before each block of a background pass: pause while queries run."""
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


@contextmanager
def pausable_blocks(model: torch.nn.Module, step):
    """Call `step()` before every transformer block of `model` run by this thread, while inside.

    Blocks are the members of the model's `layers` / `blocks` module lists (the language model's
    decoder layers and the vision tower's blocks in Qwen2.5-VL). Only the thread that entered calls
    `step`: a query on another thread that runs the same modules is never held by it."""
    owner = threading.get_ident()

    def before_block(module, args):
        if threading.get_ident() == owner:
            step()

    handles = [block.register_forward_pre_hook(before_block) for block in _blocks(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [block for name, mod in model.named_modules() if isinstance(mod, torch.nn.ModuleList)
            and name.rsplit(".", 1)[-1] in ("layers", "blocks") for block in mod]
