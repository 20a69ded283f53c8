"""The GRPO objective (METHOD.md section 3) as pure tensor functions.

For one prompt, G completions with rewards r_1..r_G:
    A_i = (r_i - mean(r)) / (std(r) + 1e-4)              std: unbiased (torch.std, as trl)
Per completion token t of completion i:
    rho = exp(logp_t - logp_old_t)                       logp_old: the sampling policy (detached)
    L_t = -min(rho * A_i, clip(rho, 1 - eps, 1 + eps) * A_i) + beta * KL3_t
    KL3_t = exp(logp_ref_t - logp_t) - (logp_ref_t - logp_t) - 1   (k3 estimator, >= 0)
Loss = mean over sequences of (mean over that sequence's completion tokens of L_t).
"""
from __future__ import annotations

import torch

ADV_EPS = 1e-4


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = ADV_EPS) -> torch.Tensor:
    """rewards [B*G] (grouped contiguously: prompt 0's G completions first) -> advantages [B*G]."""
    r = rewards.view(-1, group_size).to(torch.float32)
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((r - mean) / (std + eps)).view(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref); same shape as the inputs."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def masked_seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] values, [N, T] 0/1 mask -> mean over masked tokens per sequence, then over sequences."""
    m = mask.to(x.dtype)
    per_seq = (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    return per_seq.mean()


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, beta: float = 0.01, eps: float = 0.2
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """logp/old_logp/ref_logp [N, T] per-token log-probs of the sampled tokens; advantages [N];
    mask [N, T] (1 = completion token). Returns (loss, stats)."""
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None].to(logp.dtype)
    unclipped = ratio * a
    clipped = torch.clamp(ratio, 1.0 - eps, 1.0 + eps) * a
    per_token = -torch.min(unclipped, clipped)
    kl = k3_kl(logp, ref_logp) if ref_logp is not None and beta != 0 else torch.zeros_like(logp)
    if ref_logp is not None and beta != 0:
        per_token = per_token + beta * kl
    loss = masked_seq_mean(per_token, mask)
    with torch.no_grad():
        m = mask.to(logp.dtype)
        is_clipped = ((ratio < 1 - eps) & (a < 0)) | ((ratio > 1 + eps) & (a > 0))
        stats = {
            "kl": float(masked_seq_mean(kl.detach(), mask)),
            "clip_frac": float((is_clipped.to(m.dtype) * m).sum() / m.sum().clamp_min(1)),
        }
    return loss, stats
