"""earl-export end to end, as a user runs it (subprocess, console script).

Specification: on a bare SAM dir or an EARL model dir it writes decoder.onnx and parity.json,
prints the parity report as JSON and exits 0 when torch and onnxruntime agree; --tensorrt without
TensorRT and a missing model dir exit 2 with one clear line.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from earl_ros.model.tiny_sam import build_tiny_sam, build_tiny_sam2

REPO = Path(__file__).resolve().parents[1]


def _cmd():
    exe = Path(sys.executable).parent / "earl-export"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("earl-export")
    return [found] if found else [sys.executable, "-m", "earl_ros.cli.export"]


def run_export(*args, timeout=240):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run(_cmd() + [str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(REPO))


@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    return build_tiny_sam(tmp_path_factory.mktemp("cli") / "sam", seed=0)


def _check_ok(r, out: Path, kind: str):
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["pass"] is True and report["segmenter"] == kind
    ortr = report["backends"]["onnxruntime"]
    assert ortr["max_abs_logit_diff"] <= 1e-4 and ortr["mask_iou_min_decided"] == 1.0
    assert (out / "decoder.onnx").is_file()
    assert json.loads((out / "parity.json").read_text()) == report
    assert "PASS" in r.stderr


def test_export_bare_sam_dir(tiny_sam_dir, tmp_path):
    out = tmp_path / "out"
    r = run_export("--model", tiny_sam_dir, "--out", out, "--opset", "17")
    _check_ok(r, out, "sam")


def test_export_bare_sam2_dir(tmp_path):
    d = build_tiny_sam2(tmp_path / "sam2", seed=1)
    out = tmp_path / "out"
    r = run_export("--model", d, "--out", out, "--boxes", "1,5,8")
    _check_ok(r, out, "sam2")
    assert [p["num_boxes"] for p in json.loads(r.stdout)["backends"]["onnxruntime"]["per_box_count"]] == [1, 5, 8]


def test_export_earl_model_dir_uses_its_segmenter(request, tmp_path):
    pytest.importorskip("earl_ros.model.tiny", reason="earl_ros.model.tiny (the tiny model-dir builder) is not available yet")
    tiny_model_dir = request.getfixturevalue("tiny_model_dir")  # conftest: complete EARL dir, SAM segmenter
    out = tmp_path / "out"
    r = run_export("--model", tiny_model_dir, "--out", out)
    _check_ok(r, out, "sam")


def test_tensorrt_requested_where_it_is_missing_exits_2(tiny_sam_dir, tmp_path):
    from earl_ros.model.tensorrt_runner import tensorrt_available

    if tensorrt_available():
        pytest.skip("tensorrt is installed here")
    r = run_export("--model", tiny_sam_dir, "--out", tmp_path / "out", "--tensorrt", "--fp16")
    assert r.returncode == 2
    assert "BACKEND_UNAVAILABLE" in r.stderr and "tensorrt" in r.stderr
    assert not (tmp_path / "out" / "decoder.onnx").exists()  # refused before doing any work


def test_missing_model_dir_exits_2(tmp_path):
    r = run_export("--model", tmp_path / "missing", "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "MODEL_DIR" in r.stderr and "missing" in r.stderr
