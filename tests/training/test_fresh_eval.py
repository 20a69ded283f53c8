"""Headline figures come from fresh splits with intervals (issue 27 item 3): these tests pin what the
splits are, what the intervals mean, and that a small split is refused as a headline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data.synth import HELDOUT_LOOKS
from training.fresh_eval import run_fresh_eval
from training.fresh_splits import FRESH_SPLITS, intervals, parse_fresh_splits
from training.metrics import paired_ciou_bootstrap
from training.settings import FreshEvalSettings

EMBEDDED = Path(__file__).resolve().parents[2] / "models" / "earl-tiny-synth"


def _records(n_images: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        for k in range(4):
            union = float(rng.integers(50, 200))
            target = k < 3
            out.append({"image_id": f"im{i}", "inter": float(rng.uniform(0.3, 0.9)) * union if target else 0.0,
                        "union": union if target else 0.0, "gt": ["the left hand"] if target else [],
                        "pred": [] if (not target and rng.random() < 0.8) else ["x"],
                        "status": "ok" if rng.random() < 0.95 else "bad_bbox"})
    return out


def test_the_fresh_splits_cover_distribution_wording_and_each_held_out_look():
    by_name = {sp.name: sp for sp in FRESH_SPLITS}
    assert by_name["test"].style == "random" and by_name["test"].wording == "grammar"
    assert by_name["test_wording"].wording == "heldout"
    assert {by_name[n].style for n in ("test_dark", "test_gloves")} == set(HELDOUT_LOOKS)
    seeds = [sp.seed for sp in FRESH_SPLITS]
    assert len(set(seeds)) == len(seeds) and not {0, 1, 2} & set(seeds)  # never the development seeds


def test_intervals_match_the_point_figures_and_narrow_with_more_images():
    small, large = _records(40), _records(400)
    for recs in (small, large):
        iv = intervals(recs)
        ciou = sum(r["inter"] for r in recs) / sum(r["union"] for r in recs)
        assert iv["cIoU"][0] == pytest.approx(ciou)
        assert iv["cIoU"][1] < ciou < iv["cIoU"][2]
        nt = [r for r in recs if not r["gt"]]
        assert iv["no_target_acc"][0] == pytest.approx(np.mean([not r["pred"] for r in nt]))
        assert iv["parse_ok"][0] == pytest.approx(np.mean([r["status"] == "ok" for r in recs]))
        assert iv["images"] == len({r["image_id"] for r in recs}) and iv["queries"] == len(recs)
    width = {n: intervals(r)["cIoU"][2] - intervals(r)["cIoU"][1] for n, r in (("s", small), ("l", large))}
    assert width["l"] < 0.6 * width["s"]


def test_the_cIoU_interval_agrees_with_the_paired_bootstrap_of_the_same_images():
    recs = _records(100)
    empty = [{**r, "inter": 0.0} for r in recs]
    iv, paired = intervals(recs), paired_ciou_bootstrap(recs, empty)
    assert iv["cIoU"][1] == pytest.approx(paired["lo"], abs=0.01) and iv["cIoU"][2] == pytest.approx(paired["hi"],
                                                                                                     abs=0.01)


def test_split_specs_parse_and_bad_ones_say_how():
    sp = parse_fresh_splits("own:default:templates:1207,dark:dark:templates:1208")
    assert [(s.name, s.style, s.wording, s.seed) for s in sp] == [("own", "default", "templates", 1207),
                                                                  ("dark", "dark", "templates", 1208)]
    assert parse_fresh_splits(None) == FRESH_SPLITS
    with pytest.raises(ValueError, match="NAME:STYLE:WORDING:SEED"):
        parse_fresh_splits("test:random:grammar")


def _settings(out, **changes) -> FreshEvalSettings:
    """The command's own settings, as `python -m training fresh-eval` builds them."""
    return FreshEvalSettings(**{"model": str(EMBEDDED), "out": str(out), "splits": "t:default:heldout:4242",
                                "tag": "m", "quiet": True, **changes})


def test_fewer_than_500_images_is_not_a_headline(tmp_path):
    with pytest.raises(ValueError, match="at least 500"):
        run_fresh_eval(_settings(tmp_path, images=20))


def test_a_quick_fresh_eval_writes_its_table_and_intervals(tmp_path):
    s = _settings(tmp_path, images=2, allow_small=True)
    res = run_fresh_eval(s)
    assert res["t"]["images"] == 2 and res["t"]["queries"] > 0
    table = (tmp_path / "m.md").read_text()
    assert "| t | default | heldout | 4242 | 2 |" in table
    assert json.loads((tmp_path / "m.json").read_text())["t"]["split"]["seed"] == 4242
    assert (tmp_path / "n2" / "eval" / "m_t.json").exists()


def _split_result(iou: float, nt_right: float, parsed: float = 1.0, n_images: int = 200) -> dict:
    recs = []
    for i in range(n_images):
        recs.append({"image_id": f"im{i}", "inter": iou * 100, "union": 100.0, "gt": ["the left hand"],
                     "pred": ["the left hand"], "status": "ok" if i >= n_images * (1 - parsed) else "bad_bbox"})
        recs.append({"image_id": f"im{i}", "inter": 0.0, "union": 0.0, "gt": [],
                     "pred": [] if i < n_images * nt_right else ["x"], "status": "no_target"})
    return {"samples": recs}


def test_issue_27_targets_are_judged_on_each_fresh_split():
    from training.report.statistics import MET, NOT_MEASURED, NOT_MET
    from training.report.targets import headline_table, quality_targets

    results = {"final_test": _split_result(0.70, 0.97), "final_test_wording": _split_result(0.60, 0.97),
               "final_test_dark": _split_result(0.50, 0.95, parsed=0.99)}
    verdicts = [v for _, (v, _) in quality_targets(results)]
    # in-dist cIoU and no-target met; wording 60 < 0.9 x 70; dark met; gloves not evaluated; parse
    # needs every split (and dark parses 99%)
    assert verdicts == [MET, MET, NOT_MET, MET, NOT_MEASURED, NOT_MEASURED]
    results["final_test_gloves"] = _split_result(0.46, 0.80)
    verdicts = [v for _, (v, _) in quality_targets(results)]
    assert verdicts[4] == NOT_MET and verdicts[5] == NOT_MET  # gloves' no-target 80%; dark parses 99%
    table = headline_table(results)
    assert "| test_gloves | gloves | grammar | 2704 | 200 | 400 | 46.00 [46.00, 46.00] |" in table


def test_a_point_estimate_at_the_in_distribution_target_is_not_enough():
    from training.report.statistics import NOT_MET
    from training.report.targets import quality_targets

    # half the images at 35, half at 95: exactly 65.00 overall, but over 40 images the interval is wide
    recs = [{"image_id": f"im{i}", "inter": 35.0 if i % 2 else 95.0, "union": 100.0, "gt": ["h"], "pred": ["h"],
             "status": "ok"} for i in range(40)]
    text, (verdict, _) = quality_targets({"final_test": {"samples": recs}})[0]
    assert "65.00 [" in text
    assert verdict == NOT_MET
