"""`python -m training <command>`: synth | vision-pretrain | sft-coarse | descriptors | segmenter-ft | segmenter-eval |
sft-response | grpo | eval | export | recipe.

Every command takes `--config FILE` (YAML of option: value, keys spelled like the options); explicit
flags override the file. See docs/training.md for the full recipe.
"""
from __future__ import annotations

import argparse
import sys

from training.common import env_offline, parse_with_config

def _resolve(ref):
    """A function, or "module:function" imported on first use (commands import torch and friends
    only when they run)."""
    if not isinstance(ref, str):
        return ref
    import importlib

    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


def _parser(cmd: str, description: str, *adders, common: bool = True) -> argparse.ArgumentParser:
    """`python -m training CMD`'s parser: --config plus the shared model/data/threads options
    (`training.sft.add_common`, unless common=False) plus each adder's options (a function of the
    parser or its "module:function")."""
    ap = argparse.ArgumentParser(prog=f"python -m training {cmd}", description=description)
    if common:
        from training.sft import add_common

        add_common(ap)
    else:
        ap.add_argument("--config", help="YAML file of option: value")
    for add in adders:
        _resolve(add)(ap)
    return ap


def _synth_args(ap):
    from training.data.synth import STYLES

    ap.add_argument("--out", required=False, help="dataset root to write (RGB/, depth/, mask/, dataset_split/)")
    ap.add_argument("--splits", default="train=400,val=50,test=50", help="NAME=COUNT,... (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--style", choices=STYLES, default="default",
                    help="scene style; non-default styles make out-of-distribution splits")
    ap.add_argument("--size", default="256x192", help="WIDTHxHEIGHT (default %(default)s)")
    ap.add_argument("--workers", type=int, default=1, help="processes drawing images (same output)")
    ap.add_argument("--quiet", action="store_true")


def _sft_args(ap):
    from training.sft import add_sft_args

    add_sft_args(ap, lr=1e-3, epochs=3.0, batch=8)


def _descriptors_args(ap):
    ap.add_argument("--out", help="output .safetensors file (descriptions go to <out>.texts.json)")
    ap.add_argument("--split", nargs="+", default=["train", "val", "test"])
    ap.add_argument("--source", choices=("generated", "caption"), default="generated",
                    help="descriptor of the model's own description (= run time) or of the GT caption")
    ap.add_argument("--pooling", choices=("mean", "last"), default=None, help="default: the model dir's")


def _response_args(ap):
    ap.add_argument("--descriptors", help="safetensors file from `descriptors` (default: computed on demand)")
    ap.add_argument("--no-descriptor", action="store_true", help="zero descriptors (AFS off)")


def _eval_args(ap):
    ap.add_argument("--model", help="EARL model dir")
    ap.add_argument("--data", help="dataset root")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N queries")
    ap.add_argument("--image-limit", type=int, default=None, help="first N images")
    ap.add_argument("--out", help="write the metrics (and per-sample results) as JSON")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--segmenter", choices=("model", "box"), default="model",
                    help="masks from the model dir's segmenter, or the filled predicted boxes")
    ap.add_argument("--no-descriptor", action="store_true", help="skip stage 1 (zero descriptor)")
    ap.add_argument("--box-refine", type=int, default=None, metavar="N",
                    help="override the manifest's segmenter.box_refine (re-prompts with each mask's own box)")
    from earl_ros.model.manifest import COORDINATE_DECODINGS

    ap.add_argument("--coordinates", choices=COORDINATE_DECODINGS, default=None,
                    help="override the manifest's response.coordinates (how box coordinates are decoded; "
                         "earl_ros/model/coordinates.py)")
    ap.add_argument("--quiet", action="store_true")


def _export_args(ap):
    ap.add_argument("--model", help="input model dir (e.g. runs/.../grpo/final)")
    ap.add_argument("--out", help="output model dir")
    ap.add_argument("--name", default=None, help="model name in the manifest")


def _run_synth(args):
    import json

    from training.data.synth import SynthConfig, generate, parse_splits, write_corpus

    w, _, h = args.size.lower().partition("x")
    ids = generate(args.out, parse_splits(args.splits), seed=args.seed,
                   cfg=SynthConfig(width=int(w), height=int(h), style=args.style), progress=not args.quiet,
                   workers=args.workers)
    write_corpus(args.out)
    print(json.dumps({"out": str(args.out), "style": args.style, **{k: len(v) for k, v in ids.items()}}))


# command -> (description, option adders, shared options?, required options, runner); adders and
# runners are functions or "module:function" strings
_TABLE = {
    "synth": ("Write synthetic egocentric hand-object scenes in the Ego-IRGBench layout.",
              (_synth_args,), False, ["out"], _run_synth),
    "vision-pretrain": ("Dense pretraining of a from-scratch vision tower on rendered synthetic scenes.",
                        ("training.vision_pretrain:add_vision_pretrain_args",), False, ["model", "out"],
                        "training.vision_pretrain:vision_pretrain"),
    "sft-coarse": ("Stage-1 SFT: analysis instruction + image -> caption.",
                   (_sft_args,), True, ["model", "data", "out"], "training.sft:sft_coarse"),
    "descriptors": ("Extract the interaction descriptor of every image to a safetensors file.",
                    (_descriptors_args,), True, ["model", "data", "out"], "training.sft:extract_descriptors"),
    "segmenter-ft": ("Fine-tune the model dir's SAM / SAM 2 segmenter box -> mask on a dataset's masks.",
                     ("training.segmenter_ft:add_segmenter_ft_args",), True, ["model", "data", "out"],
                     "training.segmenter_ft:segmenter_ft"),
    "segmenter-eval": ("Score the model dir's segmenter prompted with ground-truth boxes (cIoU ceiling).",
                       ("training.segmenter_ft:add_segmenter_eval_args",), True, ["model", "data"],
                       "training.segmenter_ft:segmenter_eval"),
    "sft-response": ("Response SFT warm-up: image + query (+ descriptor via AFS) -> answer + boxes.",
                     (_sft_args, _response_args, "training.sft:add_afs_alpha", "training.sft:add_afs_init",
                      "training.sft:add_descriptor_dropout", "training.sft:add_descriptor_noise", "training.sft:add_afs_lr",
                      "training.sft:add_position_probe",
                      "training.sft:add_split_digits"), True,
                     ["model", "data", "out"], "training.sft:sft_response"),
    "grpo": ("GRPO on the response stage with R_f, R_a, R_g (METHOD.md section 3).",
             ("training.grpo:add_grpo_args", "training.sft:add_afs_alpha"), True, ["model", "data", "out"],
             "training.grpo:run_grpo"),
    "eval": ("Evaluate a model dir on a split: IoU metrics, METEOR, CIDEr.",
             (_eval_args,), False, ["model", "data"], "training.evaluate:run_eval"),
    "export": ("Self-contained copy of a model dir (LoRA merged, relative paths).",
               (_export_args,), False, ["model", "out"], "training.export:run_export"),
}
COMMANDS = (*_TABLE, "recipe")
PARSERS = {cmd: (lambda cmd=cmd, d=d, adders=adders, common=common: _parser(cmd, d, *adders, common=common))
           for cmd, (d, adders, common, _, _) in _TABLE.items()}
REQUIRED = {cmd: req for cmd, (_, _, _, req, _) in _TABLE.items()}


def _grpo_parser():
    return PARSERS["grpo"]()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        print("\ncommands: " + " | ".join(COMMANDS) + "\n`python -m training COMMAND --help` for the options.")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    env_offline()
    cmd, rest = argv[0], argv[1:]
    if cmd == "recipe":
        from training.recipe import main as recipe_main

        return recipe_main(rest)
    parser = PARSERS[cmd]()
    args = parse_with_config(parser, rest)
    missing = [f"--{k.replace('_', '-')}" for k in REQUIRED[cmd] if getattr(args, k, None) in (None, "")]
    if missing:
        parser.error(f"missing {', '.join(missing)} (on the command line or in --config)")
    _resolve(_TABLE[cmd][4])(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
