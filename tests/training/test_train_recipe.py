"""segmenter-ft, export and the tiny-synth recipe (quick scale) produce self-contained, loadable model dirs."""
import json

import numpy as np
import pytest
import yaml

from tests.training.conftest import run_cli

# Uses the session `chain` fixture (three tiny training stages) and runs the quick-scale recipe.
pytestmark = pytest.mark.timeout(900)


def _absolute_paths(raw):
    out = []
    for sec, keys in (("coarse", ("path", "lora")), ("response", ("path", "lora", "afs")),
                      ("segmenter", ("path", "decoder_onnx"))):
        out += [raw[sec][k] for k in keys if raw[sec].get(k) and str(raw[sec][k]).startswith("/")]
    return out


def test_segmenter_ft_learns_box_to_mask(chain, tmp_path):
    from earl_ros.model.segmenter import Segmenter
    from training.data import IRGBench

    out = tmp_path / "seg"
    run_cli("segmenter-ft", "--model", chain["m1"], "--data", chain["data"], "--out", out, "--steps", 30,
            "--batch-images", 4, "--lr", "3e-3", "--seed", 0)
    raw = yaml.safe_load((out / "earl.yaml").read_text())
    assert raw["segmenter"]["path"] == "sam"
    log = [json.loads(line) for line in (out / "segmenter_ft_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    # the trained decoder is what inference loads
    seg = Segmenter.from_pretrained(out / "sam")
    ds = IRGBench(chain["data"], "train")
    s = next(s for s in ds.samples if s.entities)
    masks, _ = seg.segment(s.image(), s.boxes().astype(np.float32))
    assert masks.shape[1:] == s.image().shape[:2]


def test_export_is_self_contained_and_merges_lora(chain, tmp_path):
    from earl_ros.model.manifest import Manifest
    from training.export import export_model_dir

    g = tmp_path / "grpo"
    run_cli("grpo", "--model", chain["m2"], "--data", chain["data"], "--out", g, "--descriptors", chain["desc"],
            "--steps", 1, "--prompts-per-step", 2, "--micro-batch", 2, "--num-generations", 2,
            "--max-completion-length", 8, "--lora-r", 4, "--lora-alpha", 8, "--segmenter", "box", "--lr", "1e-2",
            "--save-every", 0, "--quiet")
    src = g / "final"
    assert _absolute_paths(yaml.safe_load((src / "earl.yaml").read_text()))  # training dirs point outside
    out = export_model_dir(src, tmp_path / "exported", name="x")
    raw = yaml.safe_load((out / "earl.yaml").read_text())
    assert _absolute_paths(raw) == []
    assert raw["response"]["lora"] is None and raw["name"] == "x"
    m = Manifest.load(out)
    for p in (m.coarse.path, m.response.path, m.response.afs, m.segmenter.path):
        assert out.resolve() in p.resolve().parents
    # the merged response model gives the same logits as base + LoRA
    import torch

    from earl_ros.model.vlm import ResponseModel
    from training.data import IRGBench

    s = IRGBench(chain["data"], "test").samples[0]
    src_m = Manifest.load(src)
    a = ResponseModel.from_pretrained(src_m.response.path, src_m.response.afs, lora_path=src_m.response.lora,
                                      afs_alpha=src_m.response.afs_alpha)
    b = ResponseModel.from_pretrained(m.response.path, m.response.afs, afs_alpha=m.response.afs_alpha)
    d = np.random.default_rng(0).normal(size=a.descriptor_dim).astype(np.float32)
    la = a.logits(s.image(), s.query, d)
    lb = b.logits(s.image(), s.query, d)
    assert torch.allclose(la, lb, atol=1e-4)


def test_recipe_quick_scale(tmp_path):
    from earl_ros.model.pipeline import EarlPipeline
    from training.recipe import main

    run = tmp_path / "run"
    assert main(["tiny-synth", "--scale", "quick", "--out", str(run), "--model-out", str(tmp_path / "m")]) == 0
    rec = json.loads((run / "recipe.json").read_text())
    assert set(rec["stage_seconds"]) == {"synth", "tiny", "synth-segmenter", "vision-pretrain", "sft-coarse",
                                         "descriptors", "segmenter-ft", "stage1", "sft-response", "grpo", "select", "val-curve",
                                         "video-memory", "export"}
    assert (run / "logs" / "segmenter-ft.log").is_file()  # parallel lanes log to files
    # every training stage is watchable: TensorBoard events beside its log, GRPO's val curve from select's scores
    assert all(any((run / stage / "tb").glob("events.out.tfevents.*")) for stage in ("vision", "seg", "coarse",
                                                                                     "sft", "grpo"))
    curve = [json.loads(line) for line in (run / "grpo" / "val_log.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [0, 2] and all(0 <= p["val/cIoU"] <= 1 for p in curve)
    assert not (run / "sft_nodesc").exists()  # the ablation arm is a second command ...
    raw = yaml.safe_load((tmp_path / "m" / "earl.yaml").read_text())
    assert _absolute_paths(raw) == []
    sel = json.loads((run / "selection.json").read_text())
    assert sel["selected"] in ("sft", "grpo") and set(sel["box_refine_val_cIoU"]) == {"0", "1", "2", "3", "4", "5"}
    best = max(sel["box_refine_val_cIoU"].values())
    assert round(sel["box_refine_val_cIoU"][str(sel["box_refine"])], 4) == round(best, 4)  # the best count on val ...
    assert raw["segmenter"]["box_refine"] == sel["box_refine"]  # ... is the exported model's
    # the exported (stage, coordinate decoding, box_refine) is the best cell of the whole validation grid
    grid = {(st, m, k): v for st, ms in sel["val_cIoU"].items() for m, ks in ms.items() for k, v in ks.items()}
    assert {st for st, _, _ in grid} == {"sft", "grpo"} and {m for _, m, _ in grid} <= {"greedy", "mean"}
    assert round(grid[sel["selected"], sel["coordinates"], str(sel["box_refine"])], 4) == round(max(grid.values()), 4)
    assert raw["response"]["coordinates"] == sel["coordinates"]
    assert raw["segmenter"]["video_memory"] == "sam_video"  # the shipped model can track by memory
    pipe = EarlPipeline.from_dir(tmp_path / "m")
    assert pipe.video_memory is not None
    g = pipe.answer(np.zeros((96, 128, 3), np.uint8), "Where is my left hand?")
    assert g.image_size == (96, 128)
    # both shipped VLMs see with the tower vision-pretrain trained: no later stage changes it
    import torch

    from earl_ros.model.vlm import load_vlm

    pretrained = load_vlm(run / "vision" / "coarse").model.visual.state_dict()
    for part in ("coarse", "response"):
        shipped = load_vlm(tmp_path / "m" / part).model.visual.state_dict()
        assert all(torch.equal(shipped[k], v) for k, v in pretrained.items()), part
    # --resume reruns only what is missing; the whole run's wall clock stays the recorded one
    assert rec["finished"] and "resumed" not in rec
    (run / "selection.json").unlink()
    assert main(["tiny-synth", "--scale", "quick", "--out", str(run), "--model-out", str(tmp_path / "m"),
                 "--resume", "--wall-note", "select rerun on a shared machine"]) == 0
    again = json.loads((run / "recipe.json").read_text())
    assert again["wall_seconds"] == rec["wall_seconds"] and again["finished"]
    assert again["wall_note"] == "select rerun on a shared machine" and "wall_note" not in rec
    assert [r["stages"] for r in again["resumed"]] == [["select", "val-curve", "video-memory", "export"]]
    # ... which trains from this run's stage-1 models without touching the shipped arm or the export
    before = {f: f.stat().st_mtime_ns for d in (run / "sft", tmp_path / "m") for f in d.rglob("*") if f.is_file()}
    assert main(["tiny-synth", "--scale", "quick", "--out", str(run), "--ablation", "no-descriptor"]) == 0
    abl = json.loads((run / "recipe_no-descriptor.json").read_text())
    assert set(abl["stage_seconds"]) == {"sft-response-nodesc", "grpo-nodesc"}
    assert (run / "grpo_nodesc" / "final" / "earl.yaml").is_file()
    assert {f: f.stat().st_mtime_ns for f in before} == before
    assert json.loads((run / "recipe.json").read_text()) == again
    # a training-seed repeat trains both arms again under seed1/, with --seed 1, touching nothing else
    before = {f: f.stat().st_mtime_ns for d in (run / "sft", run / "sft_nodesc", tmp_path / "m")
              for f in d.rglob("*") if f.is_file()}
    assert main(["tiny-synth", "--scale", "quick", "--out", str(run), "--repeat-seed", "1"]) == 0
    rep = json.loads((run / "recipe_seed1.json").read_text())
    assert set(rep["stage_seconds"]) == {"sft-response", "grpo", "sft-response-nodesc", "grpo-nodesc"}
    ran = [c for c in rep["commands"] if " sft-response " in c or " grpo " in c]
    assert len(ran) == 4 and all("--seed 1" in c and f"{run}/seed1/" in c for c in ran)
    for arm in ("grpo/final", "grpo_nodesc/final"):
        assert (run / "seed1" / arm / "earl.yaml").is_file()
    assert (run / "seed1" / "logs" / "grpo-nodesc.log").is_file()  # its lanes log beside it
    assert {f: f.stat().st_mtime_ns for f in before} == before


def test_ablation_needs_a_recipe_run_first(tmp_path, capsys):
    from training.recipe import main

    def refused(argv, message):
        assert main(argv) == 2
        assert message in capsys.readouterr().err

    refused(["tiny-synth", "--scale", "quick", "--out", str(tmp_path / "empty"), "--ablation", "no-descriptor"],
            "no stage-1 model")
    assert not (tmp_path / "empty").exists()
    with pytest.raises(SystemExit):  # one arm or both, not both flags (an argparse error)
        main(["tiny-synth", "--out", str(tmp_path / "empty"), "--ablation", "no-descriptor", "--with-ablation"])
    refused(["tiny-synth", "--scale", "quick", "--out", str(tmp_path / "empty"), "--repeat-seed", "1"],
            "train the repeat")
    refused(["tiny-synth", "--scale", "quick", "--out", str(tmp_path / "empty"), "--repeat-seed", "0"],
            "seed 0 is the recipe run itself")
    assert not (tmp_path / "empty").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: {stepz: 3}\n")  # a typo in a section is named before any stage runs
    refused(["tiny-synth", "--scale", "quick", "--out", str(tmp_path / "typo"), "--config", str(bad)],
            "recipe section 'grpo': unknown option(s) stepz")


def test_a_fresh_run_never_replaces_a_folder_the_recipe_did_not_write(tmp_path, capsys):
    from training.recipe import main

    mine = tmp_path / "my_files"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["tiny-synth", "--scale", "quick", "--out", str(mine), "--model-out", ""]) == 2
    assert "error: " in (err := capsys.readouterr().err) and "not a recipe run dir" in err
    assert (mine / "notes.txt").read_text() == "keep me"
