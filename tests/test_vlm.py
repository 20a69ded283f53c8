"""The two VLM stages: frames and box mapping, descriptor pooling, query truncation, training hooks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from earl_ros.model.errors import EmptyQueryError
from earl_ros.model.manifest import Manifest
from earl_ros.model.types import Interaction
from earl_ros.model.coordinates import boxes_to_model, boxes_to_original
from earl_ros.model.vlm import CoarseModel, RawResponse, ResponseModel
from earl_ros.model.vlm_processing import load_processor, model_frame
from training.policy import sequence_logprobs, sft_loss


def _image(seed=0, h=180, w=260):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def manifest(tiny_model_dir):
    return Manifest.load(tiny_model_dir)


@pytest.fixture(scope="module")
def coarse(manifest):
    return CoarseModel.from_pretrained(manifest.coarse.path, pooling="mean", max_new_tokens=12)


@pytest.fixture(scope="module")
def response(manifest):
    return ResponseModel.from_pretrained(manifest.response.path, manifest.response.afs, max_query_tokens=16,
                                         max_new_tokens=12)


# ---- coordinate frames -----------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(180, 260), (480, 640), (37, 1000), (1080, 1920), (28, 28)])
def test_model_frame_matches_what_the_processor_feeds_the_model(response, hw):
    batch = response.prepare([np.zeros(hw + (3,), np.uint8)], ["q"])
    frame = batch.frames[0]
    assert frame.orig_hw == hw
    (ih, iw), scale = model_frame(response.processor, hw)
    assert (ih, iw) == frame.input_hw and scale == pytest.approx(frame.scale_xy)
    assert ih % 28 == 0 and iw % 28 == 0
    n_image_tokens = int((batch.inputs["input_ids"] == response.base_model.config.image_token_id).sum())
    assert n_image_tokens == (ih // 28) * (iw // 28)


def test_full_frame_box_maps_to_the_full_original_image(response):
    hw = (480, 640)
    (ih, iw), scale = model_frame(response.processor, hw)
    assert boxes_to_original([[0, 0, iw, ih]], scale, hw).tolist() == [[0, 0, 640, 480]]


def test_boxes_are_clipped_to_the_image():
    out = boxes_to_original([[-5, -5, 500, 500]], (2.0, 2.0), (100, 200))
    assert out.tolist() == [[0, 0, 200, 100]]


@settings(max_examples=200, deadline=None, database=None)
@given(
    h=st.integers(20, 3000), w=st.integers(20, 3000),
    fx=st.floats(0, 0.9), fy=st.floats(0, 0.9), fw=st.floats(0.05, 1.0), fh=st.floats(0.05, 1.0),
)
def test_box_rescaling_round_trip(response, h, w, fx, fy, fw, fh):
    """original -> model frame -> original moves a corner by at most one model pixel's footprint."""
    (ih, iw), (sx, sy) = model_frame(response.processor, (h, w))
    x1, y1 = int(fx * w), int(fy * h)
    x2, y2 = min(w, x1 + max(1, int(fw * (w - x1)))), min(h, y1 + max(1, int(fh * (h - y1))))
    box = np.array([[x1, y1, x2, y2]])
    back = boxes_to_original(boxes_to_model(box, (sx, sy), (ih, iw)), (sx, sy), (h, w))
    err = np.abs(back - box)[0]
    assert err[0] <= sx / 2 + 1 and err[2] <= sx / 2 + 1
    assert err[1] <= sy / 2 + 1 and err[3] <= sy / 2 + 1


def test_raw_response_maps_its_boxes_to_original_pixels():
    rr = RawResponse(texts=["x"], scale_xy=(2.5, 2.0), input_hw=(112, 168), orig_hw=(224, 420), query="q")
    assert rr.to_original([[10, 10, 168, 112]]).tolist() == [[25, 20, 420, 224]]


# ---- stage 1 ---------------------------------------------------------------------------------
def test_describe_returns_a_descriptor_of_the_coarse_hidden_size(coarse):
    inter = coarse.describe(_image(), stamp=12.5)
    assert isinstance(inter, Interaction) and isinstance(inter.text, str)
    assert inter.descriptor.shape == (coarse.descriptor_dim,) == (coarse.base_model.config.text_config.hidden_size,)
    assert inter.descriptor.dtype == np.float32 and np.all(np.isfinite(inter.descriptor))
    assert inter.stamp == 12.5 and inter.latency_ms > 0
    again = coarse.describe(_image())
    assert np.array_equal(inter.descriptor, again.descriptor)  # greedy + deterministic pooling


def test_describe_encodes_the_image_once_and_means_what_the_pixels_mean(coarse, monkeypatch):
    img = _image(2)
    calls = []
    real = coarse.model.get_image_features
    monkeypatch.setattr(coarse.model, "get_image_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    inter = coarse.describe(img)
    assert len(calls) == 1  # generation and the pooling forward share one encoding
    batch = coarse.prepare([img])  # the same pass with the pixels in every forward
    with torch.no_grad():
        out = coarse.model.generate(**batch.inputs, max_new_tokens=coarse.max_new_tokens, do_sample=False,
                                    pad_token_id=coarse.pad_token_id, eos_token_id=coarse.end_token_ids)
    comp = out[0, batch.prompt_len:]
    keep = ~torch.isin(comp, torch.tensor(coarse.end_token_ids)).cumsum(0).bool()
    assert inter.text == coarse.tokenizer.decode(comp[keep], skip_special_tokens=True).strip()
    full = dict(batch.inputs, input_ids=out, attention_mask=torch.cat([batch.inputs["attention_mask"],
                                                                        keep[None].long()], 1))
    if "mm_token_type_ids" in full:
        mm = full["mm_token_type_ids"]
        full["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(out[:, batch.prompt_len:])], 1)
    with torch.no_grad():
        pooled = coarse._pool(full, batch.prompt_len, keep[None].long())[0]
    np.testing.assert_allclose(inter.descriptor, pooled.numpy(), rtol=1e-5, atol=1e-6)


def test_pooling_mean_and_last_are_defined_on_last_layer_description_states(coarse):
    img, text = _image(1), "The camera wearer is holding a red mug with the right hand."
    ids = coarse.tokenizer(text, add_special_tokens=False)["input_ids"]
    batch = coarse.prepare([img], [text])  # prompt + text + end-of-turn, as for SFT
    with torch.no_grad():
        hs = coarse.model(**batch.inputs, output_hidden_states=True).hidden_states[-1][0]
    p = batch.prompt_len
    desc_states = hs[p:p + len(ids)]
    mean = coarse.descriptors([img], [text])[0]
    torch.testing.assert_close(mean, desc_states.mean(0), rtol=1e-5, atol=1e-5)
    try:
        coarse.pooling = "last"
        last = coarse.descriptors([img], [text])[0]
    finally:
        coarse.pooling = "mean"
    torch.testing.assert_close(last, desc_states[-1], rtol=1e-5, atol=1e-5)
    assert (mean - last).abs().max() > 1e-4


def test_unknown_pooling_is_rejected(manifest):
    with pytest.raises(ValueError):
        CoarseModel.from_pretrained(manifest.coarse.path, pooling="max")


def test_coarse_sft_batch_masks_the_prompt(coarse):
    b = coarse.prepare([_image()], ["a red mug"])
    p = b.prompt_len
    assert (b.labels[0, :p] == -100).all() and (b.labels[0, p:] != -100).any()


# ---- stage 2 ---------------------------------------------------------------------------------
def test_respond_returns_texts_and_the_frame_mapping(response):
    img = _image(2, 300, 500)
    rr = response.respond(img, "which hand is holding something?", np.ones(response.descriptor_dim, np.float32),
                          num_return_sequences=2, do_sample=True)
    assert len(rr.texts) == 2 and all(isinstance(t, str) for t in rr.texts)
    (ih, iw), scale = model_frame(response.processor, (300, 500))
    assert rr.input_hw == (ih, iw) and rr.orig_hw == (300, 500) and rr.scale_xy == pytest.approx(scale)
    assert not rr.query_truncated


def test_overlong_query_is_truncated_to_the_token_budget_and_reported(response):
    long_q = "which hand is holding the red mug " * 20
    q, truncated = response.truncate_query(long_q)
    assert truncated
    assert len(response.tokenizer(q, add_special_tokens=False)["input_ids"]) <= response.max_query_tokens
    rr = response.respond(_image(), long_q, None)
    assert rr.query_truncated and rr.query == q
    assert response.truncate_query("  short?  ") == ("short?", False)


@pytest.mark.parametrize("q", ["", "   ", "\n\t"])
def test_empty_query_is_a_typed_error(response, q):
    with pytest.raises(EmptyQueryError):
        response.respond(_image(), q, None)


def test_prepare_with_completions_builds_labels_on_the_completion_only(response):
    imgs = [_image(0), _image(1, 120, 300)]
    comps = ['<answer>["the right hand"]</answer>\n<bbox>"the right hand": [1, 2, 30, 40]</bbox>',
             "<answer>There is no suitable referring result.</answer>\n<bbox>none</bbox>"]
    b = response.prepare(imgs, ["q one", "q two"], np.ones((2, response.descriptor_dim), np.float32), completions=comps)
    p = b.prompt_len
    assert (b.labels[:, :p] == -100).all()
    for i, c in enumerate(comps):
        n = len(response.tokenizer(c + response.tokenizer.eos_token, add_special_tokens=False)["input_ids"])
        assert int(b.completion_mask[i].sum()) == n
        assert response.tokenizer.decode(b.labels[i][b.labels[i] != -100]).startswith(c)
    loss = sft_loss(response, b)
    assert torch.isfinite(loss)
    with torch.no_grad(), response.injector.use(b.descriptors, completion_mask=b.completion_mask):
        # the loss over every position's logits (transformers' own causal-LM loss) is the same number
        full = response.model(**b.inputs, labels=b.labels, use_cache=False).loss
    assert torch.allclose(loss, full, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert response.afs.fc_out.weight.grad is not None
    response.afs.zero_grad(set_to_none=True)
    response.model.zero_grad(set_to_none=True)


def test_sequence_logprobs_shape_and_mask(response):
    b = response.prepare([_image()], ["q"], np.ones((1, response.descriptor_dim), np.float32))
    g = response.generate(b, num_return_sequences=3, max_new_tokens=5, do_sample=True)
    with torch.no_grad():
        lp = sequence_logprobs(response, b, g.completion_ids, g.completion_mask)
    assert lp.shape == (3, g.completion_ids.shape[1]) and lp.dtype == torch.float32
    assert (lp <= 0).all() and (lp[g.completion_mask == 0] == 0).all()


def test_processor_saved_by_save_pretrained_loads_back(response, tmp_path):
    """Training saves processors with processor.save_pretrained (no preprocessor_config.json)."""
    response.processor.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").unlink(missing_ok=True)
    proc = load_processor(tmp_path)
    assert model_frame(proc, (480, 640)) == model_frame(response.processor, (480, 640))
    assert proc.tokenizer.padding_side == "left"


def test_min_max_pixels_override(manifest):
    proc = load_processor(manifest.response.path, max_pixels=56 * 56)
    (ih, iw), _ = model_frame(proc, (480, 640))
    assert ih * iw <= 56 * 56


@pytest.mark.parametrize("full, far_patch_reaches_first_token", [(False, False), (True, True)])
def test_tiny_vision_full_attention_lets_the_first_block_see_the_whole_frame(full, far_patch_reaches_first_token):
    """With Qwen2.5-VL's windowed layout the first block of a tiny tower sees a 2 x 2-token window, so
    a patch in the opposite corner cannot change the top-left token there; with full attention it can."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from earl_ros.model.tiny import build_tokenizer, tiny_vl_config

    torch.manual_seed(0)
    config = tiny_vl_config(build_tokenizer(None, vocab_size=300), 32, 1, 32, 2, vision_full_attention=full)
    assert config.vision_config.fullatt_block_indexes == ([0, 1] if full else [1])
    visual = Qwen2_5_VLForConditionalGeneration(config).eval().model.visual
    grid = torch.tensor([[1, 8, 8]])  # 8 x 8 patches = 4 x 4 merged tokens, raster order of 2 x 2 groups
    px = torch.randn(64, 3 * 2 * 14 * 14)
    moved = px.clone()
    moved[-4:] += 5.0  # the bottom-right merged token's four patches
    first = {}
    hook = visual.blocks[0].register_forward_hook(lambda m, i, o: first.__setitem__("out", o))
    with torch.no_grad():
        visual(px, grid_thw=grid)
        a = first["out"][:4].clone()  # the top-left window's patches (window 0 comes first either way)
        visual(moved, grid_thw=grid)
        b = first["out"][:4]
    hook.remove()
    assert (not torch.allclose(a, b, atol=1e-6)) == far_patch_reaches_first_token
