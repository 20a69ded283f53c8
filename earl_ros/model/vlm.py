"""The two VLM stages of EARL on transformers' Qwen2.5-VL (METHOD.md section 1): loading and inference.

Everything here is written against the model *config* (hidden sizes, special-token ids, patch and
merge sizes come from the checkpoint), so the tiny test checkpoints of `earl_ros.model.tiny` and real
Qwen2.5-VL-3B/7B directories load through exactly the same code. Inputs are built by
vlm_processing.py (chat template, processor, batches), box frames are mapped by coordinates.py, and
the training-only side of the response model (LoRA, SFT loss, GRPO log-probs) is training/policy.py.

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
    image_grid_thw * patch size); `coordinates.boxes_to_original(boxes, scale_xy, orig_hw)` maps them
    back to the original image and `coordinates.boxes_to_model` maps ground-truth boxes the other way.
    The AFS modulation is injected by `AFSInjector` hooks (see afs.py): input_ids always reach the
    model, so image tokens keep their 2-D M-RoPE positions in training and at inference alike.

What training (training/: SFT, GRPO, training/policy.py) reads, on `ResponseModel` unless said:
    .model (possibly peft-wrapped), .processor (EarlVLProcessor), .tokenizer (left padding), .afs and
    .injector (AFS module, float32, and its hooks), .device, .descriptor_dim, .hidden_size,
    .base_model (unwrapped from peft), .pad_token_id;
    .prepare(images, queries, descriptors=None, completions=None) -> PreparedBatch, laid out as
        vlm_processing.py says (CoarseModel.prepare(images, texts) for stage-1 SFT);
    .generate(batch, num_return_sequences=G, ...) -> Generation(completion_ids, completion_mask,
        texts), row i*G + j = sample j of prompt i; greedy with G > 1 gives G copies, and greedy
        decoding reads box coordinates as `.coordinates` says ('greedy', 'mean', 'median');
    .frame_of((h, w)) -> Frame: the model frame of an image size, for ground-truth boxes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .coordinates import boxes_to_original
from .errors import ModelDirError
from .prompts import COARSE_INSTRUCTION, response_prompt
from .types import Interaction
from .vlm_processing import (Frame, PreparedBatch, add_completions, descriptor_tensor, encode_prompts, full_inputs,
                             load_processor, model_frame, tokenize_completions, truncate_query)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
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
# Outputs
# --------------------------------------------------------------------------------------------------
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
        inputs, frames = encode_prompts(self.processor, images, [COARSE_INSTRUCTION] * len(images))
        batch = PreparedBatch(inputs=inputs, prompt_len=int(inputs["input_ids"].shape[1]), frames=frames)
        if texts is not None:
            add_completions(batch, self.tokenizer, texts, self.pad_token_id)
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
        # pooled over the text only, without the end-of-turn token
        comp, cmask = tokenize_completions(self.tokenizer, texts, self.pad_token_id, add_end=False)
        inputs, _ = encode_prompts(self.processor, images, [COARSE_INSTRUCTION] * len(images))
        p = int(inputs["input_ids"].shape[1])
        full = {k: v.to(self.device) for k, v in full_inputs(inputs, comp, cmask).items()}
        return self._pool(full, p, cmask)

    @torch.no_grad()
    def describe(self, image, stamp: float | None = None, max_new_tokens: int | None = None,
                 stopping_criteria=None) -> Interaction:
        """Describe one frame: greedy description + its pooled last-layer descriptor.

        stopping_criteria: called between tokens (a query's cancel, streaming.py)."""
        import time

        from transformers import StoppingCriteriaList

        t0 = time.perf_counter()
        batch = self.prepare([image])
        inputs, features = self._encode_images(batch.inputs)
        out = self.model.generate(
            **inputs,
            mm_encoder_outputs={"image": features},
            max_new_tokens=int(max_new_tokens or self.max_new_tokens),
            do_sample=False,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.end_token_ids,
            **({"stopping_criteria": StoppingCriteriaList(stopping_criteria)} if stopping_criteria else {}),
        )
        comp = out[:, batch.prompt_len:]  # [1, C]
        keep = self._completion_mask_after_generation(comp)
        desc_mask = keep * (~torch.isin(comp, torch.tensor(self.end_token_ids, device=comp.device))).long()
        text = self.tokenizer.decode(comp[0][desc_mask[0].bool()], skip_special_tokens=True).strip()
        full = dict(inputs)
        full["input_ids"] = out
        full["attention_mask"] = torch.cat([inputs["attention_mask"], desc_mask.to(out.device)], 1)
        if "mm_token_type_ids" in full:
            mm = inputs["mm_token_type_ids"]
            full["mm_token_type_ids"] = torch.cat([mm, torch.zeros_like(comp, dtype=mm.dtype)], 1)
        full["mm_encoder_outputs"] = {"image": features}
        descriptor = self._pool(full, batch.prompt_len, desc_mask)[0]
        return Interaction(text=text, descriptor=descriptor.cpu().numpy().astype(np.float32), stamp=stamp,
                           latency_ms=(time.perf_counter() - t0) * 1000.0)

    def _encode_images(self, inputs: dict) -> tuple[dict, object]:
        """`inputs` without its pixels, and the vision tower's features for them. Encoded once, they serve
        both the generation and the descriptor's pooling forward; with the pixels, each of the two ran the
        tower (text and descriptor are bit-identical either way, tests/test_vlm.py)."""
        rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
        features = self.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        return rest, features


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

    def truncate_query(self, query: str) -> tuple[str, bool]:
        """Strip and cut the query to `max_query_tokens` tokens; returns (query, truncated)."""
        return truncate_query(self.tokenizer, query, self.max_query_tokens)

    def prepare(self, images: Sequence, queries: Sequence[str], descriptors=None,
                completions: Sequence[str] | None = None) -> PreparedBatch:
        """Chat inputs for B (image, query[, completion]) samples; see the module docstring."""
        qs, trunc = zip(*[self.truncate_query(q) for q in queries]) if queries else ((), ())
        inputs, frames = encode_prompts(self.processor, images, [response_prompt(q) for q in qs])
        batch = PreparedBatch(inputs=inputs, prompt_len=int(inputs["input_ids"].shape[1]), frames=frames,
                              descriptors=descriptor_tensor(descriptors, len(qs), self.descriptor_dim),
                              queries=list(qs), query_truncated=list(trunc))
        if completions is not None:
            add_completions(batch, self.tokenizer, completions, self.pad_token_id)
        return batch.to(self.device)

    def generate(self, batch: PreparedBatch, num_return_sequences: int = 1, max_new_tokens: int | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 progress=None) -> Generation:
        """Sample/greedy-decode completions for a prompt batch (row i*G + j = sample j of prompt i).

        progress: an earl_ros.model.streaming.AnswerProgress that receives the text token by token
        and stops generation when cancelled (one prompt, one sequence)."""
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
        if progress is not None:
            from transformers import StoppingCriteriaList

            gen_kwargs.update(streamer=progress.streamer(self.tokenizer),
                              stopping_criteria=StoppingCriteriaList([progress.stopping_criteria()]))
        with self.injector.use(batch.descriptors):
            out = self.model.generate(**batch.inputs, **gen_kwargs)
        comp = out[:, batch.prompt_len:].repeat_interleave(repeat_after, 0)
        cmask = self._completion_mask_after_generation(comp)
        comp = comp.masked_fill(cmask == 0, self.pad_token_id)
        texts = self.tokenizer.batch_decode(comp, skip_special_tokens=True)
        return Generation(completion_ids=comp, completion_mask=cmask, texts=[t.strip() for t in texts])

    @torch.no_grad()
    def respond(self, image, query: str, descriptor=None, max_new_tokens: int | None = None, do_sample: bool = False,
                temperature: float = 1.0, num_return_sequences: int = 1, progress=None) -> RawResponse:
        """Answer one query about one image; texts are raw completions (parse with prompts.parse_response)."""
        batch = self.prepare([image], [query], None if descriptor is None else [np.asarray(descriptor, np.float32)])
        gen = self.generate(batch, num_return_sequences=num_return_sequences, max_new_tokens=max_new_tokens,
                            do_sample=do_sample, temperature=temperature, progress=progress)
        f = batch.frames[0]
        return RawResponse(texts=gen.texts, scale_xy=f.scale_xy, input_hw=f.input_hw, orig_hw=f.orig_hw,
                           query=batch.queries[0], query_truncated=batch.query_truncated[0])

    @torch.no_grad()
    def respond_many(self, image, queries: Sequence[str], descriptor=None,
                     max_new_tokens: int | None = None) -> list[RawResponse]:
        """Greedy answers to several queries about one image in one generation (evaluation asks about
        8 per image). Prompts are left-padded and the padding masked, so each answer is the one
        `respond` gives alone; the batch saves the per-call overhead of a tiny model on CPU."""
        if not queries:
            return []
        desc = None if descriptor is None else [np.asarray(descriptor, np.float32)] * len(queries)
        batch = self.prepare([image] * len(queries), list(queries), desc)
        gen = self.generate(batch, max_new_tokens=max_new_tokens)
        return [RawResponse(texts=[text], scale_xy=f.scale_xy, input_hw=f.input_hw, orig_hw=f.orig_hw, query=q,
                            query_truncated=trunc)
                for text, f, q, trunc in zip(gen.texts, batch.frames, batch.queries, batch.query_truncated)]

    @torch.no_grad()
    def logits(self, image, query: str, descriptor=None) -> torch.Tensor:
        """Next-token logits [V] after the prompt (used by tests and diagnostics)."""
        batch = self.prepare([image], [query], None if descriptor is None else [np.asarray(descriptor, np.float32)])
        with self.injector.use(batch.descriptors):
            out = self.model(**batch.inputs, use_cache=False)
        return out.logits[0, -1].float()


__all__ = ["CoarseModel", "ResponseModel", "RawResponse", "Generation", "load_vlm"]
