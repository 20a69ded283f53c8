"""The training commands: name, settings class, required options and the function that runs it.

Both the CLI (`python -m training CMD`) and the recipe run commands through this table, so a stage
the recipe runs in-process is the same call as the command a user types. Runners import their
module on first use: most commands load torch and transformers, which `--help` should not wait for.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from training.errors import SettingsError
from training.settings import (DescriptorsSettings, EvalSettings, ExportSettings, FreshEvalSettings, GrpoSettings, SegmenterEvalSettings,
                               SegmenterFtSettings, SftCoarseSettings, SftResponseSettings, SynthSettings,
                               VideoMemorySettings, VisionPretrainSettings, to_argv)


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    settings: type
    required: tuple[str, ...]
    runner: Callable[[Any], Any]

    def missing(self, settings) -> list[str]:
        """The required options `settings` leaves empty, spelled as flags."""
        return [f"--{k.replace('_', '-')}" for k in self.required if getattr(settings, k) in (None, "")]

    def run(self, settings):
        if not isinstance(settings, self.settings):
            raise TypeError(f"{self.name} takes {self.settings.__name__}, got {type(settings).__name__}")
        missing = self.missing(settings)
        if missing:
            raise SettingsError(f"{self.name}: missing {', '.join(missing)}")
        return self.runner(settings)

    def argv(self, settings) -> list[str]:
        """`python -m training` arguments that run this command with `settings`."""
        return [self.name, *to_argv(settings)]


def run_synth(s: SynthSettings) -> dict:
    from training.data.synth import SynthConfig, generate, parse_splits, write_corpus

    w, _, h = s.size.lower().partition("x")
    ids = generate(s.out, parse_splits(s.splits), seed=s.seed,
                   cfg=SynthConfig(width=int(w), height=int(h), style=s.style, wording=s.wording),
                   progress=not s.quiet,
                   workers=s.workers)
    write_corpus(s.out)
    res = {"out": str(s.out), "style": s.style, "wording": s.wording, **{k: len(v) for k, v in ids.items()}}
    print(json.dumps(res))
    return res


def _vision_pretrain(s):
    from training.vision_pretrain import vision_pretrain

    return vision_pretrain(s)


def _sft_coarse(s):
    from training.sft import sft_coarse

    return sft_coarse(s)


def _descriptors(s):
    from training.sft import extract_descriptors

    return extract_descriptors(s)


def _video_memory(s):
    from training.video_memory import video_memory

    return video_memory(s)


def _segmenter_ft(s):
    from training.segmenter_ft import segmenter_ft

    return segmenter_ft(s)


def _segmenter_eval(s):
    from training.segmenter_ft import segmenter_eval

    return segmenter_eval(s)


def _sft_response(s):
    from training.sft import sft_response

    return sft_response(s)


def _grpo(s):
    from training.grpo import run_grpo

    return run_grpo(s)


def _eval(s):
    from training.evaluate import run_eval

    return run_eval(s)


def _fresh_eval(s):
    from training.fresh_eval import run_fresh_eval

    return run_fresh_eval(s)


def _export(s):
    from training.export import run_export

    return run_export(s)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("synth", "Write synthetic egocentric hand-object scenes in the Ego-IRGBench layout.",
            SynthSettings, ("out",), run_synth),
    Command("vision-pretrain", "Dense pretraining of a from-scratch vision tower on rendered synthetic scenes.",
            VisionPretrainSettings, ("model", "out"), _vision_pretrain),
    Command("sft-coarse", "Stage-1 SFT: analysis instruction + image -> caption.",
            SftCoarseSettings, ("model", "data", "out"), _sft_coarse),
    Command("descriptors", "Extract the interaction descriptor of every image to a safetensors file.",
            DescriptorsSettings, ("model", "data", "out"), _descriptors),
    Command("segmenter-ft", "Fine-tune the model dir's SAM / SAM 2 segmenter box -> mask on a dataset's masks.",
            SegmenterFtSettings, ("model", "data", "out"), _segmenter_ft),
    Command("video-memory", "Train the SAM 2 segmenter's video memory on synthetic clips (tracking_method: memory).",
            VideoMemorySettings, ("model", "out"), _video_memory),
    Command("segmenter-eval", "Score the model dir's segmenter prompted with ground-truth boxes (cIoU ceiling).",
            SegmenterEvalSettings, ("model", "data"), _segmenter_eval),
    Command("sft-response", "Response SFT warm-up: image + query (+ descriptor via AFS) -> answer + boxes.",
            SftResponseSettings, ("model", "data", "out"), _sft_response),
    Command("grpo", "GRPO on the response stage with R_f, R_a, R_g (METHOD.md section 3).",
            GrpoSettings, ("model", "data", "out"), _grpo),
    Command("eval", "Evaluate a model dir on a split: IoU metrics, METEOR, CIDEr.",
            EvalSettings, ("model", "data"), _eval),
    Command("fresh-eval", "Score a model on fresh splits (>= 500 images, unused seeds) with 95% bootstrap intervals.",
            FreshEvalSettings, ("model", "out"), _fresh_eval),
    Command("export", "Self-contained copy of a model dir (LoRA merged, relative paths).",
            ExportSettings, ("model", "out"), _export),
)}
