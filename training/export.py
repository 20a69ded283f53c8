"""`python -m training export --model DIR --out OUT`: a self-contained, deployable copy of a model dir.

Training commands write model dirs whose earl.yaml names untouched parts of their input dir by
absolute path, and GRPO checkpoints keep the response stage as base weights + a LoRA adapter. Export
resolves every part, merges LoRA adapters into the weights (coarse and response), copies the AFS and
the segmenter, and writes an earl.yaml whose paths are all relative to OUT:

    OUT/earl.yaml  OUT/coarse/  OUT/response/  OUT/afs/  OUT/sam/

so OUT can be committed, moved or copied to a robot. The manifest keeps the training provenance
(`training:`) with absolute paths stripped to their run-relative tail.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from training.settings import ExportSettings

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.onnx")


def _copy_dir(src: Path, dst: Path, weights: bool = True) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    ignore = None if weights else shutil.ignore_patterns(*WEIGHT_PATTERNS)
    shutil.copytree(src, dst, ignore=ignore)


def _export_vlm(base: Path, lora: Path | None, dst: Path) -> None:
    if lora is None:
        _copy_dir(base, dst)
        return
    from peft import PeftModel

    from earl_ros.model.vlm import load_vlm

    model = load_vlm(base, "cpu")
    model = PeftModel.from_pretrained(model, str(lora)).merge_and_unload().eval()
    _copy_dir(base, dst, weights=False)  # processor, tokenizer, chat template, generation config
    model.save_pretrained(str(dst), safe_serialization=True)


def _strip_paths(obj):
    """Provenance values: absolute paths shortened to the part after 'runs/' (or the name)."""
    if isinstance(obj, dict):
        return {k: _strip_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_paths(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        parts = Path(obj).parts
        return str(Path(*parts[parts.index("runs"):])) if "runs" in parts else Path(obj).name
    return obj


def export_model_dir(model_dir, out_dir, name: str | None = None, extra: dict | None = None,
                     box_refine: int | None = None, coordinates: str | None = None) -> Path:
    from earl_ros.model.manifest import Manifest, write_manifest
    from training.common import read_manifest_raw

    m = Manifest.load(model_dir)
    raw = read_manifest_raw(model_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _export_vlm(m.coarse.path, m.coarse.lora, out / "coarse")
    _export_vlm(m.response.path, m.response.lora, out / "response")
    _copy_dir(m.response.afs, out / "afs")
    _copy_dir(m.segmenter.path, out / "sam")
    if m.segmenter.video_memory is not None:
        _copy_dir(m.segmenter.video_memory, out / "sam_video")
    data = {
        "format": raw.get("format", "earl-model/1"),
        "name": name or raw.get("name", out.name),
        "prompt_version": m.prompt_version,
        "coarse": {"path": "coarse", "pooling": m.coarse.pooling, "lora": None},
        "response": {"path": "response", "lora": None, "afs": "afs", "afs_alpha": float(m.response.afs_alpha),
                     "coordinates": m.response.coordinates if coordinates is None else coordinates},
        "segmenter": {"type": m.segmenter.type, "path": "sam", "decoder_onnx": None,
                      "box_refine": int(m.segmenter.box_refine if box_refine is None else box_refine),
                      **({"video_memory": "sam_video"} if m.segmenter.video_memory is not None else {})},
        "limits": dict(m.limits),
    }
    if raw.get("tiny"):
        data["tiny"] = raw["tiny"]
    prov = _strip_paths(raw.get("training") or {})
    data["training"] = {**prov, **(extra or {}), "exported_from": _strip_paths(str(Path(model_dir).resolve()))}
    write_manifest(out, data)
    Manifest.load(out)  # validate: every part present, relative paths only
    return out


def run_export(s: ExportSettings) -> Path:
    out = export_model_dir(s.model, s.out, name=s.name)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print(json.dumps({"model_dir": str(out), "bytes": size}))
    return out
