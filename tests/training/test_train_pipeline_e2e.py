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
        assert (d / "trainer_state.pt").is_file() and (d / "earl.yaml").is_file()
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
