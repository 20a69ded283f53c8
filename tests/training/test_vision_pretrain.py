"""vision-pretrain: dense targets come from the renderer, and the trained tower is what both VLMs load."""
import json

import numpy as np
import pytest
import torch

from tests.training.conftest import run_cli

pytestmark = pytest.mark.timeout(600)


def test_targets_follow_the_scene_graph():
    from training.data.synth import SynthConfig, scene_rng, render_scene
    from training.vision_pretrain import CLASSES, COLOUR_NAMES, ROLES, scene_targets

    rgb, lab, _, scene = render_scene(scene_rng(0, "default", "vision", 3), SynthConfig())
    t = scene_targets(lab, scene)
    assert t.shape == (3, *lab.shape)
    assert (t[:, lab == 0] == 0).all()  # background is class 0, colour "none", role 0
    for h in scene["hands"]:
        m = lab == h.iid
        if m.any():
            assert (t[0][m] == CLASSES.index(f"{h.side} hand")).all()
            assert set(np.unique(t[2][m])) == {ROLES.index({"held": "hand holding", "touched": "hand touching",
                                                            "free": "hand free"}[h.state])}
    for o in scene["objects"]:
        m = lab == o.iid
        if m.any():
            assert (t[0][m] == CLASSES.index(o.category)).all()
            assert (t[1][m] == COLOUR_NAMES.index(o.colour)).all()


def test_soft_targets_are_cell_area_fractions():
    from training.vision_pretrain import _soft

    idx = torch.zeros(4, 8, dtype=torch.long)
    idx[:, :2] = 1  # left quarter of the image is class 1
    s = _soft(idx, 3, (1, 2))  # two cells: left half, right half
    assert torch.allclose(s, torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))


def test_vision_pretrain_trains_one_tower_for_both_models(tmp_path):
    from earl_ros.model.tiny import build_tiny_model_dir
    from earl_ros.model.vlm import load_vlm
    from training.common import manifest_paths

    m0 = build_tiny_model_dir(tmp_path / "m0", seed=0, coarse_hidden=64, response_hidden=64)
    out = tmp_path / "vis"
    run_cli("vision-pretrain", "--model", m0, "--out", out, "--steps", 12, "--batch-images", 4,
            "--val-images", 4, "--lr", "3e-3", "--quiet")
    log = [json.loads(x) for x in (out / "vision_pretrain_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"]
    p0, p1 = manifest_paths(m0), manifest_paths(out)
    before = load_vlm(p0["coarse"]).model.visual.state_dict()
    coarse, response = load_vlm(p1["coarse"]).model.visual.state_dict(), load_vlm(p1["response"]).model.visual.state_dict()
    assert any(not torch.equal(before[k], coarse[k]) for k in before)
    assert all(torch.equal(coarse[k], response[k]) for k in coarse)
    # the language models are untouched
    lm0 = load_vlm(p0["response"]).model.language_model.state_dict()
    lm1 = load_vlm(p1["response"]).model.language_model.state_dict()
    assert all(torch.equal(lm0[k], lm1[k]) for k in lm0)


def test_vision_pretrain_refuses_towers_of_different_shapes(tmp_path, capsys):
    from earl_ros.model.tiny import build_tiny_model_dir
    from training.cli import main
    from training.errors import TrainingError
    from training.settings import VisionPretrainSettings
    from training.vision_pretrain import vision_pretrain

    m0 = build_tiny_model_dir(tmp_path / "m0", seed=0, coarse_hidden=64, response_hidden=32)
    with pytest.raises(TrainingError, match="differ in shape"):
        vision_pretrain(VisionPretrainSettings(model=str(m0), out=str(tmp_path / "v"), steps=1, quiet=True))
    assert main(["vision-pretrain", "--model", str(m0), "--out", str(tmp_path / "v"), "--steps", "1", "--quiet"]) == 2
    assert "error: vision-pretrain: the coarse and response vision towers differ in shape" in capsys.readouterr().err


def test_segmenter_eval_scores_gt_boxes(chain, tmp_path):
    from training.cli import main

    out = tmp_path / "seg_eval.json"
    assert main(["segmenter-eval", "--model", str(chain["model0"]), "--data", str(chain["data"]), "--split", "train",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["instances"] > 0
    for k in ("segmenter_cIoU", "segmenter_mIoU", "filled_box_cIoU", "filled_box_mIoU"):
        assert 0.0 <= r[k] <= 1.0
    assert r["filled_box_cIoU"] > 0.3  # a filled GT box covers most of its own mask


def _planted(n: int, seed: int):
    """Tokens whose soft targets are one-hot cells of random class / colour / role labels."""
    from training.vision_pretrain import CLASSES, COLOUR_NAMES, ROLES

    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, len(v), (n,), generator=g) for v in (CLASSES, COLOUR_NAMES, ROLES)]
    soft = [torch.nn.functional.one_hot(lab, len(v)).float() for lab, v in zip(labels, (CLASSES, COLOUR_NAMES, ROLES))]
    return soft


def test_linear_probe_reads_information_that_is_in_the_tokens():
    from training.vision_pretrain import linear_probe

    tr, va = _planted(600, 0), _planted(200, 1)
    feats = lambda soft: torch.cat(soft, -1)  # noqa: E731 - the labels themselves, linearly readable
    res = linear_probe(feats(tr), tr, feats(va), va, steps=300)
    assert min(v for v in res.values() if v is not None) == 1.0


def test_linear_probe_finds_nothing_in_features_unrelated_to_the_scene():
    from training.vision_pretrain import linear_probe

    tr, va = _planted(600, 0), _planted(200, 1)
    g = torch.Generator().manual_seed(2)
    res = linear_probe(torch.randn(600, 32, generator=g), tr, torch.randn(200, 32, generator=g), va, steps=300)
    assert res["object_class_acc"] < 0.3 and res["colour_fg_acc"] < 0.3  # chance is 0.1 and 0.08


def test_vision_probe_scores_a_model_dirs_tower_and_report_checks_its_arguments(tmp_path, capsys):
    from earl_ros.model.tiny import build_tiny_model_dir
    from training.report import main

    m0 = build_tiny_model_dir(tmp_path / "m0", seed=0)
    from training import vision_pretrain

    res = vision_pretrain.probe_model(m0, "response", train_images=4, val_images=2, steps=2)
    assert res["part"] == "response" and 0.0 <= res["class_fg_acc"] <= 1.0
    with pytest.raises(SystemExit):
        main(["image-reliance", "--model", str(m0)])  # needs --data
    assert "needs --data" in capsys.readouterr().err
