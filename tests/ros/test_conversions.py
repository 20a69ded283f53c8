"""Image <-> numpy conversions and the frame buffer (no DDS traffic)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message packages (rclpy wheels) are not installed")

from earl_ros.model.errors import InvalidImageError, NoFrameError, StampNotBufferedError, UnsupportedEncodingError  # noqa: E402
from earl_ros.ros.conversions import (  # noqa: E402
    array_to_compressed, array_to_image, compressed_to_rgb, image_msg_to_rgb, image_to_array, ns_to_stamp,
    stamp_to_ns)
from earl_ros.live.frames import Frame, FrameBuffer  # noqa: E402

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (7, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc,make", [
    ("rgb8", lambda a: a),
    ("bgr8", lambda a: a[..., ::-1]),
    ("rgba8", lambda a: np.concatenate([a, np.full(a.shape[:2] + (1,), 9, np.uint8)], 2)),
    ("bgra8", lambda a: np.concatenate([a[..., ::-1], np.full(a.shape[:2] + (1,), 9, np.uint8)], 2)),
])
def test_color_encodings_round_trip_to_rgb(enc, make):
    msg = array_to_image(np.ascontiguousarray(make(RGB)), enc)
    assert msg.step == RGB.shape[1] * msg.step // RGB.shape[1] and len(msg.data) == msg.height * msg.step
    out = image_msg_to_rgb(msg)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and np.array_equal(out, RGB)


def test_mono8_becomes_three_equal_channels():
    gray = RGB[..., 0].copy()
    out = image_msg_to_rgb(array_to_image(gray, "mono8"))
    assert out.shape == (7, 5, 3) and all(np.array_equal(out[..., i], gray) for i in range(3))


def test_padded_rows_are_honoured():
    msg = array_to_image(RGB, "rgb8")
    padded = np.zeros((7, 5 * 3 + 4), np.uint8)
    padded[:, :15] = RGB.reshape(7, 15)
    msg.step = 19
    msg.data = padded.tobytes()
    assert np.array_equal(image_msg_to_rgb(msg), RGB)


def test_typed_errors():
    msg = array_to_image(RGB, "rgb8")
    msg.encoding = "16UC1"
    with pytest.raises(UnsupportedEncodingError) as e:
        image_to_array(msg)
    assert e.value.code == "UNSUPPORTED_ENCODING"
    msg = array_to_image(RGB, "rgb8")
    msg.data = msg.data[:-1]
    with pytest.raises(InvalidImageError, match="height\\*step"):
        image_to_array(msg)
    msg = array_to_image(RGB, "rgb8")
    msg.step = 4
    with pytest.raises(InvalidImageError, match="step"):
        image_to_array(msg)
    msg = array_to_image(RGB, "rgb8")
    msg.width = 0
    with pytest.raises(InvalidImageError, match="zero size"):
        image_to_array(msg)


def test_compressed_round_trip_and_garbage():
    img = np.zeros((32, 48, 3), np.uint8)
    img[8:24, 8:40] = (200, 30, 90)
    msg = array_to_compressed(img, "png")
    assert np.array_equal(compressed_to_rgb(msg), img)
    msg.data = msg.data[:20]
    with pytest.raises(InvalidImageError):
        compressed_to_rgb(msg)


def test_stamps():
    t = ns_to_stamp(1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789) and stamp_to_ns(t) == 1_700_000_000_123_456_789


def _frame(buf, stamp_ns):
    from std_msgs.msg import Header

    h = Header(stamp=ns_to_stamp(stamp_ns), frame_id="cam")
    return Frame(h, stamp_ns, buf.next_seq(), "rgb8", RGB)


def test_frame_buffer_latest_nearest_and_errors():
    buf = FrameBuffer(capacity=3)
    with pytest.raises(NoFrameError):
        buf.select(0)
    for s in (10, 20, 30, 40):
        buf.put(_frame(buf, s * 1_000_000))
    assert buf.select(0).stamp_ns == 40_000_000
    assert buf.select(21_000_000, tolerance_ns=5_000_000).stamp_ns == 20_000_000
    with pytest.raises(StampNotBufferedError):  # evicted (capacity 3)
        buf.select(10_000_000, tolerance_ns=1_000_000)
    assert buf.counters["evicted"] == 1
    buf.reject(50_000_000, buf.next_seq(), UnsupportedEncodingError("16UC1"))
    with pytest.raises(UnsupportedEncodingError):
        buf.select(0)  # the newest frame was bad: no silent fallback to an older one
    assert buf.select(30_000_000, tolerance_ns=0).stamp_ns == 30_000_000  # older ones still by stamp
    buf.put(_frame(buf, 60_000_000))
    assert buf.select(0).stamp_ns == 60_000_000
    snap = buf.snapshot()
    assert snap["counters"]["rejected"] == 1 and snap["counters"]["received"] == 6


def test_a_stamp_past_the_buffer_waits_briefly_for_its_frame():
    """A client on the same camera topic can see a frame before the node buffers it: the query
    waits up to wait_s for that frame instead of failing; older or rejected stamps do not wait."""
    import threading
    import time

    buf = FrameBuffer(capacity=10)
    buf.put(_frame(buf, 100_000_000))
    threading.Timer(0.1, lambda: buf.put(_frame(buf, 166_000_000))).start()
    assert buf.select(166_000_000, tolerance_ns=1_000_000, wait_s=2.0).stamp_ns == 166_000_000
    assert buf.counters["stamp_waits"] == 1
    with pytest.raises(StampNotBufferedError):  # never arrives: fails once the wait is over
        buf.select(300_000_000, tolerance_ns=1_000_000, wait_s=0.05)
    t = time.monotonic()
    with pytest.raises(StampNotBufferedError):  # before the buffer: nothing to wait for
        buf.select(10_000_000, tolerance_ns=1_000_000, wait_s=2.0)
    buf.reject(400_000_000, buf.next_seq(), UnsupportedEncodingError("16UC1"))
    with pytest.raises(UnsupportedEncodingError):  # its frame came and was rejected
        buf.select(400_000_000, tolerance_ns=1_000_000, wait_s=2.0)
    threading.Timer(0.1, lambda: buf.reject(500_000_000, buf.next_seq(), UnsupportedEncodingError("16UC1"))).start()
    with pytest.raises(UnsupportedEncodingError):  # a waiting query hears of the rejection at once
        buf.select(500_000_000, tolerance_ns=1_000_000, wait_s=2.0)
    assert time.monotonic() - t < 1.5 and buf.counters["stamp_waits"] == 3


def test_frame_buffer_time_jump_clears_old_timeline():
    buf = FrameBuffer(capacity=10)
    buf.put(_frame(buf, 100_000_000_000))
    buf.put(_frame(buf, 1_000_000))  # e.g. a bag loop restarting its clock
    assert buf.counters["time_jumps"] == 1 and buf.snapshot()["buffered"] == 1
    assert buf.select(0).stamp_ns == 1_000_000


def test_replay_sources_bag_video_and_folder(tmp_path):
    import cv2

    from earl_ros.cli.replay import iter_source, kind_of
    from earl_ros.ros.bags import write_image_bag

    frames = [np.full((24, 32, 3), 40 * i, np.uint8) for i in range(4)]
    bag = write_image_bag(tmp_path / "bag", frames, frame_id="head")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:02d}.png"), f[..., ::-1])
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for f in frames:
        w.write(f[..., ::-1])
    w.release()
    assert (kind_of(bag), kind_of(next(bag.glob("*.mcap"))), kind_of(folder), kind_of(video)) == (
        "bag", "bag", "folder", "video")
    got = list(iter_source(bag))
    assert [fid for _, fid in got] == ["head"] * 4 and all(np.array_equal(a, b) for (a, _), b in zip(got, frames))
    assert all(np.array_equal(a, b) for (a, _), b in zip(iter_source(folder), frames))
    vid = list(iter_source(video))
    assert len(vid) == 4 and vid[0][0].shape == (24, 32, 3)
    assert abs(int(vid[2][0].mean()) - 80) <= 6  # lossy codec
