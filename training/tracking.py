"""TensorBoard mirror of a training log: every numeric scalar of `log.jsonl`, under OUT/tb.

The JSON log stays the record of a run (the report and `training plot` read it); TensorBoard is
for watching a run while it goes and comparing runs: the recipe writes each stage under one root,
so `tensorboard --logdir runs/tiny-synth` shows every stage and seed side by side. Keys keep their
names (GRPO's `reward/format` lands in TensorBoard's "reward" group). torch.utils.tensorboard,
not accelerate's tracker: the single-process commands have no Accelerator to hang one on.
"""
from __future__ import annotations

import math
from pathlib import Path

REPORT_TO = ("auto", "tensorboard", "none")
SKIPPED_KEYS = ("step", "steps", "time")


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_report_to(report_to: str) -> str:
    """`auto` (the default) is `tensorboard` when tensorboard is installed (the `train` extra), so a
    plain run is watchable, and `none` where it is not, so inference-only installs can still train."""
    if report_to not in REPORT_TO:
        raise ValueError(f"--report-to {report_to!r}: expected one of {', '.join(REPORT_TO)}")
    if report_to == "auto":
        return "tensorboard" if tensorboard_available() else "none"
    return report_to


def tensorboard_dir(out: str | Path, report_to: str) -> Path | None:
    """Where a command writing to OUT keeps its events (OUT/tb), or None when it reports to nothing."""
    return Path(out) / "tb" if resolve_report_to(report_to) == "tensorboard" else None


def scalars(rec: dict, prefix: str = "") -> dict[str, float]:
    """The record's finite numeric scalars worth a curve, a nested dict's as `key/sub` (e.g.
    vision-pretrain's `val_after/class_acc`); booleans, strings and bookkeeping keys left out."""
    out = {}
    for k, v in rec.items():
        if not prefix and k in SKIPPED_KEYS:
            continue
        if isinstance(v, dict):
            out.update(scalars(v, f"{prefix}{k}/"))
        elif not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v):
            out[prefix + k] = float(v)
    return out


class TensorBoardMirror:
    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        """purge_step: a run resumed from a checkpoint at step N passes N + 1, so the events an
        interrupted run wrote after its checkpoint are dropped instead of drawn twice."""
        if not tensorboard_available():
            raise ImportError("--report-to tensorboard needs the tensorboard package: pip install -e '.[train]' "
                              "(or pass --report-to none)")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        self._step = 0 if purge_step is None else purge_step - 1

    def log(self, rec: dict) -> None:
        """One record at its `step` (a record without one, e.g. a final evaluation, at the last step seen)."""
        if isinstance(rec.get("step"), (int, float)) and not isinstance(rec.get("step"), bool):
            self._step = int(rec["step"])
        step = self._step
        for k, v in scalars(rec).items():
            self.writer.add_scalar(k, v, global_step=step, walltime=rec.get("time"))
        self.writer.flush()  # a few records a second at most: watchers see each one at once

    def close(self) -> None:
        self.writer.close()
