"""overlay.draw_overlay: masks tinted in their entity colour, boxes and labels drawn, size kept."""
from __future__ import annotations

import numpy as np

from earl_ros.model.overlay import color_of, draw_overlay
from earl_ros.model.types import Grounding


def _grounding(h=60, w=80):
    masks = np.zeros((2, h, w), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 35:55, 40:70] = True
    return Grounding(entities=["the right hand", "the active mug"], boxes=np.array([[10, 10, 30, 30], [40, 35, 70, 55]]),
                     masks=masks, scores=[0.9, 0.8], answer="", no_target=False, image_size=(h, w))


def test_overlay_keeps_size_and_tints_masks():
    img = np.full((60, 80, 3), 100, np.uint8)
    out = draw_overlay(img, _grounding())
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[0, 79], img[0, 79])  # far from everything: untouched
    inside = out[45, 55].astype(int)  # inside mask 1, away from its border and label
    expected = np.rint(0.55 * 100 + 0.45 * np.array(color_of(1))).astype(int)
    assert np.abs(inside - expected).max() <= 1
    assert not np.array_equal(out[10, 20], img[10, 20])  # box edge drawn


def test_overlay_with_nothing_to_draw_is_the_image():
    img = (np.random.RandomState(0).rand(20, 30, 3) * 255).astype(np.uint8)
    g = Grounding(entities=[], boxes=np.zeros((0, 4), int), masks=np.zeros((0, 20, 30), bool), scores=[],
                  answer="", no_target=True, image_size=(20, 30))
    assert np.array_equal(draw_overlay(img, g), img)


def test_overlay_accepts_grayscale_and_boxes_at_the_border():
    img = np.zeros((40, 40), np.uint8)
    g = Grounding(entities=["x"], boxes=np.array([[0, 0, 40, 40]]), masks=np.ones((1, 40, 40), bool), scores=[1.0],
                  answer="", no_target=False, image_size=(40, 40))
    assert draw_overlay(img, g).shape == (40, 40, 3)
