"""Build a complete, tiny, random-weight EARL model directory offline and deterministically.

Tests, benchmarks and the demo's embedded default use it. The directory has exactly the layout of a
real deployment (earl.yaml + Hugging Face format parts), so it loads through the same code path as a
Qwen2.5-VL-3B/7B + SAM 2 directory:

    OUT/earl.yaml
    OUT/coarse/    Qwen2.5-VL (config.json, model.safetensors, tokenizer, processor configs)
    OUT/response/  Qwen2.5-VL, smaller text width than coarse (so Din != Dllm is exercised)
    OUT/afs/       config.json + model.safetensors
    OUT/sam/       SamModel or Sam2Model dir, built by earl_ros.model.tiny_sam

The tokenizer is a byte-level BPE trained with `tokenizers` on the prompts, a hand/object vocabulary
and `extra_texts` (training passes its synthetic captions/answers to get a richer vocabulary), plus
the Qwen chat special tokens. Byte-level BPE can encode any string, so no text is ever out of vocabulary.

CLI: `python -m earl_ros.model.tiny OUT [--segmenter sam|sam2] [--seed N]`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Iterable

from .prompts import COARSE_INSTRUCTION, NO_TARGET_ANSWER, PROMPT_VERSION, format_response, response_prompt

# Qwen2-VL chat special tokens, in the order the tiny tokenizer assigns ids 0..N-1.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

HANDS = ["the right hand", "the left hand", "both hands", "hand", "hands", "right", "left"]
OBJECTS = [
    "kettle", "mug", "cup", "bottle", "bowl", "knife", "laptop", "phone", "toy car", "scissors", "pen",
    "book", "box", "lamp", "bucket", "chair", "drawer", "door", "jar", "pliers", "hammer", "spoon",
    "plate", "keyboard", "mouse", "remote", "apple", "trash can", "safe", "stapler",
]
COLORS = ["red", "green", "blue", "yellow", "pink", "white", "black", "orange", "gray", "brown"]
VERBS = ["holding", "grasping", "touching", "pouring", "opening", "closing", "cutting", "pressing",
         "lifting", "pushing", "pulling", "picking up", "putting down", "using"]
QUERIES = [
    "which hand is holding something?",
    "what is the right hand holding?",
    "what object is the left hand interacting with?",
    "show me the hands and the objects they touch.",
    "is anyone holding a knife?",
]


def tiny_corpus(extra_texts: Iterable[str] | None = None) -> list[str]:
    """Deterministic text corpus for the tiny tokenizer."""
    texts = [COARSE_INSTRUCTION, NO_TARGET_ANSWER, "You are a helpful assistant."]
    texts += [response_prompt(q) for q in QUERIES]
    for i, obj in enumerate(OBJECTS):
        color, verb = COLORS[i % len(COLORS)], VERBS[i % len(VERBS)]
        hand = HANDS[i % 2]
        texts.append(f"The camera wearer is {verb} a {color} {obj} with {hand}.")
        texts.append(format_response([hand, f"the active {obj}"], [(i, 2 * i, 10 * i + 17, 9 * i + 23),
                                                                     (3 * i, i + 1, 5 * i + 40, 7 * i + 31)]))
        texts.append(f"what is {hand} doing with the {obj}?")
    texts.append(format_response([], None))
    texts.append(" ".join(str(n) for n in range(0, 1025)))
    if extra_texts:
        texts += [str(t) for t in extra_texts]
    return texts


def build_tokenizer(extra_texts: Iterable[str] | None = None, vocab_size: int = 1024):
    """Train a byte-level BPE tokenizer (Qwen chat special tokens first) -> transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .vlm_processing import DEFAULT_CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = tiny_corpus(extra_texts)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    return fast


def tiny_vl_config(tokenizer, text_hidden: int, num_layers: int = 2, vision_hidden: int = 32, vision_depth: int = 2,
                   vision_full_attention: bool = False):
    """A small Qwen2.5-VL config whose special-token ids match the tiny tokenizer.

    vision_full_attention: every vision block attends over the whole image (Qwen2.5-VL's own layout,
    kept by default, has windowed blocks and only the last one global). At tiny-model frame sizes a
    window is 2 x 2 image tokens, smaller than most objects, and global attention over ~250 patches
    costs next to nothing on a CPU.
    """
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    head_dim = text_hidden // heads
    half = head_dim // 2  # mrope_section sums to head_dim / 2 (temporal, height, width)
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=2 * text_hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_heads=max(2, vision_hidden // 16),
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=list(range(vision_depth)) if vision_full_attention else [vision_depth - 1],
            out_hidden_size=text_hidden,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


# Processor resolution for the tiny models: images are resized to 112..224 px-squared-ish frames,
# i.e. at most (224/28)^2 = 64 image tokens, which keeps a CPU forward in milliseconds.
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 224 * 224


def build_tiny_vlm(out_dir: Path, tokenizer, text_hidden: int, seed: int, num_layers: int = 2,
                   vision_hidden: int = 32, vision_depth: int = 2, vision_full_attention: bool = False) -> Path:
    """Random-weight Qwen2.5-VL + processor saved in HF format at out_dir."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from .vlm_processing import DEFAULT_CHAT_TEMPLATE, EarlVLProcessor

    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_vl_config(tokenizer, text_hidden, num_layers, vision_hidden, vision_depth, vision_full_attention)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out_dir)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = EarlVLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=DEFAULT_CHAT_TEMPLATE)
    processor.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)  # preprocessor_config.json, as released checkpoints have
    return out_dir


def _build_segmenter(out_dir: Path, seed: int, segmenter: str, init: str = "random") -> Path:
    from . import tiny_sam

    if segmenter == "sam":
        return tiny_sam.build_tiny_sam(out_dir, seed, init=init)
    if segmenter == "sam2":
        return tiny_sam.build_tiny_sam2(out_dir, seed, init=init)
    raise ValueError(f"segmenter must be 'sam' or 'sam2', got {segmenter!r}")


def build_tiny_model_dir(
    out_dir: str | Path,
    seed: int = 0,
    segmenter: str = "sam",
    extra_texts: Iterable[str] | None = None,
    name: str = "earl-tiny",
    vocab_size: int = 1024,
    coarse_hidden: int = 96,
    response_hidden: int = 64,
    num_layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    vision_full_attention: bool = False,
    segmenter_init: str = "random",
) -> Path:
    """Write a complete tiny model directory (earl.yaml + parts) to out_dir and return its path.

    Deterministic for a given (seed, segmenter, extra_texts, vocab_size); offline; a few seconds on
    2 CPU cores. extra_texts enlarge the tokenizer corpus (training passes its captions and answers);
    vocab_size caps the BPE vocabulary (the model's embedding table has exactly len(tokenizer) rows).
    coarse_hidden / response_hidden / num_layers size the two language models (hidden sizes must be
    multiples of 8 and >= 32: 4 attention heads, three M-RoPE sections); vision_hidden / vision_depth
    size both vision towers (hidden a multiple of 16; vision_full_attention: see tiny_vl_config); the
    defaults keep a CPU forward in milliseconds.
    segmenter_init "random" (default: box-dependent masks from the start, what tests want) or "train"
    (transformers' initialisation, the better start for `training segmenter-ft`).
    """
    import torch
    from transformers.utils import logging as hf_logging

    from .afs import AFS, AFSConfig
    from .manifest import write_manifest

    hf_logging.disable_progress_bar()

    if segmenter not in ("sam", "sam2"):
        raise ValueError(f"segmenter must be 'sam' or 'sam2', got {segmenter!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for part in ("coarse", "response", "afs", "sam"):
        if (out / part).exists():
            shutil.rmtree(out / part)

    tokenizer = build_tokenizer(extra_texts, vocab_size=vocab_size)
    for h in (coarse_hidden, response_hidden):
        if h % 8 or h < 32:
            raise ValueError(f"tiny hidden sizes must be multiples of 8 and >= 32, got {h}")
    if vision_hidden % 16 or vision_depth < 1:
        raise ValueError(f"vision_hidden must be a multiple of 16 and vision_depth >= 1, got {vision_hidden}, {vision_depth}")
    vision = dict(vision_hidden=vision_hidden, vision_depth=vision_depth, vision_full_attention=vision_full_attention)
    build_tiny_vlm(out / "coarse", tokenizer, coarse_hidden, seed, num_layers, **vision)
    build_tiny_vlm(out / "response", tokenizer, response_hidden, seed + 1, num_layers, **vision)
    torch.manual_seed(seed + 2)
    AFS(AFSConfig(in_dim=coarse_hidden, out_dim=response_hidden, hidden=64)).save_pretrained(out / "afs")
    _build_segmenter(out / "sam", seed + 3, segmenter, segmenter_init)
    write_manifest(
        out,
        {
            "format": "earl-model/1",
            "name": name,
            "prompt_version": PROMPT_VERSION,
            "coarse": {"path": "coarse", "pooling": "mean", "lora": None},
            "response": {"path": "response", "lora": None, "afs": "afs", "afs_alpha": 1.0},
            "segmenter": {"type": segmenter, "path": "sam", "decoder_onnx": None},
            "limits": {"max_image_side": 1280, "max_query_tokens": 64, "max_new_tokens": 96,
                       "coarse_max_new_tokens": 48},
            "tiny": {"seed": seed, "built_by": "earl_ros.model.tiny"},
        },
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m earl_ros.model.tiny", description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output model directory")
    ap.add_argument("--segmenter", choices=("sam", "sam2"), default="sam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--coarse-hidden", type=int, default=96)
    ap.add_argument("--response-hidden", type=int, default=64)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--vision-hidden", type=int, default=32)
    ap.add_argument("--vision-depth", type=int, default=2)
    ap.add_argument("--vision-full-attention", action="store_true",
                    help="global attention in every vision block (default: windowed, last block global)")
    ap.add_argument("--extra-texts", help="optional text file, one line per corpus entry for the tokenizer")
    args = ap.parse_args(argv)
    extra = None
    if args.extra_texts:
        extra = [ln for ln in Path(args.extra_texts).read_text().splitlines() if ln.strip()]
    out = build_tiny_model_dir(args.out, seed=args.seed, segmenter=args.segmenter, extra_texts=extra,
                               vocab_size=args.vocab_size, coarse_hidden=args.coarse_hidden,
                               response_hidden=args.response_hidden, num_layers=args.num_layers,
                               vision_hidden=args.vision_hidden, vision_depth=args.vision_depth,
                               vision_full_attention=args.vision_full_attention)
    print(json.dumps({"model_dir": str(out), "segmenter": args.segmenter, "seed": args.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
