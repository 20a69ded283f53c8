"""GRPO's resume state (training/trainer_state.py): safetensors + JSON, no pickle, bit-exact."""
import json
import random

import numpy as np
import pytest
import torch

from training.common import lr_lambda
from training.errors import TrainingError
from training.trainer_state import load_trainer_state, rng_state, save_trainer_state, set_rng_state


def _trainer(seed=0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.AdamW([{"params": [params[0]], "lr": 1e-2}, {"params": [params[1]], "lr": 3e-3}],
                            betas=(0.9, 0.99), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(10, 0.1, "linear"))
    return params, opt, sched


def _step(params, opt, sched):
    """One update whose gradient depends on every RNG the trainer uses."""
    noise = torch.randn(3, 2) + float(np.random.normal()) + random.random()
    loss = (params[0] * noise).sum() ** 2 + params[1].pow(3).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_resume_from_the_saved_state_continues_exactly(tmp_path, monkeypatch):
    params, opt, sched = _trainer()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    for _ in range(3):
        _step(params, opt, sched)
    save_trainer_state(tmp_path, {"step": 3, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                  "rng": [rng_state()], "weights": [p.detach().clone() for p in params]})
    for _ in range(2):
        _step(params, opt, sched)
    expected = [p.detach().clone() for p in params]

    def no_pickle(*a, **k):
        raise AssertionError("resume must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    state = load_trainer_state(tmp_path)
    params2, opt2, sched2 = _trainer(seed=5)  # a fresh trainer, other initial weights
    with torch.no_grad():
        for p, w in zip(params2, state["weights"]):
            p.copy_(w)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(state["rng"][0])
    assert state["step"] == 3
    for _ in range(2):
        _step(params2, opt2, sched2)
    for a, b in zip(expected, params2):
        assert torch.equal(a, b.detach())
    assert sched2.state_dict() == sched.state_dict()
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_the_state_files_are_safetensors_and_plain_json(tmp_path):
    from safetensors.torch import load_file

    params, opt, sched = _trainer()
    _step(params, opt, sched)
    save_trainer_state(tmp_path, {"step": 1, "optimizer": opt.state_dict(), "rng": [rng_state()],
                                  "settings": {"lr": 1e-5, "resume": None}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer_state.json", "trainer_state.safetensors"]
    doc = json.loads((tmp_path / "trainer_state.json").read_text())
    assert doc["format"] == "earl-trainer-state/1" and doc["state"]["settings"] == {"lr": 1e-5, "resume": None}
    tensors = load_file(str(tmp_path / "trainer_state.safetensors"))
    assert any(k.endswith("exp_avg") for k in tensors) and any(k.endswith("/torch") for k in tensors)
    back = load_trainer_state(tmp_path)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)  # tuples come back as tuples
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer parameter ids too


def test_a_pickled_state_of_an_older_version_is_refused_not_loaded(tmp_path):
    (tmp_path / "trainer_state.pt").write_bytes(b"not loaded")
    with pytest.raises(TrainingError, match="older version"):
        load_trainer_state(tmp_path)
    with pytest.raises(TypeError, match="without pickle"):
        save_trainer_state(tmp_path / "x", {"fn": print})
