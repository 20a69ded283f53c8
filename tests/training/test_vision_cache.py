"""The frozen-vision feature cache of the SFT stages changes the cost of a step, not its result:
the loss and every gradient are those of the uncached step, and each image is encoded once."""
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "earl-tiny-synth"


@pytest.fixture(scope="module")
def rm():
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.vlm import ResponseModel
    from training.sft import freeze_vision

    m = Manifest.load(MODEL)
    r = ResponseModel.from_pretrained(m.response.path, m.response.afs, afs_alpha=m.response.afs_alpha)
    freeze_vision(r.model)
    r.model.train()
    return r


def _batch(rm, images, queries):
    desc = np.zeros((len(images), rm.descriptor_dim), np.float32)
    targets = ['<answer>["the left hand"]</answer>\n<bbox>"the left hand": [10, 20, 60, 120]</bbox>'] * len(images)
    return rm.prepare(images, queries, desc, completions=targets)


def _loss_and_grads(rm, batch):
    from training.policy import sft_loss

    rm.model.zero_grad(set_to_none=True)
    loss = sft_loss(rm, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in rm.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def test_cached_features_give_the_same_loss_and_gradients(rm):
    from training.vision_cache import FrozenVisionCache

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (192, 256, 3), dtype=np.uint8) for _ in range(2))
    images, keys = [a, b, a], ["img-a", "img-b", "img-a"]  # one image asked about twice
    queries = ["Show me the left hand.", "Where is my right hand?", "What is my left hand holding?"]
    plain_loss, plain_grads = _loss_and_grads(rm, _batch(rm, images, queries))

    cache = FrozenVisionCache(rm.model)
    batch = _batch(rm, images, queries)
    batch.inputs = cache.inputs(batch.inputs, keys)
    assert "pixel_values" not in batch.inputs
    assert (cache.misses, cache.hits) == (2, 1), "a repeated image within a batch is encoded once"
    cached_loss, cached_grads = _loss_and_grads(rm, batch)
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert set(cached_grads) == set(plain_grads) and not any(".visual." in f".{n}" for n in plain_grads)
    for n, g in plain_grads.items():
        assert torch.allclose(cached_grads[n], g, rtol=1e-4, atol=1e-6), n

    again = _batch(rm, [b], ["Show me the right hand."])
    again.inputs = cache.inputs(again.inputs, ["img-b"])
    assert cache.misses == 2 and cache.hits == 2, "a later batch reuses the stored features"


def test_one_key_per_image_is_required(rm):
    from training.vision_cache import FrozenVisionCache

    batch = _batch(rm, [np.zeros((192, 256, 3), np.uint8)], ["Where is my left hand?"])
    with pytest.raises(ValueError, match="1 images"):
        FrozenVisionCache(rm.model).inputs(batch.inputs, ["x", "y"])
