"""Ego-IRGBench loader (METHOD.md section 4); the synthetic generator writes the same layout.

    root/RGB/<id>.jpg  root/depth/<id>.png  root/mask/<id>.png (label map: value = instance id)
    root/dataset_split/<split>/<id>.json    a LIST of entries:
        masks_idx  list[int]  instance ids in the mask png, one per entity slot; 0 = unused slot
        with_mask  0/1        0 = no-target entry
        caption    str        the interaction description (stage-1 target)
        answer     str        template sentence with <MSK_i> placeholders
        tokens     list[str]  entity strings per slot, '' when the slot is empty
        questions  list[{query, is_sentence, id}]

One `Sample` per (entry, question). Entities are the non-empty tokens whose slot has a non-zero
mask id; their masks are `label_map == masks_idx[slot]`; boxes are derived from the masks as
integer corners [x1, y1, x2, y2] with x2/y2 exclusive (x2 = last column + 1), which is what the
response model is trained to output. An entity whose mask is empty in the png (fully occluded or an
annotation hole) keeps its name and an empty mask and gets the box [0, 0, 0, 0]; `Sample.valid_boxes`
says whether every entity has a non-empty mask (GRPO/SFT skip samples where it is False).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Sample:
    image_id: str
    query: str
    query_id: str
    is_sentence: bool
    entities: list[str]
    mask_ids: list[int]
    caption: str
    answer: str
    no_target: bool
    root: Path = field(repr=False, default=Path("."))

    def image(self) -> np.ndarray:
        return load_rgb(self.root, self.image_id)

    def label_map(self) -> np.ndarray:
        return load_label_map(self.root, self.image_id)

    def masks(self) -> np.ndarray:
        """bool [N, H, W], one per entity (N = 0 for no-target)."""
        lab = self.label_map()
        if not self.mask_ids:
            return np.zeros((0,) + lab.shape, bool)
        return np.stack([lab == i for i in self.mask_ids])

    def boxes(self) -> np.ndarray:
        """int [N, 4] x1, y1, x2 (exclusive), y2 (exclusive) from the masks."""
        return masks_to_boxes(self.masks())

    @property
    def valid_boxes(self) -> bool:
        return bool(all(b[2] > b[0] and b[3] > b[1] for b in self.boxes()))


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight integer boxes [x1, y1, x2, y2) of masks [N,H,W]; an empty mask gives (0, 0, 0, 0)."""
    from earl_ros.model.segmenter import mask_boxes

    return mask_boxes(masks, fallback=np.zeros((len(masks), 4), np.float32)).astype(np.int64)


@lru_cache(maxsize=256)
def _load_rgb_cached(path: str) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB"))
    arr.setflags(write=False)
    return arr


@lru_cache(maxsize=256)
def _load_lab_cached(path: str) -> np.ndarray:
    img = Image.open(path)
    arr = np.asarray(img)
    if arr.ndim == 3:  # a palette/RGB png: use the first channel as the label
        arr = arr[..., 0]
    arr = arr.astype(np.int32)
    arr.setflags(write=False)
    return arr


def load_rgb(root: Path, image_id: str) -> np.ndarray:
    return _load_rgb_cached(str(Path(root) / "RGB" / f"{image_id}.jpg"))


def load_label_map(root: Path, image_id: str) -> np.ndarray:
    return _load_lab_cached(str(Path(root) / "mask" / f"{image_id}.png"))


def load_depth(root: Path, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(Path(root) / "depth" / f"{image_id}.png"))


def entities_of(entry: dict) -> tuple[list[str], list[int]]:
    ids = list(entry.get("masks_idx") or [])
    toks = list(entry.get("tokens") or [])
    if not int(entry.get("with_mask", 1)):
        return [], []
    ents, mids = [], []
    for slot, mid in enumerate(ids):
        tok = toks[slot].strip() if slot < len(toks) and isinstance(toks[slot], str) else ""
        if int(mid) != 0 and tok:
            ents.append(tok)
            mids.append(int(mid))
    return ents, mids


class IRGBench:
    """Per-query samples of one split. `IRGBench(root, "train")[i] -> Sample`."""

    def __init__(self, root: str | Path, split: str, limit: int | None = None, image_limit: int | None = None):
        self.root = Path(root)
        sdir = self.root / "dataset_split" / split
        if not sdir.is_dir():
            raise FileNotFoundError(f"{sdir} does not exist: expected an Ego-IRGBench layout "
                                    f"(root/dataset_split/{split}/<id>.json); "
                                    f"make one with `python -m training synth --out {self.root}`")
        self.split = split
        files = sorted(sdir.glob("*.json"))
        if image_limit is not None:
            files = files[:image_limit]
        self.image_ids = [f.stem for f in files]
        self.samples: list[Sample] = []
        self.captions: dict[str, str] = {}
        for f in files:
            entries = json.loads(f.read_text())
            if isinstance(entries, dict):
                entries = [entries]
            for e in entries:
                ents, mids = entities_of(e)
                self.captions.setdefault(f.stem, e.get("caption", ""))
                for q in e.get("questions", []):
                    self.samples.append(Sample(
                        image_id=f.stem, query=str(q["query"]), query_id=str(q.get("id", "")),
                        is_sentence=bool(q.get("is_sentence", False)), entities=ents, mask_ids=mids,
                        caption=e.get("caption", ""), answer=e.get("answer", ""), no_target=not ents,
                        root=self.root))
        if limit is not None:
            self.samples = self.samples[:limit]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self):
        return iter(self.samples)

    def image(self, image_id: str) -> np.ndarray:
        return load_rgb(self.root, image_id)
