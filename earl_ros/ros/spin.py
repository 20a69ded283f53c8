"""Spin a client node on a daemon thread, so a tool's main thread can block on its own work.

The tools (demo, load client) and the tests all need this; a context shutdown ends the spin.
"""
from __future__ import annotations

import threading


def spin_in_background(node, context=None):
    """(executor, thread): a SingleThreadedExecutor spinning `node` until its context shuts down."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context) if context is not None else SingleThreadedExecutor()
    executor.add_node(node)

    def spin():
        try:
            executor.spin()
        except Exception:  # noqa: BLE001 - ExternalShutdownException or a torn-down context: the spin ends
            pass

    thread = threading.Thread(target=spin, name="earl-spin", daemon=True)
    thread.start()
    return executor, thread
