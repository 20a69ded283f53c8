"""`python -m training fresh-eval`: a model's quality on splits drawn after every decision was made.

A figure measured on the split that changes were compared on is optimistic (the previous embedded
model's 60.47 on its 60-image `test` split; a fresh draw of the same world scored about 5 points lower).
Headline figures therefore come from here: splits of at least 500 images, drawn with seeds that no
training or selection ever used, each reported with a 95% image-bootstrap interval.

The default splits are issue 27's: in distribution (random looks, grammar wording), held-out
wording, and the two held-out looks. `--splits NAME:STYLE:WORDING:SEED,...` draws others, e.g. the
old default look with the template questions the previous embedded model was trained on.
"""
from __future__ import annotations

import json
from pathlib import Path

from training.fresh_splits import MIN_IMAGES, draw_splits, fresh_table, intervals, parse_fresh_splits


def run_fresh_eval(s) -> dict:
    from training.report.cache import eval_cached
    from training.report.loaded_model import LoadedModel

    if s.images < MIN_IMAGES and not s.allow_small:
        raise ValueError(f"--images {s.images}: headline figures need at least {MIN_IMAGES} images per split "
                         "(--allow-small for a quick look that is not one)")
    out = Path(s.out)
    splits = parse_fresh_splits(s.splits)
    run = out / f"n{s.images}"  # data and cached evals per split size: a quick look never stands in for 500
    draw_splits(run / "data", splits, s.images, progress=not s.quiet)
    model = LoadedModel.of(Path(s.model))
    ev = dict(box_refine=model.manifest.segmenter.box_refine, coordinates=model.manifest.response.coordinates)
    rows = []
    for sp in splits:
        res = eval_cached(run, s.tag, model, run / "data", sp.name, **ev)
        rows.append((sp, intervals(res["samples"])))
    text = (f"Model `{s.model}` (fingerprint {model.fingerprint}), box_refine {ev['box_refine']}, coordinates "
            f"{ev['coordinates']}; 95% intervals resample images (2000 rounds).\n\n{fresh_table(rows)}\n")
    (out / f"{s.tag}.md").write_text(text)
    (out / f"{s.tag}.json").write_text(json.dumps({sp.name: {**iv, "split": sp.__dict__} for sp, iv in rows},
                                                  indent=1))
    print(text, flush=True)
    return {sp.name: iv for sp, iv in rows}
