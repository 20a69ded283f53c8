"""earl-export: export the mask decoder (prompt encoder + mask decoder) to ONNX, optionally build a
TensorRT engine, and print a parity report against PyTorch.

    earl-export --model DIR --out DIR [--tensorrt] [--fp16] [--opset N] [--providers cpu]

--model is an EARL model directory (earl.yaml; its `segmenter.path` is exported) or a bare Hugging
Face SAM / SAM 2 directory. Writes OUT/decoder.onnx, OUT/parity.json (and, with --tensorrt, a cached
engine OUT/decoder-<precision>-<key>.engine). Prints the report as JSON on stdout.

Exit status: 0 parity passed; 1 parity failed; 2 bad model directory or TensorRT unavailable.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from earl_ros.cli.errors import CliError, Parser, report as report_error
from earl_ros.model.errors import ModelDirError

EXIT_OK, EXIT_PARITY, EXIT_ERROR = 0, 1, 2


def resolve_segmenter_dir(model: str | Path) -> Path:
    """EARL model dir (earl.yaml) -> its segmenter dir; a bare HF SAM/SAM 2 dir -> itself."""
    p = Path(model).expanduser()
    if not p.is_dir():
        raise ModelDirError(f"model directory {p} does not exist")
    if (p / "earl.yaml").is_file():
        from earl_ros.model.manifest import Manifest

        return Manifest.load(p).segmenter.path
    if (p / "config.json").is_file():
        return p
    raise ModelDirError(f"{p} has neither earl.yaml (EARL model dir) nor config.json (Hugging Face SAM / SAM 2 dir)")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="earl-export", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="EARL model dir (earl.yaml) or a HF SAM / SAM 2 dir")
    ap.add_argument("--out", required=True, help="output dir for decoder.onnx, parity.json (+ engine)")
    ap.add_argument("--tensorrt", action="store_true", help="also build (or reuse) a native TensorRT engine")
    ap.add_argument("--fp16", action="store_true", help="build the TensorRT engine in fp16")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ap.add_argument("--providers", default=None,
                    help="onnxruntime providers for the parity run, e.g. 'cuda,cpu' (default: CUDA then CPU where present)")
    ap.add_argument("--engine-cache", default=None, help="TensorRT engine cache dir (default: --out)")
    ap.add_argument("--boxes", default="1,5", help="box counts to check (default 1,5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.fp16 and not args.tensorrt:
        return report_error("earl-export", CliError("--fp16 only applies to --tensorrt"))
    try:
        counts = tuple(int(x) for x in args.boxes.split(",") if x.strip())
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        return report_error("earl-export", CliError(f"--boxes must be positive integers like 1,5 (got {args.boxes!r})"))
    try:
        seg_dir = resolve_segmenter_dir(args.model)
        try:  # the weight-loading progress bar is noise in a CLI
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # pragma: no cover
            pass
        from earl_ros.export.parity import export_and_check

        report = export_and_check(seg_dir, args.out, opset=args.opset, tensorrt=args.tensorrt, fp16=args.fp16,
                                  providers=args.providers, box_counts=counts, seed=args.seed,
                                  engine_cache_dir=args.engine_cache)
    except Exception as e:  # noqa: BLE001 - every failure is one clear line (EARL_DEBUG=1: traceback)
        return report_error("earl-export", e)
    print(json.dumps(report, indent=2))
    for name, res in report["backends"].items():
        print(
            f"earl-export: {report['segmenter']} {name}: max|logit diff| {res['max_abs_logit_diff']:.3g}, "
            f"mask IoU min {res['mask_iou_min']:.6f} (decided pixels {res['mask_iou_min_decided']:.6f}), "
            f"{'PASS' if res['pass'] else 'FAIL'}",
            file=sys.stderr,
        )
    if report["pass"]:
        print(f"earl-export: wrote {report['onnx']}; set `segmenter.decoder_onnx` in earl.yaml to use it "
              "(earl-infer --mask-backend onnxruntime|tensorrt)", file=sys.stderr)
    return EXIT_OK if report["pass"] else EXIT_PARITY


if __name__ == "__main__":
    sys.exit(main())
