"""`python -m training recipe tiny-synth-eval` (`run_report`) and `python -m training.report CHECK` (`main`).

The report holds one `LoadedModel` of the exported model for the whole run, so the manifest, the
weights' fingerprint, the pipeline and the coarse model are each loaded at most once however many
evaluations and diagnostics ask for them.
"""
from __future__ import annotations

import json
from pathlib import Path

from training.layout import RunLayout

from training.report.cache import (HELDOUT, _seed_cache, cached_diagnostic, cached_json, eval_cached, heldout_data,
                                   repeat_seeds)
from training.report.card import model_card
from training.report.curves import draw_training_curves
from training.report.diagnostics import afs_size, held_objects, image_reliance, measure_latency, segmenter_oracle
from training.report.loaded_model import LoadedModel
from training.report.statistics import METRICS



def _shipped_variants(run: Path, shipped: LoadedModel, data: Path) -> tuple[dict | None, dict | None]:
    """(box_refine 0, greedy coordinates) evals of the shipped model where its manifest uses others.

    They reuse its own cached answers where those were decoded the same way (a box_refine change only
    redraws masks), so each needs at most one new eval."""
    k, cm = shipped.manifest.segmenter.box_refine, shipped.manifest.response.coordinates
    norefine = greedy = None
    if cm != "greedy":
        _seed_cache(run, "final", "final_greedy", "test", "greedy")
        greedy = eval_cached(run, "final_greedy", shipped, data, "test", box_refine=k, coordinates="greedy")
    if k:
        _seed_cache(run, "final", "final_norefine", "test", cm)
        norefine = eval_cached(run, "final_norefine", shipped, data, "test", box_refine=0, coordinates=cm)
        _seed_cache(run, "final_norefine", "final", "test", cm)
    return norefine, greedy


def _model_runs(run: Path, shipped: LoadedModel) -> list[tuple[str, Path, str, bool, str]]:
    """(tag, model dir, split, no_descriptor, coordinates) of every card row that runs a model itself
    rather than redrawing masks from another row's answers."""
    ship, cm = shipped.dir, shipped.manifest.response.coordinates
    jobs = [("final", ship, split, False, cm) for split in HELDOUT]  # the headline rows first
    for prefix, base in [("", run), *((f"seed{sd}_", run / f"seed{sd}") for sd in repeat_seeds(run))]:
        jobs += [(prefix + name, stage_dir, "test", name.startswith("nodesc"), cm)
                 for name, stage_dir in RunLayout(base).response_stages().items()]
    jobs.append(("final_zerodesc", ship, "test", True, cm))
    if cm != "greedy":
        jobs.append(("final_greedy", ship, "test", False, "greedy"))
    return jobs


def _run_one(run: Path, data: Path, box_refine: int, job: tuple) -> None:
    import torch

    torch.set_num_threads(1)
    tag, model_dir, split, no_descriptor, coordinates = job
    eval_cached(run, tag, Path(model_dir), data, split, no_descriptor=no_descriptor, box_refine=box_refine,
                coordinates=coordinates)


def prefetch_evaluations(run: Path, shipped: LoadedModel, data: Path, workers: int) -> None:
    """Run the card's model evaluations in `workers` 1-thread processes, into the result cache the
    report then reads: the tiny models are too small for intra-op threads to scale, as in the
    recipe's parallel training lanes (Recipe.stage_parallel)."""
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = [j for j in _model_runs(run, shipped) if (j[1] / "earl.yaml").exists()]
    print(f"[report] {len(jobs)} evaluations in {workers} processes", flush=True)
    run_one = functools.partial(_run_one, run, data, shipped.manifest.segmenter.box_refine)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(run_one, jobs))


def _evaluations(run: Path, shipped: LoadedModel, data: Path) -> tuple[dict, dict[int, dict]]:
    """(results, repeats): every row of the card's tables, each at the shipped model's decoding."""
    norefine, greedy = _shipped_variants(run, shipped, data)
    ev = dict(box_refine=shipped.manifest.segmenter.box_refine, coordinates=shipped.manifest.response.coordinates)

    def response_stages(prefix: str, base: Path) -> dict:
        """`test` evals of both arms' response stages under `base` (the run dir, or a seed repeat's)."""
        return {name: eval_cached(run, prefix + name, stage_dir, data, "test", no_descriptor=name.startswith("nodesc"),
                                  **ev)
                for name, stage_dir in RunLayout(base).response_stages().items()}
    results = {
        **{f"final_{split}": eval_cached(run, "final", shipped, data, split, **ev) for split in HELDOUT},
        **{f"{name}_test": res for name, res in response_stages("", run).items()},
        "final_zerodesc_test": eval_cached(run, "final_zerodesc", shipped, data, "test", no_descriptor=True, **ev),
    }
    repeats = {sd: response_stages(f"seed{sd}_", run / f"seed{sd}") for sd in repeat_seeds(run)}
    if norefine:
        results["final_norefine_test"] = norefine
    if greedy:
        results["final_greedy_test"] = greedy
    return results, repeats


def _diagnostics(run: Path, shipped: LoadedModel, data: Path, skip_latency: bool) -> dict:
    """Diagnostics of the shipped model, each cached with the weights it was measured on; the latency."""
    fp = shipped.fingerprint

    def diagnostic(name: str, compute) -> dict:
        return cached_diagnostic(run / "eval" / f"{name}.json", fp, compute)

    def probe():
        from training.vision_pretrain import probe_model

        return probe_model(shipped.dir, "response")
    latency = ((cached_json(run / "eval" / "latency.json", fp) or {}) if skip_latency
               else diagnostic("latency", lambda: measure_latency(shipped, data)))
    diagnostic("oracle", lambda: {split: segmenter_oracle(shipped, data, split) for split in HELDOUT})
    diagnostic("image_reliance", lambda: image_reliance(shipped, data, "test"))
    diagnostic("held_objects", lambda: held_objects(shipped, data, "test"))
    diagnostic("vision_probe", probe)
    return latency


def _recipe_record(run: Path) -> dict:
    """recipe.json with the `select` stage's choice and scores, as the card reads them."""
    recipe = json.loads((run / "recipe.json").read_text()) if (run / "recipe.json").exists() else {}
    if (run / "selection.json").exists():
        recipe["selected"] = json.loads((run / "selection.json").read_text())["selected"]
        recipe["selection"] = json.loads((run / "selection.json").read_text())
    return recipe


def _ablation_record(run: Path) -> dict | None:
    """recipe_no-descriptor.json (the second command's record), with where it ran when that was noted."""
    abl_file = run / "recipe_no-descriptor.json"
    ablation = None
    if abl_file.exists():
        ablation = json.loads(abl_file.read_text())
        ablation.setdefault("where", "")
    where = run / "eval" / "ablation_where.txt"
    if ablation is not None and where.exists():
        ablation["where"] = where.read_text().strip()
    return ablation


def _quality_json(results: dict, repeats: dict[int, dict], latency: dict) -> dict:
    def brief(v):
        return {m: v.get(m) for m, _, _ in METRICS} | {"n": v.get("n")} if v else None
    summary = {k: brief(v) for k, v in results.items()}
    summary |= {f"seed{sd}_{k}_test": brief(v) for sd, r in repeats.items() for k, v in r.items()}
    return {"results": summary, "latency": latency}


def run_report(run: Path, model_out: Path, skip_latency: bool = False, workers: int = 1) -> dict:
    import torch

    torch.set_num_threads(2)
    data = heldout_data(run)
    shipped = LoadedModel(model_out)  # its manifest loads first thing: a model_out that is no model dir fails early
    if workers > 1:
        prefetch_evaluations(run, shipped, data, workers)
    results, repeats = _evaluations(run, shipped, data)
    latency = _diagnostics(run, shipped, data, skip_latency)
    curves = draw_training_curves(run, model_out)
    card = model_card(shipped, run, results, latency, _recipe_record(run), _ablation_record(run), repeats, curves)
    (model_out / "MODEL_CARD.md").write_text(card)
    (run / "eval" / "quality.json").write_text(json.dumps(_quality_json(results, repeats, latency), indent=1))
    print(card)
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m training.report image-reliance|held-objects|afs-size|segmenter-oracle --model M --data D
    --split S`, or
    `python -m training.report vision-probe --model M [--part coarse|response]`."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m training.report", description=main.__doc__)
    ap.add_argument("what", choices=("image-reliance", "held-objects", "afs-size", "segmenter-oracle", "vision-probe"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", help="IRGBench-layout data (every check but vision-probe)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--part", choices=("coarse", "response"), default="coarse",
                    help="vision-probe: which VLM's vision tower (fresh scenes, no --data needed)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    if args.what == "vision-probe":
        from training.vision_pretrain import probe_model

        print(json.dumps(probe_model(Path(args.model), args.part)))
        return 0
    if not args.data:
        ap.error(f"{args.what} needs --data")
    if args.what == "image-reliance":
        print(json.dumps(image_reliance(Path(args.model), Path(args.data), args.split)))
    elif args.what == "afs-size":
        print(json.dumps(afs_size(Path(args.model), Path(args.data), args.split)))
    elif args.what == "held-objects":
        print(json.dumps(held_objects(Path(args.model), Path(args.data), args.split)))
    else:
        segmenter_oracle(Path(args.model), Path(args.data), args.split)
    return 0
