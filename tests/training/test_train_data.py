"""Synthetic generator: deterministic, fast, and exactly the Ego-IRGBench layout the loader reads."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from training.data import IRGBench
from training.data.synth import CATEGORIES, STYLES, SynthConfig, generate, parse_splits


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, {"train": 12, "test": 4}, seed=3, progress=False)
    return root


def test_same_seed_same_bytes_other_seed_differs(tmp_path, synth_root):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, {"train": 12, "test": 4}, seed=3, progress=False)
    generate(b, {"train": 12, "test": 4}, seed=4, progress=False)
    assert _digest(a) == _digest(synth_root)
    assert _digest(b) != _digest(synth_root)


def test_image_depends_only_on_its_index(tmp_path, synth_root):
    generate(tmp_path, {"train": 3}, seed=3, progress=False)  # fewer images: the first 3 are unchanged
    for name in ("RGB/default_3_train_00002.jpg", "mask/default_3_train_00002.png"):
        assert (tmp_path / name).read_bytes() == (synth_root / name).read_bytes()


def test_layout_matches_the_benchmark(synth_root):
    files = sorted((synth_root / "dataset_split" / "train").glob("*.json"))
    assert len(files) == 12
    for f in files:
        iid = f.stem
        rgb = Image.open(synth_root / "RGB" / f"{iid}.jpg")
        depth = Image.open(synth_root / "depth" / f"{iid}.png")
        mask = Image.open(synth_root / "mask" / f"{iid}.png")
        assert rgb.mode == "RGB" and mask.mode == "L" and depth.mode.startswith("I")
        assert rgb.size == mask.size == depth.size == (256, 192)
        entries = json.loads(f.read_text())
        assert isinstance(entries, list) and entries
        lab = np.asarray(mask)
        for e in entries:
            assert set(e) == {"masks_idx", "with_mask", "caption", "answer", "tokens", "questions"}
            assert len(e["masks_idx"]) == len(e["tokens"])
            for mid, tok in zip(e["masks_idx"], e["tokens"]):
                assert (mid == 0) == (tok == "")
                if mid:
                    assert (lab == mid).any(), "every referenced instance id is in the label map"
            assert e["with_mask"] == int(any(e["masks_idx"]))
            for q in e["questions"]:
                assert set(q) == {"query", "is_sentence", "id"} and q["query"]


def test_loader_gives_per_query_samples_of_all_four_kinds(synth_root):
    ds = IRGBench(synth_root, "train")
    kinds = set()
    for s in ds:
        assert s.image().shape == (192, 256, 3)
        masks, boxes = s.masks(), s.boxes()
        assert masks.shape[0] == len(s.entities) == len(boxes)
        for mk, b in zip(masks, boxes):
            ys, xs = np.nonzero(mk)
            assert tuple(b) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if s.no_target:
            kinds.add("no-target")
        elif all("hand" in e for e in s.entities):
            kinds.add("hand")
        elif all("active" in e for e in s.entities):
            kinds.add("object-of-hand")
        else:
            kinds.add("hands+objects")
    assert kinds == {"hand", "object-of-hand", "hands+objects", "no-target"}
    assert any(c in " ".join(ds.captions.values()) for c in CATEGORIES)


def test_loader_reads_a_hand_written_benchmark_entry(tmp_path):
    (tmp_path / "RGB").mkdir()
    (tmp_path / "mask").mkdir()
    (tmp_path / "dataset_split" / "val").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "RGB" / "007.jpg")
    lab = np.zeros((4, 6), np.uint8)
    lab[1:3, 0:2] = 5
    lab[0:1, 3:6] = 9
    Image.fromarray(lab).save(tmp_path / "mask" / "007.png")
    entry = [{"masks_idx": [5, 9, 0], "with_mask": 1, "caption": "The camera wearer is holding a laptop.",
              "answer": "The mask of the right hand is <MSK_0>, and the mask of the active laptop interacting "
                        "with right hand is <MSK_1>.",
              "tokens": ["the right hand", "the active laptop", ""],
              "questions": [{"query": "What is my right hand using?", "is_sentence": True, "id": "q1"}]},
             {"masks_idx": [0, 0, 0], "with_mask": 0, "caption": "The camera wearer is holding a laptop.",
              "answer": "There is no suitable referring result.", "tokens": ["", "", ""],
              "questions": [{"query": "What is my left hand holding?", "is_sentence": True, "id": "q2"}]}]
    (tmp_path / "dataset_split" / "val" / "007.json").write_text(json.dumps(entry))
    ds = IRGBench(tmp_path, "val")
    assert len(ds) == 2
    s, nt = ds[0], ds[1]
    assert s.entities == ["the right hand", "the active laptop"] and not s.no_target
    assert s.boxes().tolist() == [[0, 1, 2, 3], [3, 0, 6, 1]]
    assert nt.no_target and nt.entities == [] and nt.masks().shape == (0, 4, 6)


def test_every_style_generates(tmp_path):
    for style in STYLES:
        generate(tmp_path / style, {"ood": 2}, seed=0, cfg=SynthConfig(style=style), progress=False)
        assert len(IRGBench(tmp_path / style, "ood").image_ids) == 2


def test_split_spec_parsing():
    assert parse_splits("train=40,val=5,test=5") == {"train": 40, "val": 5, "test": 5}
    with pytest.raises(ValueError):
        parse_splits("train40")
