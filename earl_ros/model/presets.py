"""The published architectures EARL deploys, as data: Qwen2.5-VL-3B/7B-Instruct and SAM 2.1 Hiera-Large.

Every value below is an architecture field of a released checkpoint; docs/real_size.md names the
file each comes from (the models' `config.json` / `preprocessor_config.json` on the Hugging Face Hub
and the SAM 2.1 Hiera-L model yaml of facebookresearch/sam2). Fields a release leaves to the
transformers defaults (most of Qwen2.5-VL's vision tower) are written out so that a change of
defaults cannot silently change the size. `earl_ros.model.scaffold` builds random-weight model
directories from these; the tests compare the built modules with the released tensor shapes.
"""
from __future__ import annotations

# Qwen2.5 tokenizer: 151,643 byte-level BPE tokens, then these added tokens at ids 151643..151664
# (tokenizer_config.json "added_tokens_decoder" of every Qwen2.5-VL release).
QWEN_FIRST_SPECIAL_ID = 151643
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN_TOKEN_IDS = {
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656,
}

_QWEN25_VL_VISION = {  # identical in the 3B and 7B releases except out_hidden_size
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
    "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2, "hidden_act": "silu",
}
_QWEN25_TEXT = {
    "hidden_act": "silu", "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "mrope_section": [16, 24, 24], "sliding_window": 32768, "use_sliding_window": False, "attention_dropout": 0.0,
}

QWEN25_VL = {
    "qwen2.5-vl-3b": {
        "text": dict(_QWEN25_TEXT, vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                     num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, max_window_layers=70,
                     tie_word_embeddings=True),
        "vision": dict(_QWEN25_VL_VISION, out_hidden_size=2048),
        "shards": 2,  # model-0000{1,2}-of-00002.safetensors
    },
    "qwen2.5-vl-7b": {
        "text": dict(_QWEN25_TEXT, vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, max_window_layers=28,
                     tie_word_embeddings=False),
        "vision": dict(_QWEN25_VL_VISION, out_hidden_size=3584),
        "shards": 5,  # model-0000{1..5}-of-00005.safetensors
    },
}

# preprocessor_config.json of both releases (Qwen2VLImageProcessor)
QWEN25_VL_IMAGE_PROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# SAM 2.1 Hiera-Large, released as facebook/sam2.1-hiera-large (sam2.1_hiera_l.yaml: trunk embed_dim 144,
# num_heads 2, stages [2, 6, 36, 4], global_att_blocks [23, 33, 43], window_spec [8, 4, 16, 8], window_pos_embed_bkg_spatial_size [7, 7];
# neck backbone_channel_list [1152, 576, 288, 144], d_model 256; image_size 1024), in transformers' names.
SAM21_HIERA_LARGE = {
    "backbone": {
        "hidden_size": 144, "num_attention_heads": 2, "image_size": [1024, 1024],
        "blocks_per_stage": [2, 6, 36, 4], "embed_dim_per_stage": [144, 288, 576, 1152],
        "num_attention_heads_per_stage": [2, 4, 8, 16], "window_size_per_stage": [8, 4, 16, 8],
        "global_attention_blocks": [23, 33, 43], "window_positional_embedding_background_size": [7, 7],
    },
    "backbone_channel_list": [1152, 576, 288, 144],
    "backbone_feature_sizes": [[256, 256], [128, 128], [64, 64]],
    "fpn_hidden_size": 256,
    "image_size": 1024,
}

VLM_PRESETS = tuple(QWEN25_VL)
SEGMENTER_PRESETS = ("sam2.1-hiera-large",)
