"""`python -m training recipe tiny-synth-eval`: held-out evaluation, ablation table and model card.

After `python -m training recipe tiny-synth` (and, for the no-descriptor row, its ablation arm
`--ablation no-descriptor`), this:
  1. writes held-out synthetic splits that share nothing with training: `test` (default style,
     seed 1) and `test_dark` (style dark = out of distribution, seed 2) under RUN/heldout;
  2. runs `python -m training eval` (training.evaluate.evaluate: the full inference pipeline, the
     fine-tuned segmenter makes the masks) on them for the exported model and on `test` for the
     ablation arms (SFT only; no descriptor SFT+GRPO and SFT only, evaluated with --no-descriptor);
  3. measures the query latency (response generate + segmenter) of the exported model;
  4. writes RUN/eval/quality.md and MODEL_OUT/MODEL_CARD.md.
Each eval JSON is cached in RUN/eval/ (delete it to recompute).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

HELDOUT = {"test": {"style": "default", "seed": 1, "count": 60},
           "test_dark": {"style": "dark", "seed": 2, "count": 40}}

METRICS = [("cIoU", "cIoU", 100), ("gIoU", "gIoU", 100), ("sample_mIoU", "sample mIoU", 100),
           ("no_target_acc", "no-target acc. %", 100), ("no_target_explicit", "explicit no-target %", 100),
           ("answer_METEOR", "answer METEOR", 1),
           ("answer_CIDEr", "answer CIDEr", 1), ("description_METEOR", "description METEOR", 1),
           ("parse_ok", "parseable %", 100)]


def heldout_data(run: Path) -> Path:
    from training.data.synth import SynthConfig, generate

    root = run / "heldout"
    for split, spec in HELDOUT.items():
        d = root / "dataset_split" / split
        if d.is_dir() and len(list(d.glob("*.json"))) == spec["count"]:
            continue
        generate(root, {split: spec["count"]}, seed=spec["seed"], cfg=SynthConfig(style=spec["style"]),
                 progress=False)
    return root


def eval_cached(run: Path, tag: str, model: Path, data: Path, split: str, no_descriptor: bool = False) -> dict | None:
    from training.evaluate import evaluate

    out = run / "eval" / f"{tag}_{split}.json"
    if out.exists():
        return _explicit(json.loads(out.read_text()))
    if not (Path(model) / "earl.yaml").exists():
        print(f"[report] {tag}: {model} missing, row skipped", flush=True)
        return None
    t = time.perf_counter()
    res = evaluate(model, data, split, progress=False, no_descriptor=no_descriptor)
    res["eval_seconds"] = time.perf_counter() - t
    res["no_descriptor"] = no_descriptor
    _explicit(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"[report] {tag} on {split}: cIoU {100 * res['cIoU']:.2f} no-target {100 * res['no_target_acc']:.1f}% "
          f"({res['eval_seconds']:.0f} s)", flush=True)
    return res


def _explicit(res: dict) -> dict:
    """Share of no-target queries answered with the explicit no-target answer + `none` bbox (the
    metric's no_target_acc counts any output without a grounded box, an unparseable one too)."""
    nt = [s for s in res.get("samples", []) if not s["gt"]]
    res["no_target_explicit"] = float(np.mean([s["status"] == "no_target" for s in nt])) if nt else float("nan")
    return res


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


def measure_latency(model_dir: Path, data: Path, split: str = "test", n: int = 40) -> dict:
    """Median / p90 of one query (response generate + parse + segmenter), stage 1 precomputed."""
    import torch

    from earl_ros.model.pipeline import EarlPipeline
    from training.data import IRGBench

    torch.set_num_threads(2)
    pipe = EarlPipeline.from_dir(model_dir)
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
            "segment_median_ms": float(np.median(seg)), "describe_mean_ms": desc_ms, "threads": 2}


def _params(path: Path) -> int:
    from safetensors import safe_open

    n = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n += int(np.prod(st.get_slice(k).get_shape()))
    return n


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def model_card(model_out: Path, run: Path, results: dict, latency: dict, recipe: dict, ablation: dict | None) -> str:
    import yaml

    cfg = recipe.get("config", {})
    times = recipe.get("stage_seconds", {})
    man = yaml.safe_load((model_out / "earl.yaml").read_text())
    parts = {k: _params(model_out / k) for k in ("coarse", "response", "afs", "sam")}
    size_mb = _dir_bytes(model_out) / 1e6
    t = cfg.get("tiny", {})
    tot_min = sum(times.values()) / 60
    R = results
    sel = recipe.get("selected") or "grpo"
    main_rows = [("earl-tiny-synth (shipped) / test (in-distribution)", R.get("final_test")),
                 ("earl-tiny-synth (shipped) / test_dark (out-of-distribution)", R.get("final_test_dark"))]
    abl_rows = [("SFT + GRPO, AFS" + (" (shipped)" if sel == "grpo" else ""), R.get("grpo_test")),
                ("SFT only, AFS" + (" (shipped)" if sel == "sft" else ""), R.get("sft_test")),
                ("SFT + GRPO, no descriptor (AFS off)", R.get("nodesc_grpo_test")),
                ("SFT only, no descriptor (AFS off)", R.get("nodesc_sft_test")),
                ("diagnostic: shipped model, descriptor zeroed at inference only", R.get("final_zerodesc_test"))]
    stage_lines = "\n".join(f"| {k} | {v / 60:.1f} |" for k, v in times.items())
    abl_note = ("\nThe no-descriptor arm (rows 3-4) has not been trained for this card: run "
                "`python -m training recipe tiny-synth --resume --ablation no-descriptor` (same data, stages, steps "
                "and hyper-parameters, zero descriptors) and re-run `tiny-synth-eval` to fill them. The last row "
                "is not that ablation: it only shows how much the trained model relies on its descriptor.\n")
    if ablation:
        abl_note = ("\nThe no-descriptor arm was trained with the same data, stages, steps, batch sizes and "
                    "hyper-parameters (`python -m training recipe tiny-synth --resume --ablation no-descriptor`), "
                    f"{ablation.get('where', '')}.\n")
    ft = R.get("final_test") or {}
    gt_ = R.get("grpo_test") or {}
    sft = R.get("sft_test") or {}
    nd = R.get("nodesc_grpo_test") or {}
    def ok(b):
        return "met" if b else "**not met**"
    targets = [
        f"- in-distribution cIoU >= 60: {_fmt(ft, 'cIoU', 100)} ({ok(ft.get('cIoU', 0) >= 0.60)})",
        f"- no-target accuracy >= 90%: {_fmt(ft, 'no_target_acc', 100)} ({ok(ft.get('no_target_acc', 0) >= 0.90)})",
        f"- GRPO beats SFT-only on cIoU: {_fmt(gt_, 'cIoU', 100)} vs {_fmt(sft, 'cIoU', 100)} "
        f"({ok(gt_.get('cIoU', 0) > sft.get('cIoU', 1))})",
        f"- AFS beats no-descriptor on cIoU: {_fmt(ft, 'cIoU', 100)} vs {_fmt(nd, 'cIoU', 100)} "
        f"({ok(ft.get('cIoU', 0) > nd.get('cIoU', 1)) if nd else 'not measured'})",
    ]
    orc_file = run / "eval" / "oracle.json"
    orc = json.loads(orc_file.read_text()) if orc_file.exists() else {}
    sel_scores = (recipe.get("selection") or {}).get("scores", {})
    findings = []
    if sel_scores:
        findings.append(
            f"- **Shipped stage: {sel}.** The recipe runs SFT then GRPO and exports the stage with the higher "
            f"validation cIoU (seed-0 `val`, {sel_scores.get('sft', {}).get('n', '?')} queries): SFT "
            f"{100 * sel_scores['sft']['cIoU']:.2f} vs SFT + GRPO {100 * sel_scores['grpo']['cIoU']:.2f}. GRPO raised "
            "the mean sampled reward during training (total about 2.1 -> 2.4, R_g about 0.35 -> 0.5, "
            "`runs/tiny-synth/grpo/log.jsonl`) but made the greedy answers worse on held-out data (fewer "
            "no-target answers, lower cIoU). The exported LoRA-merged model and the unmerged checkpoint give the "
            "same numbers, so this is the training, not the export.")
    if orc.get("test"):
        findings.append(
            f"- **The segmenter caps cIoU near 50.** Given the ground-truth boxes, the fine-tuned tiny SAM reaches "
            f"cIoU {100 * orc['test']['segmenter_gt_box_cIoU']:.1f} on `test` "
            f"({100 * orc['test_dark']['segmenter_gt_box_cIoU']:.1f} on `test_dark`); the filled GT boxes "
            f"themselves score {100 * orc['test']['filled_gt_box_cIoU']:.1f}. The 60 cIoU target is out of reach "
            "for this segmenter even with perfect boxes; a longer run (4000 steps, lr 3e-3, 4 boxes per image) "
            "scored lower (41), so more of the same is not the fix (a finer image embedding is the next thing to try).")
    findings.append(
        "- **Object categories are not recognised.** Hand queries are answered with the right entity almost "
        "always (IoU limited by box and mask quality), but for object queries the response model mostly names "
        "the wrong category; the metric's name matching then counts the mask as a miss. The coarse model's "
        "descriptions (description METEOR above) do carry categories, but with AFS alpha 0.1 the response "
        "model barely uses the descriptor (zeroing it at inference changes cIoU little: last ablation row).")
    findings.append(
        "- **No-descriptor ablation not trained.** A same-compute arm needs another ~45 CPU minutes; an attempt "
        "on a GPU machine ran at 0.14 s/step (slower than budgeted) and its loss became NaN at step ~290. The "
        "AFS injector now runs the AFS only on rows with a non-zero descriptor (a zero row can no longer reach "
        "the AFS gradients); whether that was the NaN's cause was not established.")
    findings = "\n".join(findings)
    return f"""# earl-tiny-synth: the embedded default EARL model

A small EARL (coarse VLM + response VLM with AFS + promptable segmenter) trained from scratch on CPU
by this repository's own training package on its own procedural egocentric hand-object scenes. It is
the model `earl-infer`, `earl-launch` / the ROS node and `earl-demo` load when no model is given. It
knows the synthetic world only (see "What it can and cannot do"). It misses the issue's quality
targets (see "Findings").

## Reproduce

```bash
python -m training recipe tiny-synth --out runs/tiny-synth --model-out models/earl-tiny-synth   # train + export
python -m training recipe tiny-synth --out runs/tiny-synth --resume --ablation no-descriptor    # ablation arm (optional)
python -m training recipe tiny-synth-eval --out runs/tiny-synth --model-out models/earl-tiny-synth  # tables + this card
```
Single evaluations (the numbers below):
```bash
python -m training eval --model models/earl-tiny-synth --data runs/tiny-synth/heldout --split test
python -m training eval --model models/earl-tiny-synth --data runs/tiny-synth/heldout --split test_dark
python -m training eval --model runs/tiny-synth/sft --data runs/tiny-synth/heldout --split test
python -m training eval --model runs/tiny-synth/grpo_nodesc/final --data runs/tiny-synth/heldout --split test --no-descriptor
```
Each stage is an ordinary `python -m training ...` command; the recipe prints them and stores them
with the configuration in `runs/tiny-synth/recipe.json`. Stages (2 CPU threads,
`torch.set_num_threads(2)`):

| stage | minutes |
|---|---|
{stage_lines}
| **total** | **{tot_min:.1f}** |

## Data

`python -m training synth` scenes, {cfg.get('synth', {}).get('size', '256x192')} px: training split
`{cfg.get('synth', {}).get('splits', '')}` (seed {cfg.get('synth', {}).get('seed', 0)}, default style;
about 8 queries per image over the four query kinds: hand, object of hand, hands + objects, no
target). Held-out evaluation splits use other seeds and are written separately
(`runs/tiny-synth/heldout`): `test` = {HELDOUT['test']['count']} images, default style, seed
{HELDOUT['test']['seed']} (in distribution); `test_dark` = {HELDOUT['test_dark']['count']} images,
style `dark` (low light, blur, noise), seed {HELDOUT['test_dark']['seed']} (out of distribution).

## Model

| part | what | parameters |
|---|---|---|
| coarse | Qwen2.5-VL architecture, {t.get('num_layers')} layers, hidden {t.get('coarse_hidden')}, vision tower 2 x 32 wide, BPE vocabulary {t.get('vocab_size')} trained on the synthetic corpus | {parts['coarse']:,} |
| response | same architecture, {t.get('num_layers')} layers, hidden {t.get('response_hidden')} (weights of the selected stage: {sel}) | {parts['response']:,} |
| afs | AFS {t.get('coarse_hidden')} -> {t.get('response_hidden')}, hidden 64, alpha {man['response']['afs_alpha']} | {parts['afs']:,} |
| sam | SAM architecture, 2-layer 64-wide ViT at 256 px, fine-tuned box -> mask on the synthetic masks | {parts['sam']:,} |

Directory size: {size_mb:.1f} MB (safetensors + configs + tokenizer; `earl.yaml` paths are relative).
Input frames are resized to at most 224 x 224 px for the VLMs (63 image tokens for 256 x 192).
Descriptor pooling: mean of the coarse model's last hidden states over its generated description.

Training: stage-1 SFT of the coarse model (vision tower trained too: it starts from random weights);
descriptors of its own generated descriptions; segmenter fine-tuned with jittered GT boxes (so it
tolerates rough boxes); response SFT with the descriptor injected by AFS; GRPO (G = 4, R_f + R_a + R_g
with R_g through the fine-tuned segmenter, strict grounding, LoRA r16 + AFS, beta 0.01). Full
configuration in `earl.yaml` (`training:`) and `runs/tiny-synth/recipe.json`.

## Quality (`python -m training eval`, masks from the fine-tuned segmenter)

cIoU = cumulative intersection / cumulative union (the paper's number); gIoU = mean per-sample IoU;
sample mIoU = the public eval code's metric; no-target accuracy = share of no-target queries for which
no entity was grounded (training/metrics.py), explicit no-target = share answered exactly
`<answer>There is no suitable referring result.</answer><bbox>none</bbox>`. METEOR/CIDEr are on the
template answer sentence rebuilt from the entity list, and on the stage-1 description vs the caption.

{table(main_rows)}

### Ablations (in-distribution `test`, same data and compute)

{table(abl_rows)}
{abl_note}
Targets of issue 5:
{chr(10).join(targets)}

## Latency (this machine, 2 CPU threads)

One query (response generate + parse + segmenter, stage-1 descriptor already computed, as on the
robot): median {latency.get('median_ms', float('nan')):.0f} ms, p90 {latency.get('p90_ms', float('nan')):.0f} ms,
max {latency.get('max_ms', float('nan')):.0f} ms over {latency.get('queries', 0)} test queries (response
{latency.get('response_median_ms', float('nan')):.0f} ms, segmenter {latency.get('segment_median_ms', float('nan')):.0f} ms
median). Stage 1 (background description + descriptor): {latency.get('describe_mean_ms', float('nan')):.0f} ms per frame.

## Findings (why the targets are missed)

{findings}

## What it can and cannot do

It was trained only on procedurally drawn scenes (flat-coloured forearms entering from the lower
edge, ten object categories, a fixed question set). On such frames it names the hands and objects
the query refers to, says "no suitable referring result" when nothing fits, and gives boxes that the
fine-tuned segmenter turns into masks. It is not a perception model for real camera images: on
real egocentric video its answers and masks are not meaningful. For real use, point `earl.yaml` at
Qwen2.5-VL-3B/7B and SAM 2 checkpoints (README, docs/training.md).
"""


def run_report(run: Path, model_out: Path, skip_latency: bool = False) -> dict:
    import torch

    torch.set_num_threads(2)
    data = heldout_data(run)
    results = {
        "final_test": eval_cached(run, "final", model_out, data, "test"),
        "final_test_dark": eval_cached(run, "final", model_out, data, "test_dark"),
        "sft_test": eval_cached(run, "sft", run / "sft", data, "test"),
        "grpo_test": eval_cached(run, "grpo", run / "grpo" / "final", data, "test"),
        "nodesc_grpo_test": eval_cached(run, "nodesc_grpo", run / "grpo_nodesc" / "final", data, "test",
                                        no_descriptor=True),
        "nodesc_sft_test": eval_cached(run, "nodesc_sft", run / "sft_nodesc", data, "test", no_descriptor=True),
        "final_zerodesc_test": eval_cached(run, "final_zerodesc", model_out, data, "test", no_descriptor=True),
    }
    lat_file = run / "eval" / "latency.json"
    if lat_file.exists():
        latency = json.loads(lat_file.read_text())
    elif skip_latency:
        latency = {}
    else:
        latency = measure_latency(model_out, data)
        lat_file.write_text(json.dumps(latency, indent=1))
    recipe = json.loads((run / "recipe.json").read_text()) if (run / "recipe.json").exists() else {}
    if (run / "selection.json").exists():
        recipe["selected"] = json.loads((run / "selection.json").read_text())["selected"]
        recipe["selection"] = json.loads((run / "selection.json").read_text())
    abl_file = run / "recipe_no-descriptor.json"
    ablation = None
    if abl_file.exists():
        ablation = json.loads(abl_file.read_text())
        ablation.setdefault("where", "")
    where = run / "eval" / "ablation_where.txt"
    if ablation is not None and where.exists():
        ablation["where"] = where.read_text().strip()
    card = model_card(model_out, run, results, latency, recipe, ablation)
    (model_out / "MODEL_CARD.md").write_text(card)
    summary = {k: ({m: v.get(m) for m, _, _ in METRICS} | {"n": v.get("n")} if v else None) for k, v in results.items()}
    (run / "eval" / "quality.json").write_text(json.dumps({"results": summary, "latency": latency}, indent=1))
    print(card)
    return results
