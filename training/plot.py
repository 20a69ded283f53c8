"""`python -m training plot RUN_DIR [RUN_DIR ...] [--out PNG]`: the training curves of one or more runs.

Reads every training log (`log.jsonl`, `<stage>_log.jsonl`, `val_log.jsonl`) under each RUN_DIR (a stage's output dir, or a recipe root holding several
stages) and draws the scalars people watch while RL-training a VLM: reward per term (raw and
smoothed), KL, loss, learning rate, completion length, parse rate and validation cIoU. Runs are
overlaid with their paths as labels, so seeds and stages can be compared side by side. A panel
with no data in any run is left out. matplotlib only (no display needed: the Agg backend).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from training.errors import TrainingError
from training.tracking import scalars

# (title, predicate on a log key); the first panels are the ones a GRPO run is judged by
PANELS: list[tuple[str, callable]] = [
    ("reward (per term)", lambda k: k.startswith("reward/") and not k.endswith("_std")),
    ("KL to the reference", lambda k: k == "kl"),
    ("loss", lambda k: k == "loss"),
    ("learning rate", lambda k: k == "lr"),
    ("completion length (tokens)", lambda k: k == "completion_len"),
    ("parseable outputs", lambda k: k == "parse_ok"),
    ("validation cIoU", lambda k: "ciou" in k.lower() and "val" in k.lower()),
    ("segmenter IoU (training boxes, low-res)", lambda k: k == "lowres_iou"),
]
FIGSIZE, DPI = (13.0, 8.0), 100  # 1300 x 800 px: readable on a laptop screen


def find_logs(run: Path) -> list[Path]:
    run = Path(run)
    if run.is_file():
        return [run]
    if not run.is_dir():
        raise TrainingError(f"{run}: no such run dir")
    logs = sorted(p for p in run.rglob("*log.jsonl") if "checkpoint-" not in str(p.parent))
    if not logs:
        raise TrainingError(f"no training log (*log.jsonl) under {run}; train with --out {run} first")
    return logs


def read_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """key -> [(step, value)] for the scalars TensorBoard gets (training/tracking.py), a record
    without a step at the last step seen; a line cut off by a killed run is skipped."""
    series: dict[str, list[tuple[float, float]]] = {}
    step = 0.0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec.get("step"), (int, float)):
            step = float(rec["step"])
        for k, v in scalars(rec).items():
            series.setdefault(k, []).append((step, v))
    return series


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing, so early points are not pulled to 0."""
    out, acc = [], 0.0
    for i, v in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** i))
    return out


def _label(log: Path, roots: list[Path]) -> str:
    for r in roots:
        try:
            rel = log.parent.relative_to(r)
            return f"{r.name}/{rel}" if str(rel) != "." else r.name
        except ValueError:
            continue
    return str(log.parent)


def plot_runs(runs: list[Path], out: Path, smoothing: float = 0.8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roots = [Path(r) for r in runs]
    curves = [(_label(log, roots), read_log(log)) for r in roots for log in find_logs(r)]
    panels = [(t, pred) for t, pred in PANELS if any(pred(k) for _, s in curves for k in s)]
    if not panels:
        raise TrainingError(f"no plottable scalars in {', '.join(map(str, runs))}")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=FIGSIZE, dpi=DPI, squeeze=False)
    for ax, (title, pred) in zip(axes.flat, panels):
        for label, series in curves:
            for key in sorted(k for k in series if pred(k)):
                xs, ys = zip(*series[key])
                name = label if len(curves) > 1 else ""
                name = f"{name} {key}".strip() if sum(pred(k) for k in series) > 1 else (name or key)
                line, = ax.plot(xs, ys, alpha=0.3 if len(ys) > 5 else 1.0, linewidth=1)
                if len(ys) > 5:
                    ax.plot(xs, smooth(list(ys), smoothing), color=line.get_color(), linewidth=1.8, label=name)
                else:
                    line.set_label(name)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    from training.errors import run_reporting_errors
    from training.settings import PlotSettings, build_parser, from_namespace, parse_namespace

    ap = build_parser(PlotSettings, "python -m training plot", __doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run dirs (or log files) to draw, overlaid")

    def draw() -> int:
        ns = parse_namespace(ap, argv)
        s = from_namespace(PlotSettings, ns)
        runs = [*ns.run_dirs, *s.runs]
        if not runs:
            ap.error("give at least one RUN_DIR")
        first = Path(runs[0])
        out = Path(s.out) if s.out else (first.parent if first.is_file() else first) / "curves.png"
        print(plot_runs([Path(r) for r in runs], out, s.smoothing))
        return 0
    return run_reporting_errors(ap.prog, draw)
