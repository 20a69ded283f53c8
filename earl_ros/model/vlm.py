"""The two VLM stages of EARL on transformers' Qwen2.5-VL (METHOD.md section 1).

Everything here is written against the model *config* (hidden sizes, special-token ids, patch and
merge sizes come from the checkpoint), so the tiny test checkpoints of `earl_ros.model.tiny` and real
Qwen2.5-VL-3B/7B directories load through exactly the same code.

Stage 1, `CoarseModel`:
    describe(image) -> Interaction(text, descriptor float32[D])
    The model writes a short interaction description for COARSE_INSTRUCTION (greedy decoding). The
    global interaction descriptor F_ana is then read from ONE teacher-forced forward pass over
    [prompt + generated description tokens] (end-of-turn token excluded), taking the LAST-LAYER hidden
    states (`hidden_states[-1]`, i.e. after the final RMSNorm, what lm_head sees) at the positions of
    the description tokens and pooling them:
      pooling="mean": mean over all description token positions (project default);
      pooling="last": the hidden state at the last description token.
    If the model produced no description token, the hidden state of the last prompt position is used.
    `descriptors(images, texts)` computes the same descriptor for given texts (e.g. ground-truth
    captions), which is what training uses to extract descriptors: one definition for both (bit-equal
    to describe() whenever the text re-tokenizes to the generated ids).

Stage 2, `ResponseModel`: base Qwen2.5-VL + optional peft LoRA adapter + AFS weights.
    respond(image, query, descriptor, ...) -> RawResponse(texts, scale_xy, input_hw, ...)
    Boxes in the texts are pixel corners in the model's RESIZED input frame (input_hw, from
    image_grid_thw * patch size); `boxes_to_original(boxes, scale_xy, orig_hw)` maps them back to the
    original image and `boxes_to_model` maps ground-truth boxes the other way (round trip tested).
    The AFS modulation is injected by `AFSInjector` hooks (see afs.py): input_ids always reach the
    model, so image tokens keep their 2-D M-RoPE positions in training and at inference alike.

What training (training/, GRPO and SFT) uses, all on `ResponseModel` unless said:
    .model            the (possibly peft-wrapped) Qwen2_5_VLForConditionalGeneration
    .processor        EarlVLProcessor (tokenizer + Qwen2VLImageProcessorPil, no video processor)
    .tokenizer        left-padding tokenizer
    .afs, .injector   the AFS module (always trainable, float32) and its injector
    .prepare(images, queries, descriptors=None, completions=None) -> PreparedBatch
        chat inputs for (image, prompt[, target completion]); prompts are LEFT padded so completions
        are contiguous at the right; with completions: `labels` (-100 outside the completion) and
        `completion_mask` over the full sequence (1 on completion tokens incl. the end-of-turn token).
    .sft_loss(batch) -> scalar loss (teacher forcing with AFS injection).
    .generate(batch, num_return_sequences=G, max_new_tokens, do_sample, temperature, top_p)
        (GRPO: do_sample=True, temperature=1.0; greedy with G > 1 returns G copies; greedy decoding
        reads box coordinates as `.coordinates` says: 'greedy', 'mean' or 'median', see coordinates.py)
        -> Generation(completion_ids [B*G, C], completion_mask [B*G, C], texts); row i*G + j is sample
        j of prompt i (the order `generate` uses).
    .sequence_logprobs(batch, completion_ids, completion_mask, disable_adapter=False)
        -> float32 [B*G, C] per-token log-probs of the given completion tokens under the policy with
        AFS injection (0 where completion_mask is 0); `disable_adapter=True` gives the reference
        policy (same model, LoRA adapters disabled), batched.
    .attach_lora(peft_config) / .save_trainable(out_dir) (adapter -> out_dir/lora, AFS -> out_dir/afs)
    .frame_of((h, w)) -> Frame(orig_hw, input_hw, scale_xy): the model frame of an image size, so
        ground-truth boxes can be put in the model frame (`boxes_to_model`) for SFT targets/rewards.
    .device, .descriptor_dim, .hidden_size, .base_model (unwrapped from peft), .pad_token_id
    `CoarseModel.prepare(images, texts)` (stage-1 SFT batch with labels) and
    `CoarseModel.descriptors(images, texts)` -> float32 [B, D] descriptors for given captions.
    `model_frame(processor, (h, w))` -> ((input_h, input_w), (sx, sy)) without running the model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

from .errors import EmptyQueryError, ModelDirError
from .images import load_image
from .prompts import COARSE_INSTRUCTION, response_prompt
from .types import Interaction

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


# --------------------------------------------------------------------------------------------------
# Processor and loading
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


def _resolve_dtype(dtype, device, saved=None) -> torch.dtype:
    """The dtype to load a VLM in. Default ("auto"/None): bf16 on CUDA; on a CPU the checkpoint's own
    dtype when it is bf16 (a bf16 3B upcast to float32 is 15 GB instead of 7.5: two no longer fit in
    24 GB), else float32 (fp16 kernels are slow or missing on CPUs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if str(device).startswith("cuda"):
            return torch.bfloat16
        return torch.bfloat16 if str(saved).replace("torch.", "") == "bfloat16" else torch.float32
    return getattr(torch, str(dtype))


def load_vlm(path: str | Path, device="cpu", dtype=None):
    """Qwen2.5-VL (or Qwen2-VL) conditional-generation model from a local dir, eval mode."""
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{path / 'config.json'} is missing (not a Hugging Face model dir)")
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if config.model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration as cls
    elif config.model_type == "qwen2_vl":
        from transformers import Qwen2VLForConditionalGeneration as cls
    else:
        raise ModelDirError(f"{path / 'config.json'}: model_type {config.model_type!r} is not a Qwen2(.5)-VL model")
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    model = cls.from_pretrained(str(path), dtype=_resolve_dtype(dtype, device, saved), local_files_only=True)
    return model.to(device).eval()


def _text_config(model):
    cfg = model.config
    return getattr(cfg, "text_config", cfg)


# --------------------------------------------------------------------------------------------------
# Coordinate frames
# --------------------------------------------------------------------------------------------------
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
    return (ih, iw), (w / iw, h / ih)


def boxes_to_original(boxes, scale_xy: tuple[float, float], orig_hw: tuple[int, int]) -> np.ndarray:
    """Boxes [N, 4] (x1, y1, x2, y2) in the model frame -> int boxes in original pixels, clipped."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = scale_xy
    out = np.rint(b * np.array([sx, sy, sx, sy])).astype(np.int64)
    h, w = orig_hw
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def boxes_to_model(boxes, scale_xy: tuple[float, float], input_hw: tuple[int, int]) -> np.ndarray:
    """Inverse of boxes_to_original: original-pixel boxes -> int boxes in the model frame."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sx, sy = scale_xy
    out = np.rint(b / np.array([sx, sy, sx, sy])).astype(np.int64)
    h, w = input_hw
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


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


@dataclass
class Generation:
    completion_ids: torch.Tensor  # [B*G, C] (pad after the end-of-turn token)
    completion_mask: torch.Tensor  # [B*G, C] 1 up to and including the first end token
    texts: list[str]


@dataclass
class RawResponse:
    """Raw response-stage output for one (image, query), plus the frame mapping for its boxes."""

    texts: list[str]
    scale_xy: tuple[float, float]  # original = model * scale
    input_hw: tuple[int, int]  # the resized frame the model saw
    orig_hw: tuple[int, int]
    query: str
    query_truncated: bool = False

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    def to_original(self, boxes) -> np.ndarray:
        return boxes_to_original(boxes, self.scale_xy, self.orig_hw)


def _repeat_images(pixel_values: torch.Tensor, grid_thw: torch.Tensor, repeats: int):
    """Repeat each image's patch block `repeats` times (rows of pixel_values are per-image blocks)."""
    if repeats == 1:
        return pixel_values, grid_thw
    sizes = grid_thw.prod(-1).tolist()
    blocks = torch.split(pixel_values, sizes, dim=0)
    pv = torch.cat([blk for blk in blocks for _ in range(repeats)], dim=0)
    return pv, grid_thw.repeat_interleave(repeats, dim=0)


# --------------------------------------------------------------------------------------------------
# Shared base
# --------------------------------------------------------------------------------------------------
class _VLMStage:
    def __init__(self, model, processor, device="cpu"):
        self.model = model
        self.processor = processor
        self.device = torch.device(device)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def base_model(self):
        """The underlying transformers model (unwrapped from peft if wrapped)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def hidden_size(self) -> int:
        return int(_text_config(self.base_model).hidden_size)

    @property
    def num_layers(self) -> int:
        return int(_text_config(self.base_model).num_hidden_layers)

    @property
    def end_token_ids(self) -> list[int]:
        eos = self.base_model.generation_config.eos_token_id
        ids = eos if isinstance(eos, (list, tuple)) else [eos]
        ids = [int(i) for i in ids if i is not None]
        tok_eos = self.tokenizer.convert_tokens_to_ids(self.tokenizer.eos_token) if self.tokenizer.eos_token else None
        if tok_eos is not None and tok_eos not in ids:
            ids.append(int(tok_eos))
        return ids

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def frame_of(self, image_hw: tuple[int, int]) -> Frame:
        input_hw, scale = model_frame(self.processor, image_hw)
        return Frame(orig_hw=(int(image_hw[0]), int(image_hw[1])), input_hw=input_hw, scale_xy=scale)

    def _chat_text(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode_prompts(self, images: Sequence, prompts: Sequence[str]) -> tuple[dict, list[Frame]]:
        imgs = [load_image(im) for im in images]
        texts = [self._chat_text(p) for p in prompts]
        enc = self.processor(text=texts, images=imgs, padding=True, return_tensors="pt")
        keep = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
        inputs = {k: enc[k] for k in keep if k in enc}
        patch = self.processor.image_processor.patch_size
        frames = []
        for im, thw in zip(imgs, inputs["image_grid_thw"].tolist()):
            ih, iw = int(thw[1]) * patch, int(thw[2]) * patch
            h, w = im.shape[:2]
            frames.append(Frame(orig_hw=(h, w), input_hw=(ih, iw), scale_xy=(w / iw, h / ih)))
        return inputs, frames

    def _tokenize_completions(self, completions: Sequence[str], add_end: bool = True):
        """Completion texts (+ end-of-turn token) -> right-padded ids [B, C] and mask [B, C]."""
        tok = self.tokenizer
        end = (tok.eos_token or "") if add_end else ""
        ids = [tok(c + end, add_special_tokens=False)["input_ids"] for c in completions]
        c_len = max(1, max(len(x) for x in ids))
        comp = torch.full((len(ids), c_len), self.pad_token_id, dtype=torch.long)
        cmask = torch.zeros((len(ids), c_len), dtype=torch.long)
        for i, x in enumerate(ids):
            comp[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            cmask[i, : len(x)] = 1
        return comp, cmask

    @staticmethod
    def _full_inputs(inputs: dict, completion_ids: torch.Tensor, completion_mask: torch.Tensor, repeats: int = 1):
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

    def _completion_mask_after_generation(self, comp: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first end token of each row, 0 after it."""
        ends = torch.tensor(self.end_token_ids, device=comp.device)
        is_end = torch.isin(comp, ends)
        after_end = (is_end.long().cumsum(1) - is_end.long()) > 0
        return (~after_end).long()


# --------------------------------------------------------------------------------------------------
# Stage 1
# --------------------------------------------------------------------------------------------------
class CoarseModel(_VLMStage):
    """Query-independent interaction description + global interaction descriptor F_ana."""

    def __init__(self, model, processor, device="cpu", pooling: str = "mean", max_new_tokens: int = 64):
        super().__init__(model, processor, device)
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling = pooling
        self.max_new_tokens = int(max_new_tokens)

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=None, pooling: str = "mean", lora_path=None,
                        max_new_tokens: int = 64, min_pixels=None, max_pixels=None) -> "CoarseModel":
        model = load_vlm(path, device, dtype)
        if lora_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(lora_path)).eval()
        return cls(model, load_processor(path, min_pixels, max_pixels), device, pooling, max_new_tokens)

    @property
    def descriptor_dim(self) -> int:
        return self.hidden_size

    def prepare(self, images: Sequence, texts: Sequence[str] | None = None) -> PreparedBatch:
        inputs, frames = self._encode_prompts(images, [COARSE_INSTRUCTION] * len(images))
        batch = PreparedBatch(inputs=inputs, prompt_len=int(inputs["input_ids"].shape[1]), frames=frames)
        if texts is not None:
            comp, cmask = self._tokenize_completions(texts)
            full = self._full_inputs(inputs, comp, cmask)
            labels = full["input_ids"].clone()
            labels[:, : batch.prompt_len] = -100
            labels[torch.cat([torch.zeros_like(inputs["input_ids"]), cmask], 1) == 0] = -100
            batch.inputs, batch.labels = full, labels
            batch.completion_mask = torch.cat([torch.zeros_like(inputs["input_ids"]), cmask], 1)
        return batch.to(self.device)

    def _pool(self, inputs: dict, prompt_len: int, desc_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states pooled over description positions -> float32 [B, D]."""
        out = self.model(**inputs, output_hidden_states=True, use_cache=False)
        hs = out.hidden_states[-1][:, prompt_len:].float()  # [B, C, D]
        last_prompt = out.hidden_states[-1][:, prompt_len - 1].float()  # [B, D]
        m = desc_mask.to(hs.device).float()  # [B, C]
        n = m.sum(1, keepdim=True)  # [B, 1]
        if self.pooling == "mean":
            pooled = (hs * m[..., None]).sum(1) / n.clamp_min(1.0)
        else:
            idx = (n.long().squeeze(1) - 1).clamp_min(0)
            pooled = hs[torch.arange(hs.shape[0], device=hs.device), idx]
        return torch.where(n > 0, pooled, last_prompt)

    @torch.no_grad()
    def descriptors(self, images: Sequence, texts: Sequence[str]) -> torch.Tensor:
        """F_ana for given description texts (e.g. ground-truth captions): float32 [B, D]."""
        comp, cmask = self._tokenize_completions(texts, add_end=False)  # pooled over the text only
        inputs, _ = self._encode_prompts(images, [COARSE_INSTRUCTION] * len(images))
        p = int(inputs["input_ids"].shape[1])
        full = {k: v.to(self.device) for k, v in self._full_inputs(inputs, comp, cmask).items()}
        return self._pool(full, p, cmask)

    @torch.no_grad()
    def describe(self, image, stamp: float | None = None, max_new_tokens: int | None = None) -> Interaction:
        """Describe one frame: greedy description + its pooled last-layer descriptor."""
        import time

        t0 = time.perf_counter()
        batch = self.prepare([image])
        out = self.model.generate(
            **batch.inputs,
            max_new_tokens=int(max_new_tokens or self.max_new_tokens),
            do_sample=False,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.end_token_ids,
        )
        comp = out[:, batch.prompt_len:]  # [1, C]
        keep = self._completion_mask_after_generation(comp)
        desc_mask = keep * (~torch.isin(comp, torch.tensor(self.end_token_ids, device=comp.device))).long()
        text = self.tokenizer.decode(comp[0][desc_mask[0].bool()], skip_special_tokens=True).strip()
        full = dict(batch.inputs)
        full["input_ids"] = out
        full["attention_mask"] = torch.cat([batch.inputs["attention_mask"], desc_mask.to(out.device)], 1)
        if "mm_token_type_ids" in full:
            mm = batch.inputs["mm_token_type_ids"]
            full["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(comp, dtype=mm.dtype)], 1)
        descriptor = self._pool(full, batch.prompt_len, desc_mask)[0]
        return Interaction(text=text, descriptor=descriptor.cpu().numpy().astype(np.float32), stamp=stamp,
                           latency_ms=(time.perf_counter() - t0) * 1000.0)


# --------------------------------------------------------------------------------------------------
# Stage 2
# --------------------------------------------------------------------------------------------------
class ResponseModel(_VLMStage):
    """Query answering with AFS-injected interaction descriptor."""

    def __init__(self, model, processor, afs, device="cpu", afs_alpha: float = 1.0, max_query_tokens: int = 64,
                 max_new_tokens: int = 96, coordinates: str = "greedy"):
        from .afs import AFSInjector

        super().__init__(model, processor, device)
        self.afs = afs.to(self.device).float()
        cfg = self.base_model.config
        image_ids = [getattr(cfg, "image_token_id", None), getattr(cfg, "video_token_id", None)]
        if self.afs.config.out_dim != self.hidden_size:
            raise ModelDirError(
                f"AFS out_dim {self.afs.config.out_dim} does not match the response model hidden size {self.hidden_size}"
            )
        self.injector = AFSInjector(self.afs, image_ids, alpha=afs_alpha, pad_token_id=self.pad_token_id)
        self.injector.attach(self.model)
        self.max_query_tokens = int(max_query_tokens)
        self.max_new_tokens = int(max_new_tokens)
        self._coordinate_processor = None
        self.coordinates = coordinates

    @property
    def coordinates(self) -> str:
        """How greedy answers decode box coordinates: 'greedy', 'mean' or 'median' (coordinates.py)."""
        return self._coordinates

    @coordinates.setter
    def coordinates(self, mode: str) -> None:
        from .coordinates import COORDINATE_DECODINGS, NumberTokenDecoding

        if mode not in COORDINATE_DECODINGS:
            raise ValueError(f"coordinates must be one of {COORDINATE_DECODINGS}, got {mode!r}")
        # built here, not per call: the vocabulary scan runs once and a tokenizer that cannot
        # support the mode fails at load time
        self._coordinate_processor = None if mode == "greedy" else NumberTokenDecoding(self.tokenizer, mode)
        self._coordinates = mode

    @classmethod
    def from_pretrained(cls, path, afs_path, lora_path=None, device="cpu", dtype=None, afs_alpha: float = 1.0,
                        max_query_tokens: int = 64, max_new_tokens: int = 96, min_pixels=None,
                        max_pixels=None, is_trainable: bool = False, coordinates: str = "greedy") -> "ResponseModel":
        from .afs import AFS

        model = load_vlm(path, device, dtype)
        if lora_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(lora_path), is_trainable=is_trainable)
            if not is_trainable:
                model.eval()
        afs = AFS.from_pretrained(afs_path, device=device)
        return cls(model, load_processor(path, min_pixels, max_pixels), afs, device, afs_alpha,
                   max_query_tokens, max_new_tokens, coordinates)

    @property
    def descriptor_dim(self) -> int:
        return int(self.afs.config.in_dim)

    # ---- training helpers ----
    def attach_lora(self, peft_config):
        """Wrap the model with a fresh LoRA adapter (hooks keep working on the wrapped modules)."""
        from peft import get_peft_model

        self.model = get_peft_model(self.model, peft_config)
        return self.model

    def save_trainable(self, out_dir) -> Path:
        """Save the LoRA adapter (if any) to out_dir/lora and the AFS weights to out_dir/afs."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if hasattr(self.model, "peft_config"):
            self.model.save_pretrained(str(out / "lora"))
        self.afs.save_pretrained(out / "afs")
        return out

    def truncate_query(self, query: str) -> tuple[str, bool]:
        """Strip and cut the query to `max_query_tokens` tokens; returns (query, truncated)."""
        q = (query or "").strip()
        if not q:
            raise EmptyQueryError("the query is empty")
        ids = self.tokenizer(q, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_query_tokens:
            return q, False
        return self.tokenizer.decode(ids[: self.max_query_tokens], skip_special_tokens=True).strip(), True

    def _descriptor_tensor(self, descriptors, batch: int) -> torch.Tensor:
        if descriptors is None:
            return torch.zeros((batch, self.descriptor_dim), dtype=torch.float32)
        d = torch.as_tensor(np.asarray(descriptors, dtype=np.float32) if not torch.is_tensor(descriptors)
                            else descriptors).float()
        if d.dim() == 1:
            d = d.unsqueeze(0).expand(batch, -1)
        if d.shape != (batch, self.descriptor_dim):
            raise ValueError(f"descriptors must be [{batch}, {self.descriptor_dim}], got {tuple(d.shape)}")
        return d

    def prepare(self, images: Sequence, queries: Sequence[str], descriptors=None,
                completions: Sequence[str] | None = None) -> PreparedBatch:
        """Chat inputs for B (image, query[, completion]) samples; see the module docstring."""
        qs, trunc = zip(*[self.truncate_query(q) for q in queries]) if queries else ((), ())
        inputs, frames = self._encode_prompts(images, [response_prompt(q) for q in qs])
        batch = PreparedBatch(inputs=inputs, prompt_len=int(inputs["input_ids"].shape[1]), frames=frames,
                              descriptors=self._descriptor_tensor(descriptors, len(qs)), queries=list(qs),
                              query_truncated=list(trunc))
        if completions is not None:
            comp, cmask = self._tokenize_completions(completions)
            full = self._full_inputs(inputs, comp, cmask)
            full_cmask = torch.cat([torch.zeros_like(inputs["input_ids"]), cmask], 1)
            labels = full["input_ids"].clone()
            labels[full_cmask == 0] = -100
            batch.inputs, batch.labels, batch.completion_mask = full, labels, full_cmask
        return batch.to(self.device)

    def sft_loss(self, batch: PreparedBatch) -> torch.Tensor:
        """Teacher-forced cross-entropy on the completion tokens, with AFS injection."""
        return self.sft_forward(batch).loss

    def sft_forward(self, batch: PreparedBatch, output_hidden_states: bool = False):
        """The model output of the teacher-forced pass (.loss, and .hidden_states for auxiliary losses)."""
        if batch.labels is None:
            raise ValueError("sft_loss needs a batch prepared with completions")
        # Completions sit after the (left-padded) prompt, so only the last C + 1 positions predict a
        # labelled token: projecting just those onto the vocabulary skips the LM head and softmax over
        # the ~200 prompt positions (a quarter of a tiny model's step) for the same loss.
        keep = int(batch.labels.shape[1]) - batch.prompt_len + 1
        with self.injector.use(batch.descriptors, completion_mask=batch.completion_mask):
            out = self.model(**batch.inputs, use_cache=False, logits_to_keep=keep,
                             output_hidden_states=output_hidden_states)
        logits = out.logits[:, :-1].float()  # [B, C, V]: position t predicts completion token t
        out.loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     batch.labels[:, batch.prompt_len:].reshape(-1), ignore_index=-100)
        return out

    def generate(self, batch: PreparedBatch, num_return_sequences: int = 1, max_new_tokens: int | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0) -> Generation:
        """Sample/greedy-decode completions for a prompt batch (row i*G + j = sample j of prompt i)."""
        g = int(num_return_sequences)
        # Greedy decoding is deterministic: G > 1 greedy answers are G copies (transformers refuses
        # num_return_sequences > 1 without sampling, so decode once and repeat).
        repeat_after = g if not do_sample and g > 1 else 1
        gen_kwargs = dict(
            max_new_tokens=int(max_new_tokens or self.max_new_tokens),
            num_return_sequences=g // repeat_after,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.end_token_ids,
            do_sample=bool(do_sample),
        )
        if do_sample:
            gen_kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
        elif self._coordinate_processor is not None:
            from transformers import LogitsProcessorList

            gen_kwargs["logits_processor"] = LogitsProcessorList([self._coordinate_processor])
        with self.injector.use(batch.descriptors):
            out = self.model.generate(**batch.inputs, **gen_kwargs)
        comp = out[:, batch.prompt_len:].repeat_interleave(repeat_after, 0)
        cmask = self._completion_mask_after_generation(comp)
        comp = comp.masked_fill(cmask == 0, self.pad_token_id)
        texts = self.tokenizer.batch_decode(comp, skip_special_tokens=True)
        return Generation(completion_ids=comp, completion_mask=cmask, texts=[t.strip() for t in texts])

    def sequence_logprobs(self, batch: PreparedBatch, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                          disable_adapter: bool = False) -> torch.Tensor:
        """Per-token log-probs [N, C] of completion_ids given the batch's prompts (N = B * G).

        Gradients flow (call under torch.no_grad() for old/reference policies). The descriptor of
        prompt i is used for rows i*G .. i*G+G-1; F_emb comes from the prompt positions only, so the
        injected delta equals the one seen while sampling.
        """
        n, c = completion_ids.shape
        b = batch.batch_size
        if n % b:
            raise ValueError(f"{n} completions do not split evenly over {b} prompts")
        g = n // b
        prompt_inputs = {k: batch.inputs[k] for k in batch.inputs}
        if batch.labels is not None:  # a batch prepared with completions: use its prompt part only
            p = batch.prompt_len
            for k in ("input_ids", "attention_mask", "mm_token_type_ids"):
                if k in prompt_inputs:
                    prompt_inputs[k] = prompt_inputs[k][:, :p]
        full = self._full_inputs(prompt_inputs, completion_ids.to(self.device), completion_mask.to(self.device), g)
        full_cmask = torch.cat(
            [torch.zeros((n, batch.prompt_len), dtype=torch.long, device=self.device), completion_mask.to(self.device)], 1
        )
        desc = batch.descriptors.repeat_interleave(g, 0) if batch.descriptors is not None else None
        ctx = self.model.disable_adapter() if disable_adapter and hasattr(self.model, "disable_adapter") else None
        with self.injector.use(desc, completion_mask=full_cmask):
            if ctx is not None:
                with ctx:
                    logits = self.model(**full, use_cache=False, logits_to_keep=c + 1).logits
            else:
                logits = self.model(**full, use_cache=False, logits_to_keep=c + 1).logits
        logits = logits[:, :-1].float()  # [N, C, V]: position t predicts completion token t
        logp = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.to(logits.device)[..., None]).squeeze(-1)
        return logp * completion_mask.to(logp.device, logp.dtype)

    # ---- inference ----
    @torch.no_grad()
    def respond(self, image, query: str, descriptor=None, max_new_tokens: int | None = None, do_sample: bool = False,
                temperature: float = 1.0, num_return_sequences: int = 1) -> RawResponse:
        """Answer one query about one image; texts are raw completions (parse with prompts.parse_response)."""
        batch = self.prepare([image], [query], None if descriptor is None else [np.asarray(descriptor, np.float32)])
        gen = self.generate(batch, num_return_sequences=num_return_sequences, max_new_tokens=max_new_tokens,
                            do_sample=do_sample, temperature=temperature)
        f = batch.frames[0]
        return RawResponse(texts=gen.texts, scale_xy=f.scale_xy, input_hw=f.input_hw, orig_hw=f.orig_hw,
                           query=batch.queries[0], query_truncated=batch.query_truncated[0])

    @torch.no_grad()
    def logits(self, image, query: str, descriptor=None) -> torch.Tensor:
        """Next-token logits [V] after the prompt (used by tests and diagnostics)."""
        batch = self.prepare([image], [query], None if descriptor is None else [np.asarray(descriptor, np.float32)])
        with self.injector.use(batch.descriptors):
            out = self.model(**batch.inputs, use_cache=False)
        return out.logits[0, -1].float()


__all__ = [
    "CoarseModel", "ResponseModel", "EarlVLProcessor", "RawResponse", "PreparedBatch", "Generation", "Frame",
    "load_processor", "load_vlm", "model_frame", "boxes_to_original", "boxes_to_model", "DEFAULT_CHAT_TEMPLATE",
]
