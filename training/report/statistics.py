"""The card's numbers about numbers: score tables, and whether one arm beats another.

A target such as "GRPO beats SFT-only" is judged on held-out cIoU, where one draw of the same recipe
moves the score by as much as the gaps in question; the verdicts here therefore weigh an image
bootstrap and every training-seed repeat before a win is reported.
"""
from __future__ import annotations

import math

import numpy as np

METRICS = [("cIoU", "cIoU", 100), ("gIoU", "gIoU", 100), ("sample_mIoU", "sample mIoU", 100),
           ("no_target_acc", "no-target acc. %", 100), ("no_target_explicit", "explicit no-target %", 100),
           ("answer_METEOR", "answer METEOR", 1),
           ("answer_CIDEr", "answer CIDEr", 1), ("description_METEOR", "description METEOR", 1),
           ("parse_ok", "parseable %", 100)]


def _fmt(res: dict | None, key: str, scale: float) -> str:
    if res is None or key not in res:
        return "n/a"
    v = res[key]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v * scale:.2f}" if scale == 100 else f"{v:.3f}"


def table(rows: list[tuple[str, dict | None]]) -> str:
    head = "| model / split | " + " | ".join(lbl for _, lbl, _ in METRICS) + " | queries |"
    sep = "|---" * (len(METRICS) + 2) + "|"
    lines = [head, sep]
    for name, res in rows:
        cells = [_fmt(res, k, s) for k, _, s in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {res.get('n', 'n/a') if res else 'n/a'} |")
    return "\n".join(lines)


def _bootstrap(pairs: list[tuple[dict, dict]]) -> dict | None:
    """The image-bootstrap of a's cIoU minus b's over the same questions, averaged over the pairs (one
    per training seed); None without per-sample counts."""
    from training.metrics import seed_mean_ciou_bootstrap

    recs = [(a.get("samples") or [], b.get("samples") or []) for a, b in pairs]
    if not all(sa and all("inter" in r for r in sa + sb) for sa, sb in recs):
        return None
    return seed_mean_ciou_bootstrap(recs)


def _difference(bs: dict | None, seeds: list[int] | None = None) -> str:
    """'; difference D, 95% interval [lo, hi] by image bootstrap[; by training seed: ...]', or ''
    without a bootstrap."""
    if bs is None:
        return ""
    by_seed = ("; by training seed: " + ", ".join(f"{s} {100 * d:+.2f}" for s, d in zip(seeds, bs["by_pair"]))
               if seeds and len(seeds) > 1 else "")
    return (f"; difference {100 * bs['diff']:+.2f}, 95% interval [{100 * bs['lo']:+.2f}, {100 * bs['hi']:+.2f}] "
            f"resampling the {bs['images']} images{by_seed}")


# The verdicts a quality target can get in the card (_targets_summary counts them).
MET, NOT_MET, NOT_MEASURED = "met", "**not met**", "not measured"
POINT_ONLY = "met on the point estimate only"
SEEDS_DISAGREE = "**not shown**: the training seeds disagree"


def _seed_pairs(a: dict, b: dict, repeats: list[tuple[int, dict | None, dict | None]] = ()):
    """(seeds, [(a, b), ...]): the recipe run as seed 0, then every repeat with both sides evaluated."""
    done = [(s, ra, rb) for s, ra, rb in repeats if ra and rb]
    return [0] + [s for s, _, _ in done], [(a, b)] + [(ra, rb) for _, ra, rb in done]


def _mean_ciou(results: list[dict]) -> dict:
    return {"cIoU": float(np.mean([r.get("cIoU", float("nan")) for r in results]))}


def _beats(a: dict, b: dict, repeats: list[tuple[int, dict | None, dict | None]] = ()) -> tuple[str, str]:
    """(verdict, detail) of an 'a beats b on cIoU' target, over seed 0 and any training-seed repeats
    ((seed, a_s, b_s), ...): the mean cIoU decides, and it is met only if the seed-averaged interval
    stays above zero and every seed agrees. A higher mean whose interval reaches zero is a point-estimate
    win (on 60 test images one draw of the same recipe moves cIoU by 1-2 points); one that a seed
    contradicts is not shown at all."""
    if not b:
        return NOT_MEASURED, ""
    seeds, pairs = _seed_pairs(a, b, repeats)
    bs = _bootstrap(pairs)
    detail = _difference(bs, seeds)
    if not _mean_ciou([x for x, _ in pairs])["cIoU"] > _mean_ciou([y for _, y in pairs])["cIoU"]:
        return NOT_MET, detail
    if bs is not None and not all(d > 0 for d in bs["by_pair"]):
        return SEEDS_DISAGREE, detail
    return (MET if bs is not None and bs["lo"] > 0 else POINT_ONLY), detail


def _target_lines(targets: list[tuple[str, tuple[str, str]]]) -> list[str]:
    return [f"- {text} ({verdict}{detail})" for text, (verdict, detail) in targets]


def _targets_summary(targets: list[tuple[str, tuple[str, str]]]) -> str:
    verdicts = [verdict for _, (verdict, _) in targets]
    n_met, n_point = verdicts.count(MET), verdicts.count(POINT_ONLY)
    if n_met == len(verdicts):
        return "It meets the issue's quality targets."
    return (f"It meets {n_met} of the issue's {len(verdicts)} quality targets"
            + (f", and {n_point} more {POINT_ONLY}" if n_point else "") + " (see \"Targets\" and \"Findings\").")


def _versus(a: dict, b: dict, repeats: list[tuple[int, dict | None, dict | None]] = ()) -> str:
    """'A vs B' of a target line: seed 0's scores, or their means over the seeds _beats judges."""
    seeds, pairs = _seed_pairs(a, b, repeats)
    if not b or len(seeds) == 1:
        return f"{_fmt(a, 'cIoU', 100)} vs {_fmt(b, 'cIoU', 100)}"
    return (f"{_fmt(_mean_ciou([x for x, _ in pairs]), 'cIoU', 100)} vs "
            f"{_fmt(_mean_ciou([y for _, y in pairs]), 'cIoU', 100)}, means of training seeds "
            + ", ".join(map(str, seeds)))


def _repeats_section(R: dict, repeats: dict[int, dict], sel: str) -> str:
    """The card's table of the response stages of both arms per training seed (seed 0 = the recipe run)."""
    if not repeats:
        return ""
    stages = ("sft", "grpo", "nodesc_sft", "nodesc_grpo")
    rows = {0: {k: R.get(f"{k}_test") for k in stages}, **repeats}

    def diff(r, a, b):
        return f"{100 * (r[a]['cIoU'] - r[b]['cIoU']):+.2f}" if r.get(a) and r.get(b) else "n/a"

    def line(label, r):
        return (f"| {label} | " + " | ".join(_fmt(r.get(k), "cIoU", 100) for k in stages) + " | "
                + " | ".join(diff(r, a, b) for a, b in (("grpo", "sft"), ("nodesc_grpo", "nodesc_sft"),
                                                         (sel, f"nodesc_{sel}"))) + " |")
    done = [r for r in rows.values() if all(r.get(k) for k in stages)]
    mean = {k: _mean_ciou([r[k] for r in done]) for k in stages} if len(done) > 1 else None
    return ("\n### Training-seed repeats (`test` cIoU)\n\n"
            "`python -m training recipe tiny-synth --repeat-seed S` trains both arms' response stages again with "
            "training seed S (data order, descriptor noise, GRPO prompts and samples; same data, stage-1 models, "
            "steps and hyper-parameters); seed 0 is the recipe run above. Same decoding and box refinement as the "
            "rows above.\n\n"
            f"| training seed | SFT, AFS | SFT + GRPO, AFS | SFT, no descriptor | SFT + GRPO, no descriptor | "
            f"GRPO - SFT (AFS) | GRPO - SFT (no descriptor) | AFS - no descriptor ({'SFT + GRPO' if sel == 'grpo' else 'SFT'}) |\n"
            + "|---" * 8 + "|\n"
            + "\n".join(line(str(sd), r) for sd, r in rows.items())
            + (f"\n{line(f'mean of {len(done)}', mean)}" if mean else "") + "\n"
            + (_seed_spread(done, stages, sel) if mean else ""))


def _seed_spread(rows: list[dict], stages: tuple[str, ...], sel: str) -> str:
    """The sentence under the repeats table: how far one stage moves between seeds, against the gaps
    the GRPO and AFS targets ask about (on the seed means)."""
    names = {"sft": "SFT, AFS", "grpo": "SFT + GRPO, AFS", "nodesc_sft": "SFT, no descriptor",
             "nodesc_grpo": "SFT + GRPO, no descriptor"}
    spread = {k: max(r[k]["cIoU"] for r in rows) - min(r[k]["cIoU"] for r in rows) for k in stages}
    k = max(spread, key=spread.get)
    gap = max(abs(np.mean([r[a]["cIoU"] - r[b]["cIoU"] for r in rows]))
              for a, b in (("grpo", "sft"), (sel, f"nodesc_{sel}")))
    return (f"\nBetween training seeds one stage moves by up to {100 * spread[k]:.2f} cIoU ({names[k]}), "
            + ("more than" if spread[k] > gap else "less than") + f" the larger of the two target gaps on the seed "
            f"means ({100 * gap:.2f}): the GRPO and AFS targets below are judged on the seed means, the cIoU and "
            "no-target targets on the shipped model (seed 0).\n")


def _times(n: int) -> str:
    return "once" if n == 1 else f"up to {n} times"


def _minutes(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f}"
