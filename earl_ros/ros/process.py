"""The `earl` process around the node: start, spin until a signal or the shutdown transition, and
leave nothing behind.

Kept apart from node.py because none of it is the node's behaviour: it is what one process owes
the machine (a one-line error and exit code 2 for a bad configuration, a prompt exit on SIGTERM,
its DDS shared memory freed).
"""
from __future__ import annotations

import gc
import os
import sys
import traceback

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

from earl_ros.model.errors import EarlError, debug_tracebacks


class StartupError(RuntimeError):
    """A configuration problem found at startup; the process prints it as one line and exits 2."""


class _StartupFailed(Exception):
    pass


def run_node_process(node_class, argv=None) -> int:
    """Run one `node_class` (a lifecycle node with `start`, `stop` and a `finished` future) until
    SIGINT/SIGTERM or its shutdown transition, then exit the process (os._exit) with 0, or 2 when
    it could not start."""
    args = sys.argv if argv is None else argv
    _quiet_model_loading()
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = _started(node_class)
        _spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, _StartupFailed) as e:
        code = 2 if isinstance(e, _StartupFailed) else 0
    finally:
        _tear_down(node)
        node = None
        rclpy.try_shutdown()
        # A lifecycle node's handles sit in reference cycles: until they are collected its DDS
        # participant stays alive, and os._exit below would leave its /dev/shm segments behind.
        gc.collect()
    # Everything is stopped and destroyed; skip the interpreter's slow teardown of torch and
    # transformers objects (seconds on a busy machine) so SIGTERM exits promptly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _started(node_class):
    try:
        node = node_class()
        if node._p("autostart"):
            node.start()
        return node
    except (StartupError, EarlError, ParameterException, ValueError, OSError) as e:
        if debug_tracebacks():
            traceback.print_exc()
        print(f"earl: error: {e}", file=sys.stderr, flush=True)
        raise _StartupFailed from e


def _quiet_model_loading() -> None:
    """Weight-loading progress bars would fill the node's log (a launch file's screen) at every start."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    hf_logging.disable_progress_bar()


def _tear_down(node) -> None:
    if node is None:
        return
    node.stop()
    try:
        node.destroy_node()
    except Exception:  # noqa: BLE001 - a context already torn down by the signal: nothing left to free
        pass


def _spin(node) -> None:
    """Until SIGINT/SIGTERM or the lifecycle shutdown transition."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin_until_future_complete(node.finished)
    except _rclpy.RCLError:
        # SIGINT/SIGTERM shut the context down; when that races with the executor building its
        # wait set, rclpy raises RCLError instead of ExternalShutdownException: the same clean stop.
        if node.context.ok():
            raise
    finally:
        executor.shutdown(timeout_sec=1.0)
