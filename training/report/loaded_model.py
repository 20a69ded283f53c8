"""One model dir of a report, each of its parts loaded at most once.

A report asks the same model dir for its manifest, its weights' fingerprint, its pipeline (latency,
AFS size) and its coarse model (image reliance, held objects). Loading each of those per question
read the manifest five times and the coarse weights three; `LoadedModel` loads a part on first use and
keeps it for the rest of the report, and loads nothing a fully cached report does not need.
"""
from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path


class LoadedModel:
    """A model dir whose parts load on first use and stay loaded for the report that holds it.

    The diagnostics also take a plain path (`LoadedModel.of`), so `python -m training.report
    image-reliance` and the tests call them without building one."""

    def __init__(self, model_dir: str | Path):
        self.dir = Path(model_dir)

    @classmethod
    def of(cls, model: "LoadedModel | str | Path") -> "LoadedModel":
        return model if isinstance(model, cls) else cls(model)

    @cached_property
    def manifest(self):
        from earl_ros.model.manifest import Manifest

        return Manifest.load(self.dir)

    @cached_property
    def fingerprint(self) -> str | None:
        """Content hash of the manifest and every weight file it points at. Cached evals carry it, so
        retraining a stage into the same directory invalidates them instead of being reported with the
        old model's numbers. None when the dir is not a loadable model dir."""
        from earl_ros.model.errors import ModelDirError

        try:
            m = self.manifest
        except (ModelDirError, OSError):
            return None
        h = hashlib.sha256((self.dir / "earl.yaml").read_bytes())
        for d in (m.coarse.path, m.coarse.lora, m.response.path, m.response.lora, m.response.afs, m.segmenter.path):
            for f in sorted(Path(d).rglob("*.safetensors")) if d is not None and Path(d).is_dir() else []:
                h.update(f.read_bytes())
        return h.hexdigest()[:16]

    @cached_property
    def pipeline(self):
        from earl_ros.model.pipeline import EarlPipeline

        return EarlPipeline.from_dir(self.dir)

    @cached_property
    def coarse(self):
        """The pipeline's own coarse model when the pipeline is already loaded; a pipeline whose two
        stages share one base switches LoRA adapters inside its own calls only, so then (and when no
        pipeline was needed) the coarse model is loaded alone, as the manifest describes it."""
        if "pipeline" in self.__dict__ and not self.pipeline.shared_base:
            return self.pipeline.coarse
        from earl_ros.model.vlm import CoarseModel

        m = self.manifest
        return CoarseModel.from_pretrained(m.coarse.path, lora_path=m.coarse.lora, pooling=m.coarse.pooling,
                                           max_new_tokens=m.limits["coarse_max_new_tokens"])


def model_fingerprint(model: str | Path) -> str | None:
    """`LoadedModel.fingerprint` of a path, computed afresh (a test retrains a copy between calls)."""
    return LoadedModel(model).fingerprint
