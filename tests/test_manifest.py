"""earl.yaml: relative paths resolve against the model dir; every problem names the file and the fix."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from earl_ros.model.errors import ModelDirError
from earl_ros.model.manifest import MANIFEST_NAME, Manifest


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def _edit(model_dir: Path, fn):
    p = model_dir / MANIFEST_NAME
    data = yaml.safe_load(p.read_text())
    fn(data)
    p.write_text(yaml.safe_dump(data))


def test_tiny_manifest_loads_with_paths_resolved(tiny_model_dir):
    m = Manifest.load(tiny_model_dir)
    root = Path(tiny_model_dir).resolve()
    assert m.root == root and m.name == "earl-tiny"
    assert m.coarse.path == root / "coarse" and m.coarse.pooling == "mean"
    assert m.response.path == root / "response" and m.response.afs == root / "afs" and m.response.lora is None
    assert m.response.afs_alpha == 1.0
    assert m.segmenter.type == "sam" and m.segmenter.path == root / "sam"
    assert m.segmenter.box_refine == 0  # optional; absent = the answer's boxes only
    assert m.limits["max_image_side"] == 1280 and m.limits["max_query_tokens"] == 64


def test_missing_directory_names_it_and_says_how_to_build_one(tmp_path):
    with pytest.raises(ModelDirError) as e:
        Manifest.load(tmp_path / "nope")
    assert str(tmp_path / "nope") in e.value.message and "earl_ros.model.tiny" in e.value.message
    assert e.value.code == "MODEL_DIR"


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(ModelDirError, match="earl.yaml is missing"):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("part,named", [("coarse", "coarse"), ("response", "response"), ("afs", "afs"), ("sam", "sam")])
def test_missing_part_names_the_missing_path(model_copy, part, named):
    shutil.rmtree(model_copy / part)
    with pytest.raises(ModelDirError) as e:
        Manifest.load(model_copy)
    assert str(model_copy.resolve() / named) in e.value.message


def test_missing_file_inside_a_part_is_named(model_copy):
    (model_copy / "afs" / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match=r"afs/model\.safetensors is missing"):
        Manifest.load(model_copy)


def test_absolute_paths_are_allowed(model_copy, tmp_path):
    moved = tmp_path / "elsewhere-afs"
    shutil.move(str(model_copy / "afs"), moved)
    _edit(model_copy, lambda d: d["response"].__setitem__("afs", str(moved)))
    assert Manifest.load(model_copy).response.afs == moved


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.pop("response"), "section 'response'"),
        (lambda d: d.__setitem__("format", "other/9"), "unsupported format"),
        (lambda d: d.__setitem__("prompt_version", "v0"), "prompt_version"),
        (lambda d: d["coarse"].__setitem__("pooling", "max"), "pooling"),
        (lambda d: d["segmenter"].__setitem__("type", "sam3"), "segmenter.type"),
        (lambda d: d["limits"].__setitem__("max_new_tokens", 0), "max_new_tokens"),
        (lambda d: d["segmenter"].__setitem__("box_refine", 9), "box_refine"),
        (lambda d: d["segmenter"].__setitem__("box_refine", "two"), "box_refine"),
        (lambda d: d["response"].__setitem__("lora", "no-such-adapter"), "no-such-adapter"),
    ],
)
def test_invalid_manifests_fail_with_one_clear_message(model_copy, mutate, match):
    _edit(model_copy, mutate)
    with pytest.raises(ModelDirError, match=match) as e:
        Manifest.load(model_copy)
    assert "\n" not in e.value.message


def test_not_yaml_is_reported(model_copy):
    (model_copy / MANIFEST_NAME).write_text("coarse: [unclosed\n")
    with pytest.raises(ModelDirError, match="not valid YAML"):
        Manifest.load(model_copy)


# ---- the tiny builder ------------------------------------------------------------------------
def _digest(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_tiny_builder_is_deterministic_for_a_seed(tiny_model_dir, tmp_path):
    from earl_ros.model.tiny import build_tiny_model_dir

    again = build_tiny_model_dir(tmp_path / "again", seed=0, segmenter="sam")
    assert _digest(again) == _digest(Path(tiny_model_dir))
    other = build_tiny_model_dir(tmp_path / "other", seed=1, segmenter="sam")
    a, b = _digest(other), _digest(again)
    assert a["response/model.safetensors"] != b["response/model.safetensors"]


def test_tiny_builder_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "earl_ros.model.tiny", str(tmp_path / "m"), "--segmenter", "sam2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = Manifest.load(tmp_path / "m")
    assert m.segmenter.type == "sam2"
