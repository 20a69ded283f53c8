"""Node plumbing with a model-free pipeline in this process: compressed input, stale-description
policies, BUSY, a tracking method the model cannot serve. (The real-model, multi-process behaviour is in test_node_process.py.)"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ros_helpers import DISCOVERY_TIMEOUT, require_interfaces, wait_until

require_interfaces()

import rclpy  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from earl_interfaces.srv import Query  # noqa: E402
from earl_ros.ros.conversions import array_to_compressed, ns_to_stamp  # noqa: E402
from earl_ros.ros.node import EarlNode  # noqa: E402
from fake_pipeline import FakePipeline  # noqa: E402


@pytest.fixture
def harness(request):
    """EarlNode(FakePipeline) + a client node, in one process, own context and namespace."""
    # these tests publish a frame or two and then query for seconds: frame age is tested elsewhere
    param = getattr(request, "param", [])  # extra ROS args, or {"args": [...], "pipeline": class}
    args, pipeline = (param, FakePipeline) if isinstance(param, list) else (param["args"], param["pipeline"])
    params = ["-p", "max_frame_age:=0.0", *args]
    ns = f"/earl_inproc_{int(time.time() * 1000) % 100000}"
    ctx = Context()
    rclpy.init(context=ctx, args=["x", "--ros-args", "-r", f"__ns:={ns}", *params])
    pipe = pipeline()
    node = EarlNode(pipeline=pipe, context=ctx)
    node.start()
    client = Node("inproc_client", context=ctx, use_global_arguments=False)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(client)
    def spin():
        try:
            ex.spin()
        except Exception:  # noqa: BLE001 - ExternalShutdownException at teardown
            pass

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    qc = client.create_client(Query, f"{ns}/query")
    assert qc.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT)

    def query(text="which hand?"):
        ev = threading.Event()
        fut = qc.call_async(Query.Request(query=text))
        fut.add_done_callback(lambda _f: ev.set())
        assert ev.wait(DISCOVERY_TIMEOUT)
        return fut.result()

    yield type("H", (), {"node": node, "client": client, "pipe": pipe, "ns": ns, "query": staticmethod(query)})
    node.stop()
    rclpy.try_shutdown(context=ctx)
    th.join(5)
    ex.shutdown(timeout_sec=2)
    node.destroy_node()
    client.destroy_node()


IMG = np.zeros((60, 80, 3), np.uint8)
IMG[10:40, 10:50] = (250, 10, 10)


def test_a_query_before_any_frame_fails_with_no_frame(harness):
    r = harness.query("which hand is holding something?")
    assert (r.success, r.error_code) == (False, "NO_FRAME") and r.message
    assert r.mask.height == 0 and r.mask.width == 0


@pytest.mark.parametrize("harness", [["-p", "image_transport:=compressed"]], indirect=True)
def test_compressed_input(harness):
    from sensor_msgs.msg import CompressedImage

    pub = harness.client.create_publisher(CompressedImage, f"{harness.ns}/image/compressed",
                                          QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    wait_until(lambda: pub.get_subscription_count() >= 1, DISCOVERY_TIMEOUT, what="compressed subscription")
    msg = array_to_compressed(IMG, "png")
    msg.header.stamp = ns_to_stamp(time.time_ns())
    res = {}

    def answered():
        pub.publish(msg)
        res["r"] = harness.query()
        return res["r"].success

    wait_until(answered, DISCOVERY_TIMEOUT, step=0.05, what="an answer about a compressed frame")
    r = res["r"]
    assert (r.mask.height, r.mask.width) == (60, 80) and r.header.stamp == msg.header.stamp
    bad = array_to_compressed(IMG, "png")
    bad.data = bad.data[:10]
    bad.header.stamp = ns_to_stamp(time.time_ns())
    pub.publish(bad)
    wait_until(lambda: harness.query().error_code == "INVALID_IMAGE", DISCOVERY_TIMEOUT, step=0.05,
               what="INVALID_IMAGE for an undecodable compressed frame")


def _feed(harness):
    from sensor_msgs.msg import Image
    from earl_ros.ros.conversions import array_to_image

    pub = harness.client.create_publisher(Image, f"{harness.ns}/image",
                                          QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    wait_until(lambda: pub.get_subscription_count() >= 1, DISCOVERY_TIMEOUT, what="image subscription")

    def publish():
        m = array_to_image(IMG, "rgb8")
        m.header.stamp = ns_to_stamp(time.time_ns())
        pub.publish(m)
        return m.header.stamp

    return publish


@pytest.mark.parametrize("harness", [["-p", "coarse_enabled:=false", "-p", "stale_policy:=refuse"]], indirect=True)
def test_stale_policies(harness):
    publish = _feed(harness)
    publish()
    wait_until(lambda: harness.query().error_code == "STALE_DESCRIPTION", DISCOVERY_TIMEOUT, step=0.05,
               what="STALE_DESCRIPTION with no description and stale_policy refuse")
    from rclpy.parameter import Parameter

    harness.node.set_parameters([Parameter("stale_policy", value="empty")])
    r = harness.query()
    assert r.success and r.result.description_age_s == -1.0 and harness.pipe.describe_calls == 0
    harness.node.set_parameters([Parameter("stale_policy", value="describe")])
    r = harness.query()
    assert r.success and harness.pipe.describe_calls == 1 and r.result.description_age_s == 0.0
    assert "describe" in r.result.timing_names
    r = harness.query()  # the on-demand description became the rolling one
    assert r.success and harness.pipe.describe_calls == 1
    result = harness.node.set_parameters([Parameter("stale_policy", value="sometimes")])[0]
    assert not result.successful and "one of" in result.reason


@pytest.mark.parametrize("harness", [["-p", "query_timeout:=0.2"]], indirect=True)
def test_busy_when_no_worker_frees_up(harness):
    publish = _feed(harness)
    publish()
    wait_until(lambda: harness.query().success, DISCOVERY_TIMEOUT, step=0.05, what="a first answer")
    harness.pipe.delay_s = 1.0
    out = []
    ths = [threading.Thread(target=lambda: out.append(harness.query().error_code)) for _ in range(3)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    harness.pipe.delay_s = 0.0
    assert out.count("BUSY") >= 1 and "OK" in out, out
    assert harness.query().success


class _TrackingFake(FakePipeline):
    segmenter = object()  # the node sets up tracking; nothing here starts a track, so it is never called
    video_memory = None


@pytest.mark.parametrize("harness", [{"args": [], "pipeline": _TrackingFake}], indirect=True)
def test_tracking_by_memory_is_refused_on_a_model_without_video_memory(harness):
    from rclpy.parameter import Parameter

    result = harness.node.set_parameters([Parameter("tracking_method", value="memory")])[0]
    assert not result.successful and "segmenter.video_memory" in result.reason
    assert harness.node.get_parameter("tracking_method").value == "flow"
    assert harness.node.set_parameters([Parameter("tracking_method", value="box")])[0].successful
    assert harness.query().error_code == "NO_FRAME"  # still serving: the only fault is that no frame came yet
