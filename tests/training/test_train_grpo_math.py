"""GRPO math on known tensors (METHOD.md section 3)."""
import math

import pytest
import torch

from training.grpo_math import group_advantages, grpo_loss, k3_kl, masked_seq_mean


def test_group_advantages_normalise_within_each_group():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    a = group_advantages(r, group_size=4)
    std = torch.tensor([1.0, 2.0, 3.0, 4.0]).std().item()  # unbiased: sqrt(5/3)
    expected = [(x - 2.5) / (std + 1e-4) for x in (1, 2, 3, 4)]
    assert a[:4].tolist() == pytest.approx(expected, rel=1e-6)
    assert a[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # equal rewards: no signal, no NaN


def test_k3_kl_values():
    logp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.5), math.log(0.4)])
    kl = k3_kl(logp, ref)
    # d = ref - logp: 0 and log 2 -> exp(d) - d - 1 = 0 and 2 - log 2 - 1
    assert kl.tolist() == pytest.approx([0.0, 1 - math.log(2)])
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_masked_mean_is_per_sequence_then_over_sequences():
    x = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_seq_mean(x, m).item() == pytest.approx((2.0 + 2.0) / 2)


def test_loss_on_policy_equals_minus_mean_advantage():
    # ratio = 1 everywhere (logp == old): loss = -mean_seq(A) (+ beta * KL)
    logp = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -0.5])
    mask = torch.ones(2, 3)
    loss, stats = grpo_loss(logp, logp, logp, adv, mask, beta=0.01, eps=0.2)
    assert loss.item() == pytest.approx(-(1.0 - 0.5) / 2)
    assert stats["kl"] == 0.0


def test_clipping_of_the_ratio():
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1)
    loss, stats = grpo_loss(logp, old, None, adv, mask, beta=0.0, eps=0.2)
    # per sequence: -min(rho A, clip(rho) A)
    #   rho 1.5, A  1 -> -min(1.5, 1.2)  = -1.2   (clipped)
    #   rho 1.5, A -1 -> -min(-1.5, -1.2) = 1.5
    #   rho 0.5, A  1 -> -min(0.5, 0.8)  = -0.5
    #   rho 0.5, A -1 -> -min(-0.5, -0.8) = 0.8   (clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_kl_term_adds_beta_times_k3_and_gradient_flows():
    logp = torch.log(torch.tensor([[0.2, 0.5]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.4, 0.5]]))
    adv = torch.tensor([0.0])
    loss, stats = grpo_loss(logp, logp.detach(), ref, adv, torch.ones(1, 2), beta=0.1)
    assert loss.item() == pytest.approx(0.1 * (1 - math.log(2)) / 2)
    loss.backward()
    # d/dlogp of exp(ref - logp) - (ref - logp) - 1 = -exp(ref - logp) + 1 = -1 for token 0, 0 for token 1
    assert logp.grad.tolist()[0] == pytest.approx([0.1 * -1.0 / 2, 0.0])


def test_padding_tokens_do_not_count():
    logp = torch.zeros(1, 4)
    loss_a, _ = grpo_loss(logp, logp, None, torch.tensor([1.0]), torch.tensor([[1, 1, 0, 0]]), beta=0.0)
    loss_b, _ = grpo_loss(logp[:, :2], logp[:, :2], None, torch.tensor([1.0]), torch.ones(1, 2), beta=0.0)
    assert loss_a.item() == loss_b.item()
