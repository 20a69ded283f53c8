"""Typed settings of every training command, and their one mapping to command-line options.

Each command's function takes one of these dataclasses. The CLI builds it from flags and a YAML
`--config`, the recipe builds it in code; both reach the same function with the same object. The
fields carry their option spelling and help (`opt`), so the parser (`build_parser`), the flags a
settings object stands for (`to_argv`, what the recipe prints and runs in its parallel lanes) and
the dataclass defaults cannot disagree.

A YAML config is a mapping of option: value, keys spelled like the options ('-' or '_'); its values
replace the defaults and explicit flags still win.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from earl_ros.model.manifest import COORDINATE_DECODINGS
from training.data.synth import STYLES
from training.data.wording import WORDINGS
from training.errors import SettingsError
from training.tracking import REPORT_TO

GRPO_GROUP = "GRPO (paper defaults where the paper gives one)"
_REPORT_TO_HELP = ("where the scalars of log.jsonl also go: tensorboard (events under OUT/tb), none; auto (default) = "
                   "tensorboard when it is installed (the `train` extra)")

_RESUME_EVERY_HELP = ("write a resume point (OUT/resume/) every N steps; run the same command again to continue "
                      "from it; 0 = never (default %(default)s)")


def opt(default=None, help: str | None = None, *, flags: tuple[str, ...] = (), choices=None,
        metavar: str | None = None, group: str | None = None, factory=None):
    """A settings field that is also a command-line option.

    flags: the option strings when not just `--field-name`; a bool field whose default is True is
    switched off by its flag (e.g. `--no-vision-cache`). factory: default_factory for lists."""
    meta = {"help": help, "flags": flags, "choices": choices, "metavar": metavar, "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------
# settings of each command

@dataclass
class SynthSettings:
    out: str | None = opt(None, "dataset root to write (RGB/, depth/, mask/, dataset_split/)")
    splits: str = opt("train=400,val=50,test=50", "NAME=COUNT,... (default %(default)s)")
    seed: int = opt(0)
    style: str = opt("default", "scene style; non-default styles make out-of-distribution splits", choices=STYLES)
    size: str = opt("256x192", "WIDTHxHEIGHT (default %(default)s; the random style draws its own)")
    wording: str = opt("templates", "how questions are worded: templates (the fixed lists the shipped model saw), "
                       "grammar (compositional, for training), heldout (a family no grammar question contains)",
                       choices=WORDINGS)
    workers: int = opt(1, "processes drawing images (same output)")
    quiet: bool = opt(False)


@dataclass
class VisionPretrainSettings:
    model: str | None = opt(None, "input EARL model dir (its coarse and response vision towers are trained)")
    out: str | None = opt(None, "output model dir (a copy of --model with the trained towers)")
    steps: int = opt(1000)
    batch_images: int = opt(16)
    lr: float = opt(2e-3)
    warmup: float = opt(0.03)
    style: str = opt("default", "synthetic scene style to render")
    size: str = opt("256x192", "WIDTHxHEIGHT of the rendered scenes")
    val_images: int = opt(64, "fresh scenes scored at the end")
    seed: int = opt(0)
    resume_every: int = opt(100, _RESUME_EVERY_HELP, metavar="N")
    threads: int | None = opt(None)
    quiet: bool = opt(False, "no progress bar")
    report_to: str = opt("auto", _REPORT_TO_HELP, choices=REPORT_TO)


@dataclass
class ModelDataSettings:
    """The options every command on a model dir and a dataset shares."""
    model: str | None = opt(None, "input EARL model dir (earl.yaml)")
    data: str | None = opt(None, "dataset root in the Ego-IRGBench layout")
    device: str = opt("cpu")
    threads: int | None = opt(None, "torch CPU threads")
    limit: int | None = opt(None, "use only the first N images of the split")
    quiet: bool = opt(False, "no progress bar")


@dataclass
class SftSettings(ModelDataSettings):
    out: str | None = opt(None, "output model dir")
    split: str = opt("train")
    epochs: float = opt(3.0)
    batch_size: int = opt(8)
    lr: float = opt(1e-3)
    warmup: float = opt(0.05, "warm-up fraction of the steps")
    lora_r: int = opt(0, "0 = train all LLM weights; R > 0 = LoRA (merged on save)")
    lora_alpha: int = opt(128)
    lora_dropout: float = opt(0.05)
    seed: int = opt(0)
    train_vision: bool = opt(False, "also train the vision tower (default: frozen, as a pretrained encoder should "
                                    "be: trained along with a from-scratch language model at its learning rate, the "
                                    "tiny towers lost what vision-pretrain taught them; see docs/training.md)")
    lr_schedule: str = opt("linear", choices=("linear", "constant", "cosine"))
    resume_every: int = opt(100, _RESUME_EVERY_HELP, metavar="N")
    report_to: str = opt("auto", _REPORT_TO_HELP, choices=REPORT_TO)
    vision_cache: bool = opt(True, "run the frozen vision tower on every batch instead of once per image "
                                   "(training/vision_cache.py; the cache holds one feature tensor per training image)",
                             flags=("--no-vision-cache",))


@dataclass
class SftCoarseSettings(SftSettings):
    """Stage-1 SFT: the shared SFT options, nothing more."""


@dataclass
class DescriptorsSettings(ModelDataSettings):
    out: str | None = opt(None, "output .safetensors file (descriptions go to <out>.texts.json)")
    split: list[str] = opt(factory=lambda: ["train", "val", "test"])
    source: str = opt("generated", "descriptor of the model's own description (= run time) or of the GT caption",
                      choices=("generated", "caption"))
    pooling: str | None = opt(None, "default: the model dir's", choices=("mean", "last"))


_AFS_ALPHA_HELP = ("AFS modulation scale, written to the output earl.yaml (default: the input model's; the authors' "
                   "code uses 1.0, their README 0.1; small models trained from scratch need 0.1)")


@dataclass
class SftResponseSettings(SftSettings):
    descriptors: str | None = opt(None, "safetensors file from `descriptors` (default: computed on demand)")
    no_descriptor: bool = opt(False, "zero descriptors (AFS off)")
    afs_alpha: float | None = opt(None, _AFS_ALPHA_HELP)
    afs_init: str = opt("keep", "keep: train the input model's AFS as it is (the authors' random init in a fresh tiny "
                                "model); zero: zero the AFS output layer first, so the injection starts at exactly "
                                "nothing and the response model starts as the no-descriptor one (AFS.zero_output)",
                        choices=("keep", "zero"))
    descriptor_dropout: float = opt(0.0, "share of training samples whose descriptor is zeroed (AFS injection off "
                                         "for them), so the model must also answer from the image alone; 0 = off "
                                         "(experimental, docs/training.md)")
    descriptor_noise: float = opt(0.0, "Gaussian noise added to each training descriptor, fresh every step, with a "
                                       "per-dimension std of this multiple of the stored training descriptors' spread "
                                       "(needs --descriptors); 0 = off. The recipe uses 0.5: without it the AFS model "
                                       "leaned on the descriptor as a key to its training frames and trailed the "
                                       "no-descriptor arm (docs/training.md)")
    afs_lr: float | None = opt(None, "learning rate of the AFS (default: --lr). The recipe uses 1e-4 with --afs-init "
                                     "zero; on the tiny recipe the modulation still reached the size it reaches at "
                                     "2e-3 (the rate sets how fast it grows, not where it ends; docs/training.md)")
    position_probe: float = opt(0.0, "weight of the auxiliary loss that makes image tokens encode their own position "
                                     "(training/position_probe.py); 0 = off. Experimental: on the tiny recipe it "
                                     "learnt the positions but did not by itself make the boxes follow the frame "
                                     "(docs/training.md)")
    position_probe_layer: int = opt(2, "language-model layer whose output the position probe reads (1 = first layer)")
    split_digits: bool = opt(False, "write numbers one digit per token in the response tokenizer before training "
                                    "(saved with the model, so inference reads the same); see split_digit_tokens")


@dataclass
class SegmenterFtSettings(ModelDataSettings):
    out: str | None = opt(None, "output model dir")
    split: str = opt("train")
    steps: int = opt(600)
    batch_images: int = opt(8, "images per step")
    boxes_per_image: int = opt(3, "entity boxes per image per step (at most)")
    lr: float = opt(2e-3)
    warmup: float = opt(0.03)
    jitter: float = opt(0.15, "max side shift as a fraction of the box size")
    clean_frac: float = opt(0.25, "fraction of boxes given without jitter")
    seed: int = opt(0)
    resume_every: int = opt(200, _RESUME_EVERY_HELP, metavar="N")
    report_to: str = opt("auto", _REPORT_TO_HELP, choices=REPORT_TO)


@dataclass
class VideoMemorySettings:
    model: str | None = opt(None, "input EARL model dir (its SAM 2 segmenter gains the memory)")
    out: str | None = opt(None, "output model dir (--model with segmenter.video_memory)")
    steps: int = opt(600)
    clip_frames: int = opt(6, "frames per training clip: the first gives the mask, the rest are asked from memory")
    lr: float = opt(1e-3)
    warmup: float = opt(0.05)
    motion: float = opt(1.0, "largest camera motion of a clip (each draws one in 0.3..this; synth_clips.py)")
    style: str = opt("default", "synthetic scene style", choices=STYLES)
    val_clips: int = opt(8, "fresh clips scored at the end (split memory-val)")
    val_frames: int = opt(20, "frames per validation clip")
    seed: int = opt(0)
    resume_every: int = opt(100, _RESUME_EVERY_HELP, metavar="N")
    device: str = opt("cpu")
    threads: int | None = opt(None, "torch CPU threads")
    quiet: bool = opt(False, "no progress bar")
    report_to: str = opt("auto", _REPORT_TO_HELP, choices=REPORT_TO)


@dataclass
class SegmenterEvalSettings(ModelDataSettings):
    split: str = opt("test")
    out: str | None = opt(None, "write the metrics as JSON")


def _grpo(default=None, help: str | None = None, **kw):
    return opt(default, help, group=GRPO_GROUP, **kw)


@dataclass
class GrpoSettings(ModelDataSettings):
    out: str | None = _grpo(None, "output dir (log.jsonl, checkpoint-N/, final/)")
    split: str = _grpo("train")
    descriptors: str | None = _grpo(None, "safetensors file from `python -m training descriptors`")
    no_descriptor: bool = _grpo(False, "zero descriptors (AFS injection off)")
    steps: int = _grpo(100, "optimisation steps")
    prompts_per_step: int = _grpo(8, "prompts per step over all processes (paper 8)")
    micro_batch: int = _grpo(8, "prompts per forward pass per process")
    num_generations: int = _grpo(4, "completions per prompt (paper 4)", flags=("--num-generations", "-G"))
    temperature: float = _grpo(1.0)
    top_p: float = _grpo(1.0)
    max_completion_length: int = _grpo(96)
    beta: float = _grpo(0.01, "KL coefficient")
    epsilon: float = _grpo(0.2, "ratio clip")
    iterations: int = _grpo(1, "optimisation passes per batch of samples")
    lr: float = _grpo(1e-5)
    warmup: float = _grpo(0.1)
    lr_schedule: str = _grpo("linear", choices=("linear", "constant", "cosine"))
    weight_decay: float = _grpo(0.0)
    max_grad_norm: float = _grpo(1.0)
    lora_r: int = _grpo(64)
    lora_alpha: int = _grpo(128)
    lora_dropout: float = _grpo(0.05)
    freeze_afs: bool = _grpo(False, "keep the AFS fixed (default: trainable)")
    afs_lr: float | None = _grpo(None, "learning rate of the AFS (default: --lr)")
    gradient_checkpointing: bool = _grpo(False)
    w_format: float = _grpo(1.0)
    w_answer: float = _grpo(1.0)
    w_ground: float = _grpo(1.0)
    grounding: str = _grpo("strict", choices=("strict", "paper"))
    strict_format: bool = _grpo(False)
    allow_float: bool = _grpo(False, "accept float box coordinates")
    segmenter: str = _grpo("model", "R_g masks: the model dir's segmenter, or filled boxes (fast; for random tiny "
                                    "segmenters)", choices=("model", "box"))
    reward_box_refine: int = _grpo(0, "R_g masks re-prompted N times with their own boxes, as segmenter.box_refine "
                                      "does at inference (needs --segmenter model; default %(default)s)", metavar="N")
    save_every: int = _grpo(50)
    resume: str | None = _grpo(None, "checkpoint dir, or 'auto' for the latest checkpoint-N in --out")
    seed: int = _grpo(0)
    dump_replica_weights: bool = _grpo(False, "each process writes OUT/replica-RANK.safetensors at the end "
                                              "(consistency checks)")
    quiet_log: bool = _grpo(False, "do not echo the per-step log lines")
    report_to: str = _grpo("auto", _REPORT_TO_HELP, choices=REPORT_TO)
    afs_alpha: float | None = opt(None, _AFS_ALPHA_HELP)


@dataclass
class EvalSettings:
    model: str | None = opt(None, "EARL model dir")
    data: str | None = opt(None, "dataset root")
    split: str = opt("test")
    limit: int | None = opt(None, "first N queries")
    image_limit: int | None = opt(None, "first N images")
    out: str | None = opt(None, "write the metrics (and per-sample results) as JSON")
    device: str = opt("cpu")
    segmenter: str = opt("model", "masks from the model dir's segmenter, or the filled predicted boxes",
                         choices=("model", "box"))
    no_descriptor: bool = opt(False, "skip stage 1 (zero descriptor)")
    box_refine: int | None = opt(None, "override the manifest's segmenter.box_refine (re-prompts with each mask's own "
                                       "box)", metavar="N")
    coordinates: str | None = opt(None, "override the manifest's response.coordinates (how box coordinates are "
                                        "decoded; earl_ros/model/coordinates.py)", choices=COORDINATE_DECODINGS)
    one_by_one: bool = opt(False, "answer each question alone as the node does (default: an image's questions in "
                                  "one batched generation, the same greedy answers)")
    quiet: bool = opt(False)


@dataclass
class FreshEvalSettings:
    model: str | None = opt(None, "EARL model dir")
    out: str | None = opt(None, "dir for the drawn splits (OUT/n<IMAGES>/data), cached evals (OUT/n<IMAGES>/eval) "
                                 "and the table (OUT/TAG.md)")
    splits: str | None = opt(None, "NAME:STYLE:WORDING:SEED,... (default: issue 27's four fresh splits, "
                                   "training/fresh_splits.py FRESH_SPLITS)")
    images: int = opt(500, "images per split (at least 500 for a headline figure)")
    tag: str = opt("fresh", "name of this model's cached evals and table in OUT")
    allow_small: bool = opt(False, "allow fewer than 500 images (a quick look, not a headline figure)")
    quiet: bool = opt(False)


@dataclass
class PlotSettings:
    runs: list[str] = opt(factory=list, help="run dirs (or log files) to draw, overlaid; also given as positional "
                                             "RUN_DIR arguments")
    out: str | None = opt(None, "PNG to write (default: RUN_DIR/curves.png of the first run)")
    smoothing: float = opt(0.8, "EMA weight of the smoothed lines (0 = none)")


@dataclass
class ExportSettings:
    model: str | None = opt(None, "input model dir (e.g. runs/.../grpo/final)")
    out: str | None = opt(None, "output model dir")
    name: str | None = opt(None, "model name in the manifest")


# ----------------------------------------------------------------------------------------------
# settings <-> command line

def _field_type(cls, f) -> type:
    """The option's value type: `int | None` -> int, `list[str]` -> list."""
    t = typing.get_type_hints(cls)[f.name]
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return typing.get_origin(t) or t


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def _flags(f) -> tuple[str, ...]:
    return f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)


def add_options(ap: argparse.ArgumentParser, cls) -> None:
    """One argparse option per field of the settings class `cls`, in field order."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(cls):
        m = f.metadata
        target = ap if not m.get("group") else groups.setdefault(m["group"], ap.add_argument_group(m["group"]))
        kw: dict = {"dest": f.name}
        if m.get("help"):
            kw["help"] = m["help"]
        kind, default = _field_type(cls, f), _default(f)
        if kind is bool:
            kw["action"] = "store_false" if default else "store_true"
        else:
            kw["default"] = default
            if kind is list:
                kw["nargs"] = "+"
            elif kind in (int, float):
                kw["type"] = kind
            if m.get("choices"):
                kw["choices"] = m["choices"]
            if m.get("metavar"):
                kw["metavar"] = m["metavar"]
        target.add_argument(*_flags(f), **kw)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors keep the CLI contract: one `PROG: error: ...` line, exit 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(cls, prog: str, description: str | None = None) -> argparse.ArgumentParser:
    ap = OneLineParser(prog=prog, description=description)
    ap.add_argument("--config", help="YAML file of option: value (CLI flags override it)")
    add_options(ap, cls)
    return ap


def load_config(path: str | None) -> dict:
    """YAML mapping; keys use the CLI option names with '-' or '_' ('max-new-tokens' == 'max_new_tokens')."""
    import yaml

    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: a config file must be a YAML mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_namespace(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """argparse with `--config FILE`: file values replace defaults; explicit CLI flags win."""
    pre, _ = parser.parse_known_args(argv)
    cfg = load_config(getattr(pre, "config", None))
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise SettingsError(f"{pre.config}: unknown option(s) {', '.join(unknown)} for `{parser.prog}`")
    parser.set_defaults(**cfg)
    return parser.parse_args(argv)


def from_namespace(cls, ns: argparse.Namespace):
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})


def parse_settings(cls, argv: Sequence[str] | None, prog: str = "python -m training", description: str | None = None):
    """Settings of class `cls` from command-line arguments (with `--config`), as the CLI reads them."""
    return from_namespace(cls, parse_namespace(build_parser(cls, prog, description), argv))


def to_argv(settings) -> list[str]:
    """The options that rebuild `settings` on the command line: every field that differs from its default.

    The recipe prints these (a stage a user can rerun by hand) and launches its parallel lanes with
    them, so what it runs and what it shows are the same."""
    argv: list[str] = []
    for f in fields(settings):
        value, default = getattr(settings, f.name), _default(f)
        if value == default:
            continue
        flag = _flags(f)[0]
        if isinstance(value, bool):
            argv.append(flag)  # a bool option's flag flips its default
        elif value is None:
            raise SettingsError(f"{type(settings).__name__}.{f.name}: None has no command-line spelling "
                                f"(default {default!r})")
        elif isinstance(value, (list, tuple)):
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv
