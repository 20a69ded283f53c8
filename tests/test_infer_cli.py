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


@pytest.mark.parametrize("fixture,kind", [("tiny_model_dir", "sam"), ("tiny_model_dir_sam2", "sam2")])
def test_earl_infer_prints_the_contract_and_writes_mask_and_overlay(request, fixture, kind, image_file, tmp_path):
    model = request.getfixturevalue(fixture)
    out = tmp_path / "out"
    r = _run("--model", model, "--image", image_file, "--query", "which hand is holding something?",
             "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1  # --json: one JSON document on one line, nothing else on stdout
    res = json.loads(lines[0])
    assert CONTRACT <= set(res)
    assert isinstance(res["answer"], str) and isinstance(res["entities"], list) and isinstance(res["no_target"], bool)
    assert len(res["boxes"]) == len(res["entities"]) == len(res["scores"])
    assert {"coarse", "response", "parse", "segment", "total"} <= set(res["timings_ms"])
    assert res["image_size"] == [270, 410] and res["parse_status"] and res["query_truncated"] is False
    mask = Image.open(out / "mask.png")
    assert mask.size == (410, 270) and mask.mode == "L"
    assert int(np.asarray(mask).max()) <= len(res["entities"])
    overlay = Image.open(out / "overlay.png")
    assert overlay.size == (410, 270) and overlay.mode == "RGB"


def test_human_readable_output_is_indented_json(tiny_model_dir, image_file):
    r = _run("--model", tiny_model_dir, "--image", image_file, "--query", "which hand?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("{\n") and CONTRACT <= set(json.loads(r.stdout))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "/no/such/model", "--query", "which hand?"], "/no/such/model"),
        (["--model", "{tiny}", "--query", "   "], "EMPTY_QUERY"),
        (["--model", "{tiny}", "--query", "which hand?", "--mask-backend", "tensorrt"], "BACKEND_UNAVAILABLE"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_code_2(tiny_model_dir, image_file, args, needle):
    pytest.importorskip("earl_ros.export.tensorrt_runner")
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


def test_without_model_the_embedded_default_is_used(image_file, tmp_path):
    """From any working directory, no --model means models/earl-tiny-synth of this checkout."""
    assert (REPO / "models" / "earl-tiny-synth" / "earl.yaml").is_file(), "the embedded model is committed"
    r = _run("--image", image_file, "--query", "which hand?", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "earl-tiny-synth"


def test_corrupt_image_is_an_invalid_image_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = _run("--model", tiny_model_dir, "--image", bad, "--query", "which hand?")
    assert r.returncode == 2 and "INVALID_IMAGE" in r.stderr
