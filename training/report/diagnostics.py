"""Measurements that run the shipped model: query latency, how much the coarse model looks at the
frame, what its descriptions name, the AFS modulation's size and the segmenter's ceiling.

Each takes a `LoadedModel` (the report passes the one it holds, so one report loads each part once)
or a model dir path (`python -m training.report ...`, the tests).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from training.report.loaded_model import LoadedModel


def measure_latency(model: LoadedModel | Path, data: Path, split: str = "test", n: int = 40) -> dict:
    """Median / p90 of one query (response generate + parse + segmenter), stage 1 precomputed."""
    import torch

    from training.data import IRGBench

    torch.set_num_threads(2)
    pipe = LoadedModel.of(model).pipeline
    ds = IRGBench(data, split)
    samples = ds.samples[:n]
    inter = {}
    tot, resp, seg = [], [], []
    pipe.answer(ds.image(samples[0].image_id), samples[0].query)  # warm-up
    for s in samples:
        img = ds.image(s.image_id)
        if s.image_id not in inter:
            inter[s.image_id] = pipe.describe(img)
        t = time.perf_counter()
        g = pipe.answer(img, s.query, inter[s.image_id])
        tot.append((time.perf_counter() - t) * 1000)
        resp.append(g.timings_ms["response"])
        seg.append(g.timings_ms["segment"])
    t = time.perf_counter()
    for iid in list(inter)[:10]:
        pipe.describe(ds.image(iid))
    desc_ms = (time.perf_counter() - t) * 1000 / min(10, len(inter))
    return {"queries": len(tot), "median_ms": float(np.median(tot)), "p90_ms": float(np.percentile(tot, 90)),
            "max_ms": float(np.max(tot)), "response_median_ms": float(np.median(resp)),
            "segment_median_ms": float(np.median(seg)), "describe_mean_ms": desc_ms, "threads": 2,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def image_reliance(model: LoadedModel | Path, data: Path, split: str = "test", n: int = 60, batch: int = 12) -> dict:
    """Does the coarse model look at the frame? Caption NLL per token with the right image vs with
    the next image's (same captions). Equal losses mean the descriptions come from the language
    prior alone (what the first embedded model did before vision pretraining)."""
    import torch

    from training.data import IRGBench

    model = LoadedModel.of(model)
    cm = model.coarse
    ds = IRGBench(data, split, image_limit=n)
    ids = ds.image_ids
    imgs = [ds.image(i) for i in ids]
    caps = [ds.captions[i] for i in ids]
    shuffled = imgs[1:] + imgs[:1]

    def nll(images):
        tot, cnt = 0.0, 0
        for k in range(0, len(ids), batch):
            b = cm.prepare(images[k:k + batch], caps[k:k + batch])
            with torch.no_grad():
                logits = cm.model(**b.inputs, use_cache=False).logits[:, :-1].float()
            lab = b.labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            tot, cnt = tot + float(loss), cnt + int((lab != -100).sum())
        return tot / max(cnt, 1)

    matched, other = nll(imgs), nll(shuffled)
    return {"model": str(model.dir), "split": split, "images": len(ids), "caption_nll_matched": matched,
            "caption_nll_other_image": other, "gap": other - matched}


def held_object_pattern():
    """Matches "<colour> <category> with the <side> hand" in a synthetic caption or a description."""
    import re

    from training.data.synth import CATEGORIES, COLOURS

    alt = lambda words: "|".join(sorted(map(re.escape, words), key=len, reverse=True))  # noqa: E731
    return re.compile(rf"\b({alt(COLOURS)}) ({alt(CATEGORIES)}) with the (left|right) hand")


def held_objects(model: LoadedModel | Path, data: Path, split: str = "test", n: int | None = None) -> dict:
    """What the descriptor can carry: for each hand the caption says holds or touches an object, does
    the coarse model's own description name that object's category (and colour) for the same hand?
    Compared with the response model's object answers, it tells whether stage 1 knows anything the
    response model does not."""
    from training.data import IRGBench

    model = LoadedModel.of(model)
    cm = model.coarse
    ds = IRGBench(data, split, image_limit=n)
    pat = held_object_pattern()
    held = category = both = 0
    for iid in ds.image_ids:
        truth = {side: (col, cat) for col, cat, side in pat.findall(ds.captions[iid])}
        said = {side: (col, cat) for col, cat, side in pat.findall(cm.describe(ds.image(iid)).text)}
        for side, (col, cat) in truth.items():
            held += 1
            category += said.get(side, (None, None))[1] == cat
            both += said.get(side) == (col, cat)
    return {"model": str(model.dir), "split": split, "images": len(ds.image_ids), "held_objects": held,
            "category_right": category / max(held, 1), "category_and_colour_right": both / max(held, 1)}


def afs_size(model: LoadedModel | Path, data: Path, split: str = "test", n: int = 20) -> dict:
    """How large the AFS modulation a model adds to every text token is, next to the token embeddings
    themselves: a modulation several times their size drowns the words in a per-frame offset."""
    from training.data import IRGBench

    model = LoadedModel.of(model)
    pipe = model.pipeline
    rm = pipe.response
    ds = IRGBench(data, split, image_limit=n)
    first_query = {}
    for smp in ds.samples:
        first_query.setdefault(smp.image_id, smp.query)
    norms = []
    for iid, query in first_query.items():
        img = ds.image(iid)
        desc = pipe.describe(img).descriptor
        rm.logits(img, query, desc)  # the prefill computes this prompt's modulation
        norms.append(float(rm.injector.last_delta.norm()))
    tokens = rm.model.get_input_embeddings().weight.detach().float().norm(dim=1)
    return {"model": str(model.dir), "split": split, "frames": len(norms), "alpha": rm.injector.alpha,
            "modulation_norm_mean": float(np.mean(norms)), "token_embedding_norm_mean": float(tokens.mean())}


def segmenter_oracle(model: LoadedModel | Path, data: Path, split: str) -> dict:
    """The segmenter's cIoU given ground-truth boxes (`python -m training segmenter-eval`).

    It loads the segmenter itself (only the segmenter: the VLMs are not needed for GT boxes)."""
    from training.segmenter_ft import segmenter_eval
    from training.settings import SegmenterEvalSettings

    return segmenter_eval(SegmenterEvalSettings(model=str(LoadedModel.of(model).dir), data=str(data), split=split,
                                                threads=2))
