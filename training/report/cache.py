"""Held-out data and the report's result cache (RUN/eval/*.json).

Every result is stored with the fingerprint of the weights it was measured on, so an unchanged stage
is never evaluated twice while a stage retrained into the same directory always is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from training.fresh_splits import FRESH_SPLITS, MIN_IMAGES
from training.report.loaded_model import LoadedModel

# issue 27's fresh splits (training/fresh_splits.py): in distribution, held-out wording, held-out looks
HELDOUT = {sp.name: {"style": sp.style, "wording": sp.wording, "seed": sp.seed, "count": MIN_IMAGES}
           for sp in FRESH_SPLITS}


def heldout_data(run: Path) -> Path:
    from training.data.synth import SynthConfig, generate

    root = run / "heldout"
    for split, spec in HELDOUT.items():
        d = root / "dataset_split" / split
        if d.is_dir() and len(list(d.glob("*.json"))) == spec["count"]:
            continue
        generate(root, {split: spec["count"]}, seed=spec["seed"],
                 cfg=SynthConfig(style=spec["style"], wording=spec["wording"]), progress=False)
    return root


def repeat_seeds(run: Path) -> list[int]:
    """Training seeds of the `recipe tiny-synth --repeat-seed S` runs in a run dir (OUT/seed<S>/)."""
    return sorted(int(d.name[4:]) for d in run.glob("seed*") if d.is_dir() and d.name[4:].isdigit())


def cached_json(path: Path, fingerprint: str | None) -> dict | None:
    """A cached result, unless it was computed for other weights (or before results carried them)."""
    if not path.exists():
        return None
    cached = json.loads(path.read_text())
    return cached if isinstance(cached, dict) and cached.get("model_fingerprint") == fingerprint else None


def cached_diagnostic(path: Path, fingerprint: str | None, compute) -> dict:
    """`compute()` stored at `path` with the weights it measured, or its stored result for the same weights."""
    res = cached_json(path, fingerprint)
    if res is None:
        res = {**compute(), "model_fingerprint": fingerprint}
        path.write_text(json.dumps(res, indent=1))
    return res


def eval_cached(run: Path, tag: str, model: LoadedModel | Path, data: Path, split: str, no_descriptor: bool = False,
                box_refine: int = 0, coordinates: str = "greedy") -> dict | None:
    """Every row is evaluated at the same segmenter.box_refine and response.coordinates (the shipped
    model's), so rows differ only in what they are meant to compare; a cached eval at another
    box_refine count is converted (masks redrawn from its boxes) instead of rerun; one cached without
    its boxes, or decoded with other coordinates, is rerun."""
    from training.evaluate import evaluate, with_box_refine

    model = LoadedModel.of(model)
    out = run / "eval" / f"{tag}_{split}.json"
    fingerprint = model.fingerprint
    cached = cached_json(out, fingerprint)
    if cached is not None and cached.get("coordinates", "greedy") != coordinates:
        cached = None
    if cached is not None and cached.get("box_refine", 0) == box_refine and all("inter" in r for r in cached["samples"]):
        return _explicit(cached)
    if cached is not None and "samples" in cached and all("pred_boxes" in r for r in cached["samples"]):
        res = with_box_refine(cached, model.dir, data, box_refine)
    elif not (model.dir / "earl.yaml").exists():
        print(f"[report] {tag}: {model.dir} missing, row skipped", flush=True)
        return None
    else:
        t = time.perf_counter()
        res = evaluate(model.dir, data, split, progress=False, no_descriptor=no_descriptor, box_refine=box_refine,
                       coordinates=coordinates)
        res["eval_seconds"] = time.perf_counter() - t
        res["no_descriptor"] = no_descriptor
    res["model_fingerprint"] = fingerprint
    _explicit(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"[report] {tag} on {split} (box_refine {box_refine}, coordinates {coordinates}): cIoU {100 * res['cIoU']:.2f} "
          f"no-target {100 * res['no_target_acc']:.1f}%", flush=True)
    return res


def _seed_cache(run: Path, src: str, dst: str, split: str, coordinates: str) -> None:
    """Start `dst`'s cached eval from `src`'s when src's answers were decoded with `coordinates` and
    dst's were not (same model, same questions: only the masks may need redrawing)."""
    s, d = run / "eval" / f"{src}_{split}.json", run / "eval" / f"{dst}_{split}.json"

    def coords(p):
        return json.loads(p.read_text()).get("coordinates", "greedy") if p.exists() else None

    if coords(s) == coordinates and coords(d) != coordinates:
        d.write_text(s.read_text())


def _explicit(res: dict) -> dict:
    """Share of no-target queries answered with the explicit no-target answer + `none` bbox (the
    metric's no_target_acc counts any output without a grounded box, an unparseable one too)."""
    nt = [s for s in res.get("samples", []) if not s["gt"]]
    res["no_target_explicit"] = float(np.mean([s["status"] == "no_target" for s in nt])) if nt else float("nan")
    return res
