"""A manifest naming one base for both stages loads it once and answers exactly as two copies would."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from earl_ros.model.pipeline import EarlPipeline


def _lora(model_dir, out, seed):
    """A random (non-zero) LoRA adapter for the tiny VLM at model_dir."""
    import torch
    from peft import LoraConfig, get_peft_model

    from earl_ros.model.vlm import load_vlm

    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(load_vlm(model_dir), cfg).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def two_dirs(tiny_model_dir, tmp_path_factory):
    """(separate, shared): the same weights, adapters and AFS; `separate` holds the base twice."""
    import torch

    from earl_ros.model.afs import AFS, AFSConfig

    root = tmp_path_factory.mktemp("shared-base")
    sep, shared = root / "separate", root / "shared"
    shutil.copytree(tiny_model_dir, sep)
    shutil.copytree(sep / "coarse", sep / "response", dirs_exist_ok=True)  # response = a copy of the coarse base
    hidden = yaml.safe_load((sep / "coarse" / "config.json").read_text())["text_config"]["hidden_size"]
    torch.manual_seed(5)
    afs = AFS(AFSConfig(in_dim=hidden, out_dim=hidden, hidden=64))
    torch.nn.init.normal_(afs.fc_out.weight, std=0.05)  # a modulation that shows in the answer
    afs.save_pretrained(sep / "afs")
    _lora(sep / "coarse", sep / "lora_coarse", seed=1)
    _lora(sep / "coarse", sep / "lora_response", seed=2)
    manifest = yaml.safe_load((sep / "earl.yaml").read_text())
    manifest["coarse"]["lora"], manifest["response"]["lora"] = "lora_coarse", "lora_response"
    (sep / "earl.yaml").write_text(yaml.safe_dump(manifest))
    shutil.copytree(sep, shared, ignore=shutil.ignore_patterns("response"))
    manifest["response"]["path"] = "coarse"
    (shared / "earl.yaml").write_text(yaml.safe_dump(manifest))
    return sep, shared


def _scene():
    rng = np.random.default_rng(3)
    img = np.full((120, 160, 3), 60, np.uint8)
    img[30:90, 40:120] = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    return img


def test_shared_base_is_loaded_once(two_dirs):
    sep, shared = (EarlPipeline.from_dir(d) for d in two_dirs)
    assert shared.shared_base and not sep.shared_base
    assert shared.coarse.model is shared.response.model
    assert shared.adapters == {"coarse": "coarse", "response": "response"}

    def weights(p):
        return {t.data_ptr() for m in {id(p.coarse.model): p.coarse.model, id(p.response.model): p.response.model}.values()
                for t in m.parameters()}

    assert len(weights(shared)) < 0.6 * len(weights(sep))


def test_each_stage_runs_under_its_own_adapter_exactly_as_with_two_copies(two_dirs):
    sep, shared = (EarlPipeline.from_dir(d) for d in two_dirs)
    img = _scene()
    a, b = sep.describe(img), shared.describe(img)
    assert a.text == b.text and np.allclose(a.descriptor, b.descriptor, atol=1e-5)
    ga = sep.answer(img, "which hand is holding something?", interaction=a)
    gb = shared.answer(img, "which hand is holding something?", interaction=b)
    assert ga.raw_text == gb.raw_text
    # the switch matters: the same pass under the response adapter gives another descriptor
    from earl_ros.model.shared_base import stage_adapter

    with stage_adapter(shared.coarse.model, "response"):
        c = shared.coarse.describe(img)
    assert not np.allclose(c.descriptor, b.descriptor, atol=1e-4)


def test_a_shared_base_without_adapters_runs_both_stages_on_the_bare_model(two_dirs, tmp_path):
    shutil.copytree(two_dirs[1], tmp_path / "bare")
    manifest = yaml.safe_load((tmp_path / "bare" / "earl.yaml").read_text())
    manifest["coarse"]["lora"] = manifest["response"]["lora"] = None
    (tmp_path / "bare" / "earl.yaml").write_text(yaml.safe_dump(manifest))
    pipe = EarlPipeline.from_dir(tmp_path / "bare")
    assert pipe.shared_base and pipe.adapters == {"coarse": None, "response": None}
    g = pipe.answer(_scene(), "which hand?")
    assert g.image_size == (120, 160)
