"""R_f, R_a, R_g on hand-written completions (METHOD.md section 3).

The GT image is 100x100 with two entities: "the right hand" = box [10, 10, 50, 50] and
"the active mug" = box [60, 60, 90, 90] (masks are the filled boxes). The "box" segmenter turns a
predicted box into its filled rectangle, so every IoU below is a rectangle IoU computed by hand.
"""
import numpy as np
import pytest

from training.rewards import (RewardConfig, answer_reward, box_masks, format_reward, grounding_reward,
                              score_completion)
from earl_ros.model.prompts import parse_response

HW = (100, 100)
GT = ["the right hand", "the active mug"]
GT_MASKS = box_masks(np.array([[10, 10, 50, 50], [60, 60, 90, 90]]), HW)


def mask_fn(boxes):
    return box_masks(boxes, HW)


def total(text, gt=GT, **cfg):
    return score_completion(text, gt, GT_MASKS if gt else None, mask_fn, RewardConfig(**cfg))


PERFECT = ('<answer>["the right hand", "the active mug"]</answer>\n'
           '<bbox>"the right hand": [10, 10, 50, 50]\n"the active mug": [60, 60, 90, 90]</bbox>')
NO_TARGET = "<answer>There is no suitable referring result.</answer>\n<bbox>none</bbox>"


def test_perfect_completion_earns_every_reward():
    r = total(PERFECT)
    assert (r.format, r.answer, r.ground, r.total) == (1.0, 1.0, 1.0, 3.0)


def test_weights_scale_components():
    r = total(PERFECT, w_format=0.5, w_answer=1.0, w_ground=2.0)
    assert r.total == pytest.approx(0.5 + 1.0 + 2.0)


@pytest.mark.parametrize("text,expected", [
    (PERFECT, 1.0),
    ('<answer>["the right hand"]</answer>', 0.5),            # bbox tag missing
    ('<bbox>"the right hand": [1, 2, 3, 4]</bbox>', 0.5),    # answer tag missing
    ("the right hand is at 10 10 50 50", 0.0),               # no tags
    ("<answer>garbage</answer><bbox>more garbage</bbox>", 1.0),  # authors' R_f pays well-formed tags
])
def test_format_reward_default(text, expected):
    assert format_reward(parse_response(text)) == expected


def test_format_reward_strict_requires_parseable_content():
    assert format_reward(parse_response("<answer>garbage</answer><bbox>more garbage</bbox>"), strict=True) == 0.0
    assert format_reward(parse_response('<answer>["a"]</answer><bbox>garbage</bbox>'), strict=True) == 0.5
    assert format_reward(parse_response(PERFECT), strict=True) == 1.0
    assert format_reward(parse_response(NO_TARGET), strict=True) == 1.0


def test_answer_reward_cases():
    p = parse_response
    assert answer_reward(p(PERFECT), GT) == 1.0
    # count differs -> 0.1
    assert answer_reward(p('<answer>["the right hand"]</answer>'), GT) == 0.1
    # containment counts as a full match ("right hand" is inside "the right hand")
    assert answer_reward(p('<answer>["right hand", "mug"]</answer>'), GT) == 1.0
    # otherwise the Levenshtein (indel) ratio: "the left hand" vs "the right hand": LCS 10 of 13 + 14
    # characters -> 1 - (27 - 2 * 10) / 27 = 20/27
    r = answer_reward(p('<answer>["the left hand", "the active mug"]</answer>'), GT)
    assert r == pytest.approx((1.0 + 20 / 27) / 2)
    # not a list of strings -> 0
    assert answer_reward(p("<answer>the right hand and the mug</answer>"), GT) == 0.0
    # saying "no target" when there is one -> 0
    assert answer_reward(p(NO_TARGET), GT) == 0.0


def test_no_target_right_and_wrong():
    right = total(NO_TARGET, gt=[])
    assert (right.format, right.answer, right.ground) == (1.0, 1.0, 1.0)
    wrong = total(PERFECT, gt=[])
    assert (wrong.format, wrong.answer, wrong.ground) == (1.0, 0.0, 0.0)
    # answer right but bbox block not exactly "none"
    half = total('<answer>There is no suitable referring result.</answer><bbox>"x": [1, 1, 2, 2]</bbox>', gt=[])
    assert (half.answer, half.ground) == (1.0, 0.0)


def test_grounding_iou_is_hand_computable():
    # right hand box shifted by 10 px in x: inter 30*40=1200, union 2*1600-1200=2000 -> 0.6
    text = ('<answer>["the right hand", "the active mug"]</answer>\n'
            '<bbox>"the right hand": [20, 10, 60, 50]\n"the active mug": [60, 60, 90, 90]</bbox>')
    assert total(text).ground == pytest.approx((0.6 + 1.0) / 2)
    assert total(text, grounding="paper").ground == pytest.approx((0.6 + 1.0) / 2)


def test_missing_target_strict_counts_zero_paper_does_not():
    text = '<answer>["the right hand"]</answer>\n<bbox>"the right hand": [10, 10, 50, 50]</bbox>'
    assert total(text).ground == pytest.approx(0.5)          # strict: (1 + 0) / 2
    assert total(text, grounding="paper").ground == 1.0      # paper: mean over matched boxes only


def test_unmatched_names_score_zero_in_both_variants():
    text = '<answer>["a spoon"]</answer>\n<bbox>"a spoon": [10, 10, 50, 50]</bbox>'
    assert total(text).ground == 0.0
    assert total(text, grounding="paper").ground == 0.0


def test_parse_failure_paper_pays_0_2_strict_pays_0():
    for text in ('<answer>["the right hand"]</answer>',                         # no bbox tag
                 '<answer>["the right hand"]</answer><bbox>somewhere</bbox>',   # no valid line
                 '<answer>["the right hand"]</answer><bbox>none</bbox>'):       # none on a target query
        assert total(text).ground == 0.0
        assert total(text, grounding="paper").ground == pytest.approx(0.2)


def test_float_and_inverted_boxes_are_invalid_unless_floats_allowed():
    flt = '<answer>["the right hand"]</answer>\n<bbox>"the right hand": [10.0, 10.2, 49.8, 50.0]</bbox>'
    assert total(flt).ground == 0.0
    assert total(flt).format == 1.0  # tags are there
    assert total(flt, strict_format=True).format == 0.5
    assert total(flt, allow_float=True).ground == pytest.approx(0.5)  # exact box, 1 of 2 GT entities
    inverted = '<answer>["the right hand"]</answer>\n<bbox>"the right hand": [50, 50, 10, 10]</bbox>'
    assert total(inverted).ground == 0.0
    assert total(inverted, grounding="paper").ground == pytest.approx(0.2)


def test_strict_matching_is_one_to_one_paper_is_not():
    # two boxes both named like the right hand: strict uses the first for the hand, the second matches
    # nothing else; paper matches both to the hand
    text = ('<answer>["the right hand", "the right hand"]</answer>\n'
            '<bbox>"the right hand": [10, 10, 50, 50]\n"the right hand": [20, 10, 60, 50]</bbox>')
    assert total(text).ground == pytest.approx(0.5)
    assert total(text, grounding="paper").ground == pytest.approx((1.0 + 0.6) / 2)


def test_box_scale_maps_model_frame_to_original():
    # the model saw a half-size image: its box [5, 5, 25, 25] is [10, 10, 50, 50] in original pixels
    text = '<answer>["the right hand"]</answer>\n<bbox>"the right hand": [5, 5, 25, 25]</bbox>'
    p = parse_response(text)
    assert grounding_reward(p, GT[:1], GT_MASKS[:1], mask_fn, "strict", box_scale=(2.0, 2.0)) == 1.0


def test_garbage_never_raises():
    for text in ["", None, "<answer>", "<bbox></bbox>" * 1000, "<answer>[[[[[[[[[</answer>", 12345]:
        r = total(text)
        assert 0.0 <= r.total <= 3.0


def test_unknown_grounding_variant_rejected():
    with pytest.raises(ValueError):
        RewardConfig(grounding="lenient")


def test_grounding_runs_the_segmenter_once_per_image(tiny_model_dir):
    """R_g with the model dir's (tiny, random) SAM: masks come from the segmenter, one encoder run per image."""
    from earl_ros.model.manifest import Manifest
    from training.rewards import SegmenterMasks

    masks = SegmenterMasks.from_path(Manifest.load(tiny_model_dir).segmenter.path)
    img = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    fn = masks.for_image("img-0", img)
    p = parse_response(PERFECT)
    before = masks.segmenter.encoder_calls
    values = [grounding_reward(p, GT, GT_MASKS, fn, v) for v in ("strict", "paper", "strict")]
    assert masks.segmenter.encoder_calls - before == 1
    assert all(0.0 <= v <= 1.0 for v in values)
    out = fn(np.array([[10, 10, 50, 50]], np.float32))
    assert out.shape == (1, 100, 100) and out.dtype == bool


def test_grounding_masks_can_be_refined_as_the_shipped_pipeline_draws_them(tiny_model_dir):
    """--reward-box-refine N: R_g scores the masks segmenter.box_refine N would give the robot."""
    from earl_ros.model.manifest import Manifest
    from training.rewards import SegmenterMasks

    path = Manifest.load(tiny_model_dir).segmenter.path
    plain, refined = SegmenterMasks.from_path(path), SegmenterMasks.from_path(path, refine=2)
    img = np.random.default_rng(1).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    box = np.array([[10, 20, 60, 70]], np.float32)
    want, _ = refined.segmenter.segment(img, box, key="direct", refine=2)
    assert np.array_equal(refined.for_image("img-1", img)(box), want)
    unrefined = plain.for_image("img-1", img)(box)
    assert np.array_equal(unrefined, plain.segmenter.segment(img, box, refine=0)[0])
    assert not np.array_equal(unrefined, want)  # this box and segmenter: refinement moves the mask
    with pytest.raises(ValueError, match="needs a segmenter"):
        SegmenterMasks.from_path("box", refine=1)
