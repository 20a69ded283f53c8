"""Where the tiny-synth recipe puts each stage in its run dir.

The recipe writes these folders and the report (and people rerunning a stage by hand) read them
back; spelling the names once keeps the two from drifting apart.

    OUT/data/            synthetic train + val scenes, corpus.txt
    OUT/data_segmenter/  default-look scenes the segmenter trains on
    OUT/heldout/         held-out evaluation scenes (written by `recipe tiny-synth-eval`)
    OUT/model0/          the random-weight tiny model dir
    OUT/vision/          after vision-pretrain
    OUT/coarse/          after sft-coarse; coarse/descriptors.safetensors
    OUT/seg/             after segmenter-ft
    OUT/stage1/          coarse model + fine-tuned segmenter: where both response arms start
    OUT/sft/  OUT/grpo/final/                   the shipped (AFS) arm
    OUT/sft_nodesc/  OUT/grpo_nodesc/final/     the no-descriptor ablation arm
    OUT/seed<S>/...      a training-seed repeat of both arms (same names below it)
    OUT/video/           the selected stage with the segmenter's video memory trained: what is exported
    OUT/logs/  OUT/eval/  OUT/selection.json  OUT/recipe*.json
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # data
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def segmenter_data(self) -> Path:
        return self.root / "data_segmenter"

    @property
    def heldout(self) -> Path:
        return self.root / "heldout"

    # shared stages
    @property
    def model0(self) -> Path:
        return self.root / "model0"

    @property
    def vision(self) -> Path:
        return self.root / "vision"

    @property
    def coarse(self) -> Path:
        return self.root / "coarse"

    @property
    def descriptors(self) -> Path:
        return self.coarse / "descriptors.safetensors"

    @property
    def seg(self) -> Path:
        return self.root / "seg"

    @property
    def stage1(self) -> Path:
        return self.root / "stage1"

    @property
    def video(self) -> Path:
        return self.root / "video"

    # response arms
    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def grpo(self) -> Path:
        """GRPO's output dir (log.jsonl, checkpoint-N/); the model is `grpo_final`."""
        return self.root / "grpo"

    @property
    def grpo_final(self) -> Path:
        return self.grpo / "final"

    @property
    def sft_nodesc(self) -> Path:
        return self.root / "sft_nodesc"

    @property
    def grpo_nodesc(self) -> Path:
        return self.root / "grpo_nodesc"

    @property
    def grpo_nodesc_final(self) -> Path:
        return self.grpo_nodesc / "final"

    def response_stages(self) -> dict[str, Path]:
        """The four response-stage model dirs by the names the report and selection use."""
        return {"sft": self.sft, "grpo": self.grpo_final, "nodesc_grpo": self.grpo_nodesc_final,
                "nodesc_sft": self.sft_nodesc}

    # seed repeats
    def seed(self, seed: int) -> "RunLayout":
        """The layout of `recipe tiny-synth --repeat-seed S`: both arms again under OUT/seed<S>/."""
        return RunLayout(self.root / f"seed{int(seed)}")

    def repeat_seeds(self) -> list[int]:
        """Training seeds of the repeats present in the run dir, ascending."""
        return sorted(int(d.name[4:]) for d in self.root.glob("seed*") if d.is_dir() and d.name[4:].isdigit())

    # bookkeeping
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    def recipe_state(self, ablation: str | None = None, repeat_seed: int | None = None) -> Path:
        """recipe.json of the main run; recipe_<ablation>.json / recipe_seed<S>.json of the later commands."""
        if ablation:
            return self.root / f"recipe_{ablation}.json"
        if repeat_seed is not None:
            return self.root / f"recipe_seed{int(repeat_seed)}.json"
        return self.root / "recipe.json"
