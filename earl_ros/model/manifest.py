"""The model directory manifest, `earl.yaml`.

A model directory names every part the pipeline needs; each part is a local Hugging Face format
directory (or file), given relative to the directory (absolute paths are allowed for deployments that
share checkpoints). Example (docs/CONTRACTS.md):

    format: earl-model/1
    name: earl-tiny
    prompt_version: earl-prompt-v1
    coarse:    {path: coarse, pooling: mean}          # HF Qwen2.5-VL dir (+ processor); optional lora
    response:  {path: response, lora: null, afs: afs, afs_alpha: 1.0, coordinates: greedy}  # coordinates: optional
    segmenter: {type: sam, path: sam, decoder_onnx: null, box_refine: 0}   # box_refine: optional
    # segmenter.video_memory: optional, a SAM 2 video model dir (tracking_method: memory)
    limits:    {max_image_side: 1280, max_query_tokens: 64, max_new_tokens: 96}

`Manifest.load` validates the file and that every named part exists, and fails with a
`ModelDirError` whose message names the missing file and how to fix it: startup problems must be
one clear line, not a stack trace from deep inside transformers.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ModelDirError
from .prompts import PROMPT_VERSION

MANIFEST_NAME = "earl.yaml"
FORMAT = "earl-model/1"
POOLINGS = ("mean", "last")
SEGMENTER_TYPES = ("sam", "sam2")
COORDINATE_DECODINGS = ("greedy", "mean", "median")  # response.coordinates (coordinates.py)
MAX_BOX_REFINE = 5  # segmenter.box_refine: at most this many re-prompts per box


def valid_box_refine(value) -> bool:
    """segmenter.box_refine / Segmenter.predict(refine=): an integer (not a bool) in 0..MAX_BOX_REFINE."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_BOX_REFINE

DEFAULT_LIMITS = {
    "max_image_side": 1280,
    "max_query_tokens": 64,
    "max_new_tokens": 96,
    "coarse_max_new_tokens": 64,
}

_BUILD_HINT = "build a tiny test model with `python -m earl_ros.model.tiny DIR --segmenter sam`"


@dataclass
class StageSpec:
    path: Path
    lora: Path | None = None
    pooling: str = "mean"  # coarse only
    afs: Path | None = None  # response only
    afs_alpha: float = 1.0  # response only
    coordinates: str = "greedy"  # response only: how box coordinates are decoded (coordinates.py)


@dataclass
class SegmenterSpec:
    type: str
    path: Path
    decoder_onnx: Path | None = None
    box_refine: int = 0  # re-prompts with each mask's own box (Segmenter.predict)
    video_memory: Path | None = None  # a SAM 2 video model dir (tracking_method: memory; video_memory.py)


@dataclass
class Manifest:
    root: Path
    name: str
    prompt_version: str
    coarse: StageSpec
    response: StageSpec
    segmenter: SegmenterSpec
    limits: dict = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    raw: dict = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.root / MANIFEST_NAME

    @classmethod
    def load(cls, model_dir: str | Path) -> "Manifest":
        root = Path(model_dir).expanduser()
        if not root.exists():
            raise ModelDirError(f"model directory {root} does not exist ({_BUILD_HINT}, or pass --model)")
        if not root.is_dir():
            raise ModelDirError(f"model directory {root} is not a directory")
        mf = root / MANIFEST_NAME
        if not mf.is_file():
            raise ModelDirError(f"{mf} is missing: a model directory needs an {MANIFEST_NAME} manifest ({_BUILD_HINT})")
        try:
            raw = yaml.safe_load(mf.read_text())
        except yaml.YAMLError as e:
            raise ModelDirError(f"{mf} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ModelDirError(f"{mf} must be a YAML mapping (see docs/CONTRACTS.md)")
        return cls.from_dict(raw, root.resolve())

    @classmethod
    def from_dict(cls, raw: dict, root: Path) -> "Manifest":
        rd = _Reader(raw, root)
        fmt = raw.get("format", FORMAT)
        if fmt != FORMAT:
            raise ModelDirError(f"{rd.mf}: unsupported format {fmt!r} (expected {FORMAT!r})")
        pv = raw.get("prompt_version", PROMPT_VERSION)
        if pv != PROMPT_VERSION:
            raise ModelDirError(
                f"{rd.mf}: prompt_version {pv!r} does not match this code's {PROMPT_VERSION!r}; "
                "retrain/export the model with this version or use a matching earl_ros"
            )
        return cls(root=root, name=str(raw.get("name", root.name)), prompt_version=pv, coarse=_coarse_spec(rd),
                   response=_response_spec(rd), segmenter=_segmenter_spec(rd), limits=_limits(rd), raw=raw)


class _Reader:
    """Sections and paths of one earl.yaml, each error naming the file and the key at fault."""

    def __init__(self, raw: dict, root: Path):
        self.raw, self.root, self.mf = raw, root, root / MANIFEST_NAME

    def section(self, key: str) -> dict:
        sec = self.raw.get(key)
        if not isinstance(sec, dict):
            raise ModelDirError(f"{self.mf}: section '{key}' is missing or not a mapping (see docs/CONTRACTS.md)")
        return sec

    def path_of(self, sec: dict, key: str, where: str, required: bool = True, kind: str = "dir") -> Path | None:
        value = sec.get(key)
        if value in (None, "", "null"):
            if required:
                raise ModelDirError(f"{self.mf}: '{where}.{key}' is required")
            return None
        p = Path(str(value)).expanduser()
        p = p if p.is_absolute() else self.root / p
        ok = p.is_dir() if kind == "dir" else p.is_file() if kind == "file" else p.exists()
        if not ok:
            raise ModelDirError(
                f"{p} is missing (named by '{where}.{key}' in {self.mf}); put the {where} checkpoint there "
                f"or fix the path in {MANIFEST_NAME}"
            )
        return p


def _coarse_spec(rd: _Reader) -> StageSpec:
    c = rd.section("coarse")
    coarse = StageSpec(path=rd.path_of(c, "path", "coarse"), lora=rd.path_of(c, "lora", "coarse", required=False),
                       pooling=str(c.get("pooling", "mean")))
    if coarse.pooling not in POOLINGS:
        raise ModelDirError(f"{rd.mf}: coarse.pooling must be one of {POOLINGS}, got {coarse.pooling!r}")
    if not (coarse.path / "config.json").is_file():
        raise ModelDirError(f"{coarse.path / 'config.json'} is missing (coarse model is not a Hugging Face model dir)")
    return coarse


def _response_spec(rd: _Reader) -> StageSpec:
    r = rd.section("response")
    response = StageSpec(
        path=rd.path_of(r, "path", "response"),
        lora=rd.path_of(r, "lora", "response", required=False),
        afs=rd.path_of(r, "afs", "response", required=True),
        afs_alpha=float(r.get("afs_alpha", 1.0)),
        coordinates=r.get("coordinates", "greedy"),
    )
    if response.coordinates not in COORDINATE_DECODINGS:
        raise ModelDirError(f"{rd.mf}: response.coordinates must be one of {COORDINATE_DECODINGS}, "
                            f"got {response.coordinates!r}")
    for d, f in ((response.path, "config.json"), (response.afs, "config.json"), (response.afs, "model.safetensors")):
        if not (d / f).is_file():
            raise ModelDirError(f"{d / f} is missing (named by {MANIFEST_NAME} in {rd.root})")
    if response.lora is not None and not (response.lora / "adapter_config.json").is_file():
        raise ModelDirError(f"{response.lora / 'adapter_config.json'} is missing (response.lora is not a peft adapter dir)")
    return response


def _segmenter_spec(rd: _Reader) -> SegmenterSpec:
    s = rd.section("segmenter")
    seg_type = str(s.get("type", "sam"))
    if seg_type not in SEGMENTER_TYPES:
        raise ModelDirError(f"{rd.mf}: segmenter.type must be one of {SEGMENTER_TYPES}, got {seg_type!r}")
    segmenter = SegmenterSpec(
        type=seg_type,
        path=rd.path_of(s, "path", "segmenter"),
        decoder_onnx=rd.path_of(s, "decoder_onnx", "segmenter", required=False, kind="any"),
        box_refine=s.get("box_refine", 0),
        video_memory=rd.path_of(s, "video_memory", "segmenter", required=False),
    )
    if not valid_box_refine(segmenter.box_refine):
        raise ModelDirError(f"{rd.mf}: segmenter.box_refine must be an integer in 0..{MAX_BOX_REFINE}, "
                            f"got {segmenter.box_refine!r}")
    return segmenter


def _limits(rd: _Reader) -> dict:
    limits = dict(DEFAULT_LIMITS)
    limits.update({k: v for k, v in (rd.raw.get("limits") or {}).items()})
    for k in ("max_image_side", "max_query_tokens", "max_new_tokens", "coarse_max_new_tokens"):
        if not isinstance(limits.get(k), int) or limits[k] <= 0:
            raise ModelDirError(f"{rd.mf}: limits.{k} must be a positive integer, got {limits.get(k)!r}")
    return limits


def write_manifest(model_dir: str | Path, data: dict) -> Path:
    """Write `data` as earl.yaml in model_dir (paths should be relative to model_dir)."""
    p = Path(model_dir) / MANIFEST_NAME
    p.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return p


DEFAULT_MODEL = Path("models") / "earl-tiny-synth"


def default_model_dir() -> Path | None:
    """The embedded default model, used when no model is given: models/earl-tiny-synth in the
    working directory, else in the source checkout; None when neither holds one (e.g. a pip install)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / DEFAULT_MODEL / "earl.yaml").is_file():
            return root / DEFAULT_MODEL
    return None
