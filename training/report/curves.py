"""The model card's training curves: PNGs drawn from the run's own logs, next to the card.

Only logs the run wrote are drawn (`training plot` on its stage dirs); a stage whose log is missing
is left out of its figure, and a figure with no log at all is not drawn, so the card never shows a
curve this run did not produce.
"""
from __future__ import annotations

from pathlib import Path

from training.errors import TrainingError
from training.layout import RunLayout
from training.plot import find_logs, plot_runs

# file name, caption, the run's stage dirs it draws (relative to the run dir)
FIGURES = (
    ("training_curves_grpo.png",
     "GRPO (the response stage's reinforcement learning): reward per term, KL to the SFT start, loss, learning "
     "rate, completion length and parse rate per step (faint: raw, solid: smoothed), and `val` cIoU at the SFT "
     "start, each checkpoint and the end (box_refine 0)", ("grpo",)),
    ("training_curves_sft.png",
     "Supervised stages: dense vision pretraining, coarse SFT, segmenter fine-tuning and response SFT, loss and "
     "learning rate per logged step", ("vision", "coarse", "seg", "sft")),
)


def draw_training_curves(run: Path, model_out: Path) -> list[tuple[str, str]]:
    """Draw each figure whose stages left logs; returns [(file name, caption)] of those drawn."""
    layout = RunLayout(run)
    drawn = []
    for name, caption, stages in FIGURES:
        dirs = [layout.root / s for s in stages if _has_log(layout.root / s)]
        if dirs:
            plot_runs(dirs, Path(model_out) / name)
            drawn.append((name, caption))
    return drawn


def _has_log(stage_dir: Path) -> bool:
    try:
        return bool(find_logs(stage_dir))
    except TrainingError:  # no such dir, or no log under it
        return False


def curves_section(drawn: list[tuple[str, str]]) -> str:
    if not drawn:
        return ""
    body = "\n\n".join(f"![{caption.split(':')[0]}]({name})\n\n{caption}." for name, caption in drawn)
    return ("## Training curves (`python -m training plot`, from this run's logs)\n\n" + body
            + "\n\nThe same scalars are in TensorBoard: `tensorboard --logdir runs/tiny-synth`.\n\n")
