"""A tracker update -> the `tracks` message and the `tracks/mask` label map (source header kept)."""
from __future__ import annotations

import numpy as np

from .results import box_rois


def label_map_image(labels: np.ndarray, header):
    """uint16 [H, W] track-id map -> sensor_msgs/Image mono16 (little-endian, as is_bigendian 0 says)."""
    from sensor_msgs.msg import Image

    h, w = labels.shape
    msg = Image(header=header, height=h, width=w, encoding="mono16", is_bigendian=0, step=w * 2)
    msg.data = np.ascontiguousarray(labels, dtype="<u2").tobytes()
    return msg


def tracks_message(update, header):
    """earl_interfaces/Tracks of one update: every track updated on the frame, lost ones once."""
    from earl_interfaces.msg import Track, Tracks

    h, w = update.label_map.shape
    out = Tracks(header=header)
    for t in update.tracks:  # a lost track keeps its last box
        out.tracks.append(Track(id=int(t.id), entity=t.entity, box=box_rois([t.box], h, w)[0], score=float(t.score),
                                state=t.state))
    return out
