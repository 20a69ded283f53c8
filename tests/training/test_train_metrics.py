"""Metrics on hand-computed cases (METHOD.md section 5; definitions in training/metrics.py)."""
import numpy as np
import pytest

from training.metrics import WORDNET_SYSTEM_DIR, aggregate, cider, greedy_match, meteor, score_sample
from training.rewards import box_masks

HW = (10, 10)


def m(x1, y1, x2, y2):
    return box_masks(np.array([[x1, y1, x2, y2]]), HW)[0]


def test_greedy_name_matching_in_gt_order():
    assert greedy_match(["the active mug", "right hand"], ["the right hand", "the active mug"]) == {0: 1, 1: 0}
    assert greedy_match(["a spoon"], ["the right hand"]) == {}
    # one prediction can only be used once
    assert greedy_match(["the right hand"], ["the right hand", "right hand"]) == {0: 0}


def test_sample_scores_by_hand():
    # GT: A = 4x4 (16 px) and B = 2x2 (4 px). Prediction: A shifted by 2 columns (inter 8, union 24), B missing.
    gt = np.stack([m(0, 0, 4, 4), m(6, 6, 8, 8)])
    s = score_sample(["hand"], np.stack([m(2, 0, 6, 4)]), ["the hand", "the mug"], gt)
    assert (s.inter, s.union) == (8, 24 + 4)
    assert s.giou == pytest.approx(8 / 28)
    assert s.entity_ious == pytest.approx([8 / 24, 0.0])


def test_extra_prediction_enlarges_union_only():
    gt = np.stack([m(0, 0, 4, 4)])
    s = score_sample(["the hand", "a spoon"], np.stack([m(0, 0, 4, 4), m(5, 5, 7, 7)]), ["the hand"], gt)
    assert (s.inter, s.union) == (16, 16 + 4)
    assert s.entity_ious == [1.0]  # sample/instance mIoU do not penalise extras


def test_no_target_handling():
    right = score_sample([], None, [], None)
    assert (right.giou, right.entity_ious, right.inter, right.union) == (1.0, [1.0], 0.0, 0.0)
    wrong = score_sample(["the hand"], np.stack([m(0, 0, 2, 3)]), [], None)
    assert (wrong.giou, wrong.entity_ious, wrong.inter, wrong.union) == (0.0, [0.0], 0.0, 6.0)


def test_dataset_aggregates_by_hand():
    gt1 = np.stack([m(0, 0, 4, 4), m(6, 6, 8, 8)])
    s1 = score_sample(["hand"], np.stack([m(2, 0, 6, 4)]), ["the hand", "the mug"], gt1)  # 8/28; ious 1/3, 0
    s2 = score_sample(["the mug"], np.stack([m(0, 0, 2, 2)]), ["the mug"], np.stack([m(0, 0, 2, 2)]))  # 4/4
    s3 = score_sample([], None, [], None)  # correct no-target
    s4 = score_sample([], None, ["the hand"], np.stack([m(0, 0, 1, 1)]))  # missed target: 0/1
    agg = aggregate([s1, s2, s3, s4])
    assert agg["cIoU"] == pytest.approx((8 + 4 + 0 + 0) / (28 + 4 + 0 + 1))
    assert agg["gIoU"] == pytest.approx((8 / 28 + 1 + 1 + 0) / 4)
    assert agg["sample_mIoU"] == pytest.approx(((1 / 3 + 0) / 2 + 1 + 1 + 0) / 4)
    assert agg["instance_mIoU"] == pytest.approx((1 / 3 + 0 + 1 + 1 + 0) / 5)
    assert agg["no_target_acc"] == 1.0
    assert agg["target_recall"] == pytest.approx(2 / 3)


@pytest.mark.skipif(not WORDNET_SYSTEM_DIR.joinpath("data.noun").is_file(),
                    reason="needs Debian's wordnet-base (apt-get install wordnet-base)")
def test_meteor_uses_local_wordnet_and_rewards_synonyms():
    assert meteor(["the mask of the right hand is <MSK_0>."], ["The mask of the right hand is <MSK_0>."]) > 0.99
    syn = meteor(["the camera wearer is grasping a cup"], ["the camera wearer is holding a cup"])
    none = meteor(["the camera wearer is kicking a cup"], ["the camera wearer is holding a cup"])
    assert syn > none  # "grasping" ~ "holding" through WordNet synsets
    assert meteor([""], ["anything"]) == 0.0


def test_cider_identical_beats_different():
    refs = ["the mask of the right hand is msk", "the mask of the active mug is msk", "no suitable referring result"]
    same = cider(refs, refs)
    diff = cider(["the mask of the left hand is msk", "a bowl", "the right hand"], refs)
    assert same > diff >= 0.0


def _records(per_image: dict[str, list[tuple[float, float]]]) -> list[dict]:
    return [{"image_id": i, "inter": a, "union": u} for i, qs in per_image.items() for a, u in qs]


def test_paired_bootstrap_of_a_cIoU_difference():
    from training.metrics import paired_ciou_bootstrap

    base = {f"img{i}": [(float(10 + i), 40.0), (5.0, 20.0)] for i in range(12)}
    better = {k: [(a + 6.0, u) for a, u in v] for k, v in base.items()}  # more overlap on every image
    same = paired_ciou_bootstrap(_records(base), _records(base))
    assert same["diff"] == 0.0 and same["lo"] == 0.0 and same["hi"] == 0.0
    up = paired_ciou_bootstrap(_records(better), _records(base))
    tot_i, tot_u = sum(a for v in base.values() for a, _ in v), sum(u for v in base.values() for _, u in v)
    assert up["diff"] == pytest.approx((tot_i + 12 * 12.0) / tot_u - tot_i / tot_u)
    assert 0 < up["lo"] <= up["diff"] <= up["hi"] and up["share_a_better"] == 1.0
    # a better on 11 images, but b far better on one large image: a wins on the point estimate,
    # yet the interval straddles zero (the claim hangs on whether that image is drawn)
    wide = paired_ciou_bootstrap(_records(dict(better, img0=[(0.0, 100.0)])),
                                 _records(dict(base, img0=[(60.0, 100.0)])))
    assert wide["diff"] > 0 and wide["lo"] < 0 < wide["hi"]
    with pytest.raises(ValueError, match="different images"):
        paired_ciou_bootstrap(_records(base), _records({"other": [(1.0, 2.0)]}))


def test_seed_mean_bootstrap_averages_the_per_seed_differences_over_one_image_draw():
    from training.metrics import paired_ciou_bootstrap, seed_mean_ciou_bootstrap

    base = {f"img{i}": [(float(10 + i), 40.0), (5.0, 20.0)] for i in range(12)}
    better = {k: [(a + 6.0, u) for a, u in v] for k, v in base.items()}
    worse = {k: [(a - 2.0, u) for a, u in v] for k, v in base.items()}
    one = paired_ciou_bootstrap(_records(better), _records(base))
    alone = seed_mean_ciou_bootstrap([(_records(better), _records(base))])
    assert alone["by_pair"] == [pytest.approx(one["diff"])] and alone["lo"] == one["lo"] and alone["hi"] == one["hi"]
    # seed 0: a clearly better; seed 1: a slightly worse -> the mean is between, and the seeds are listed
    two = seed_mean_ciou_bootstrap([(_records(better), _records(base)), (_records(worse), _records(base))])
    d1 = paired_ciou_bootstrap(_records(worse), _records(base))["diff"]
    assert two["pairs"] == 2 and two["by_pair"] == [pytest.approx(one["diff"]), pytest.approx(d1)]
    assert two["diff"] == pytest.approx((one["diff"] + d1) / 2) and d1 < 0 < two["lo"] <= two["diff"] <= two["hi"]
    with pytest.raises(ValueError, match="different images"):
        seed_mean_ciou_bootstrap([(_records(better), _records(base)), (_records({"x": [(1.0, 2.0)]}),) * 2])
    with pytest.raises(ValueError, match="no pairs"):
        seed_mean_ciou_bootstrap([])
