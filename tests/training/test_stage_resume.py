"""A long stage killed half-way continues from its last resume point and ends with the same weights
as a run that was never interrupted (vision-pretrain, segmenter-ft, sft-coarse, sft-response)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import run_cli

pytestmark = pytest.mark.timeout(900)


class Killed(BaseException):
    """Stands for SIGKILL: raised right after the first resume point is written."""


@pytest.fixture
def kill_after_first_resume_point(monkeypatch):
    from training.stage_checkpoint import StageCheckpoint

    save = StageCheckpoint.maybe_save

    def save_then_die(self, step, total, *a, **kw):
        save(self, step, total, *a, **kw)
        if (self.dir / "trainer_state.json").is_file():
            raise Killed(step)

    def arm():
        monkeypatch.setattr(StageCheckpoint, "maybe_save", save_then_die)

    def disarm():
        monkeypatch.setattr(StageCheckpoint, "maybe_save", save)

    return arm, disarm


def weights(model_dir, part):
    return {k: v for f in sorted((model_dir / part).glob("*.safetensors")) for k, v in load_file(f).items()}


def steps_logged(log):
    return [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]


def run_interrupted_then_resumed(argv, out, kill):
    arm, disarm = kill
    arm()
    with pytest.raises(Killed):
        run_cli(*argv, "--out", out)
    assert (out / "resume" / "trainer_state.json").is_file()
    disarm()
    run_cli(*argv, "--out", out)
    assert not (out / "resume").exists(), "a finished stage leaves no stale resume point"


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from earl_ros.model.tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("resume") / "m0", seed=0, coarse_hidden=64,
                                response_hidden=64)


def test_vision_pretrain_resumes_to_the_uninterrupted_weights(tiny_model, tmp_path, kill_after_first_resume_point):
    argv = ["vision-pretrain", "--model", tiny_model, "--steps", 6, "--batch-images", 2, "--val-images", 2,
            "--resume-every", 3, "--quiet", "--report-to", "none"]
    run_cli(*argv, "--out", tmp_path / "once")
    run_interrupted_then_resumed(argv, tmp_path / "twice", kill_after_first_resume_point)
    assert_same_weights(weights(tmp_path / "once", "coarse"), weights(tmp_path / "twice", "coarse"))
    log = tmp_path / "twice" / "vision_pretrain_log.jsonl"
    assert steps_logged(log) == steps_logged(tmp_path / "once" / "vision_pretrain_log.jsonl")


def test_segmenter_ft_resumes_to_the_uninterrupted_weights(chain, tmp_path, kill_after_first_resume_point):
    argv = ["segmenter-ft", "--model", chain["m1"], "--data", chain["data"], "--steps", 4, "--batch-images", 2,
            "--resume-every", 2, "--quiet", "--report-to", "none"]
    run_cli(*argv, "--out", tmp_path / "once")
    run_interrupted_then_resumed(argv, tmp_path / "twice", kill_after_first_resume_point)
    assert_same_weights(weights(tmp_path / "once", "sam"), weights(tmp_path / "twice", "sam"))


def test_sft_response_resumes_to_the_uninterrupted_weights(chain, tmp_path, kill_after_first_resume_point):
    argv = ["sft-response", "--model", chain["m1"], "--data", chain["data"], "--descriptors", chain["desc"],
            "--epochs", 2, "--batch-size", 6, "--lr", "3e-3", "--descriptor-noise", 0.5, "--descriptor-dropout",
            0.3, "--resume-every", 2, "--quiet", "--report-to", "tensorboard"]
    run_cli(*argv, "--out", tmp_path / "once")
    run_interrupted_then_resumed(argv, tmp_path / "twice", kill_after_first_resume_point)
    for part in ("response", "afs"):
        assert_same_weights(weights(tmp_path / "once", part), weights(tmp_path / "twice", part))
    log = tmp_path / "twice" / "sft_response_log.jsonl"
    assert sorted(steps_logged(log)) == steps_logged(log), "records after the resume point are not repeated"


def test_sft_coarse_resumes_and_refuses_other_settings(chain, tmp_path, kill_after_first_resume_point, capsys):
    from training.cli import main

    argv = ["sft-coarse", "--model", chain["model0"], "--data", chain["data"], "--epochs", 2, "--batch-size", 6,
            "--lr", "3e-3", "--resume-every", 2, "--quiet", "--report-to", "none"]
    run_cli(*argv, "--out", tmp_path / "once")
    arm, disarm = kill_after_first_resume_point
    arm()
    with pytest.raises(Killed):
        run_cli(*argv, "--out", tmp_path / "twice")
    disarm()
    other = [a if a != "3e-3" else "1e-3" for a in argv]
    assert main([str(a) for a in other] + ["--out", str(tmp_path / "twice")]) != 0
    err = capsys.readouterr().err
    assert "lr: saved 0.003, now 0.001" in err and "delete" in err
    run_cli(*argv, "--out", tmp_path / "twice")
    assert_same_weights(weights(tmp_path / "once", "coarse"), weights(tmp_path / "twice", "coarse"))
