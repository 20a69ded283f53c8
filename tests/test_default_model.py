"""The committed default model (models/earl-tiny-synth) loads and answers synthetic frames correctly.

Fresh synthetic scenes (a seed and split name never used in training: the recipe trains on seed 0,
evaluates on seeds 1 and 2) go through the full pipeline (stage 1, response + AFS, fine-tuned
segmenter). Hand queries must come back as the right entity with a mask that overlaps the
ground-truth mask; queries whose target does not exist must come back as "no suitable referring
result". A random-weight or broken model fails both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "earl-tiny-synth"
N_IMAGES = 10


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


@pytest.fixture(scope="module")
def pipe():
    import torch

    from earl_ros.model.pipeline import EarlPipeline

    torch.set_num_threads(2)
    assert (MODEL / "earl.yaml").is_file(), f"{MODEL} is missing: the default model must be committed"
    return EarlPipeline.from_dir(MODEL)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from training.data import IRGBench
    from training.data.synth import SynthConfig, write_one

    root = tmp_path_factory.mktemp("synth-unit")
    for d in ("RGB", "depth", "mask", "dataset_split/unit"):
        (root / d).mkdir(parents=True)
    for i in range(N_IMAGES):
        write_one(root, "unit", i, 4242, SynthConfig())
    return IRGBench(root, "unit")


def test_manifest_is_self_contained():
    import yaml

    from earl_ros.model.manifest import Manifest

    raw = yaml.safe_load((MODEL / "earl.yaml").read_text())
    for sec, keys in (("coarse", ("path", "lora")), ("response", ("path", "lora", "afs")),
                      ("segmenter", ("path", "decoder_onnx"))):
        for k in keys:
            v = raw[sec].get(k)
            assert v is None or not str(v).startswith("/"), f"{sec}.{k} = {v} is absolute"
    m = Manifest.load(MODEL)
    for p in (m.coarse.path, m.response.path, m.response.afs, m.segmenter.path):
        assert MODEL.resolve() in p.resolve().parents
    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    assert size <= 50 * 1024 * 1024
    assert (MODEL / "MODEL_CARD.md").is_file()


def test_answers_synthetic_frames(pipe, scenes):
    hand_ious, no_target_ok, n_no_target = [], 0, 0
    for iid in scenes.image_ids:
        img = scenes.image(iid)
        inter = pipe.describe(img)
        assert inter.text.strip()
        samples = [s for s in scenes.samples if s.image_id == iid]
        for s in samples:
            is_hand = len(s.entities) == 1 and s.entities[0].endswith("hand")
            if not (is_hand or s.no_target):
                continue
            g = pipe.answer(img, s.query, inter)
            if s.no_target:
                n_no_target += 1
                no_target_ok += int(g.no_target and len(g.entities) == 0)
            else:
                gt = s.masks()[0]
                iou = max((_iou(m, gt) for e, m in zip(g.entities, g.masks) if e == s.entities[0]), default=0.0)
                hand_ious.append(iou)
    assert hand_ious and n_no_target >= 4
    # Thresholds sit below what the shipped model measures here (mean hand IoU about 0.55, about 70% of
    # no-target queries answered "none"; MODEL_CARD.md) and far above a random-weight model (0 and 0).
    assert np.mean(hand_ious) >= 0.35, f"hand mask IoUs {np.round(hand_ious, 2)}"
    assert no_target_ok / n_no_target >= 0.6, f"{no_target_ok}/{n_no_target} no-target queries answered correctly"


def test_batched_answers_are_the_answers_one_by_one(pipe, scenes):
    """Evaluation answers an image's questions in one generation (answer_many); the figures it
    produces must be the node's answers, to the text, box and mask."""
    for iid in scenes.image_ids[:4]:
        img = scenes.image(iid)
        queries = [s.query for s in scenes.samples if s.image_id == iid]
        inter = pipe.describe(img)
        batched = pipe.answer_many(img, queries, inter)
        assert len(batched) == len(queries)
        for q, g in zip(queries, batched):
            alone = pipe.answer(img, q, inter)
            assert g.raw_text == alone.raw_text and g.entities == alone.entities
            assert np.array_equal(g.boxes, alone.boxes) and np.array_equal(g.masks, alone.masks)
            assert g.no_target == alone.no_target and g.parse_status == alone.parse_status


def test_batched_answers_take_no_questions_and_refuse_an_empty_one(pipe, scenes):
    from earl_ros.model.errors import EmptyQueryError

    img = scenes.image(scenes.image_ids[0])
    assert pipe.answer_many(img, []) == []
    with pytest.raises(EmptyQueryError):
        pipe.answer_many(img, ["Where is my left hand?", "  "])
