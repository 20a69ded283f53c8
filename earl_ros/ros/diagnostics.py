"""The node's /diagnostics message: one DiagnosticStatus built from the session's health snapshot.

The keys and levels are defined ROS-free in earl_ros.live.health; this only wraps them in messages.
"""
from __future__ import annotations

from earl_ros.live.health import PipelineHealth, health_level, health_values


def diagnostic_array(h: PipelineHealth, name: str, stamp, lifecycle_state: str = "active"):
    """The DiagnosticArray message for one health snapshot of a configured node."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level, message = health_level(h)
    if lifecycle_state != "active":
        level, message = "OK", f"{lifecycle_state}: not serving (lifecycle)"
    values = {"lifecycle_state": lifecycle_state, **health_values(h)}
    st = DiagnosticStatus(level=getattr(DiagnosticStatus, level), name=name, message=message,
                          hardware_id=h.model_id,
                          values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    arr = DiagnosticArray(status=[st])
    arr.header.stamp = stamp
    return arr


def state_only_array(name: str, stamp, lifecycle_state: str, configure_error: str = ""):
    """The DiagnosticArray of a node without models (unconfigured): its state, and why configure
    failed if it did (ERROR then, so a monitor sees a node that will not come up)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level = DiagnosticStatus.ERROR if configure_error else DiagnosticStatus.OK
    message = f"configure failed: {configure_error}" if configure_error else f"{lifecycle_state}: no models loaded"
    values = [KeyValue(key="lifecycle_state", value=lifecycle_state)]
    if configure_error:
        values.append(KeyValue(key="configure_error", value=configure_error))
    arr = DiagnosticArray(status=[DiagnosticStatus(level=level, name=name, message=message, values=values)])
    arr.header.stamp = stamp
    return arr
