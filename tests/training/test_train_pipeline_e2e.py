"""End to end on the tiny config: synth -> SFT (coarse) -> descriptors -> SFT (response) -> GRPO -> eval.

Also the contracts that tie training to inference: the offline descriptor equals the run-time one,
every GRPO checkpoint is a loadable model dir that carries its AFS weights, and resume is exact.
"""
import json

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

# The session `chain` fixture trains three tiny stages (about a minute alone); its time counts toward
# the first test that uses it, so these tests get more than the suite's 300 s on a loaded machine.
pytestmark = pytest.mark.timeout(900)

from training.common import load_descriptors
from training.data import IRGBench


def test_offline_descriptor_equals_runtime_describe(chain):
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.pipeline import EarlPipeline

    table = load_descriptors(chain["desc"])
    texts = json.loads(chain["desc"].with_suffix(".texts.json").read_text())
    ds = IRGBench(chain["data"], "test")
    assert set(ds.image_ids) <= set(table)
    pipe = EarlPipeline.from_dir(chain["m1"])  # the run-time path the robot uses
    for iid in ds.image_ids[:2]:
        inter = pipe.describe(ds.image(iid))
        assert inter.text == texts[iid]
        np.testing.assert_allclose(table[iid], inter.descriptor, rtol=0, atol=1e-5)
    assert table[ds.image_ids[0]].shape == (pipe.descriptor_dim,)
    assert Manifest.load(chain["m1"]).coarse.path == (chain["m1"] / "coarse").resolve()


def test_sft_outputs_are_model_dirs(chain):
    m = yaml.safe_load((chain["m2"] / "earl.yaml").read_text())
    assert m["response"]["path"] == "response" and m["response"]["afs"] == "afs"
    assert m["response"]["afs_alpha"] == 0.1
    assert (chain["m2"] / "afs" / "model.safetensors").is_file()


@pytest.fixture
def varied_rewards(monkeypatch):
    """Real rewards plus a tiny length bonus, so every group has a non-zero advantage whatever the
    (barely trained) tiny model writes: the test is about the update path, not about model quality."""
    import training.grpo as grpo
    from training.rewards import RewardBreakdown

    real = grpo.score_completion

    def score(text, *a, **k):
        r = real(text, *a, **k)
        return RewardBreakdown(r.format, r.answer, r.ground, r.total + 1e-3 * len(text), r.status)

    monkeypatch.setattr(grpo, "score_completion", score)


def test_grpo_checkpoints_carry_afs_and_resume_exactly(chain, tmp_path, cli, grpo_argv, varied_rewards):
    full, part = tmp_path / "full", tmp_path / "part"
    cli(*grpo_argv(full, "--save-every", 1))
    ck1 = full / "checkpoint-1"
    for d in (ck1, full / "final"):
        assert (d / "afs" / "model.safetensors").is_file(), "AFS weights are saved in every checkpoint"
        assert (d / "lora" / "adapter_config.json").is_file()
        assert (d / "trainer_state.safetensors").is_file() and (d / "trainer_state.json").is_file()
        assert not (d / "trainer_state.pt").exists() and (d / "earl.yaml").is_file()
    log = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for key in ("reward/total", "reward/format", "reward/answer", "reward/ground", "reward/total_std", "kl",
                "loss", "completion_len", "time/generation", "time/rewards", "time/update"):
        assert key in log[0]
    # AFS was trained: its weights differ from the SFT model's
    afs0 = load_file(str(chain["m2"] / "afs" / "model.safetensors"))
    afs2 = load_file(str(full / "final" / "afs" / "model.safetensors"))
    assert any(not np.array_equal(afs0[k], afs2[k]) for k in afs0)
    # resume from checkpoint-1 in a new run dir: the final weights match the uninterrupted run
    cli(*grpo_argv(part, "--resume", ck1))
    a = load_file(str(full / "final" / "policy.safetensors"))
    b = load_file(str(part / "final" / "policy.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_grpo_refuses_a_reward_box_refinement_it_cannot_draw(chain, tmp_path, grpo_argv, capsys):
    """Filled-box masks cannot be refined, and the count is bounded as segmenter.box_refine is: both
    are refused before any model loads (a SettingsError; the CLI prints it and exits with 2)."""
    from training.cli import main, parse_settings
    from training.errors import SettingsError
    from training.grpo import run_grpo

    argv = [str(a) for a in grpo_argv(tmp_path / "a", "--reward-box-refine", 1)]
    with pytest.raises(SettingsError, match="needs --segmenter model"):
        run_grpo(parse_settings("grpo", argv[1:]))
    assert main(argv) == 2 and "error: --reward-box-refine needs --segmenter model" in capsys.readouterr().err
    argv = [str(a) for a in grpo_argv(tmp_path / "b", "--segmenter", "model", "--reward-box-refine", 99)]
    with pytest.raises(SettingsError, match="must be an integer in 0.."):
        run_grpo(parse_settings("grpo", argv[1:]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_eval_on_a_grpo_checkpoint_writes_table_and_json(chain, tmp_path, capsys, cli, grpo_argv):
    out = tmp_path / "grpo"
    cli(*grpo_argv(out, "--steps", 1))
    js = tmp_path / "eval.json"
    cli("eval", "--model", out / "final", "--data", chain["data"], "--split", "test", "--limit", 6,
            "--out", js, "--quiet")
    printed = capsys.readouterr().out
    assert "cIoU (paper's metric)" in printed and "answer METEOR" in printed
    res = json.loads(js.read_text())
    for k in ("cIoU", "gIoU", "sample_mIoU", "instance_mIoU", "answer_METEOR", "answer_CIDEr",
              "description_METEOR", "no_target_acc"):
        assert k in res
    assert res["n"] == 6 and len(res["samples"]) == 6
    assert 0.0 <= res["cIoU"] <= 1.0


@pytest.fixture
def loose_gt_answers(chain, monkeypatch):
    """The response model answers with the ground-truth entities and boxes grown by 6 px per side
    (a rough but right answer), so the segmenter has real boxes to redraw."""
    from earl_ros.model.prompts import format_response
    from earl_ros.model.coordinates import boxes_to_model
    from earl_ros.model.vlm import RawResponse, ResponseModel

    ds = IRGBench(chain["data"], "test")
    truth = {(ds.image(s.image_id).tobytes(), s.query): s for s in ds.samples}

    def respond(self, image, query, descriptor=None, **kw):
        s = truth[(np.ascontiguousarray(image).tobytes(), query)]
        f = self.frame_of(image.shape[:2])
        if s.no_target:
            text = format_response([], None)
        else:
            boxes = boxes_to_model(s.boxes() + np.array([-6, -6, 6, 6]), f.scale_xy, f.input_hw)
            text = format_response(s.entities, [tuple(int(v) for v in b) for b in boxes])
        return RawResponse([text], f.scale_xy, f.input_hw, f.orig_hw, query, False)

    def respond_many(self, image, queries, descriptor=None, **kw):  # evaluation's batched path
        return [respond(self, image, q, descriptor) for q in queries]

    monkeypatch.setattr(ResponseModel, "respond", respond)
    monkeypatch.setattr(ResponseModel, "respond_many", respond_many)


def test_refine_sweep_redraws_only_the_masks_of_an_eval(chain, loose_gt_answers):
    """Column 0 of the sweep is the eval itself; column k is what `eval --box-refine k` measures, and
    an eval at one count converts exactly into the eval at another."""
    from training.evaluate import evaluate, refine_sweep, with_box_refine

    keys = ("cIoU", "gIoU", "sample_mIoU", "instance_mIoU", "no_target_acc")
    plain = evaluate(chain["m2"], chain["data"], "test", limit=10, progress=False, box_refine=0)
    assert sum(bool(r["pred_boxes"]) for r in plain["samples"]) >= 3  # something to redraw
    sweep = refine_sweep(plain, chain["m2"], chain["data"], rounds=(0, 2))
    refined = evaluate(chain["m2"], chain["data"], "test", limit=10, progress=False, box_refine=2)
    assert refined["box_refine"] == 2
    for k in keys:
        assert sweep[0][k] == pytest.approx(plain[k], abs=1e-9)
        assert sweep[2][k] == pytest.approx(refined[k], abs=1e-9)
    assert sweep[0]["no_target_acc"] == sweep[2]["no_target_acc"] == 1.0  # refinement never touches answers
    derived = with_box_refine(plain, chain["m2"], chain["data"], 2)
    assert derived["box_refine"] == 2
    for k in keys + ("answer_METEOR",):
        assert derived[k] == pytest.approx(refined[k], abs=1e-9)
    assert [r["iou"] for r in derived["samples"]] == pytest.approx([r["iou"] for r in refined["samples"]], abs=1e-9)
