"""`earl-demo` end to end: launches the node, replays the shipped clip, asks every scripted question,
scores it against the clip's ground truth, writes overlays + contact sheet, stops everything."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from ros_helpers import REPO, require_interfaces

require_interfaces()


def test_demo_answers_every_scripted_question_and_writes_images(tmp_path):
    """`make demo` itself: the embedded model (a random-weight one writes no answers, which now fail)."""
    out = tmp_path / "demo"
    env = dict(os.environ, ROS_DOMAIN_ID=os.environ["ROS_DOMAIN_ID"])
    proc = subprocess.run([sys.executable, "-m", "earl_ros.cli.demo", "--out", str(out), "--rate", "30"],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    script = json.loads((REPO / "data" / "demo" / "script.json").read_text())
    asked = [q["query"] for s in script["scenes"] for q in s["queries"]]
    results = json.loads((out / "results.json").read_text())
    assert [r["question"] for r in results["questions"]] == asked
    assert {r["kind"] for r in results["questions"]} == {"hand", "object", "hands+objects", "no-target"}
    assert all(r["success"] for r in results["questions"])
    summary = results["summary"]
    assert summary["interaction_messages"] > 0 and summary["frames_received"] > 0
    assert summary["node_exit"] == 0 and summary["replay_exit"] == 0
    for line in asked:
        assert f"Q: {line}" in proc.stdout

    # every answered frame is drawn at the camera's size; the sheet holds them all
    for r in results["questions"]:
        assert Image.open(r["overlay"]).size == (script["width"], script["height"])
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[1] > 4 * 300 and sheet.shape[0] > 2 * script["height"]


def test_demo_reports_a_missing_model_dir_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "earl_ros.cli.demo", "--out", str(tmp_path / "d"),
                           "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "nope" in proc.stderr and "Traceback" not in proc.stderr
