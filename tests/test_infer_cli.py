"""earl-infer end to end (a subprocess, like a user runs it), for SAM and SAM 2 model dirs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONTRACT = {"answer", "entities", "boxes", "scores", "no_target", "description", "timings_ms"}


def _run(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "earl_ros.cli.infer", *map(str, args)], capture_output=True,
                          text=True, timeout=180, env=env, cwd=cwd or REPO)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "frame.jpg"
    rgb = (np.random.RandomState(0).rand(270, 410, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(p)
    return p


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    """A frame of the demo clip: the world the embedded model was trained on (192x256)."""
    from earl_ros.ros.bags import read_image_bag

    rgb = next(iter(read_image_bag(REPO / "data" / "demo" / "clip")))[0]
    p = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(rgb).save(p)
    return p


def _one_json_line(r) -> dict:
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout  # --json: one JSON document on one line, nothing else on stdout
    return json.loads(lines[0])


def test_earl_infer_prints_the_contract_and_writes_mask_and_overlay(scene_file, tmp_path):
    out = tmp_path / "out"
    r = _run("--image", scene_file, "--query", "which hand is holding something?", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    res = _one_json_line(r)
    assert CONTRACT <= set(res) and res["error_code"] == "OK" and "raw_text" not in res
    assert isinstance(res["answer"], str) and isinstance(res["entities"], list) and isinstance(res["no_target"], bool)
    assert res["answer"] and (res["entities"] or res["no_target"])
    assert len(res["boxes"]) == len(res["entities"]) == len(res["scores"])
    assert {"coarse", "response", "parse", "segment", "total"} <= set(res["timings_ms"])
    assert res["image_size"] == [192, 256] and res["parse_status"] in ("ok", "no_target")
    assert res["query_truncated"] is False
    mask = Image.open(out / "mask.png")
    assert mask.size == (256, 192) and mask.mode == "L"
    assert int(np.asarray(mask).max()) <= len(res["entities"])
    overlay = Image.open(out / "overlay.png")
    assert overlay.size == (256, 192) and overlay.mode == "RGB"


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_model_dir_sam2"])
def test_an_output_that_is_no_answer_exits_1_with_the_model_text(request, fixture, image_file, tmp_path):
    """A random-weight response model writes no grammar: that is reported, never an empty success."""
    model = request.getfixturevalue(fixture)
    out = tmp_path / "out"
    r = _run("--model", model, "--image", image_file, "--query", "which hand is holding something?",
             "--out", out, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    res = _one_json_line(r)
    assert res["error_code"] == "UNPARSEABLE_ANSWER" and res["parse_status"] != "ok"
    assert res["entities"] == [] and res["no_target"] is False and isinstance(res["raw_text"], str)
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("earl-infer: error: UNPARSEABLE_ANSWER"), r.stderr
    assert Image.open(out / "mask.png").size == (410, 270)  # still written (empty), like the overlay
    assert Image.open(out / "overlay.png").size == (410, 270)


def test_human_readable_output_is_indented_json(scene_file):
    r = _run("--image", scene_file, "--query", "which hand?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("{\n") and CONTRACT <= set(json.loads(r.stdout))


@pytest.mark.parametrize("h,w", [(1, 1), (3, 640), (640, 3), (20, 300), (40, 1000)])
def test_frames_the_models_cannot_take_are_invalid_images_with_the_bound(tiny_model_dir, tmp_path, h, w):
    from earl_ros.model.images import MAX_FRAME_ASPECT, MIN_FRAME_SIDE

    p = tmp_path / "odd.png"
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(p)
    r = _run("--model", tiny_model_dir, "--image", p, "--query", "which hand?")
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert "INVALID_IMAGE" in r.stderr and "Traceback" not in r.stderr
    assert f"{MIN_FRAME_SIDE} px" in r.stderr or f"1:{MAX_FRAME_ASPECT:g}" in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "/no/such/model", "--query", "which hand?"], "/no/such/model"),
        (["--model", "{tiny}", "--query", "   "], "EMPTY_QUERY"),
        (["--model", "{tiny}", "--query", "which hand?", "--mask-backend", "tensorrt"], "BACKEND_UNAVAILABLE"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_code_2(tiny_model_dir, image_file, args, needle):
    pytest.importorskip("earl_ros.model.tensorrt_runner")
    args = [a.replace("{tiny}", str(tiny_model_dir)) for a in args]
    if needle == "BACKEND_UNAVAILABLE":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("TensorRT is installed here")
    r = _run("--image", image_file, *args)
    assert r.returncode == 2 and r.stdout == ""
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("earl-infer: error:") and needle in err[0], r.stderr


def test_without_model_the_embedded_default_is_used(scene_file, tmp_path):
    """From any working directory, no --model means models/earl-tiny-synth of this checkout."""
    assert (REPO / "models" / "earl-tiny-synth" / "earl.yaml").is_file(), "the embedded model is committed"
    r = _run("--image", scene_file, "--query", "which hand?", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "earl-tiny-synth"


def test_corrupt_image_is_an_invalid_image_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = _run("--model", tiny_model_dir, "--image", bad, "--query", "which hand?")
    assert r.returncode == 2 and "INVALID_IMAGE" in r.stderr
