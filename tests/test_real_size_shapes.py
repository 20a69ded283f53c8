"""Real-size shape contracts, checked in seconds on the meta device (no weights are allocated).

The published sizes (earl_ros.model.presets) must build the modules the releases ship: the parameter
counts their model cards state and the tensor shapes in their safetensors indexes. Around them,
the contracts EARL relies on: the tokenizer's special ids, AFS 2048 -> 3584, the LoRA targets,
the image-token count of a 1280x720 frame, and the Hiera-L decoder's ONNX inputs and outputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from earl_ros.model.presets import QWEN_FIRST_SPECIAL_ID, QWEN_SPECIAL_TOKENS
from earl_ros.model.scaffold import (build_qwen_tokenizer, check_tokenizer_matches, qwen25_vl_config,
                                     sam21_hiera_large_config)


def meta_vlm(preset):
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(qwen25_vl_config(preset))


@pytest.fixture(scope="module")
def tokenizer():
    return build_qwen_tokenizer()


@pytest.mark.parametrize("preset,billions", [("qwen2.5-vl-3b", 3.75), ("qwen2.5-vl-7b", 8.29)])
def test_presets_build_the_released_parameter_counts(preset, billions):
    n = sum(p.numel() for p in meta_vlm(preset).parameters())
    assert round(n / 1e9, 2) == billions


@pytest.mark.parametrize("preset,shapes", [
    ("qwen2.5-vl-3b", {"embed_tokens": (151936, 2048), "k_proj": (256, 2048), "gate_proj": (11008, 2048),
                       "merger_out": (2048, 5120), "layers": 36}),
    ("qwen2.5-vl-7b", {"embed_tokens": (152064, 3584), "k_proj": (512, 3584), "gate_proj": (18944, 3584),
                       "merger_out": (3584, 5120), "layers": 28}),
])
def test_presets_have_the_released_tensor_shapes(preset, shapes):
    m = meta_vlm(preset)
    lm = m.model.language_model
    assert tuple(lm.embed_tokens.weight.shape) == shapes["embed_tokens"]
    assert len(lm.layers) == shapes["layers"]
    assert tuple(lm.layers[0].self_attn.k_proj.weight.shape) == shapes["k_proj"]
    assert tuple(lm.layers[0].mlp.gate_proj.weight.shape) == shapes["gate_proj"]
    vis = m.model.visual
    assert len(vis.blocks) == 32 and tuple(vis.blocks[0].attn.qkv.weight.shape) == (3840, 1280)
    assert tuple(vis.blocks[0].mlp.gate_proj.weight.shape) == (3420, 1280)
    assert tuple(vis.merger.mlp[2].weight.shape) == shapes["merger_out"]
    tied = m.lm_head.weight is lm.embed_tokens.weight
    assert tied == (preset == "qwen2.5-vl-3b")  # 3B ties lm_head to the embeddings, 7B does not


def test_tokenizer_has_qwens_special_ids_and_fits_both_vocabularies(tokenizer):
    assert len(tokenizer) == QWEN_FIRST_SPECIAL_ID + len(QWEN_SPECIAL_TOKENS) == 151665
    for preset in ("qwen2.5-vl-3b", "qwen2.5-vl-7b"):
        check_tokenizer_matches(tokenizer, qwen25_vl_config(preset))
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    ids = tokenizer("which hand is holding the cup?")["input_ids"]
    assert max(ids) < 10_000 and tokenizer.decode(ids) == "which hand is holding the cup?"
    assert isinstance(tokenizer.decode([120_000, 151655]), str)  # unused ids decode, never raise


def test_afs_maps_the_3b_descriptor_into_the_7b_embedding_space():
    from earl_ros.model.afs import AFS, AFSConfig

    with torch.device("meta"):
        afs = AFS(AFSConfig(in_dim=qwen25_vl_config("qwen2.5-vl-3b").text_config.hidden_size,
                            out_dim=qwen25_vl_config("qwen2.5-vl-7b").text_config.hidden_size))
        out = afs(torch.empty(2, 2048), torch.empty(2, 3584))
    assert tuple(out.shape) == (2, 3584)


def test_image_tokens_of_a_720p_frame_match_what_the_vision_tower_emits(tokenizer):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from earl_ros.model.presets import QWEN25_VL_IMAGE_PROCESSOR as P
    from earl_ros.model.vlm_processing import DEFAULT_CHAT_TEMPLATE, EarlVLProcessor

    ip = Qwen2VLImageProcessorPil(min_pixels=P["min_pixels"], max_pixels=P["max_pixels"], patch_size=14,
                                  merge_size=2, temporal_patch_size=2)
    proc = EarlVLProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=DEFAULT_CHAT_TEMPLATE)
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
                                    tokenize=False, add_generation_prompt=True)
    enc = proc(text=[text], images=[np.zeros((720, 1280, 3), np.uint8)], return_tensors="pt")
    t, h, w = (int(v) for v in enc["image_grid_thw"][0])
    assert (t, h, w) == (1, 52, 92)  # 1280x720 -> 1288x728 (multiples of 28), 14 px patches
    cfg = qwen25_vl_config("qwen2.5-vl-3b").vision_config
    merged = t * h * w // cfg.spatial_merge_size ** 2  # rows the merger emits for this image
    assert int((enc["input_ids"] == 151655).sum()) == merged == 1196
    assert enc["pixel_values"].shape == (t * h * w, 3 * cfg.temporal_patch_size * cfg.patch_size ** 2)


def test_llm_lora_targets_exist_at_real_size():
    import re

    sft = pytest.importorskip("training.sft")
    names = [n for n, _ in meta_vlm("qwen2.5-vl-7b").named_modules()]
    hits = [n for n in names if re.fullmatch(sft.LLM_LINEAR, n)]
    assert len(hits) == 28 * 7 + 1  # seven projections per decoder layer, and lm_head
    assert not any(".visual." in f".{n}" for n in hits)


def test_hiera_large_decoder_exports_with_the_released_io_shapes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from transformers import Sam2Model

    from earl_ros.export.onnx_export import export_decoder_onnx

    with torch.device("meta"):
        model = Sam2Model(sam21_hiera_large_config())
    for part in (model.prompt_encoder, model.mask_decoder, model.shared_image_embedding):
        part.to_empty(device="cpu")
        for p in part.parameters():
            torch.nn.init.normal_(p, std=0.02)
        for name, b in part.named_buffers():
            torch.nn.init.normal_(b)
    path = export_decoder_onnx(model, "sam2", tmp_path / "decoder.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.shape for i in sess.get_inputs()}
    assert ins["image_embeddings"] == [1, 256, 64, 64]
    assert ins["high_res_feats_0"] == [1, 32, 256, 256] and ins["high_res_feats_1"] == [1, 64, 128, 128]
    from earl_ros.export.onnx_export import random_inputs

    masks, iou = sess.run(None, random_inputs(model, "sam2", n_boxes=2))
    assert masks.shape == (2, 256, 256) and iou.shape == (2,)  # the 4x-upsampled 64x64 grid, one per box


def test_scaffold_refuses_a_shared_base_of_two_sizes_in_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "earl_ros.model.scaffold", str(tmp_path / "m"), "--coarse",
                        "qwen2.5-vl-3b", "--response", "qwen2.5-vl-7b", "--shared-base"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("scaffold: error:") and "shared" in r.stderr
    assert not (tmp_path / "m" / "coarse").exists()  # refused before any weight was built


def test_a_bf16_checkpoint_stays_bf16_on_a_cpu():
    """Upcast to float32, a 3B is 15 GB: coarse + response no longer fit in 24 GB (found at real size)."""
    from earl_ros.model.vlm import _resolve_dtype

    assert _resolve_dtype(None, "cpu", "bfloat16") is torch.bfloat16
    assert _resolve_dtype("auto", "cpu", torch.bfloat16) is torch.bfloat16
    assert _resolve_dtype(None, "cpu", "float32") is torch.float32
    assert _resolve_dtype(None, "cpu", "float16") is torch.float32  # fp16 kernels are slow or missing on CPUs
    assert _resolve_dtype(None, "cuda", "float32") is torch.bfloat16
    assert _resolve_dtype("float32", "cpu", "bfloat16") is torch.float32  # an explicit choice wins
