"""Tiny random-weight SAM and SAM 2 checkpoints, built offline and deterministically from a seed.

They are ordinary Hugging Face format directories (config.json + model.safetensors +
preprocessor_config.json), so they load through exactly the code path a real checkpoint uses
(`earl_ros.model.segmenter.Segmenter.from_pretrained(dir)`, `SamModel.from_pretrained(dir)`).

- SAM: `SamModel`, 2-layer 64-wide ViT vision encoder at image_size 256 (16x16 embedding, 64x64
  low-resolution masks); the vision `output_channels` equals the prompt-encoder / mask-decoder hidden
  size (32). Processor: `SamProcessor` with the PIL image processor (`SamImageProcessorPil`, no
  torchvision), so `SamProcessor.from_pretrained(dir)` works offline.
- SAM 2: `Sam2Model`, 4-stage Hiera backbone at image_size 256; the vision config's
  `backbone_feature_sizes` are image_size / 4, / 8, / 16 = [[64,64],[32,32],[16,16]]. transformers'
  SAM 2 image processor needs torchvision, so the directory carries the same
  `preprocessor_config.json` keys a real SAM 2 checkpoint has (resize to a fixed square, rescale,
  ImageNet normalisation) and our segmenter does the preprocessing itself from those keys.

Both build in well under a second on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TINY_IMAGE_SIZE = 256


def _seeded(seed: int):
    import torch

    torch.manual_seed(int(seed))


def _randomize_(model, seed: int) -> None:
    """Give every floating parameter/buffer a deterministic, non-degenerate random value.

    HF init leaves some tensors at zero (biases, no_memory_embedding) or near-constant (SAM vision
    init range 1e-10), which would make masks trivially empty; tests want masks that depend on the
    box. Scale 0.2 keeps activations well-conditioned for these tiny widths.
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed) + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "layer_norm" in name or name.endswith("norm.weight") or ".norm" in name:
                if name.endswith("weight"):
                    p.fill_(1.0)
                    continue
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _initialise_(model, seed: int, init: str) -> None:
    """init "random": _randomize_; "train": keep transformers' own initialisation."""
    if init == "random":
        _randomize_(model, seed)
    elif init != "train":
        raise ValueError(f"init must be 'random' or 'train', got {init!r}")


def tiny_sam_config(patch_size: int = 16):
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    hidden = 32  # prompt encoder / mask decoder width == vision output_channels
    grid = TINY_IMAGE_SIZE // patch_size
    vision = SamVisionConfig(
        hidden_size=64,
        output_channels=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_IMAGE_SIZE,
        patch_size=patch_size,
        mlp_ratio=2.0,
        window_size=max(4, grid // 4),
        global_attn_indexes=[1],
        num_pos_feats=hidden // 2,
        initializer_range=0.02,  # HF's SAM default (1e-10) leaves a from-scratch encoder dead
    )
    prompt = SamPromptEncoderConfig(hidden_size=hidden, image_size=TINY_IMAGE_SIZE, patch_size=patch_size)
    decoder = SamMaskDecoderConfig(
        hidden_size=hidden, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def tiny_sam2_config():
    from transformers import Sam2Config, Sam2MaskDecoderConfig, Sam2PromptEncoderConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    hidden = 32
    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[TINY_IMAGE_SIZE, TINY_IMAGE_SIZE],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],  # not a stage start (q-pooling blocks need a window)
        window_positional_embedding_background_size=[4, 4],
    )
    s = TINY_IMAGE_SIZE
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=hidden,
    )
    prompt = Sam2PromptEncoderConfig(hidden_size=hidden, image_size=s, patch_size=16)
    decoder = Sam2MaskDecoderConfig(
        hidden_size=hidden, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
    )
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def _save(model, out: Path) -> None:
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)


def build_tiny_sam(out_dir, seed: int = 0, patch_size: int = 16, init: str = "random") -> Path:
    """Write a tiny SamModel + SamProcessor (PIL image processor) to `out_dir`.

    init "random": every weight drawn at scale 0.2 (masks depend on the box from the start: tests);
    init "train": transformers' own initialisation, the better start for `training segmenter-ft`.
    """
    from transformers import SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _seeded(seed)
    model = SamModel(tiny_sam_config(patch_size))
    _initialise_(model, seed, init)
    _save(model, out)
    low = 4 * (TINY_IMAGE_SIZE // patch_size)  # the mask decoder upsamples the embedding grid 4x
    image_processor = SamImageProcessorPil(
        size={"longest_edge": TINY_IMAGE_SIZE},
        pad_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        mask_size={"longest_edge": low},
        mask_pad_size={"height": low, "width": low},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    SamProcessor(image_processor=image_processor).save_pretrained(str(out))
    return out


def build_tiny_sam2(out_dir, seed: int = 0, init: str = "random") -> Path:
    """Write a tiny Sam2Model + a SAM 2 preprocessor_config.json to `out_dir` (init: as build_tiny_sam)."""
    from transformers import Sam2Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _seeded(seed)
    model = Sam2Model(tiny_sam2_config())
    _initialise_(model, seed, init)
    _save(model, out)
    low = TINY_IMAGE_SIZE // 4
    pre = {
        "image_processor_type": "Sam2ImageProcessorFast",
        "processor_class": "Sam2Processor",
        "do_resize": True,
        "size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
        "mask_size": {"height": low, "width": low},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_convert_rgb": True,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return out


__all__ = ["build_tiny_sam", "build_tiny_sam2", "tiny_sam_config", "tiny_sam2_config"]
