"""Turning (image, prompt[, completion]) into Qwen2.5-VL inputs, shared by inference and training.

Inference (vlm.py) and the training losses (training/policy.py) must build exactly the same token
sequences, or a policy trained on one layout is evaluated on another; so both go through these
functions and no stage assembles inputs of its own.

Layout of a batch: prompts are LEFT padded (the tokenizer's padding side) so that completions are
contiguous at the right and position P = prompt_len is where every row's completion starts. With
completions, `labels` is -100 outside the completion and `completion_mask` covers the full sequence
(1 on completion tokens, end-of-turn token included).

`model_frame` predicts the resized frame the image processor will produce for an image size, so
callers can map boxes (coordinates.py) without running the processor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

from .coordinates import frame_scale
from .errors import EmptyQueryError, ModelDirError
from .images import load_image

# The Qwen2-VL chat format, used when a checkpoint ships no chat template of its own.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# the processor outputs the model consumes; anything else it returns is dropped
INPUT_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")


# --------------------------------------------------------------------------------------------------
# Processor
# --------------------------------------------------------------------------------------------------
class EarlVLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for still images only: tokenizer + Qwen2VLImageProcessorPil.

    The stock processor also wants a video processor, which needs torchvision (not usable here).
    EARL never feeds video, so this subclass drops it (PLATFORM.md).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template)


def _read_chat_template(path: Path, tokenizer) -> str:
    for name in ("chat_template.jinja",):
        if (path / name).is_file():
            return (path / name).read_text()
    if (path / "chat_template.json").is_file():
        data = json.loads((path / "chat_template.json").read_text())
        if isinstance(data, dict) and data.get("chat_template"):
            return data["chat_template"]
    if (path / "processor_config.json").is_file():
        data = json.loads((path / "processor_config.json").read_text())
        if isinstance(data, dict) and isinstance(data.get("chat_template"), str):
            return data["chat_template"]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    return DEFAULT_CHAT_TEMPLATE


def load_processor(path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None) -> EarlVLProcessor:
    """Processor of a local Qwen2.5-VL dir (tiny or real), image processor forced to the PIL backend."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    kwargs = {}
    if min_pixels is not None:
        kwargs["min_pixels"] = int(min_pixels)
    if max_pixels is not None:
        kwargs["max_pixels"] = int(max_pixels)
    if (path / "preprocessor_config.json").is_file():  # released Qwen2.5-VL checkpoints
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path), **kwargs)
    elif (path / "processor_config.json").is_file() and "image_processor" in json.loads(
        (path / "processor_config.json").read_text()
    ):  # transformers 5 processor.save_pretrained nests it here
        cfg = dict(json.loads((path / "processor_config.json").read_text())["image_processor"])
        cfg.pop("image_processor_type", None)
        cfg.update(kwargs)
        image_processor = Qwen2VLImageProcessorPil(**cfg)
    else:
        raise ModelDirError(
            f"{path / 'preprocessor_config.json'} is missing (the VLM dir has no image processor config)"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    tokenizer.padding_side = "left"  # completions must be contiguous at the right for batching
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return EarlVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                           chat_template=_read_chat_template(path, tokenizer))


def model_frame(processor, image_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[float, float]]:
    """The resized frame the VLM sees for an image of size (h, w), and the scale back to (h, w).

    Returns ((input_h, input_w), (sx, sy)) with original_x = model_x * sx, original_y = model_y * sy.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    ip = processor.image_processor
    h, w = int(image_hw[0]), int(image_hw[1])
    factor = ip.patch_size * ip.merge_size
    size = ip.size or {}
    min_p = size.get("shortest_edge", getattr(ip, "min_pixels", None) or 56 * 56)
    max_p = size.get("longest_edge", getattr(ip, "max_pixels", None) or 28 * 28 * 1280)
    ih, iw = smart_resize(h, w, factor=factor, min_pixels=min_p, max_pixels=max_p)
    return (ih, iw), frame_scale((h, w), (ih, iw))


# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------
@dataclass
class Frame:
    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale_xy: tuple[float, float]


@dataclass
class PreparedBatch:
    """Model inputs for B (image, prompt[, completion]) samples.

    inputs: input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids (+ nothing
      else), left padded; with completions the completion tokens follow the prompt (right padded).
    prompt_len: P, the padded prompt length (completion tokens start at P).
    descriptors: float32 [B, Din] or None (no injection).
    labels / completion_mask: over the full sequence, only when completions were given.
    """

    inputs: dict
    prompt_len: int
    frames: list[Frame]
    descriptors: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    completion_mask: torch.Tensor | None = None
    queries: list[str] = field(default_factory=list)
    query_truncated: list[bool] = field(default_factory=list)

    def to(self, device) -> "PreparedBatch":
        self.inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.inputs.items()}
        for name in ("descriptors", "labels", "completion_mask"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(device))
        return self

    @property
    def batch_size(self) -> int:
        return int(self.inputs["input_ids"].shape[0])


# --------------------------------------------------------------------------------------------------
# Prompts and completions
# --------------------------------------------------------------------------------------------------
def chat_text(processor, prompt: str) -> str:
    """One user turn (image, then prompt) rendered up to the assistant's answer."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(processor, images: Sequence, prompts: Sequence[str]) -> tuple[dict, list[Frame]]:
    """Left-padded prompt inputs for (image, prompt) pairs and the model frame of each image.

    Frames are read from image_grid_thw (what the processor really produced), not predicted."""
    imgs = [load_image(im) for im in images]
    texts = [chat_text(processor, p) for p in prompts]
    enc = processor(text=texts, images=imgs, padding=True, return_tensors="pt")
    inputs = {k: enc[k] for k in INPUT_KEYS if k in enc}
    patch = processor.image_processor.patch_size
    frames = []
    for im, thw in zip(imgs, inputs["image_grid_thw"].tolist()):
        ih, iw = int(thw[1]) * patch, int(thw[2]) * patch
        h, w = im.shape[:2]
        frames.append(Frame(orig_hw=(h, w), input_hw=(ih, iw), scale_xy=frame_scale((h, w), (ih, iw))))
    return inputs, frames


def truncate_query(tokenizer, query: str, max_tokens: int) -> tuple[str, bool]:
    """Strip and cut the query to `max_tokens` tokens (the model dir's limits.max_query_tokens);
    returns (query, truncated), so callers can report the cut instead of hiding it."""
    q = (query or "").strip()
    if not q:
        raise EmptyQueryError("the query is empty")
    ids = tokenizer(q, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return q, False
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).strip(), True


def tokenize_completions(tokenizer, completions: Sequence[str], pad_token_id: int, add_end: bool = True):
    """Completion texts (+ end-of-turn token) -> right-padded ids [B, C] and mask [B, C]."""
    end = (tokenizer.eos_token or "") if add_end else ""
    ids = [tokenizer(c + end, add_special_tokens=False)["input_ids"] for c in completions]
    c_len = max(1, max(len(x) for x in ids))
    comp = torch.full((len(ids), c_len), pad_token_id, dtype=torch.long)
    cmask = torch.zeros((len(ids), c_len), dtype=torch.long)
    for i, x in enumerate(ids):
        comp[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        cmask[i, : len(x)] = 1
    return comp, cmask


def add_completions(batch: PreparedBatch, tokenizer, completions: Sequence[str], pad_token_id: int) -> PreparedBatch:
    """Append target completions (+ end-of-turn token) to a prompt batch, with labels and masks for
    teacher forcing: labels are -100 everywhere but on the completion tokens."""
    comp, cmask = tokenize_completions(tokenizer, completions, pad_token_id)
    full = full_inputs(batch.inputs, comp, cmask)
    full_cmask = torch.cat([torch.zeros_like(batch.inputs["input_ids"]), cmask], 1)
    labels = full["input_ids"].clone()
    labels[full_cmask == 0] = -100
    batch.inputs, batch.labels, batch.completion_mask = full, labels, full_cmask
    return batch


def descriptor_tensor(descriptors, batch: int, dim: int) -> torch.Tensor:
    """float32 [batch, dim] from None (zeros: no injection), one shared [dim] vector or [batch, dim]."""
    if descriptors is None:
        return torch.zeros((batch, dim), dtype=torch.float32)
    d = torch.as_tensor(np.asarray(descriptors, dtype=np.float32) if not torch.is_tensor(descriptors)
                        else descriptors).float()
    if d.dim() == 1:
        d = d.unsqueeze(0).expand(batch, -1)
    if d.shape != (batch, dim):
        raise ValueError(f"descriptors must be [{batch}, {dim}], got {tuple(d.shape)}")
    return d


def _repeat_images(pixel_values: torch.Tensor, grid_thw: torch.Tensor, repeats: int):
    """Repeat each image's patch block `repeats` times (rows of pixel_values are per-image blocks)."""
    if repeats == 1:
        return pixel_values, grid_thw
    sizes = grid_thw.prod(-1).tolist()
    blocks = torch.split(pixel_values, sizes, dim=0)
    pv = torch.cat([blk for blk in blocks for _ in range(repeats)], dim=0)
    return pv, grid_thw.repeat_interleave(repeats, dim=0)


def full_inputs(inputs: dict, completion_ids: torch.Tensor, completion_mask: torch.Tensor, repeats: int = 1):
    """Prompt inputs (each repeated `repeats` times) followed by completion tokens."""
    ids = inputs["input_ids"].repeat_interleave(repeats, 0)
    am = inputs["attention_mask"].repeat_interleave(repeats, 0)
    full = {
        "input_ids": torch.cat([ids, completion_ids.to(ids.device)], dim=1),
        "attention_mask": torch.cat([am, completion_mask.to(am.device, am.dtype)], dim=1),
    }
    if "mm_token_type_ids" in inputs:
        mm = inputs["mm_token_type_ids"].repeat_interleave(repeats, 0)
        full["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(completion_ids, dtype=mm.dtype)], dim=1)
    pv, thw = _repeat_images(inputs["pixel_values"], inputs["image_grid_thw"], repeats)
    full["pixel_values"], full["image_grid_thw"] = pv, thw
    return full


__all__ = [
    "DEFAULT_CHAT_TEMPLATE", "EarlVLProcessor", "Frame", "PreparedBatch", "add_completions", "chat_text",
    "descriptor_tensor", "encode_prompts", "full_inputs", "load_processor", "model_frame", "tokenize_completions",
    "truncate_query",
]
