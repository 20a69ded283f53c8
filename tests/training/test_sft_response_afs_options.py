"""`sft-response --afs-init zero`, `--afs-lr` and `--descriptor-dropout`: how response SFT treats the AFS path."""
from pathlib import Path

from safetensors.torch import load_file


def _fc_out(model_dir):
    """The AFS output weights a model dir's manifest points at (sft-coarse's output names model0's AFS)."""
    from earl_ros.model.manifest import Manifest

    return load_file(Path(Manifest.load(model_dir).response.afs) / "model.safetensors")["fc_out.weight"]


def _lm_weights(model_dir):
    """The response language model's weights (everything but the AFS) a model dir's manifest points at."""
    from earl_ros.model.manifest import Manifest

    return load_file(Path(Manifest.load(model_dir).response.path) / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _sft(cli, chain, out, *extra):
    cli("sft-response", "--model", chain["m1"], "--data", chain["data"], "--out", out, "--descriptors",
        chain["desc"], "--epochs", 1, "--batch-size", 8, "--afs-alpha", 0.5, "--quiet", *extra)


def test_zero_init_trains_from_a_zeroed_output_layer_and_the_descriptor_path_then_learns(cli, chain, tmp_path):
    assert _fc_out(chain["m1"]).abs().max() > 0  # the input model's AFS: the authors' random init
    _sft(cli, chain, tmp_path / "frozen", "--afs-init", "zero", "--lr", 0)  # lr 0: saves the starting point
    assert _fc_out(tmp_path / "frozen").abs().max() == 0
    _sft(cli, chain, tmp_path / "trained", "--afs-init", "zero", "--lr", "3e-3")
    assert _fc_out(tmp_path / "trained").abs().max() > 0


def test_keep_is_the_default_and_trains_the_input_models_afs(cli, chain, tmp_path):
    _sft(cli, chain, tmp_path / "kept", "--lr", 0)
    assert (_fc_out(tmp_path / "kept") == _fc_out(chain["m1"])).all()


def test_dropping_every_descriptor_trains_without_the_afs(cli, chain, tmp_path):
    # a zero descriptor switches the injection off for its sample, so at dropout 1 the AFS never runs
    _sft(cli, chain, tmp_path / "dropped", "--descriptor-dropout", 1, "--lr", "3e-3")
    assert (_fc_out(tmp_path / "dropped") == _fc_out(chain["m1"])).all()
    _sft(cli, chain, tmp_path / "half", "--descriptor-dropout", 0.5, "--lr", "3e-3")
    assert not (_fc_out(tmp_path / "half") == _fc_out(chain["m1"])).all()


def test_the_afs_learns_at_its_own_rate(cli, chain, tmp_path):
    _sft(cli, chain, tmp_path / "afs_still", "--lr", "3e-3", "--afs-lr", 0)
    assert (_fc_out(tmp_path / "afs_still") == _fc_out(chain["m1"])).all()
    assert not _same(_lm_weights(tmp_path / "afs_still"), _lm_weights(chain["m1"]))

    _sft(cli, chain, tmp_path / "lm_still", "--lr", 0, "--afs-lr", "3e-3")
    assert not (_fc_out(tmp_path / "lm_still") == _fc_out(chain["m1"])).all()
    assert _same(_lm_weights(tmp_path / "lm_still"), _lm_weights(chain["m1"]))


def test_descriptor_noise_is_scaled_to_the_spread_of_the_splits_stored_descriptors():
    import numpy as np

    from training.sft import DescriptorSource, descriptor_noise_scale

    src = DescriptorSource(2)
    src.table = {"a": np.array([0.0, 10.0], np.float32), "b": np.array([2.0, 10.0], np.float32),
                 "other_split": np.array([100.0, -100.0], np.float32)}
    samples = [type("S", (), {"image_id": i})() for i in ("a", "b", "a")]
    assert descriptor_noise_scale(src, samples, 0.0) is None
    np.testing.assert_allclose(descriptor_noise_scale(src, samples, 0.5), [0.5, 0.0])  # std of {0, 2} is 1


def test_descriptor_noise_changes_what_the_afs_learns_and_needs_stored_descriptors(cli, chain, tmp_path):
    import pytest

    _sft(cli, chain, tmp_path / "clean", "--afs-lr", "3e-3", "--lr", 0)
    _sft(cli, chain, tmp_path / "noisy", "--afs-lr", "3e-3", "--lr", 0, "--descriptor-noise", 1)
    assert not (_fc_out(tmp_path / "clean") == _fc_out(tmp_path / "noisy")).all()
    from training.errors import SettingsError
    from training.settings import SftResponseSettings
    from training.sft import sft_response

    with pytest.raises(SettingsError, match="--descriptor-noise needs --descriptors"):
        sft_response(SftResponseSettings(model=str(chain["m1"]), data=str(chain["data"]), out=str(tmp_path / "x"),
                                         no_descriptor=True, descriptor_noise=1.0, epochs=1.0, quiet=True))
    assert not (tmp_path / "x").exists()
