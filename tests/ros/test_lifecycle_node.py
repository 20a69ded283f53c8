"""The `earl` lifecycle node driven through lifecycle_msgs services, as a lifecycle manager would.

A real node process (earl-launch --no-autostart, embedded model) and a client in this process over
real DDS. One test walks the whole lifecycle in order (the states depend on each other); the others
start their own node.
"""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from ros_helpers import (DISCOVERY_TIMEOUT, EMBEDDED_MODEL, STARTUP_TIMEOUT, Client, NodeProcess, demo_frames,
                         require_interfaces, wait_until)

require_interfaces()

pytestmark = pytest.mark.timeout(600)


class Lifecycle:
    """change_state / get_state of one node, called from the test client."""

    def __init__(self, client: Client, node_name: str):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.client = client
        self.change = client.node.create_client(ChangeState, f"{node_name}/change_state")
        self.get = client.node.create_client(GetState, f"{node_name}/get_state")
        assert self.change.wait_for_service(timeout_sec=STARTUP_TIMEOUT), "no lifecycle services"

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.client._call(self.get, GetState.Request(), DISCOVERY_TIMEOUT, "get_state").current_state.label

    def transition(self, label: str, timeout: float = 120.0) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request(transition=Transition(label=label))
        return self.client._call(self.change, req, timeout, label).success


def node_rss_mb(launcher: NodeProcess) -> float:
    """RSS of the node process (earl-launch's child)."""
    kids = psutil.Process(launcher.proc.pid).children()
    assert kids, "the node process is not running"
    return kids[0].memory_info().rss / 2**20


def start(tmp_path, ns: str, *extra):
    proc = NodeProcess(EMBEDDED_MODEL, tmp_path / "node.log", namespace=ns, camera_topic=f"/{ns}/camera",
                       extra=["-p", "autostart:=false", "-p", "qos_reliability:=reliable", "-p", "max_frame_age:=0.0",
                              "-p", "diagnostics_period:=0.2", *extra])
    client = Client(namespace=f"/{ns}", camera_topic=f"/{ns}/camera")
    return proc, client, Lifecycle(client, f"/{ns}/earl")


class Camera:
    def __init__(self, client):
        self.stop, frames = threading.Event(), demo_frames()

        def run():
            i = 0
            while not self.stop.wait(0.1):
                client.publish_frame(frames[i % len(frames)])
                i += 1

        threading.Thread(target=run, daemon=True).start()


def test_configure_activate_deactivate_cleanup_shutdown(tmp_path):
    proc, client, lc = start(tmp_path, "earl_lc")
    camera = None
    try:
        assert lc.state() == "unconfigured"
        assert client.diagnostics()["lifecycle_state"] == "unconfigured"
        assert not client.query_client.wait_for_service(timeout_sec=1.0), "no service before configure"
        rss_unconfigured = node_rss_mb(proc)

        assert lc.transition("configure") and lc.state() == "inactive"
        assert client.query_client.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT)
        r = client.query("which hand?", publish=False)
        assert r.error_code == "INACTIVE" and "activate" in r.message

        assert lc.transition("activate") and lc.state() == "active"
        client.wait_for_subscriber()
        camera = Camera(client)
        wait_until(lambda: client.query("which hand?", publish=False).success, STARTUP_TIMEOUT, step=0.2,
                   what="an answer once active")
        assert client.diagnostics()["lifecycle_state"] == "active"
        rss_active = node_rss_mb(proc)
        readers_active = client.pub.get_subscription_count()  # the node's and this client's own

        assert lc.transition("deactivate") and lc.state() == "inactive"
        assert client.query("which hand?", publish=False).error_code == "INACTIVE"
        wait_until(lambda: client.diagnostics()["lifecycle_state"] == "inactive", DISCOVERY_TIMEOUT,
                   what="/diagnostics from after the deactivation")
        received = int(client.diagnostics()["frames_received"])
        time.sleep(1.0)  # the camera keeps publishing at 10 Hz
        assert int(client.diagnostics()["frames_received"]) == received, "no intake while inactive"
        wait_until(lambda: client.pub.get_subscription_count() == readers_active - 1, DISCOVERY_TIMEOUT,
                   what="the node's camera subscription gone")

        t0 = time.monotonic()
        assert lc.transition("activate")
        wait_until(lambda: client.query("which hand?", publish=False).success, DISCOVERY_TIMEOUT, step=0.2,
                   what="an answer after re-activation")
        assert time.monotonic() - t0 < 20, "re-activation keeps the models (no reload)"

        assert lc.transition("deactivate") and lc.transition("cleanup") and lc.state() == "unconfigured"
        wait_until(lambda: not client.query_client.service_is_ready(), DISCOVERY_TIMEOUT, what="the service gone")
        rss_clean = node_rss_mb(proc)
        # imported libraries stay loaded and glibc keeps some freed pages, so RSS only shows that memory
        # went back; that nothing holds the models any more is checked exactly in-process (below)
        assert rss_clean < rss_active, (rss_unconfigured, rss_active, rss_clean)

        assert lc.transition("shutdown")
        assert proc.proc.wait(30) == 0
    finally:
        if camera is not None:
            camera.stop.set()
        client.close()
        proc.terminate()
    assert "Traceback" not in proc.log(), proc.log()[-3000:]


def test_a_failed_configure_is_one_line_and_the_node_stays_unconfigured(tmp_path):
    proc, client, lc = start(tmp_path, "earl_lc_bad", "-p", f"model_dir:={tmp_path / 'no-such-model'}")
    try:
        assert not lc.transition("configure")
        assert lc.state() == "unconfigured"
        d = client.diagnostics()
        assert d["lifecycle_state"] == "unconfigured" and "no-such-model" in d["configure_error"]
        assert proc.proc.poll() is None, "the process keeps running for the manager to decide"
        assert sum("configure failed" in line for line in proc.log().splitlines()) == 1
    finally:
        client.close()
        proc.terminate()
    assert "Traceback" not in proc.log()



def test_cleanup_leaves_no_reference_to_the_models(tmp_path):
    """The node as a library (own context, the embedded model loaded by configure): after cleanup
    nothing in the node, its threads or its ROS entities keeps the pipeline alive."""
    import gc
    import weakref

    import rclpy
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn

    from earl_ros.ros.node import EarlNode

    ctx = Context()
    rclpy.init(context=ctx, args=["x", "--ros-args", "-r", "__ns:=/earl_lc_ref", "-p", f"model_dir:={EMBEDDED_MODEL}"])
    node = EarlNode(context=ctx)
    try:
        node.start()
        models = [weakref.ref(node.pipeline), weakref.ref(node.pipeline.response.model),
                  weakref.ref(node.pipeline.coarse.model), weakref.ref(node.pipeline.segmenter)]
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        gc.collect()
        assert [m() is None for m in models] == [True] * len(models)
        assert node.pipeline is None and node.session is None
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
