"""`python -m training <command>`: synth | vision-pretrain | sft-coarse | descriptors | segmenter-ft | segmenter-eval |
sft-response | grpo | eval | export | recipe.

Every command takes `--config FILE` (YAML of option: value, keys spelled like the options); explicit
flags override the file. See docs/training.md for the full recipe.
"""
from __future__ import annotations

import argparse
import sys

from training.common import env_offline, parse_with_config

COMMANDS = ("synth", "vision-pretrain", "sft-coarse", "descriptors", "segmenter-ft", "segmenter-eval", "sft-response", "grpo", "eval", "export", "recipe")


def _synth_parser():
    from training.data.synth import STYLES

    ap = argparse.ArgumentParser(prog="python -m training synth",
                                 description="Write synthetic egocentric hand-object scenes in the Ego-IRGBench layout.")
    ap.add_argument("--config", help="YAML file of option: value")
    ap.add_argument("--out", required=False, help="dataset root to write (RGB/, depth/, mask/, dataset_split/)")
    ap.add_argument("--splits", default="train=400,val=50,test=50", help="NAME=COUNT,... (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--style", choices=STYLES, default="default",
                    help="scene style; non-default styles make out-of-distribution splits")
    ap.add_argument("--size", default="256x192", help="WIDTHxHEIGHT (default %(default)s)")
    ap.add_argument("--workers", type=int, default=1, help="processes drawing images (same output)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def _sft_coarse_parser():
    from training.sft import add_common, add_sft_args

    ap = argparse.ArgumentParser(prog="python -m training sft-coarse",
                                 description="Stage-1 SFT: analysis instruction + image -> caption.")
    add_common(ap)
    add_sft_args(ap, lr=1e-3, epochs=3.0, batch=8)
    return ap


def _descriptors_parser():
    from training.sft import add_common

    ap = argparse.ArgumentParser(prog="python -m training descriptors",
                                 description="Extract the interaction descriptor of every image to a safetensors file.")
    add_common(ap)
    ap.add_argument("--out", help="output .safetensors file (descriptions go to <out>.texts.json)")
    ap.add_argument("--split", nargs="+", default=["train", "val", "test"])
    ap.add_argument("--source", choices=("generated", "caption"), default="generated",
                    help="descriptor of the model's own description (= run time) or of the GT caption")
    ap.add_argument("--pooling", choices=("mean", "last"), default=None, help="default: the model dir's")
    return ap


def _sft_response_parser():
    from training.sft import add_common, add_sft_args

    ap = argparse.ArgumentParser(prog="python -m training sft-response",
                                 description="Response SFT warm-up: image + query (+ descriptor via AFS) -> answer + boxes.")
    add_common(ap)
    add_sft_args(ap, lr=1e-3, epochs=3.0, batch=8)
    ap.add_argument("--descriptors", help="safetensors file from `descriptors` (default: computed on demand)")
    ap.add_argument("--no-descriptor", action="store_true", help="zero descriptors (AFS off)")
    from training.sft import add_afs_alpha

    add_afs_alpha(ap)
    return ap


def _grpo_parser():
    from training.grpo import add_grpo_args
    from training.sft import add_common

    ap = argparse.ArgumentParser(prog="python -m training grpo",
                                 description="GRPO on the response stage with R_f, R_a, R_g (METHOD.md section 3).")
    add_common(ap)
    add_grpo_args(ap)
    from training.sft import add_afs_alpha

    add_afs_alpha(ap)
    return ap


def _eval_parser():
    ap = argparse.ArgumentParser(prog="python -m training eval",
                                 description="Evaluate a model dir on a split: IoU metrics, METEOR, CIDEr.")
    ap.add_argument("--config", help="YAML file of option: value")
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
    ap.add_argument("--quiet", action="store_true")
    return ap


def _segmenter_ft_parser():
    from training.segmenter_ft import add_segmenter_ft_args
    from training.sft import add_common

    ap = argparse.ArgumentParser(prog="python -m training segmenter-ft",
                                 description="Fine-tune the model dir's SAM / SAM 2 segmenter box -> mask on a dataset's masks.")
    add_common(ap)
    add_segmenter_ft_args(ap)
    return ap


def _vision_pretrain_parser():
    from training.vision_pretrain import add_vision_pretrain_args

    ap = argparse.ArgumentParser(prog="python -m training vision-pretrain",
                                 description="Dense pretraining of a from-scratch vision tower on rendered synthetic scenes.")
    ap.add_argument("--config", help="YAML file of option: value")
    add_vision_pretrain_args(ap)
    return ap


def _segmenter_eval_parser():
    from training.segmenter_ft import add_segmenter_eval_args
    from training.sft import add_common

    ap = argparse.ArgumentParser(prog="python -m training segmenter-eval",
                                 description="Score the model dir's segmenter prompted with ground-truth boxes (cIoU ceiling).")
    add_common(ap)
    add_segmenter_eval_args(ap)
    return ap


def _export_parser():
    ap = argparse.ArgumentParser(prog="python -m training export",
                                 description="Self-contained copy of a model dir (LoRA merged, relative paths).")
    ap.add_argument("--config", help="YAML file of option: value")
    ap.add_argument("--model", help="input model dir (e.g. runs/.../grpo/final)")
    ap.add_argument("--out", help="output model dir")
    ap.add_argument("--name", default=None, help="model name in the manifest")
    return ap


PARSERS = {"vision-pretrain": _vision_pretrain_parser, "segmenter-ft": _segmenter_ft_parser, "segmenter-eval": _segmenter_eval_parser, "export": _export_parser,
           "synth": _synth_parser, "sft-coarse": _sft_coarse_parser, "descriptors": _descriptors_parser,
           "sft-response": _sft_response_parser, "grpo": _grpo_parser, "eval": _eval_parser}
REQUIRED = {"vision-pretrain": ["model", "out"], "segmenter-ft": ["model", "data", "out"], "segmenter-eval": ["model", "data"], "export": ["model", "out"],
            "synth": ["out"], "sft-coarse": ["model", "data", "out"], "descriptors": ["model", "data", "out"],
            "sft-response": ["model", "data", "out"], "grpo": ["model", "data", "out"], "eval": ["model", "data"]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or (argv[0] not in PARSERS and argv[0] != "recipe"):
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
    if cmd == "synth":
        from training.data.synth import SynthConfig, generate, parse_splits

        w, _, h = args.size.lower().partition("x")
        ids = generate(args.out, parse_splits(args.splits), seed=args.seed,
                       cfg=SynthConfig(width=int(w), height=int(h), style=args.style), progress=not args.quiet,
                       workers=args.workers)
        from training.data.synth import write_corpus

        write_corpus(args.out)
        import json

        print(json.dumps({"out": str(args.out), "style": args.style, **{k: len(v) for k, v in ids.items()}}))
    elif cmd == "sft-coarse":
        from training.sft import sft_coarse

        sft_coarse(args)
    elif cmd == "descriptors":
        from training.sft import extract_descriptors

        extract_descriptors(args)
    elif cmd == "sft-response":
        from training.sft import sft_response

        sft_response(args)
    elif cmd == "grpo":
        from training.grpo import run_grpo

        run_grpo(args)
    elif cmd == "segmenter-ft":
        from training.segmenter_ft import segmenter_ft

        segmenter_ft(args)
    elif cmd == "vision-pretrain":
        from training.vision_pretrain import vision_pretrain

        vision_pretrain(args)
    elif cmd == "segmenter-eval":
        from training.segmenter_ft import segmenter_eval

        segmenter_eval(args)
    elif cmd == "export":
        from training.export import run_export

        run_export(args)
    elif cmd == "eval":
        from training.evaluate import run_eval

        run_eval(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
