"""Image features of a frozen vision tower, computed once per training image.

The SFT stages keep the vision tower frozen (a pretrained encoder should be; docs/training.md), so
its output for a given image never changes, yet every batch ran it again: each of the 3000 training
images comes back with about 8 questions per response-SFT epoch and 4 times in coarse SFT. On the
tiny recipe the tower's forward pass was about a quarter of a response-SFT step. transformers'
Qwen2.5-VL accepts precomputed image features (`mm_encoder_outputs`) in place of `pixel_values`,
so the cached features go through exactly the code path the pixels would (placeholder scatter,
M-RoPE positions from `image_grid_thw`); tests/training/test_vision_cache.py checks the loss is the
same with and without the cache.

Memory: one [tokens, hidden] tensor per image (63 x 128 floats for the tiny recipe's frames, 96 MB
for 3000 images); for a 7B model's 3584-wide features, leave it off (`--no-vision-cache`).
"""
from __future__ import annotations

import torch


class FrozenVisionCache:
    """Swap a prepared batch's pixels for cached image features, keyed by image id."""

    def __init__(self, model):
        self.model = model  # Qwen2_5_VLForConditionalGeneration (or a peft wrapper around one)
        self.features: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0

    def inputs(self, inputs: dict, keys: list[str]) -> dict:
        """`inputs` of a prepared batch with `pixel_values` replaced by cached features.

        keys[i] names the image of row i (the image id; same id = same pixels, SFT does no
        augmentation). Images not seen before are encoded in one pass and kept."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        grid = inputs["image_grid_thw"]  # [B, 3] (t, h, w) patches per image
        if len(keys) != grid.shape[0]:
            raise ValueError(f"FrozenVisionCache: {len(keys)} keys for {grid.shape[0]} images")
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # key -> its first row
        missing = [i for k, i in first.items() if k not in self.features]
        if missing:
            rows = torch.split(inputs["pixel_values"], grid.prod(-1).tolist())  # per image [t*h*w, C*p*p]
            with torch.no_grad():
                out = self.model.get_image_features(torch.cat([rows[i] for i in missing]), grid[missing],
                                                    return_dict=True)
            for i, f in zip(missing, out.pooler_output):  # per image [t*h*w / merge^2, hidden]
                self.features[keys[i]] = f.detach()
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        feats = tuple(self.features[k] for k in keys)
        out = {k: v for k, v in inputs.items() if k != "pixel_values"}
        out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=feats)}
        return out
