"""The card's "Findings": what this run's results and cached diagnostics show, one bullet each.

Every bullet is computed from the run it describes. What earlier recipes measured lives in
docs/training.md ("History of the recipe"), not here: a fixed number in a generated card would
outlive the run it came from.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.report.answers import box_fit, left_edge_zero, query_kinds
from training.report.statistics import _fmt, _minutes, _times


def grpo_trend(log: Path) -> dict | None:
    if not log.is_file():
        return None
    rows = [json.loads(x) for x in log.read_text().splitlines() if '"reward/total"' in x]
    if len(rows) < 20:
        return None
    m = lambda rs, k: float(np.mean([r[k] for r in rs]))  # noqa: E731
    res = {"first": m(rows[:10], "reward/total"), "last": m(rows[-10:], "reward/total"),
           "ground_first": m(rows[:10], "reward/ground"), "ground_last": m(rows[-10:], "reward/ground")}
    if all("completion_len" in r for r in rows[:10] + rows[-10:]):
        res.update(len_first=m(rows[:10], "completion_len"), len_last=m(rows[-10:], "completion_len"))
    return res



def _descriptor_content(held: dict, kinds: dict) -> str:
    """Does stage 1 know which object is in which hand better than the response model does? If not,
    the descriptor has nothing to add to the response model's own view of the frame."""
    obj = kinds.get("object")
    if not held.get("held_objects") or not obj:
        return ""
    c, r = held["category_right"], obj["names_right"]
    knows_more = c > r + 0.05  # within 5 points is "about as often" on ~60 test frames
    how_often = "more often than" if knows_more else "about as often as" if c >= r - 0.05 else "less often than"
    return (f"- **What the descriptor can carry.** The coarse model's own description names the category of "
            f"{100 * c:.0f}% of the objects a hand holds or touches on `test` ({held['held_objects']} objects; "
            f"category and colour {100 * held['category_and_colour_right']:.0f}%; `python -m training.report "
            f"held-objects`), {how_often} the response model names the object in object questions "
            f"({100 * r:.0f}%)" + ("." if knows_more else ": both read the same frozen vision tower, so the "
                                   "descriptor tells the response model little it cannot see for itself."))



def _grpo_vs_sft(sel_scores: dict, grpo_test: dict, sft_test: dict) -> str:
    """The GRPO-vs-SFT clause of the findings, from the numbers of this card (it has flipped between runs)."""
    def side(a, b):
        if not a or not b or "cIoU" not in a or "cIoU" not in b:
            return None
        d = 100 * (a["cIoU"] - b["cIoU"])
        return "edges SFT" if 0 < d < 1 else "beats SFT" if d >= 1 else "falls below SFT" if d < 0 else "ties SFT"
    val = side(sel_scores.get("grpo"), sel_scores.get("sft"))
    test = side(grpo_test, sft_test)
    parts = [f"{v} on `{n}`" for v, n in ((val, "val"), (test, "test")) if v]
    return " and ".join(parts) if parts else "it has not been compared with SFT in this card"


def _afs_by_kind(afs_kinds: dict, nodesc_kinds: dict) -> str:
    """Where the two arms differ: naming the right entities or drawing them (per query kind)."""
    both = [k for k in afs_kinds if k in nodesc_kinds]
    if not both:
        return ""
    a, n = afs_kinds, nodesc_kinds
    return ("- **AFS vs no descriptor, by query kind** (`test`; right entities / mean IoU, shipped model vs the "
            "no-descriptor arm's same stage): "
            + "; ".join(f"{k}: {100 * a[k]['names_right']:.0f}% / {a[k]['mean_iou']:.2f} vs "
                        f"{100 * n[k]['names_right']:.0f}% / {n[k]['mean_iou']:.2f}" for k in both)
            + ". More runs of both arms (other seeds, AFS init and learning rate, descriptor dropout and noise) "
              "and why the AFS arm trailed before descriptor noise: docs/training.md.")



def _error_kinds(kinds: dict) -> str | None:
    if not kinds:
        return None
    return ("- **Where the errors are** (shipped model, `test`, by query kind): " + "; ".join(
        f"{k}: {v['n']} queries, right entities {100 * v['names_right']:.0f}%, mean IoU {v['mean_iou']:.2f}"
        for k, v in kinds.items()) + ".")


def _box_fit_line(ft: dict) -> str | None:
    fit = box_fit(ft)
    if not fit:
        return None
    best = {k: max(v[m]["corr"] for m in ("cy", "w", "h")) for k, v in fit.items()}
    barely = max(best.values()) < 0.2
    verdict = ("The horizontal centre follows the hand side named in the query; height, width and vertical "
               "position do not track the frame, so the masks are right where the box happens to fit."
               if barely else
               "Box position and size follow the frame only partly (best r per kind: "
               + ", ".join(f"{k} {r:.2f}" for k, r in best.items())
               + "): the boxes are rough, and box refinement tightens them.")
    return (f"- **The boxes {'barely' if barely else 'only roughly'} follow the frame** (single-target queries, "
            "shipped model, `test`; per target "
            "kind, correlation r of predicted with true box centre-y / width / height and predicted spread / true "
            "spread): " + "; ".join(
                f"{k} ({v['n']}): " + ", ".join(f"{m} r={v[m]['corr']:.2f} spread {v[m]['spread']:.2f}"
                                              for m in ("cy", "w", "h"))
                for k, v in fit.items()) + " (`box_fit` in training/report/answers.py). " + verdict)


def _image_reliance_line(rel: dict) -> str | None:
    if not rel:
        return None
    looks = rel["caption_nll_matched"] < rel["caption_nll_other_image"]
    return (f"- **The coarse model {'looks' if looks else 'does not look'} at the frame.** Caption loss per token "
            f"on `test` with the right image {rel['caption_nll_matched']:.3f} vs with another frame's "
            f"{rel['caption_nll_other_image']:.3f} (`python -m training.report image-reliance`).")


def _ceiling_line(orc: dict) -> str | None:
    if not orc.get("test"):
        return None
    return (f"- **Segmenter ceiling.** Prompted with the ground-truth boxes, the fine-tuned segmenter reaches "
            f"cIoU {100 * orc['test']['segmenter_cIoU']:.1f} on `test` ({100 * orc['test_dark']['segmenter_cIoU']:.1f} "
            f"on `test_dark`; `python -m training segmenter-eval`); the filled boxes score "
            f"{100 * orc['test']['filled_box_cIoU']:.1f}.")


def _box_refine_line(selection: dict, refine: int, R: dict) -> str | None:
    sweep = selection.get("box_refine_val_cIoU")
    if not (sweep and R.get("final_norefine_test")):
        return None
    return (f"- **Box refinement.** The segmenter is prompted again with each mask's own box, {_times(refine)} "
            f"(`segmenter.box_refine` in `earl.yaml`; chosen by the recipe on `val`, cIoU by count: "
            + ", ".join(f"{kk}: {100 * v:.2f}" for kk, v in sorted(sweep.items())) + "). On `test` it moves cIoU "
            f"{100 * R['final_norefine_test']['cIoU']:.2f} -> {_fmt(R.get('final_test') or {}, 'cIoU', 100)} "
            "(answers unchanged): a rough box gives a mask that overflows the box where the object does, and the "
            "mask's box is closer to the object.")


def _coordinates_line(selection: dict, coords: str, R: dict) -> str | None:
    if coords == "greedy" or not R.get("final_greedy_test"):
        return None
    ft, cval = R.get("final_test") or {}, selection.get("coordinates_val_cIoU")
    zg, zs = left_edge_zero(R["final_greedy_test"]), left_edge_zero(ft)
    return (f"- **Coordinate decoding.** Greedy answers write each box coordinate as the number the model expects "
            f"(`response.coordinates: {coords}` in `earl.yaml`, earl_ros/model/coordinates.py), not its single most "
            "likely number token: with one token per whole number, the most likely token is often a template value"
            + (f" (on `test`, greedy decoding wrote x1 = 0 for {100 * zg[0]:.0f}% of left hands, whose true left "
               f"edge has median {zg[1]:.0f} px; with {coords}: {100 * zs[0]:.0f}%). " if zg and zs else ". ")
            + (("Chosen by the recipe on `val` (cIoU, masks from the answer's boxes: "
                + "; ".join(f"{n} " + ", ".join(f"{mm} {100 * v:.2f}" for mm, v in d.items()) for n, d in cval.items())
                + "). ") if cval else "")
            + f"On `test` it moves the shipped model's cIoU {_fmt(R['final_greedy_test'], 'cIoU', 100)} -> "
            f"{_fmt(ft, 'cIoU', 100)} (same box refinement); the answer format is unchanged.")


def _grpo_log_clause(g: dict | None) -> str:
    """What the GRPO log's reward trend says, and why it says little when the prompt mix moved."""
    if not g:
        return ""
    moved = "len_first" in g and abs(g["len_last"] - g["len_first"]) > 2
    return (f" During GRPO the mean sampled reward went {g['first']:.2f} -> {g['last']:.2f} (first vs last "
            f"10 steps; R_g {g['ground_first']:.2f} -> {g['ground_last']:.2f}; `runs/tiny-synth/grpo/log.jsonl`)"
            + (f", over different prompts (mean completion {g['len_first']:.0f} -> {g['len_last']:.0f} tokens: "
               f"the last steps drew {'more' if g['len_last'] > g['len_first'] else 'fewer'} multi-entity questions), "
               "so the trend says little about learning; the validation scores above compare the stages on the same "
               "questions." if moved else "."))


def _shipped_stage_line(sel: str, sel_scores: dict, coords: str, g: dict | None) -> str | None:
    if not sel_scores:
        return None
    return (f"- **Shipped stage: {sel}.** The recipe exports the response stage with the higher validation cIoU "
            f"(seed-0 `val`, {sel_scores.get('sft', {}).get('n', '?')} queries, {coords} coordinates, "
            + ("each stage at its best box refinement): SFT "
               f"{100 * sel_scores['sft']['cIoU']:.2f} (box_refine {sel_scores['sft']['box_refine']}) vs SFT + GRPO "
               f"{100 * sel_scores['grpo']['cIoU']:.2f} (box_refine {sel_scores['grpo']['box_refine']})."
               if "box_refine" in sel_scores.get("sft", {}) else
               f"masks from the answer's boxes): SFT {100 * sel_scores['sft']['cIoU']:.2f} vs SFT + GRPO "
               f"{100 * sel_scores['grpo']['cIoU']:.2f}.")
            + _grpo_log_clause(g))


def _probe_line(probe: dict, towers_frozen: bool) -> str | None:
    if not probe:
        return None
    return (("- **The vision towers keep what `vision-pretrain` taught them** (frozen after it)." if towers_frozen
             else "- **What the vision towers read after SFT trained them** (not frozen after `vision-pretrain`).")
            + " Fresh linear heads on the shipped response model's image tokens (`python -m training.report "
            "vision-probe --model models/earl-tiny-synth --part response`) read the category of "
            f"{100 * probe['object_class_acc']:.0f}% of object cells, the class of {100 * probe['class_fg_acc']:.0f}% "
            f"of foreground cells and the hand / object role of {100 * probe['role_fg_acc']:.0f}%.")


def _object_identity_line(kinds: dict, probe: dict) -> str | None:
    kind_obj = kinds.get("object", {}).get("names_right") if kinds else None
    if kind_obj is None:
        return None
    return (f"- **Object identity.** Object questions name the right category {100 * kind_obj:.0f}% of the time"
            + (f"; the image tokens themselves carry the category of only {100 * probe['object_class_acc']:.0f}% "
               "of object cells (probe above)." if probe else "."))


def _grpo_and_sft_cost_line(recipe: dict, sel_scores: dict, grpo_test: dict, sft_test: dict) -> str:
    """GRPO against its SFT start, and what one more response-SFT epoch costs from this run's own stage time."""
    sft_s = recipe.get("stage_seconds", {}).get("sft-response")
    sft_epochs = recipe.get("config", {}).get("sft_response", {}).get("epochs")
    epoch_s = sft_s / sft_epochs if sft_s and sft_epochs and recipe.get("wall_seconds") else None
    return ("- **GRPO, and the cost of more SFT.** The GRPO stage "
            + _grpo_vs_sft(sel_scores, grpo_test, sft_test).removeprefix("it ") + " (Targets)"
            + (f"; one more epoch of response SFT would take the recipe from {_minutes(recipe.get('wall_seconds'))} "
               f"to about {_minutes(recipe['wall_seconds'] + epoch_s)} minutes" if epoch_s else "")
            + ". What earlier recipes tried, with their numbers: docs/training.md, \"History of the recipe\".")


def _eval_file(run: Path, name: str) -> dict:
    f = run / "eval" / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else {}


def findings_section(run: Path, results: dict, recipe: dict, sel: str, refine: int, coords: str) -> str:
    """The card's findings, from where the errors are to what this run says about GRPO and SFT; a
    bullet whose result this run lacks is left out."""
    R = results
    ft = R.get("final_test") or {}
    nd = R.get(f"nodesc_{sel}_test") or {}  # the no-descriptor arm's stage that matches the shipped one
    selection = recipe.get("selection") or {}
    sel_scores = selection.get("scores", {})
    kinds = query_kinds(ft)
    probe = _eval_file(run, "vision_probe")
    frozen = not recipe.get("config", {}).get("sft_coarse", {}).get("train_vision", True)
    lines = [
        _error_kinds(kinds),
        _afs_by_kind(kinds, query_kinds(nd)) if nd else None,
        _descriptor_content(_eval_file(run, "held_objects"), kinds),
        _box_fit_line(ft),
        _image_reliance_line(_eval_file(run, "image_reliance")),
        _ceiling_line(_eval_file(run, "oracle")),
        _box_refine_line(selection, refine, R),
        _coordinates_line(selection, coords, R),
        _shipped_stage_line(sel, sel_scores, coords, grpo_trend(run / "grpo" / "log.jsonl")),
        _probe_line(probe, frozen),
        _object_identity_line(kinds, probe),
        _grpo_and_sft_cost_line(recipe, sel_scores, R.get("grpo_test") or {}, R.get("sft_test") or {}),
    ]
    return "\n".join(line for line in lines if line)
