"""Launch file, parameter file and launcher checked without running ROS launch (not installable here)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from ros_helpers import tool

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "earl.launch.py"


def test_launch_file_parses_and_names_the_installed_executable_and_shared_params():
    tree = ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))
    funcs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"earl_ros", "earl", "config", "earl.yaml", "fastdds_shm.xml", "image"} <= consts
    for arg in ("namespace", "params_file", "camera_topic", "model_dir"):
        assert arg in consts, arg
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"launch", "launch_ros.actions", "launch_ros.substitutions"} <= imported
    # the executable is the console script setup.py installs to lib/earl_ros (setup.cfg)
    setup_py = (REPO / "setup.py").read_text()
    assert '"earl = earl_ros.ros.node:main"' in setup_py
    assert "lib/earl_ros" in (REPO / "setup.cfg").read_text()
    # launch/ and config/ are installed to share/earl_ros
    assert '"/launch", glob("launch/*.launch.py")' in setup_py and 'glob("config/*.yaml")' in setup_py
    for f in ("earl.yaml", "fastdds_shm.xml", "earl.rviz"):
        assert (REPO / "config" / f).is_file(), f


def test_params_file_is_the_declared_parameter_list():
    from earl_ros.ros import params as P

    doc = yaml.safe_load((REPO / "config" / "earl.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert list(values) == [p.name for p in P.PARAMS]
    for p in P.PARAMS:
        assert type(values[p.name]) is type(p.default), p.name
        assert values[p.name] == p.default, p.name
        if p.choices:
            assert p.default in p.choices
        if p.lo is not None:
            assert p.lo <= p.default <= p.hi


def test_shm_profile_is_loopback_only():
    text = (REPO / "config" / "fastdds_shm.xml").read_text()
    assert "<segment_size>67108864</segment_size>" in text
    assert "<address>127.0.0.1</address>" in text and "UDPv4" in text
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in text


def _launch_print(*args, env_extra=None, drop=()):
    env = dict(os.environ, **(env_extra or {}))
    for k in drop:
        env.pop(k, None)
    p = subprocess.run([sys.executable, "-m", "earl_ros.cli.launch", *args, "--print"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    return dict(ln.split("=", 1) for ln in lines[:-1]), lines[-1]


def test_earl_launch_forces_localhost_and_shm_and_uses_the_same_params_file(tmp_path):
    env, cmd = _launch_print("--model", str(tmp_path), "--camera-topic", "/cam/img",
                             drop=("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE"))
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_shm.xml")
    assert "-m earl_ros.ros.node --ros-args" in cmd and "__ns:=/earl" in cmd
    assert f"--params-file {REPO / 'config' / 'earl.yaml'}" in cmd
    assert f"model_dir:={tmp_path.resolve()}" in cmd and "image:=/cam/img" in cmd
    env, cmd = _launch_print("--no-shm", drop=("FASTDDS_DEFAULT_PROFILES_FILE",))
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == ""
    env, _ = _launch_print(env_extra={"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})  # explicit override wins
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def test_node_fails_fast_on_a_missing_model_dir(tmp_path):
    p = subprocess.run([sys.executable, "-m", "earl_ros.cli.launch", "--model", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("earl: error:")]
    assert len(err) == 1 and "nope" in err[0], p.stderr
    assert "Traceback" not in p.stderr


def test_docs_cover_every_parameter_topic_and_message_field():
    import re

    from earl_ros.ros import params as P

    doc = (REPO / "README.md").read_text()
    for p in P.PARAMS:
        assert f"| `{p.name}` |" in doc, p.name
    for f in ("msg/InteractionDescription.msg", "msg/QueryResult.msg", "srv/Query.srv"):
        for line in (REPO / "earl_interfaces" / f).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and line != "---":
                field = line.split()[1]
                assert re.search(rf"`{field}`", doc), f"{f}: {field}"
    for topic in ("`image`", "`image/compressed`", "`interaction`", "`answer`", "`mask`", "`overlay`",
                  "`/diagnostics`", "colcon build --base-paths . earl_interfaces"):
        assert topic in doc, topic


def test_shm_profile_carries_a_4096x3072_rgb8_frame_and_replay_knows_the_limit():
    from earl_ros.ros.env import shm_message_limit

    limit = shm_message_limit({"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_shm.xml")})
    assert limit == 64 << 20 and 4096 * 3072 * 3 + 4096 < limit
    assert shm_message_limit({}) is None  # Fast DDS defaults: nothing to refuse


def test_replay_refuses_a_frame_larger_than_the_profile_carries(tmp_path):
    """Sent anyway it would never arrive on the first send; the user gets the reason instead."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(folder / "f0.png")
    profile = tmp_path / "small.xml"
    profile.write_text((REPO / "config" / "fastdds_shm.xml").read_text()
                       .replace("67108864", "262144"))  # 256 KiB: a 400x300 rgb8 frame is 360 KB
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
    p = subprocess.run(tool("earl-replay") + [str(folder), "--topic", "/earl_test_too_big", "--quiet"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2, p.stdout + p.stderr
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "earl-replay: error:" in err[0] and "400x300" in err[0] and "--width" in err[0]
