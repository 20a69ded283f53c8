"""Build an EARL model directory at the published sizes, with random weights, offline.

    python -m earl_ros.model.scaffold OUT --coarse qwen2.5-vl-3b --response qwen2.5-vl-7b \\
        --segmenter sam2.1-hiera-large [--dtype bfloat16] [--shared-base]
    python -m earl_ros.model.scaffold OUT --coarse tiny          # today's tiny test model (earl_ros.model.tiny)

Weights cannot be downloaded here, but the architectures can be built exactly (earl_ros.model.presets,
sources in docs/real_size.md) so every shape, memory and speed question at real size can be answered
before a GPU or a checkpoint is at hand. The directory has the layout of a deployment: earl.yaml,
coarse/ and response/ (Qwen2.5-VL, safetensors sharded like the releases, Qwen's image processor,
a tokenizer), afs/ (coarse hidden -> response hidden), sam/ (SAM 2.1 Hiera-L, transformers format).

The tokenizer is trained locally (byte-level BPE on the project's prompts) and then padded with
unused entries to Qwen2.5's 151,643 regular tokens, so that all 22 special tokens sit at Qwen's ids
(151643..151664) and every id is below both configs' vocab_size, as in the releases.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .presets import (QWEN25_VL, QWEN25_VL_IMAGE_PROCESSOR, QWEN_FIRST_SPECIAL_ID, QWEN_SPECIAL_TOKENS,
                      QWEN_TOKEN_IDS, SAM21_HIERA_LARGE, SEGMENTER_PRESETS, VLM_PRESETS)

SHARD_SIZE = "4GB"  # the releases' shards are just under 4 GB
DTYPES = ("bfloat16", "float16", "float32")


def qwen25_vl_config(preset: str):
    """transformers Qwen2_5_VLConfig of a released size (special-token ids included)."""
    from transformers import Qwen2_5_VLConfig

    spec = QWEN25_VL[preset]
    text = dict(spec["text"])
    rope = {"rope_type": "default", "rope_theta": text.pop("rope_theta"), "mrope_section": text.pop("mrope_section")}
    tie = text["tie_word_embeddings"]
    text.update(rope_parameters=rope, bos_token_id=QWEN_TOKEN_IDS["bos_token_id"],
                eos_token_id=QWEN_TOKEN_IDS["eos_token_id"], pad_token_id=QWEN_FIRST_SPECIAL_ID)
    ids = {k: v for k, v in QWEN_TOKEN_IDS.items() if k not in ("bos_token_id", "eos_token_id")}
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(spec["vision"]), tie_word_embeddings=tie, **ids)


def sam21_hiera_large_config():
    """transformers Sam2Config of SAM 2.1 Hiera-Large (prompt encoder and mask decoder at their defaults)."""
    from transformers import Sam2Config, Sam2MaskDecoderConfig, Sam2PromptEncoderConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    s = SAM21_HIERA_LARGE
    vision = Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(**s["backbone"]),
                              backbone_channel_list=list(s["backbone_channel_list"]),
                              backbone_feature_sizes=[list(x) for x in s["backbone_feature_sizes"]],
                              fpn_hidden_size=s["fpn_hidden_size"])
    prompt = Sam2PromptEncoderConfig(hidden_size=s["fpn_hidden_size"], image_size=s["image_size"], patch_size=16)
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=Sam2MaskDecoderConfig())


def build_qwen_tokenizer(extra_texts=None, learned: int = 4096):
    """Fast tokenizer with Qwen2.5's id layout: `learned` BPE tokens, unused fillers up to 151643, specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .tiny import build_tokenizer
    from .vlm_processing import DEFAULT_CHAT_TEMPLATE

    trained = json.loads(build_tokenizer(extra_texts, vocab_size=learned).backend_tokenizer.to_str())["model"]
    vocab = {tok: i for tok, i in trained["vocab"].items() if tok not in QWEN_SPECIAL_TOKENS}
    vocab = {tok: i for i, tok in enumerate(sorted(vocab, key=vocab.get))}
    for i in range(len(vocab), QWEN_FIRST_SPECIAL_ID):  # never produced by a merge: ids the model may emit
        vocab[f"<|unused_{i}|>"] = i
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None, additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
                                   padding_side="left", clean_up_tokenization_spaces=False, model_max_length=32768)
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def check_tokenizer_matches(tokenizer, config) -> None:
    """Raise ValueError unless the tokenizer's special ids and size agree with the model config."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    want = {t: QWEN_FIRST_SPECIAL_ID + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    if ids != want:
        raise ValueError(f"special-token ids differ from Qwen2.5's: {sorted(set(ids.items()) - set(want.items()))}")
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids; the model's vocab_size is {config.text_config.vocab_size}")
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        if getattr(config, key) != QWEN_TOKEN_IDS[key]:
            raise ValueError(f"config {key} {getattr(config, key)} != {QWEN_TOKEN_IDS[key]}")


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def build_vlm_dir(out: Path, preset: str, tokenizer, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """Random-weight Qwen2.5-VL of `preset` + processor + tokenizer, saved like a release."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .vlm_processing import DEFAULT_CHAT_TEMPLATE, EarlVLProcessor

    out.mkdir(parents=True, exist_ok=True)
    config = qwen25_vl_config(preset)
    check_tokenizer_matches(tokenizer, config)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(_torch_dtype(dtype))  # built in the target dtype: a 7B never exists in float32
    try:
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=QWEN_TOKEN_IDS["eos_token_id"],
                                               pad_token_id=QWEN_FIRST_SPECIAL_ID, do_sample=False)
    model.save_pretrained(out, max_shard_size=SHARD_SIZE)
    del model
    p = QWEN25_VL_IMAGE_PROCESSOR
    image_processor = Qwen2VLImageProcessorPil(min_pixels=p["min_pixels"], max_pixels=p["max_pixels"],
                                               patch_size=p["patch_size"], merge_size=p["merge_size"],
                                               temporal_patch_size=p["temporal_patch_size"],
                                               image_mean=p["image_mean"], image_std=p["image_std"])
    EarlVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                    chat_template=DEFAULT_CHAT_TEMPLATE).save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def build_sam2_dir(out: Path, seed: int = 0) -> Path:
    """Random-weight SAM 2.1 Hiera-Large (float32, as released) + its preprocessor_config.json."""
    import torch
    from transformers import Sam2Model

    from .tiny_sam import IMAGENET_MEAN, IMAGENET_STD

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Sam2Model(sam21_hiera_large_config()).eval().save_pretrained(str(out), safe_serialization=True)
    size = SAM21_HIERA_LARGE["image_size"]
    pre = {"image_processor_type": "Sam2ImageProcessorFast", "processor_class": "Sam2Processor", "do_resize": True,
           "size": {"height": size, "width": size}, "mask_size": {"height": 256, "width": 256}, "resample": 2,
           "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": IMAGENET_MEAN,
           "image_std": IMAGENET_STD, "do_convert_rgb": True}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return out


def build_model_dir(out_dir, coarse: str, response: str, segmenter: str, dtype: str = "bfloat16",
                    seed: int = 0, shared_base: bool = False, log=print) -> Path:
    """The whole directory (earl.yaml + parts). shared_base: coarse and response name one base dir."""
    from .afs import AFS, AFSConfig
    from .manifest import write_manifest
    from .prompts import PROMPT_VERSION

    if shared_base and coarse != response:
        raise ValueError(f"--shared-base needs one preset for coarse and response (got {coarse} and {response})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer()
    log(f"[scaffold] coarse {coarse} -> {out / 'coarse'}")
    build_vlm_dir(out / "coarse", coarse, tokenizer, dtype, seed)
    if not shared_base:
        log(f"[scaffold] response {response} -> {out / 'response'}")
        build_vlm_dir(out / "response", response, tokenizer, dtype, seed + 1)
    d_in, d_out = (QWEN25_VL[p]["text"]["hidden_size"] for p in (coarse, response))
    import torch

    torch.manual_seed(seed + 2)
    AFS(AFSConfig(in_dim=d_in, out_dim=d_out)).save_pretrained(out / "afs")
    log(f"[scaffold] AFS {d_in} -> {d_out}; segmenter {segmenter} -> {out / 'sam'}")
    build_sam2_dir(out / "sam", seed + 3)
    write_manifest(out, {
        "format": "earl-model/1", "name": f"earl-{coarse}-{response}-random", "prompt_version": PROMPT_VERSION,
        "coarse": {"path": "coarse", "pooling": "mean", "lora": None},
        "response": {"path": "coarse" if shared_base else "response", "lora": None, "afs": "afs", "afs_alpha": 1.0},
        "segmenter": {"type": "sam2", "path": "sam", "decoder_onnx": None},
        "limits": {"max_image_side": 1280, "max_query_tokens": 128, "max_new_tokens": 96, "coarse_max_new_tokens": 48},
        "scaffold": {"coarse": coarse, "response": response, "segmenter": segmenter, "dtype": dtype, "seed": seed,
                     "weights": "random", "built_by": "earl_ros.model.scaffold"},
    })
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m earl_ros.model.scaffold", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="model directory to write")
    ap.add_argument("--coarse", default="qwen2.5-vl-3b", choices=(*VLM_PRESETS, "tiny"))
    ap.add_argument("--response", default="qwen2.5-vl-7b", choices=VLM_PRESETS)
    ap.add_argument("--segmenter", default="sam2.1-hiera-large", choices=SEGMENTER_PRESETS)
    ap.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shared-base", action="store_true",
                    help="coarse and response share one base directory (same preset; each stage its own LoRA)")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.coarse == "tiny":
            from .tiny import build_tiny_model_dir

            out = build_tiny_model_dir(args.out, seed=args.seed, segmenter="sam2")
        else:
            out = build_model_dir(args.out, args.coarse, args.response, args.segmenter, args.dtype, args.seed,
                                  args.shared_base)
    except (ValueError, OSError) as e:
        print(f"scaffold: error: {e}", file=sys.stderr)
        return 2
    print(f"[scaffold] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
