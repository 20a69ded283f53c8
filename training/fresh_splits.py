"""Issue 27's fresh evaluation splits and the statistics every headline figure carries.

Kept apart from the command (training/fresh_eval.py) so that the report can use the same splits and
intervals without importing the command that imports the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FreshSplit:
    name: str
    style: str
    wording: str
    seed: int


# seeds 2701-2704 were first drawn for this purpose; development uses seed 0 (train, val) and the
# recipe's report seeds 1-2: keep new decisions off these
FRESH_SPLITS = (FreshSplit("test", "random", "grammar", 2701), FreshSplit("test_wording", "random", "heldout", 2702),
                FreshSplit("test_dark", "dark", "grammar", 2703), FreshSplit("test_gloves", "gloves", "grammar", 2704))
MIN_IMAGES = 500
PARSED = ("ok", "no_target")  # earl_ros.model.prompts.ParsedResponse.ok


def parse_fresh_splits(spec: str | None) -> tuple[FreshSplit, ...]:
    """'NAME:STYLE:WORDING:SEED,...' -> splits; empty or None -> FRESH_SPLITS."""
    if not spec:
        return FRESH_SPLITS
    out = []
    for part in spec.split(","):
        bits = part.strip().split(":")
        if len(bits) != 4 or not bits[3].isdigit():
            raise ValueError(f"bad split {part!r}: expected NAME:STYLE:WORDING:SEED, e.g. test:random:grammar:2701")
        out.append(FreshSplit(bits[0], bits[1], bits[2], int(bits[3])))
    return tuple(out)


def draw_splits(root: Path, splits, images: int, progress: bool = True) -> None:
    """Write each split under `root` unless it is already there with `images` images (drawing is
    deterministic, so a present split is the same split)."""
    from training.data.synth import SynthConfig, generate

    for sp in splits:
        d = root / "dataset_split" / sp.name
        if d.is_dir() and len(list(d.glob("*.json"))) == images:
            continue
        generate(root, {sp.name: images}, seed=sp.seed, cfg=SynthConfig(style=sp.style, wording=sp.wording),
                 progress=progress)


def intervals(samples: list[dict], rounds: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """cIoU, no-target accuracy and parse rate, each with an image-bootstrap interval (an image's
    questions share one scene, so the image is the unit that is resampled)."""
    by_image: dict[str, list[dict]] = {}
    for r in samples:
        by_image.setdefault(r["image_id"], []).append(r)
    ids = sorted(by_image)
    per = np.array([[sum(r["inter"] for r in by_image[i]), sum(r["union"] for r in by_image[i]),
                     sum(1 for r in by_image[i] if not r["gt"] and not r["pred"]),
                     sum(1 for r in by_image[i] if not r["gt"]),
                     sum(1 for r in by_image[i] if r["status"] in PARSED), len(by_image[i])]
                    for i in ids], dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(ids), size=(rounds, len(ids)))
    sums = per[draws].sum(1)  # [rounds, 6]
    tot = per.sum(0)
    q = [(1 - level) / 2, (1 + level) / 2]

    def stat(num: int, den: int) -> list[float]:
        boot = sums[:, num] / np.maximum(sums[:, den], 1e-9)
        return [float(tot[num] / max(tot[den], 1e-9)), *map(float, np.quantile(boot, q))]
    return {"images": len(ids), "queries": int(tot[5]), "no_target_queries": int(tot[3]), "level": level,
            "cIoU": stat(0, 1), "no_target_acc": stat(2, 3), "parse_ok": stat(4, 5)}


def pct_interval(v: list[float]) -> str:
    """[estimate, low, high] as percent: '56.55 [55.11, 58.09]'."""
    return f"{100 * v[0]:.2f} [{100 * v[1]:.2f}, {100 * v[2]:.2f}]"


def _row(name: str, sp: FreshSplit, iv: dict) -> str:
    pct = pct_interval
    return (f"| {name} | {sp.style} | {sp.wording} | {sp.seed} | {iv['images']} | {iv['queries']} | {pct(iv['cIoU'])} | "
            f"{pct(iv['no_target_acc'])} | {pct(iv['parse_ok'])} |")


def fresh_table(rows: list[tuple[FreshSplit, dict]]) -> str:
    head = ("| split | look | wording | seed | images | queries | cIoU [95%] | no-target acc. % [95%] | "
            "parseable % [95%] |\n|---|---|---|---:|---:|---:|---|---|---|")
    return "\n".join([head] + [_row(sp.name, sp, iv) for sp, iv in rows])
