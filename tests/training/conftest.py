"""Shared fixtures of the training tests: one tiny synthetic dataset and one tiny trained chain.

The chain (synth -> tiny model -> sft-coarse -> descriptors -> sft-response) is built once per
session and reused by the descriptor, GRPO, resume, distributed and eval tests.
"""
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def run_cli(*argv):
    from training.cli import main

    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    from earl_ros.model.tiny import build_tiny_model_dir

    root = tmp_path_factory.mktemp("train-chain")
    data = root / "data"
    run_cli("synth", "--out", data, "--splits", "train=12,test=3", "--style", "easy", "--seed", "1", "--quiet")
    corpus = (data / "corpus.txt").read_text().splitlines()
    model0 = build_tiny_model_dir(root / "model0", seed=0, extra_texts=corpus)
    m1 = root / "m1"
    run_cli("sft-coarse", "--model", model0, "--data", data, "--out", m1, "--epochs", 1, "--batch-size", 5,
            "--lr", "3e-3", "--quiet")
    desc = m1 / "descriptors.safetensors"
    run_cli("descriptors", "--model", m1, "--data", data, "--split", "train", "test", "--out", desc, "--quiet")
    m2 = root / "m2"
    run_cli("sft-response", "--model", m1, "--data", data, "--out", m2, "--descriptors", desc, "--epochs", 10,
            "--batch-size", 8, "--lr", "3e-3", "--afs-alpha", 0.1, "--quiet")
    return {"root": root, "data": data, "model0": model0, "m1": m1, "desc": desc, "m2": m2}


GRPO_ARGS = ["--steps", 2, "--prompts-per-step", 2, "--micro-batch", 2, "--num-generations", 4,
             "--max-completion-length", 48, "--segmenter", "box", "--lr", "1e-3", "--warmup", 0, "--quiet", "--quiet-log"]


@pytest.fixture
def cli():
    """run_cli("grpo", "--model", ...): a training command in this process; asserts exit code 0."""
    return run_cli


@pytest.fixture
def grpo_args():
    """The small GRPO settings every GRPO test uses."""
    return [str(a) for a in GRPO_ARGS]


@pytest.fixture
def grpo_argv(chain):
    def make(out, *extra):
        return ["grpo", "--model", chain["m2"], "--data", chain["data"], "--out", out, "--descriptors",
                chain["desc"], *GRPO_ARGS, *extra]

    return make
