"""AFS module (METHOD.md section 2) and its injection into the response VLM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earl_ros.model.afs import AFS, AFSConfig, AFSInjector
from earl_ros.model.manifest import Manifest
from earl_ros.model.vlm import ResponseModel
from training.policy import attach_lora, sequence_logprobs

QUERY = "which hand is holding something?"


def _image(seed=0, h=180, w=260):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def response(tiny_model_dir):
    m = Manifest.load(tiny_model_dir)
    return ResponseModel.from_pretrained(m.response.path, m.response.afs)


def _descriptor(rm, seed=0):
    return torch.randn(rm.descriptor_dim, generator=torch.Generator().manual_seed(seed)).numpy()


# ---- the module ------------------------------------------------------------------------------
def test_parameter_count_matches_the_papers_configuration():
    afs = AFS(AFSConfig(in_dim=2048, out_dim=3584, hidden=1024))
    assert sum(p.numel() for p in afs.parameters()) == 5_775_878
    assert all(p.requires_grad for p in afs.parameters())


@pytest.mark.parametrize("hidden", [1000, 2, 0, -4])
def test_hidden_size_must_be_a_perfect_square(hidden):
    with pytest.raises(ValueError):
        AFSConfig(in_dim=8, out_dim=8, hidden=hidden)


def test_shapes():
    afs = AFS(AFSConfig(in_dim=48, out_dim=40, hidden=64))
    out = afs(torch.randn(3, 48), torch.randn(3, 40))
    assert out.shape == (3, 40)


def test_init_follows_the_authors():
    torch.manual_seed(0)
    afs = AFS(AFSConfig(in_dim=2048, out_dim=3584, hidden=1024))
    for lin in (afs.fc_in, afs.fc_out):
        assert abs(lin.weight.std().item() - 0.02) < 1e-3 and abs(lin.weight.mean().item()) < 1e-3
        assert torch.count_nonzero(lin.bias) == 0
    bound = math.sqrt(6.0 / (1 + 1))  # xavier_uniform for a 1x1 conv, 1 -> 1 channel
    for conv in (afs.q_proj, afs.k_proj, afs.v_proj):
        assert conv.weight.shape == (1, 1, 1, 1) and abs(conv.weight.item()) <= bound
        assert torch.count_nonzero(conv.bias) == 0


def _reference_afs(afs: AFS, f_ana, f_emb):
    """METHOD.md section 2, step by step, written independently of the module."""
    x = F.layer_norm(f_ana @ afs.fc_in.weight.T + afs.fc_in.bias, (afs.config.hidden,),
                     afs.norm_in.weight, afs.norm_in.bias)
    q = x * afs.q_proj.weight.reshape(()) + afs.q_proj.bias
    k = x * afs.k_proj.weight.reshape(()) + afs.k_proj.bias
    v = x * afs.v_proj.weight.reshape(()) + afs.v_proj.bias
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a = torch.softmax(torch.einsum("bi,bj->bij", q, k), dim=-1)  # no 1/sqrt(d)
    out = torch.einsum("bij,bj->bi", a, v)
    out = F.layer_norm(out, (afs.config.hidden,), afs.norm_out.weight, afs.norm_out.bias)
    return out @ afs.fc_out.weight.T + afs.fc_out.bias + f_emb


def test_forward_matches_the_method_description():
    torch.manual_seed(1)
    afs = AFS(AFSConfig(in_dim=24, out_dim=32, hidden=16))
    for p in afs.parameters():  # non-trivial values everywhere, including biases and norms
        torch.nn.init.normal_(p, std=0.5)
    f_ana, f_emb = torch.randn(4, 24), torch.randn(4, 32)
    torch.testing.assert_close(afs(f_ana, f_emb), _reference_afs(afs, f_ana, f_emb), rtol=1e-5, atol=1e-5)


def test_residual_on_f_emb():
    afs = AFS(AFSConfig(in_dim=8, out_dim=12, hidden=16))
    torch.nn.init.zeros_(afs.fc_out.weight)
    f_emb = torch.randn(2, 12)
    torch.testing.assert_close(afs(torch.randn(2, 8), f_emb), f_emb)


def test_a_zeroed_output_layer_starts_the_injection_at_nothing_yet_still_learns():
    torch.manual_seed(2)
    afs = AFS(AFSConfig(in_dim=8, out_dim=12, hidden=16))
    afs.zero_output()
    f_ana, f_emb = torch.randn(3, 8), torch.randn(3, 12)
    assert torch.equal(afs(f_ana, f_emb) - f_emb, torch.zeros(3, 12))
    # the output layer gets a gradient from the first step, so the modulation can grow from zero
    (afs(f_ana, f_emb) * torch.randn(3, 12)).sum().backward()
    assert afs.fc_out.weight.grad.abs().max() > 0


def test_save_load_round_trip(tmp_path):
    afs = AFS(AFSConfig(in_dim=8, out_dim=12, hidden=16))
    afs.save_pretrained(tmp_path / "afs")
    assert sorted(p.name for p in (tmp_path / "afs").iterdir()) == ["config.json", "model.safetensors"]
    back = AFS.from_pretrained(tmp_path / "afs")
    x, e = torch.randn(2, 8), torch.randn(2, 12)
    assert torch.equal(afs(x, e), back(x, e))


# ---- injection -------------------------------------------------------------------------------
def _base_logits(rm, img, query):
    batch = rm.prepare([img], [query])
    with torch.no_grad():
        return rm.model(**batch.inputs, use_cache=False).logits[0, -1].float()


def test_zero_descriptor_leaves_logits_identical_to_the_base_model(response):
    img = _image()
    base = _base_logits(response, img, QUERY)  # no injector context at all
    zero = response.logits(img, QUERY, np.zeros(response.descriptor_dim, np.float32))
    assert torch.equal(base, zero)


def test_nonzero_descriptor_changes_response_logits(response):
    img = _image()
    base = _base_logits(response, img, QUERY)
    d1 = response.logits(img, QUERY, _descriptor(response, 1))
    d2 = response.logits(img, QUERY, _descriptor(response, 2))
    assert (d1 - base).abs().max() > 1e-3
    assert (d1 - d2).abs().max() > 1e-4


def test_alpha_scales_the_modulation(response):
    img, d = _image(), _descriptor(response, 3)
    base = _base_logits(response, img, QUERY)
    old = response.injector.alpha
    try:
        response.injector.alpha = 0.0
        assert torch.equal(response.logits(img, QUERY, d), base)
    finally:
        response.injector.alpha = old


def test_descriptor_of_the_wrong_size_is_rejected(response):
    with pytest.raises(ValueError):
        response.logits(_image(), QUERY, np.ones(response.descriptor_dim + 1, np.float32))


def test_injection_applies_to_every_non_image_token_and_to_generated_tokens(response):
    """Spy on the embedding output after the injector: every non-image position, in the prefill and
    in each decode step, carries the same delta; image placeholders carry none."""
    rm = response
    embed = rm.model.get_input_embeddings()
    calls = []
    handle = embed.register_forward_hook(lambda mod, args, out: calls.append((args[0].clone(), out.detach().clone())))
    try:
        batch = rm.prepare([_image()], [QUERY], [_descriptor(rm, 4)])
        with torch.no_grad(), rm.injector.use(batch.descriptors):
            rm.model.generate(**batch.inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                              pad_token_id=rm.pad_token_id)
    finally:
        handle.remove()
    ids_calls = [(ids, out) for ids, out in calls if ids.dim() == 2]
    assert len(ids_calls) >= 5  # prefill + decode steps
    image_id = rm.base_model.config.image_token_id
    deltas = []
    for ids, out in ids_calls:
        delta = out - embed.weight[ids].detach()  # [B, S, D]
        img_pos = ids == image_id
        assert torch.count_nonzero(delta[img_pos]) == 0
        deltas.append(delta[~img_pos])
    prefill, decode = deltas[0], torch.cat(deltas[1:])
    assert decode.shape[0] >= 4 and prefill.abs().max() > 0
    ref = prefill[0]
    torch.testing.assert_close(prefill, ref.expand_as(prefill))
    torch.testing.assert_close(decode, ref.expand_as(decode))  # generated tokens get the same delta


def test_teacher_forced_logprobs_equal_the_generation_scores(response):
    """F_emb comes from prompt positions only and the delta is cached for decoding, so a training
    forward over (prompt + completion) sees exactly what sampling saw."""
    rm = response
    batch = rm.prepare([_image(0), _image(1, 220, 200)], [QUERY, "what is the left hand doing?"],
                       np.stack([_descriptor(rm, 5), _descriptor(rm, 6)]))
    with torch.no_grad(), rm.injector.use(batch.descriptors):
        out = rm.model.generate(**batch.inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                output_logits=True, return_dict_in_generate=True, pad_token_id=rm.pad_token_id)
    comp = out.sequences[:, batch.prompt_len:]
    gen_lp = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, comp[..., None]).squeeze(-1)
    with torch.no_grad():
        tf_lp = sequence_logprobs(rm, batch, comp, torch.ones_like(comp))
    torch.testing.assert_close(tf_lp, gen_lp, rtol=1e-4, atol=1e-4)


def _prefill_delta(rm, batch, **gen):
    """Delta the injector added to the last prompt token (a text token) of each row in the prefill."""
    embed = rm.model.get_input_embeddings()
    calls = []
    h = embed.register_forward_hook(lambda mod, args, out: calls.append((args[0].clone(), out.detach().clone())))
    try:
        rm.generate(batch, max_new_tokens=2, **gen)
    finally:
        h.remove()
    ids, out = next(c for c in calls if c[0].dim() == 2)
    return out[:, -1] - embed.weight[ids[:, -1]].detach()  # [rows, D]


def test_last_delta_is_what_the_prefill_added_to_each_text_token(response):
    rm = response
    batch = rm.prepare([_image(0), _image(1)], [QUERY, QUERY], np.stack([_descriptor(rm, 5), _descriptor(rm, 6)]))
    added = _prefill_delta(rm, batch)  # [2, D]
    torch.testing.assert_close(rm.injector.last_delta.to(added.dtype), added, rtol=1e-5, atol=1e-5)
    assert (added[0] - added[1]).abs().max() > 1e-4


def test_num_return_sequences_repeats_each_prompts_descriptor(response):
    rm = response
    imgs, qs = [_image(0), _image(1)], [QUERY, QUERY]
    d = np.stack([_descriptor(rm, 7), _descriptor(rm, 8)])
    batch = rm.prepare(imgs, qs, d)
    g = rm.generate(batch, num_return_sequences=2, max_new_tokens=6, do_sample=True)
    assert g.completion_ids.shape[0] == 4 and len(g.texts) == 4
    rows = _prefill_delta(rm, batch, num_return_sequences=2, do_sample=True)  # [4, D]
    for i in range(2):
        single = _prefill_delta(rm, rm.prepare([imgs[i]], [qs[i]], d[i:i + 1]))[0]
        for j in range(2):
            torch.testing.assert_close(rows[2 * i + j], single, rtol=1e-5, atol=1e-5)
    assert (rows[0] - rows[2]).abs().max() > 1e-4
    # greedy decoding with G > 1 returns G copies of the greedy answer
    greedy = rm.generate(batch, num_return_sequences=3, max_new_tokens=4)
    assert greedy.completion_ids.shape[0] == 6 and greedy.texts[0] == greedy.texts[1] == greedy.texts[2]


def _spy_positions(rm):
    core = rm.base_model.model
    seen = []
    h = core.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("position_ids")), with_kwargs=True)
    return seen, h, core


def test_image_tokens_get_2d_mrope_positions_from_input_ids(response):
    """The public release lost M-RoPE positions in training; here training and inference both use
    the positions computed from input_ids (temporal/height/width ids of image tokens differ)."""
    rm = response
    batch = rm.prepare([_image(0), _image(2, 140, 300)], [QUERY, "short?"], np.stack([_descriptor(rm, 9)] * 2))
    core = rm.base_model.model
    expected, _ = core.get_rope_index(batch.inputs["input_ids"], batch.inputs["mm_token_type_ids"],
                                      image_grid_thw=batch.inputs["image_grid_thw"],
                                      attention_mask=batch.inputs["attention_mask"])
    image_pos = batch.inputs["input_ids"] == rm.base_model.config.image_token_id
    # truly 2-D: the height and width ids of image tokens are not the 1-D text positions
    assert not torch.equal(expected[1][image_pos], expected[2][image_pos])

    seen, h, _ = _spy_positions(rm)
    try:
        comp = torch.full((2, 3), rm.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        with torch.no_grad():
            sequence_logprobs(rm, batch, comp, torch.ones_like(comp))  # training path
        with torch.no_grad(), rm.injector.use(batch.descriptors):  # inference path (prefill)
            rm.model.generate(**batch.inputs, max_new_tokens=2, do_sample=False, pad_token_id=rm.pad_token_id)
    finally:
        h.remove()
    p = batch.prompt_len
    for pos in (seen[0], seen[1]):
        assert pos is not None
        pos3 = pos[-3:]  # generate passes [text; t; h; w]
        mask = batch.inputs["attention_mask"].bool()
        assert torch.equal(pos3[:, :, :p][:, mask], expected[:, mask])


def test_injection_works_through_a_peft_wrapped_model(tiny_model_dir):
    from peft import LoraConfig

    m = Manifest.load(tiny_model_dir)
    rm = ResponseModel.from_pretrained(m.response.path, m.response.afs)
    attach_lora(rm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    img = _image()
    base = _base_logits(rm, img, QUERY)
    assert torch.equal(rm.logits(img, QUERY, np.zeros(rm.descriptor_dim, np.float32)), base)
    assert (rm.logits(img, QUERY, _descriptor(rm, 10)) - base).abs().max() > 1e-3
    batch = rm.prepare([img], [QUERY], [_descriptor(rm, 10)])
    g = rm.generate(batch, num_return_sequences=2, max_new_tokens=4, do_sample=True)
    lp = sequence_logprobs(rm, batch, g.completion_ids, g.completion_mask)
    ref = sequence_logprobs(rm, batch, g.completion_ids, g.completion_mask, disable_adapter=True)
    lp.sum().backward()
    assert lp.shape == ref.shape == g.completion_ids.shape
    assert rm.afs.fc_in.weight.grad is not None and rm.afs.fc_in.weight.grad.abs().sum() > 0


def test_hooks_are_inert_outside_a_use_block(response):
    img = _image()
    a = _base_logits(response, img, QUERY)
    with response.injector.use(torch.as_tensor(_descriptor(response, 11))):
        pass
    assert torch.equal(_base_logits(response, img, QUERY), a)


def test_injector_detach_removes_hooks():
    emb = torch.nn.Embedding(10, 4)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = emb

        def get_input_embeddings(self):
            return self.e

    afs = AFS(AFSConfig(in_dim=3, out_dim=4, hidden=4))
    inj = AFSInjector(afs, image_token_ids=[9]).attach(M())
    ids = torch.tensor([[1, 2, 9]])
    with inj.use(torch.ones(3)):
        out = emb(ids)
    assert not torch.equal(out, emb.weight[ids])
    assert torch.equal(out[0, 2], emb.weight[9])  # image token untouched
    inj.detach()
    with inj.use(torch.ones(3)):
        assert torch.equal(emb(ids), emb.weight[ids])
