"""Auxiliary loss for the response SFT: make the language model's image tokens know where they are.

Why: Qwen2.5-VL has no absolute position embedding anywhere. The vision tower and the language
model see positions only through rotary embeddings, which shape attention *scores* but never enter
the token *values*; a token's content says "hand here" but not "here is column 3". A pretrained 3B
model learns to write absolute pixel coordinates anyway; the 4-layer tiny response model after SFT
did not: on held-out frames its boxes were two templates (one per hand side, chosen from the query
text), the standard deviation of predicted box height 2 px against 14 px in the ground truth, and
no correlation between predicted and true box size or vertical centre.

This probe is a linear read-out, from the hidden state after language-model layer `layer`, of
each image token's own cell centre (column / grid width, row / grid height; smooth-L1). Training it
with the SFT loss pushes the early layers to write each token's position into its content (they
can: causal attention to the prompt tokens before the image, through M-RoPE, is position
dependent), so later layers can read coordinates off the tokens they attend to. It is a training
signal only: the head is thrown away and the saved model is an unchanged Qwen2.5-VL.

Measured on the tiny recipe (docs/training.md): the probe learns the positions within a few hundred
steps, yet the answers' boxes stayed templates, so it is off in the recipe; the option stays for
larger response models and longer SFT, where it is untested.
"""
from __future__ import annotations

import torch


class ImageTokenPositionProbe(torch.nn.Module):
    def __init__(self, hidden_size: int, layer: int):
        super().__init__()
        if layer < 1:
            raise ValueError("the probe reads a language-model layer's output: layer >= 1")
        self.layer = int(layer)
        self.head = torch.nn.Linear(hidden_size, 2)

    def loss(self, hidden_states, input_ids: torch.Tensor, image_token_id: int, grid_thw: torch.Tensor,
             merge: int) -> torch.Tensor:
        """hidden_states: the model output's tuple (embeddings, layer 1, ...); one image per row."""
        if self.layer >= len(hidden_states):
            raise ValueError(f"probe layer {self.layer} but the model has {len(hidden_states) - 1} layers")
        h = hidden_states[self.layer]  # [B, L, D]
        mask = input_ids == image_token_id  # [B, L]
        feats = h[mask]  # [N, D], row by row, each row's image tokens in raster order
        target = image_token_positions(grid_thw, merge).to(feats)
        if target.shape[0] != feats.shape[0]:
            raise ValueError(f"{feats.shape[0]} image tokens in the batch but the grids give {target.shape[0]}")
        return torch.nn.functional.smooth_l1_loss(self.head(feats), target, beta=0.1)


def image_token_positions(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """Cell centres [N, 2] as (x, y) in 0..1 of every merged image token, images in order, raster order
    within each (the order the Qwen2.5-VL processor lays image pad tokens out in)."""
    out = []
    for t, gh, gw in grid_thw.tolist():
        h, w = gh // merge, gw // merge
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        out.append(torch.stack([xs.flatten(), ys.flatten()], -1).repeat(int(t), 1))
    return torch.cat(out) if out else torch.zeros((0, 2))
