"""What the `earl` node publishes and the one service it serves itself, created at configure and
removed at cleanup (lifecycle): `interaction`, `tracks`, `tracks/mask`, `answer` / `mask` /
`overlay` (through the ResultPublisher thread) and `track/stop`. Relative names: the namespace
comes from the launcher. Every message carries its source frame's header.
"""
from __future__ import annotations

import traceback

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from earl_ros.live.frames import Frame

from .result_publisher import ResultPublisher
from .tracks import label_map_image, tracks_message

# label maps and overlays: a late subscriber needs no old ones, a slow one should not lose the newest
OUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                     durability=DurabilityPolicy.VOLATILE)


class NodeOutputs:
    def __init__(self, node, session):
        """`node`: the EarlNode that owns the entities (its safe `publish`, logger, parameters, stop)."""
        from earl_interfaces.msg import InteractionDescription, QueryResult, Tracks
        from earl_interfaces.srv import StopTracks
        from sensor_msgs.msg import Image

        self.node, self.session, self.log = node, session, node.get_logger()
        self.interaction = node.create_publisher(InteractionDescription, "interaction", 10)
        self.tracks = node.create_publisher(Tracks, "tracks", 10)
        self.tracks_mask = node.create_publisher(Image, "tracks/mask", OUT_QOS)
        self.stop_tracks = node.create_service(StopTracks, "track/stop", self._on_stop_tracks)
        answer = {"answer": node.create_publisher(QueryResult, "answer", 10),
                  "mask": node.create_publisher(Image, "mask", OUT_QOS),
                  "overlay": node.create_publisher(Image, "overlay", OUT_QOS)}
        self._publishers = [self.interaction, self.tracks, self.tracks_mask, *answer.values()]
        self.results = ResultPublisher(node.publish_safely, answer, node.get_parameter_value, self.log, node.stop_event)

    def destroy(self) -> None:
        for pub in self._publishers:
            self.node.destroy_publisher(pub)
        self.node.destroy_service(self.stop_tracks)
        self._publishers = []

    def description(self, inter, frame: Frame, lag: float) -> None:
        """The session's new rolling description on `interaction`, with its frame's header."""
        from earl_interfaces.msg import InteractionDescription

        msg = InteractionDescription(
            header=frame.header, description=inter.text,
            descriptor_dim=int(np.asarray(inter.descriptor).size), model_id=self.session.model_id,
            latency_ms=float(inter.latency_ms), lag_s=float(lag))
        try:
            self.node.publish_safely(self.interaction, msg)
        except Exception:  # noqa: BLE001 - a failed publish must not stop the worker
            self.log.error("publishing a description failed:\n" + traceback.format_exc(), throttle_duration_sec=5.0)

    def track_update(self, update, frame: Frame) -> None:
        self.node.publish_safely(self.tracks, tracks_message(update, frame.header))
        self.node.publish_safely(self.tracks_mask, label_map_image(update.label_map, frame.header))

    def _on_stop_tracks(self, request, response):
        tracking = self.session.tracking
        response.stopped = tracking.stop([int(i) for i in request.ids]) if tracking is not None else []
        return response
