"""The node's /diagnostics message: one DiagnosticStatus built from the session's health snapshot.

The keys and levels are defined ROS-free in earl_ros.live.health; this only wraps them in messages.
"""
from __future__ import annotations

from earl_ros.live.health import PipelineHealth, health_level, health_values


def diagnostic_array(h: PipelineHealth, name: str, stamp):
    """The DiagnosticArray message for one health snapshot."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level, message = health_level(h)
    st = DiagnosticStatus(level=getattr(DiagnosticStatus, level), name=name, message=message,
                          hardware_id=h.model_id,
                          values=[KeyValue(key=k, value=str(v)) for k, v in health_values(h).items()])
    arr = DiagnosticArray(status=[st])
    arr.header.stamp = stamp
    return arr
