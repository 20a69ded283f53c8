"""`python -m training video-memory`: a model dir's SAM 2 segmenter gains video memory; its box -> mask
weights do not move, the memory's do, and the result loads, tracks and exports like any model dir."""
import json

import numpy as np
import pytest

from tests.training.conftest import run_cli


@pytest.fixture(scope="module")
def trained(tiny_model_dir_sam2, tmp_path_factory):
    out = tmp_path_factory.mktemp("vm") / "out"
    run_cli("video-memory", "--model", tiny_model_dir_sam2, "--out", out, "--steps", 4, "--clip-frames", 3,
            "--val-clips", 1, "--val-frames", 3, "--threads", 1, "--quiet", "--report-to", "none")
    return out


def _params(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_the_memory_trains_and_the_image_encoder_stays_the_segmenters(trained, tiny_model_dir_sam2):
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.segmenter import Segmenter
    from earl_ros.model.video_memory import VideoMemory

    from training.common import seed_everything

    seed_everything(0)  # as the command does, in its order: the same fresh memory it started from
    seg = Segmenter.from_pretrained(Manifest.load(tiny_model_dir_sam2).segmenter.path)
    fresh = _params(VideoMemory.from_segmenter(seg, grad=False).model)
    after = _params(VideoMemory.from_pretrained(trained / "sam_video", seg).model)
    enc = [k for k in after if k.startswith("vision_encoder.")]
    mem = [k for k in after if k.startswith("memory_attention.")]
    assert enc and all(np.array_equal(after[k], fresh[k]) for k in enc)
    assert mem and any(not np.array_equal(after[k], fresh[k]) for k in mem)


def test_the_output_is_a_model_dir_whose_pipeline_tracks_by_memory(trained):
    from earl_ros.model.pipeline import EarlPipeline

    m = (trained / "earl.yaml").read_text()
    assert "video_memory: sam_video" in m and "val_iou" in m
    pipe = EarlPipeline.from_dir(trained)
    assert pipe.video_memory is not None
    log = [json.loads(line) for line in (trained / "video_memory_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and np.isfinite(log[-1]["loss"])


def test_export_keeps_the_video_memory(trained, tmp_path):
    from earl_ros.model.manifest import Manifest
    from training.export import export_model_dir

    out = export_model_dir(trained, tmp_path / "exported")
    m = Manifest.load(out)
    assert m.segmenter.video_memory == (out / "sam_video").resolve()


def test_a_sam_segmenter_is_refused(tiny_model_dir, tmp_path):
    from training.cli import main

    assert main(["video-memory", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--steps", "1",
                 "--quiet"]) != 0
