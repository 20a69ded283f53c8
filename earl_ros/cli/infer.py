"""earl-infer: one frame + one query through the EARL pipeline, no ROS.

    earl-infer --model DIR --image IMG --query TEXT [--out DIR] [--mask-backend B] [--json] [--device D]

Prints the result as JSON (the contract of ARCHITECTURE.md: answer, entities, boxes in original
pixels, scores, no_target, description, timings_ms; plus parse_status and query_truncated). With
--out, writes mask.png (uint8 label map of the image's size: 0 background, i = entity i) and
overlay.png. Without --json the JSON is indented for people.

Exit status: 0 answered; 1 the model ran but its output is not an answer (no entity and no
no-target statement): the JSON is still printed, with `error_code` UNPARSEABLE_ANSWER and the model's
`raw_text`, and one `error:` line goes to stderr; 2 bad input (model dir, image, query, a frame the
models cannot take), one `error:` line on stderr (set EARL_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from earl_ros.cli.errors import Parser, report


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="earl-infer", description="EARL: answer + boxes + masks for one image and query")
    ap.add_argument("--model", help="model directory with earl.yaml (default: models/earl-tiny-synth)")
    ap.add_argument("--image", required=True, help="image file (any PIL-readable format)")
    ap.add_argument("--query", required=True, help="question about the hands and objects")
    ap.add_argument("--out", help="directory for mask.png and overlay.png")
    ap.add_argument("--mask-backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0, ...)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32", "float16"),
                    help="dtype of the VLMs (auto: bf16 on CUDA; on a CPU the checkpoint's bf16, else float32)")
    ap.add_argument("--json", action="store_true", help="print compact single-line JSON")
    return ap


def run(args) -> dict:
    from PIL import Image

    from earl_ros.model.errors import EmptyQueryError, ModelDirError
    from earl_ros.model.images import check_frame_shape, load_image
    from earl_ros.model.manifest import Manifest

    # Cheap checks first: a bad model dir, query or image is reported before torch is even imported.
    from earl_ros.model.manifest import default_model_dir

    model = Path(args.model) if args.model else default_model_dir()
    if model is None:
        raise ModelDirError(
            "no --model given and models/earl-tiny-synth does not exist; build a tiny model with "
            "`python -m earl_ros.model.tiny models/earl-tiny-synth --segmenter sam` or pass --model DIR"
        )
    if not args.query.strip():
        raise EmptyQueryError("the query is empty")
    Manifest.load(model)
    img = load_image(args.image)
    check_frame_shape(*img.shape[:2])

    _quiet_transformers()
    from earl_ros.model.overlay import draw_overlay
    from earl_ros.model.pipeline import EarlPipeline

    pipe = EarlPipeline.from_dir(model, device=args.device, mask_backend=args.mask_backend,
                                 dtype=None if args.dtype == "auto" else args.dtype)
    g = pipe.answer(img, args.query)
    result = g.to_json()
    result["error_code"] = _answer_error_code(g)
    if result["error_code"] != "OK":
        result["raw_text"] = g.raw_text
    result["parse_status"] = g.parse_status
    result["query_truncated"] = bool(g.query_truncated)
    result["image_size"] = [int(g.image_size[0]), int(g.image_size[1])]
    result["model"] = pipe.model_id
    result["mask_backend"] = pipe.mask_backend
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.label_map()).save(out / "mask.png")
        Image.fromarray(draw_overlay(img, g)).save(out / "overlay.png")
        result["files"] = {"mask": str(out / "mask.png"), "overlay": str(out / "overlay.png")}
    return result


def _answer_error_code(g) -> str:
    from earl_ros.model.errors import UnparseableAnswerError
    from earl_ros.model.types import require_answer

    try:
        require_answer(g)
    except UnparseableAnswerError as e:
        return e.code
    return "OK"


def _quiet_transformers() -> None:
    """No progress bars or load reports on stdout/stderr: stdout is the JSON, stderr the one error line."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except Exception as e:  # noqa: BLE001 - every failure is one clear line (EARL_DEBUG=1: traceback)
        return report("earl-infer", e)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    if result["error_code"] != "OK":
        print(f"earl-infer: error: {result['error_code']}: the model's output is not an answer "
              f"(parse status {result['parse_status']}); raw_text in the JSON", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
