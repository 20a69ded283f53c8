"""The response SFT's position probe: targets follow the processor's token layout, and it trains
without changing what is saved."""
import json

import pytest
import torch

from tests.training.conftest import run_cli

pytestmark = pytest.mark.timeout(600)


def test_cell_centres_are_in_raster_order_per_image():
    from training.position_probe import image_token_positions

    # two images: a 2 x 3 and a 1 x 2 grid of merged tokens (patch grids 4 x 6 and 2 x 4, merge 2)
    p = image_token_positions(torch.tensor([[1, 4, 6], [1, 2, 4]]), merge=2)
    assert p.shape == (8, 2)
    assert torch.allclose(p[:3], torch.tensor([[1 / 6, 0.25], [0.5, 0.25], [5 / 6, 0.25]]))
    assert torch.allclose(p[3], torch.tensor([1 / 6, 0.75]))
    assert torch.allclose(p[6:], torch.tensor([[0.25, 0.5], [0.75, 0.5]]))


def test_one_target_per_image_token_of_a_real_batch(chain):
    from earl_ros.model.vlm import ResponseModel
    from training.common import manifest_paths
    from training.policy import sft_forward
    from training.position_probe import ImageTokenPositionProbe, image_token_positions
    from training.data import IRGBench

    paths = manifest_paths(chain["m1"])
    rm = ResponseModel.from_pretrained(paths["response"], paths["afs"], afs_alpha=0.1)
    ds = IRGBench(chain["data"], "train")
    s = ds.samples[:2]
    b = rm.prepare([x.image() for x in s], [x.query for x in s], None, completions=["a", "b"])
    n_tokens = int((b.inputs["input_ids"] == rm.model.config.image_token_id).sum())
    merge = rm.model.config.vision_config.spatial_merge_size
    assert image_token_positions(b.inputs["image_grid_thw"], merge).shape[0] == n_tokens
    out = sft_forward(rm, b, output_hidden_states=True)
    loss = ImageTokenPositionProbe(rm.hidden_size, layer=2).loss(
        out.hidden_states, b.inputs["input_ids"], rm.model.config.image_token_id, b.inputs["image_grid_thw"], merge)
    assert loss.ndim == 0 and loss > 0
    loss.backward()  # the gradient reaches the language model
    assert rm.model.model.language_model.layers[0].self_attn.q_proj.weight.grad is not None


def test_sft_response_with_the_probe_learns_positions_and_saves_a_plain_model(chain, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "probe"
    run_cli("sft-response", "--model", chain["m1"], "--data", chain["data"], "--out", out, "--descriptors",
            chain["desc"], "--epochs", 6, "--batch-size", 4, "--lr", "3e-3", "--afs-alpha", 0.1,
            "--position-probe", 1.0, "--position-probe-layer", 1, "--quiet")
    log = [json.loads(x) for x in (out / "sft_response_log.jsonl").read_text().splitlines()]
    assert all({"answer_loss", "probe_loss"} <= set(r) for r in log)
    assert log[-1]["probe_loss"] < log[0]["probe_loss"]
    # the probe head is training-only: same tensors as a response model trained without it
    plain = set(load_file(chain["m2"] / "response" / "model.safetensors"))
    assert set(load_file(out / "response" / "model.safetensors")) == plain


def test_a_probe_layer_the_model_lacks_is_refused(chain, tmp_path, capsys):
    from training.cli import main

    assert 2 == main(["sft-response", "--model", str(chain["m1"]), "--data", str(chain["data"]), "--out",
                      str(tmp_path / "x"), "--descriptors", str(chain["desc"]), "--epochs", "1", "--position-probe",
                      "1", "--position-probe-layer", "99", "--quiet"])
    assert "error: --position-probe-layer 99: the response language model has layers 1.." in capsys.readouterr().err
