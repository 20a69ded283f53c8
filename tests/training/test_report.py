"""Model-card diagnostics computed from cached eval JSON (no model needed)."""
import numpy as np


def _samples(pred_of):
    rng = np.random.default_rng(0)
    out = []
    for i in range(30):
        x1, y1 = rng.integers(0, 100, 2)
        w, h = rng.integers(20, 80, 2)
        gt = [int(x1), int(y1), int(x1 + w), int(y1 + h)]
        ent = "the left hand" if i % 2 else "the active cup"
        out.append({"gt": [ent], "pred": [ent], "gt_boxes": [gt], "pred_boxes": [pred_of(gt)], "iou": 0.0})
    out.append({"gt": [], "pred": [], "gt_boxes": [], "pred_boxes": [], "iou": 1.0})  # no target: not a box
    return {"samples": out}


def test_box_fit_tells_a_template_box_from_one_that_follows_the_frame():
    from training.report import box_fit

    follows = box_fit(_samples(lambda b: [b[0] + 2, b[1] - 1, b[2] + 3, b[3]]))
    template = box_fit(_samples(lambda b: [0, 101, 87, 192]))
    assert set(follows) == {"hand", "object"} and follows["hand"]["n"] == 15
    for kind in ("hand", "object"):
        for m in ("cx", "cy", "w", "h"):
            assert follows[kind][m]["corr"] > 0.99 and abs(follows[kind][m]["spread"] - 1) < 0.1
            assert template[kind][m]["spread"] == 0.0 and template[kind][m]["corr"] == 0.0
    assert follows["hand"]["w"]["mae_px"] == 1.0


def test_query_kinds_split_by_what_the_query_is_about():
    from training.report import query_kinds

    res = {"samples": [{"gt": ["the left hand"], "pred": ["the left hand"], "iou": 0.8},
                       {"gt": ["the active cup"], "pred": ["the active bowl"], "iou": 0.2},
                       {"gt": ["the left hand", "the active cup"], "pred": [], "iou": 0.0},
                       {"gt": [], "pred": [], "iou": 1.0}]}
    k = query_kinds(res)
    assert k["hand"] == {"n": 1, "names_right": 1.0, "mean_iou": 0.8}
    assert k["object"]["names_right"] == 0.0 and k["hands + objects"]["n"] == 1 and k["no target"]["n"] == 1


def test_left_edge_zero_counts_the_template_left_boundary():
    from training.report import left_edge_zero

    res = _samples(lambda b: [0, b[1], b[2], b[3]])  # every box starts at the frame edge
    share, median_gt = left_edge_zero(res)
    gts = [r["gt_boxes"][0][0] for r in res["samples"] if r["gt"] == ["the left hand"]]
    assert share == 1.0 and median_gt == float(np.median(gts))
    assert left_edge_zero(_samples(lambda b: [b[0] + 1, b[1], b[2], b[3]]))[0] == 0.0
    assert left_edge_zero({"samples": []}) is None


def test_a_cached_eval_is_reused_only_for_the_same_coordinate_decoding(tmp_path):
    import json

    from training.report import _seed_cache

    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "final_test.json").write_text(json.dumps({"coordinates": "mean", "cIoU": 0.5}))
    _seed_cache(tmp_path, "final", "final_greedy", "test", "greedy")
    assert not (ev / "final_greedy_test.json").exists()  # mean answers cannot stand in for greedy ones
    _seed_cache(tmp_path, "final", "final_norefine", "test", "mean")
    assert json.loads((ev / "final_norefine_test.json").read_text())["cIoU"] == 0.5
    (ev / "final_norefine_test.json").write_text(json.dumps({"coordinates": "mean", "cIoU": 0.4}))
    _seed_cache(tmp_path, "final", "final_norefine", "test", "mean")  # already decoded that way: kept
    assert json.loads((ev / "final_norefine_test.json").read_text())["cIoU"] == 0.4


def test_the_grpo_vs_sft_finding_follows_the_measured_validation_and_test_scores():
    from training.report import _grpo_vs_sft

    val = {"grpo": {"cIoU": 0.5581}, "sft": {"cIoU": 0.5594}}
    assert _grpo_vs_sft(val, {"cIoU": 0.60}, {"cIoU": 0.58}) == "falls below SFT on `val` and beats SFT on `test`"
    assert _grpo_vs_sft({"grpo": {"cIoU": 0.534}, "sft": {"cIoU": 0.531}}, {"cIoU": 0.50}, {"cIoU": 0.51}) == (
        "edges SFT on `val` and falls below SFT on `test`")


def test_the_grpo_vs_sft_finding_says_so_when_nothing_was_compared():
    from training.report import _grpo_vs_sft

    assert _grpo_vs_sft({}, {}, {}) == "it has not been compared with SFT in this card"
    assert _grpo_vs_sft({}, {"cIoU": 0.5}, {"cIoU": 0.5}) == "ties SFT on `test`"


def test_the_afs_finding_puts_both_arms_side_by_side_for_each_query_kind_they_share():
    from training.report import _afs_by_kind

    afs = {"hand": {"n": 10, "names_right": 1.0, "mean_iou": 0.68}, "object": {"n": 5, "names_right": 0.4, "mean_iou": 0.35}}
    nodesc = {"hand": {"n": 10, "names_right": 1.0, "mean_iou": 0.72}}
    line = _afs_by_kind(afs, nodesc)
    assert "hand: 100% / 0.68 vs 100% / 0.72" in line and "object" not in line
    assert _afs_by_kind(afs, {}) == ""  # nothing to compare: no finding


def test_the_card_says_how_response_sft_trained_the_afs_and_stays_silent_for_older_recipes():
    from training.report import _afs_training

    line = _afs_training({"lr": 2e-3, "afs_init": "zero", "afs_lr": 1e-4})
    assert "zeroed at the start" in line and "AFS learning rate 0.0001 vs 0.002" in line
    assert "noise" not in line and "without a descriptor" not in line
    noisy = _afs_training({"lr": 2e-3, "descriptor_noise": 0.5, "descriptor_dropout": 0.25})
    assert "std 0.5 x the descriptors' spread" in noisy and "25% of training samples without" in noisy
    assert _afs_training({"lr": 2e-3}) == ""


def test_held_objects_are_read_per_hand_from_captions_including_two_word_categories():
    from training.report import held_object_pattern

    text = ("The camera wearer is holding a red toy car with the left hand and touching a silver scissors "
            "with the right hand.")
    assert held_object_pattern().findall(text) == [("red", "toy car", "left"), ("silver", "scissors", "right")]
    assert held_object_pattern().findall("No hands are visible. There is a orange laptop on the table.") == []


def test_the_descriptor_finding_compares_what_stage_1_names_with_the_response_models_object_answers():
    from training.report import _descriptor_content

    kinds = {"object": {"n": 100, "names_right": 0.47, "mean_iou": 0.4}}
    same = _descriptor_content({"held_objects": 59, "category_right": 0.44, "category_and_colour_right": 0.36}, kinds)
    assert "44%" in same and "about as often" in same and "little it cannot see" in same
    more = _descriptor_content({"held_objects": 59, "category_right": 0.80, "category_and_colour_right": 0.7}, kinds)
    assert "more often" in more and "little it cannot see" not in more
    assert _descriptor_content({}, kinds) == "" and _descriptor_content({"held_objects": 3}, {}) == ""


def test_a_cached_result_counts_only_for_the_weights_it_was_measured_on(tmp_path):
    import json

    from training.report import cached_json

    f = tmp_path / "latency.json"
    f.write_text(json.dumps({"median_ms": 100, "model_fingerprint": "abc"}))
    assert cached_json(f, "abc")["median_ms"] == 100
    assert cached_json(f, "def") is None
    f.write_text(json.dumps({"median_ms": 100}))  # from before results carried the weights they measured
    assert cached_json(f, "abc") is None
    assert cached_json(tmp_path / "missing.json", "abc") is None


def test_the_model_fingerprint_follows_the_weights_not_the_directory(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from training.report import model_fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_model_dir)
    afs = copy / "afs" / "model.safetensors"
    w = load_file(afs)
    w["fc_out.bias"] = w["fc_out.bias"] + 1.0  # retrained into the same directory
    save_file(w, afs)
    assert model_fingerprint(copy) != model_fingerprint(tiny_model_dir)
    assert model_fingerprint(tmp_path / "not-a-model") is None


def test_the_card_times_the_ablation_command_only_when_it_ran_as_its_own_command():
    from training.report import ablation_run_line

    abl = {"stage_seconds": {"sft-response-nodesc": 1800.0, "grpo-nodesc": 420.0}, "wall_seconds": 2250.0,
           "wall_note": "shared the cores with evals"}
    line = ablation_run_line({"sft-response": 1853.0, "grpo": 409.0}, abl)
    assert "`--ablation no-descriptor`" in line
    assert "sft-response-nodesc 30.0, grpo-nodesc 7.0 minutes; wall clock 37.5 minutes" in line
    assert line.rstrip().endswith("Note: shared the cores with evals.")
    assert "(2 threads, one stage at a time)" in ablation_run_line({"sft-response": 1853.0},
                                                                   {**abl, "config": {"threads": 2}})
    # trained beside the AFS arm: its stages are already rows of the stage table
    assert ablation_run_line({"sft-response": 3217.0, "sft-response-nodesc": 3212.0}, abl) == ""
    assert ablation_run_line({"sft-response": 1853.0}, None) == ""  # not trained yet: the rows say so


def _scored(per_image: dict[str, list[tuple[float, float]]]) -> dict:
    samples = [{"image_id": i, "inter": a, "union": u} for i, qs in per_image.items() for a, u in qs]
    return {"cIoU": sum(s["inter"] for s in samples) / sum(s["union"] for s in samples), "samples": samples}


def test_a_beats_target_is_met_only_when_the_test_images_can_tell_the_two_apart():
    from training.report import MET, NOT_MEASURED, NOT_MET, POINT_ONLY, _beats, _targets_summary

    base = {f"img{i}": [(float(10 + i), 40.0)] for i in range(12)}
    better = {k: [(a + 6.0, u) for a, u in v] for k, v in base.items()}
    # better on 11 images, far worse on one large one: higher cIoU, but the interval reaches zero
    lucky = dict(better, img0=[(0.0, 100.0)])
    lucky_base = dict(base, img0=[(45.0, 100.0)])
    verdict, detail = _beats(_scored(better), _scored(base))
    assert verdict == MET and detail.startswith("; difference +")
    point = _beats(_scored(lucky), _scored(lucky_base))
    assert _scored(lucky)["cIoU"] > _scored(lucky_base)["cIoU"] and point[0] == POINT_ONLY
    assert point[1].startswith("; difference +")
    assert _beats(_scored(base), _scored(better))[0] == NOT_MET
    assert _beats(_scored(base), {}) == (NOT_MEASURED, "")
    # the card's top line counts a point-estimate win apart from a met target
    summary = _targets_summary([("a", (MET, "")), ("b", point), ("c", (NOT_MET, ""))])
    assert summary.startswith(f"It meets 1 of the issue's 3 quality targets, and 1 more {POINT_ONLY}")


def test_training_seed_repeats_must_all_agree_before_a_beats_target_is_met():
    from training.report import MET, NOT_MET, SEEDS_DISAGREE, _beats, _targets_summary, _versus

    base = {f"img{i}": [(float(10 + i), 40.0)] for i in range(12)}
    better = _scored({k: [(a + 6.0, u) for a, u in v] for k, v in base.items()})
    slightly_worse = _scored({k: [(a - 1.0, u) for a, u in v] for k, v in base.items()})
    base = _scored(base)
    assert _beats(better, base)[0] == MET
    # seed 1 agrees: still met, and the detail lists each seed's difference
    verdict, detail = _beats(better, base, [(1, better, base)])
    assert verdict == MET and detail.endswith("; by training seed: 0 +15.00, 1 +15.00")
    # seed 1 goes the other way: the mean is still higher and its interval above zero, yet the seeds
    # disagree, so the win is not shown, and the card's top line does not count it
    verdict, detail = _beats(better, base, [(1, slightly_worse, base)])
    assert verdict == SEEDS_DISAGREE and "1 -2.50" in detail
    assert _targets_summary([("a", (MET, "")), ("b", (verdict, detail))]).startswith("It meets 1 of the issue" + "'s 2 ")
    # on average worse: not met
    assert _beats(slightly_worse, base, [(1, slightly_worse, base)])[0] == NOT_MET
    # a repeat whose evaluation is missing does not count
    assert _beats(better, base, [(1, None, base)]) == _beats(better, base)
    assert _versus(better, base, [(1, slightly_worse, base)]) == "45.00 vs 38.75, means of training seeds 0, 1"
    assert _versus(better, base) == "53.75 vs 38.75"


def test_the_repeats_table_has_a_row_per_training_seed_and_their_mean():
    from training.report import _repeats_section

    def res(c):
        return {"cIoU": c}
    seed0 = {"sft_test": res(0.60), "grpo_test": res(0.59), "nodesc_sft_test": res(0.58), "nodesc_grpo_test": res(0.585)}
    assert _repeats_section(seed0, {}, "sft") == ""
    card = _repeats_section(seed0, {1: {"sft": res(0.62), "grpo": res(0.64), "nodesc_sft": res(0.60),
                                        "nodesc_grpo": None}}, "sft")
    rows = [ln for ln in card.splitlines() if ln.startswith("| ")]
    assert rows[1] == "| 0 | 60.00 | 59.00 | 58.00 | 58.50 | -1.00 | +0.50 | +2.00 |"
    assert rows[2] == "| 1 | 62.00 | 64.00 | 60.00 | n/a | +2.00 | n/a | +2.00 |"
    assert len(rows) == 3  # no mean row until a second seed has every stage evaluated
    card = _repeats_section(seed0, {1: {"sft": res(0.62), "grpo": res(0.64), "nodesc_sft": res(0.60),
                                        "nodesc_grpo": res(0.60)}}, "sft")
    assert "| mean of 2 | 61.00 | 61.50 | 59.00 | 59.25 | +0.50 | +0.25 | +2.00 |" in card.splitlines()
    # GRPO moved 5 points between seeds, more than either target's gap on the seed means (+0.50, +2.00)
    assert "one stage moves by up to 5.00 cIoU (SFT + GRPO, AFS), more than the larger of the two target gaps " \
           "on the seed means (2.00)" in card


def test_repeat_seeds_are_the_numbered_seed_dirs_of_a_run(tmp_path):
    from training.report import repeat_seeds

    for d in ("seed12", "seed1", "seedx", "sft"):
        (tmp_path / d).mkdir()
    (tmp_path / "seed3").write_text("a file, not a run")
    assert repeat_seeds(tmp_path) == [1, 12]


def test_evaluations_run_in_worker_processes_land_in_the_cache_the_report_reads(chain, tmp_path, monkeypatch):
    """`tiny-synth-eval --workers 2`: every row that runs a model is evaluated once, in the pool, with the
    same result as in the report's own process; the report then only reads the cache."""
    import json

    from training.report import run as report_run
    from training.report.cache import eval_cached
    from training.report.loaded_model import LoadedModel

    monkeypatch.setattr(report_run, "HELDOUT", {"test": {}})
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft").symlink_to(chain["m2"], target_is_directory=True)  # the run's SFT stage
    shipped = LoadedModel(chain["m2"])
    jobs = report_run._model_runs(run, shipped)
    assert [(tag, split, nodesc) for tag, model_dir, split, nodesc, _ in jobs if (model_dir / "earl.yaml").exists()] == [
        ("final", "test", False), ("sft", "test", False), ("final_zerodesc", "test", True)]
    report_run.prefetch_evaluations(run, shipped, chain["data"], workers=2)
    cached = {p.name: json.loads(p.read_text()) for p in (run / "eval").glob("*.json")}
    assert set(cached) == {"final_test.json", "sft_test.json", "final_zerodesc_test.json"}
    here = eval_cached(tmp_path / "alone", "final", shipped, chain["data"], "test",
                       box_refine=shipped.manifest.segmenter.box_refine,
                       coordinates=shipped.manifest.response.coordinates)
    assert cached["final_test.json"]["cIoU"] == here["cIoU"]
    assert [s["pred"] for s in cached["final_test.json"]["samples"]] == [s["pred"] for s in here["samples"]]
