"""Evaluation metrics (METHOD.md section 5): gIoU, cIoU, sample mIoU, instance mIoU, METEOR, CIDEr.

One prediction/ground-truth pair per (image, query) sample. A prediction is a list of entity names
with one mask each (the pipeline's Grounding); the GT is the benchmark's entity list with masks.
Predicted entities are matched to GT entities by name, greedily in GT order: each GT entity takes
the unused predicted entity with the highest `name_score` above 0.5 (the public eval code's greedy
name matching; `name_score` is the one in earl_ros.model.prompts).

Which metric is which
---------------------
cIoU ("cumulative IoU", THE NUMBER THE PAPER REPORTS, e.g. EARL 65.48 on Ego-IRGBench test):
    sum over samples of intersection pixels / sum over samples of union pixels. Per sample, the
    intersection is the sum over matched (pred, GT) pairs of |pred & gt|; the union is the sum over
    GT entities of |pred | gt| (|gt| for an unmatched GT entity) plus |pred| for every predicted
    entity matched to no GT entity (false positives enlarge the union). Large objects weigh more.
gIoU: mean over samples of the same per-sample intersection / union ratio.
Sample mIoU (what the PUBLIC EVAL CODE computes and prints; not the paper's cIoU):
    mean over samples of (mean over GT entities of the matched mask IoU, unmatched GT = 0).
    Extra predicted entities are not penalised.
Instance mIoU (also from the public eval code): mean over ALL GT entities of the dataset of the
    matched mask IoU (unmatched = 0); samples with more entities weigh more.
No-target samples (METHOD.md section 5): predicting no entity is correct and scores IoU 1 in gIoU,
    sample mIoU and instance mIoU (one "instance" per no-target sample); predicting any entity scores
    IoU 0. In cIoU a correct no-target sample adds nothing (0 / 0) and a wrong one adds the predicted
    pixels to the union only (the gRefCOCO convention for cumulative IoU).
no-target accuracy: over no-target samples, the fraction predicted as no-target; `target_recall`:
    over samples with targets, the fraction NOT predicted as no-target.

Text metrics
------------
METEOR: nltk's meteor_score with WordNet 3.0 read from Debian's wordnet-base files
    (/usr/share/wordnet; never downloaded), on lower-cased whitespace/punctuation tokens, averaged
    over samples. Answer METEOR compares `answer_sentence(pred_entities)` (the benchmark's template
    rebuilt from the entity list) with `answer_sentence(gt_entities)`; description METEOR compares the
    stage-1 description with the `caption`.
CIDEr: pycocoevalcap's CIDEr-D implementation (`Cider`) on the same tokenisation (no Java PTB
    tokenizer), corpus-level over the evaluated samples.
"""
from __future__ import annotations

import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from earl_ros.model.prompts import name_score

NAME_THRESHOLD = 0.5


def greedy_match(pred_names: Sequence[str], gt_names: Sequence[str], threshold: float = NAME_THRESHOLD
                 ) -> dict[int, int]:
    """GT index -> predicted index; each GT in order takes the best unused prediction (> threshold)."""
    out, used = {}, set()
    for gi, g in enumerate(gt_names):
        best, best_s = None, threshold
        for pi, p in enumerate(pred_names):
            if pi in used:
                continue
            s = name_score(p, g)
            if s > best_s:
                best, best_s = pi, s
        if best is not None:
            used.add(best)
            out[gi] = best
    return out


@dataclass
class SampleScore:
    """Per-sample numbers the dataset metrics are aggregated from."""

    inter: float  # pixels, for cIoU
    union: float
    giou: float  # per-sample IoU (inter / union; 1 or 0 for no-target samples)
    entity_ious: list[float]  # one per GT entity (one entry for a no-target sample)
    gt_no_target: bool
    pred_no_target: bool


def score_sample(pred_names: Sequence[str], pred_masks: np.ndarray | None, gt_names: Sequence[str],
                 gt_masks: np.ndarray | None) -> SampleScore:
    pred_names = list(pred_names)
    pred_no_target = len(pred_names) == 0
    if not gt_names:  # no-target sample
        extra = float(sum(np.asarray(m, bool).sum() for m in (pred_masks if pred_masks is not None else [])))
        ok = 1.0 if pred_no_target else 0.0
        return SampleScore(0.0, 0.0 if pred_no_target else extra, ok, [ok], True, pred_no_target)
    match = greedy_match(pred_names, gt_names)
    inter = union = 0.0
    ious = []
    for gi in range(len(gt_names)):
        g = np.asarray(gt_masks[gi], bool)
        if gi in match:
            p = np.asarray(pred_masks[match[gi]], bool)
            i, u = float(np.logical_and(p, g).sum()), float(np.logical_or(p, g).sum())
        else:
            i, u = 0.0, float(g.sum())
        inter += i
        union += u
        ious.append(i / u if u > 0 else 0.0)
    matched_preds = set(match.values())
    for pi in range(len(pred_names)):
        if pi not in matched_preds and pred_masks is not None:
            union += float(np.asarray(pred_masks[pi], bool).sum())
    giou = inter / union if union > 0 else 0.0
    return SampleScore(inter, union, giou, ious, False, pred_no_target)


def aggregate(scores: Sequence[SampleScore]) -> dict[str, float]:
    """Dataset metrics in [0, 1] (multiply by 100 for the paper's numbers)."""
    n = len(scores)
    if n == 0:
        return {"gIoU": 0.0, "cIoU": 0.0, "sample_mIoU": 0.0, "instance_mIoU": 0.0, "no_target_acc": float("nan"),
                "target_recall": float("nan"), "n": 0}
    inter = sum(s.inter for s in scores)
    union = sum(s.union for s in scores)
    all_ious = [v for s in scores for v in s.entity_ious]
    nt = [s for s in scores if s.gt_no_target]
    tg = [s for s in scores if not s.gt_no_target]
    return {
        "gIoU": float(np.mean([s.giou for s in scores])),
        "cIoU": float(inter / union) if union > 0 else (1.0 if all(s.giou == 1.0 for s in scores) else 0.0),
        "sample_mIoU": float(np.mean([np.mean(s.entity_ious) for s in scores])),
        "instance_mIoU": float(np.mean(all_ious)),
        "no_target_acc": float(np.mean([s.pred_no_target for s in nt])) if nt else float("nan"),
        "target_recall": float(np.mean([not s.pred_no_target for s in tg])) if tg else float("nan"),
        "n": n,
    }


# ---------------------------------------------------------------------------------------------
# text metrics

_TOKEN_RE = re.compile(r"<msk_\d+>|[a-z0-9]+(?:'[a-z]+)?")

# WordNet 3.0's lexnames file (Debian's wordnet-base does not ship it; nltk's reader needs it).
_LEXNAMES = (
    "adj.all 3,adj.pert 3,adv.all 4,noun.Tops 1,noun.act 1,noun.animal 1,noun.artifact 1,noun.attribute 1,"
    "noun.body 1,noun.cognition 1,noun.communication 1,noun.event 1,noun.feeling 1,noun.food 1,noun.group 1,"
    "noun.location 1,noun.motive 1,noun.object 1,noun.person 1,noun.phenomenon 1,noun.plant 1,"
    "noun.possession 1,noun.process 1,noun.quantity 1,noun.relation 1,noun.shape 1,noun.state 1,"
    "noun.substance 1,noun.time 1,verb.body 2,verb.change 2,verb.cognition 2,verb.communication 2,"
    "verb.competition 2,verb.consumption 2,verb.contact 2,verb.creation 2,verb.emotion 2,verb.motion 2,"
    "verb.perception 2,verb.possession 2,verb.social 2,verb.stative 2,verb.weather 2,adj.ppl 3"
)
WORDNET_SYSTEM_DIR = Path(os.environ.get("EARL_WORDNET_DIR", "/usr/share/wordnet"))


def paired_ciou_bootstrap(a: Sequence[dict], b: Sequence[dict], rounds: int = 2000, seed: int = 0,
                          level: float = 0.95) -> dict[str, float]:
    """cIoU(a) - cIoU(b) for two evaluations of the same questions, with a bootstrap interval.

    Images are resampled with replacement (their questions share the scene, so the image is the
    unit) and both models are scored on the same draw, which is what makes the comparison paired.
    Inputs are `evaluate`'s per-sample records with `image_id`, `inter` and `union`.
    """
    out = seed_mean_ciou_bootstrap([(a, b)], rounds=rounds, seed=seed, level=level)
    del out["by_pair"], out["pairs"]
    return out


def seed_mean_ciou_bootstrap(pairs: Sequence[tuple[Sequence[dict], Sequence[dict]]], rounds: int = 2000,
                             seed: int = 0, level: float = 0.95) -> dict:
    """The mean over pairs (one per training seed) of cIoU(a) - cIoU(b), with a bootstrap interval.

    Each pair is two evaluations of the same questions by models trained with one seed. One draw of
    images serves every pair, so the interval is the image noise of the seed-averaged difference;
    the seeds are taken as they came (`by_pair` shows how far they disagree).
    """
    def per_image(records):
        acc: dict[str, list[float]] = {}
        for r in records:
            iu = acc.setdefault(r["image_id"], [0.0, 0.0])
            iu[0] += r["inter"]
            iu[1] += r["union"]
        return acc

    if not pairs:
        raise ValueError("seed_mean_ciou_bootstrap: no pairs")
    tables = [(per_image(a), per_image(b)) for a, b in pairs]
    ids = sorted(tables[0][0])
    if any(set(ia) != set(ids) or set(ib) != set(ids) for ia, ib in tables):
        raise ValueError("seed_mean_ciou_bootstrap: the evaluations cover different images")
    # [pairs, 2 (a, b), images, 2 (inter, union)]
    X = np.array([[[ia[i] for i in ids], [ib[i] for i in ids]] for ia, ib in tables])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(rounds, len(ids)))
    sums = X[:, :, draws].sum(3)  # [pairs, 2, rounds, 2]
    ciou = sums[..., 0] / np.maximum(sums[..., 1], 1e-9)  # [pairs, 2, rounds]
    diffs = (ciou[:, 0] - ciou[:, 1]).mean(0)  # [rounds]
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    tot = X.sum(2)  # [pairs, 2, 2]
    by_pair = tot[:, 0, 0] / np.maximum(tot[:, 0, 1], 1e-9) - tot[:, 1, 0] / np.maximum(tot[:, 1, 1], 1e-9)
    return {"diff": float(by_pair.mean()), "lo": float(lo), "hi": float(hi), "level": level, "images": len(ids),
            "rounds": rounds, "share_a_better": float(np.mean(diffs > 0)), "pairs": len(pairs),
            "by_pair": [float(d) for d in by_pair]}


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


@lru_cache(maxsize=1)
def wordnet():
    """nltk WordNet reader over the local WordNet 3.0 files (Debian wordnet-base); never downloads.

    nltk's reader wants a `lexnames` file, which Debian does not ship, and its path sandbox refuses
    symlinks out of the corpus root, so the files are copied once (28 MB) to a per-user cache dir
    (~/.cache/earl_ros/wordnet-3.0, or $EARL_WORDNET_CACHE) with a generated lexnames file.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    src = WORDNET_SYSTEM_DIR
    if not (src / "data.noun").is_file():
        raise FileNotFoundError(f"WordNet 3.0 files not found in {src}: install Debian's wordnet-base "
                                "(apt-get install wordnet-base) or set EARL_WORDNET_DIR")
    cache = Path(os.environ.get("EARL_WORDNET_CACHE", Path.home() / ".cache" / "earl_ros" / "wordnet-3.0"))
    marker = cache / ".complete"
    if not marker.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copyfile(f, cache / f.name)
        lex = [x.split() for x in _LEXNAMES.split(",")]
        (cache / "lexnames").write_text("".join(f"{i:02d}\t{n}\t{c}\n" for i, (n, c) in enumerate(lex)))
        marker.write_text("ok\n")
    if str(cache) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.insert(0, str(cache))

    class _LocalWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # no cross-version mapping (needs index.sense + a download)
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": expected
        return _LocalWordNet(str(cache), None)


def meteor(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean sentence METEOR (nltk) over pairs; each reference may be a string or a list of strings."""
    from nltk.translate.meteor_score import meteor_score

    wn = wordnet()
    vals = []
    for h, r in zip(hypotheses, references):
        refs = [r] if isinstance(r, str) else list(r)
        ht = tokenize(h)
        if not ht:
            vals.append(0.0)
            continue
        vals.append(meteor_score([tokenize(x) for x in refs], ht, wordnet=wn))
    return float(np.mean(vals)) if vals else 0.0


def cider(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus CIDEr-D (pycocoevalcap) over pairs, same tokenisation as METEOR."""
    from pycocoevalcap.cider.cider import Cider

    if not hypotheses:
        return 0.0
    gts, res = {}, {}
    for i, (h, r) in enumerate(zip(hypotheses, references)):
        refs = [r] if isinstance(r, str) else list(r)
        gts[i] = [" ".join(tokenize(x)) for x in refs]
        res[i] = [" ".join(tokenize(h)) or "empty"]
    score, _ = Cider().compute_score(gts, res)
    return float(score)


@dataclass
class EvalAccumulator:
    """Collects per-sample results; `summary()` gives every metric of the eval table."""

    scores: list[SampleScore] = field(default_factory=list)
    answer_hyp: list[str] = field(default_factory=list)
    answer_ref: list[str] = field(default_factory=list)
    desc_hyp: list[str] = field(default_factory=list)
    desc_ref: list[str] = field(default_factory=list)

    def add(self, pred_names, pred_masks, gt_names, gt_masks):
        from earl_ros.model.prompts import answer_sentence

        self.scores.append(score_sample(pred_names, pred_masks, gt_names, gt_masks))
        self.answer_hyp.append(answer_sentence(list(pred_names)))
        self.answer_ref.append(answer_sentence(list(gt_names)))

    def add_description(self, text: str, caption: str):
        self.desc_hyp.append(text)
        self.desc_ref.append(caption)

    def summary(self) -> dict[str, float]:
        out = aggregate(self.scores)
        out["answer_METEOR"] = _meteor_or_nan(self.answer_hyp, self.answer_ref)
        out["answer_CIDEr"] = cider(self.answer_hyp, self.answer_ref)
        if self.desc_hyp:
            out["description_METEOR"] = _meteor_or_nan(self.desc_hyp, self.desc_ref)
            out["description_CIDEr"] = cider(self.desc_hyp, self.desc_ref)
        return out


def _meteor_or_nan(h, r) -> float:
    """METEOR, or NaN with one warning line when the WordNet files are not installed."""
    try:
        return meteor(h, r)
    except FileNotFoundError as e:
        import sys

        print(f"warning: METEOR skipped: {e}", file=sys.stderr)
        return float("nan")
