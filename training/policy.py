"""The response model as a trainable policy: LoRA, the SFT loss and the GRPO log-probs.

These act on an `earl_ros.model.vlm.ResponseModel` (`rm`) but live with the training code: a
deployed model never computes a loss or wraps itself in a fresh adapter, so the model layer carries
only what inference runs. They build their inputs with the same functions as inference
(earl_ros.model.vlm_processing) and run under the same AFS injection, so what is trained is what
`respond` later runs.

    attach_lora(rm, peft_config)        wrap rm.model in a fresh LoRA adapter
    save_trainable(rm, out_dir)         adapter -> out_dir/lora, AFS -> out_dir/afs
    sft_loss(rm, batch)                 teacher-forced cross-entropy on the completion tokens
    sft_forward(rm, batch, output_hidden_states=False)   the same pass, whole output
    sequence_logprobs(rm, batch, completion_ids, completion_mask, disable_adapter=False)
        float32 [B*G, C] per-token log-probs (0 where completion_mask is 0); row i*G + j is sample
        j of prompt i (the order `rm.generate` uses); disable_adapter=True gives the reference
        policy (same model, LoRA adapters disabled).
"""
from __future__ import annotations

from pathlib import Path

import torch

from earl_ros.model.vlm_processing import PreparedBatch, full_inputs


def attach_lora(rm, peft_config):
    """Wrap the model with a fresh LoRA adapter (the AFS hooks keep working on the wrapped modules)."""
    from peft import get_peft_model

    rm.model = get_peft_model(rm.model, peft_config)
    return rm.model


def save_trainable(rm, out_dir) -> Path:
    """Save the LoRA adapter (if any) to out_dir/lora and the AFS weights to out_dir/afs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(rm.model, "peft_config"):
        rm.model.save_pretrained(str(out / "lora"))
    rm.afs.save_pretrained(out / "afs")
    return out


def sft_loss(rm, batch: PreparedBatch) -> torch.Tensor:
    """Teacher-forced cross-entropy on the completion tokens, with AFS injection."""
    return sft_forward(rm, batch).loss


def sft_forward(rm, batch: PreparedBatch, output_hidden_states: bool = False):
    """The model output of the teacher-forced pass (.loss, and .hidden_states for auxiliary losses)."""
    if batch.labels is None:
        raise ValueError("sft_loss needs a batch prepared with completions")
    # Completions sit after the (left-padded) prompt, so only the last C + 1 positions predict a
    # labelled token: projecting just those onto the vocabulary skips the LM head and softmax over
    # the ~200 prompt positions (a quarter of a tiny model's step) for the same loss.
    keep = int(batch.labels.shape[1]) - batch.prompt_len + 1
    with rm.injector.use(batch.descriptors, completion_mask=batch.completion_mask):
        out = rm.model(**batch.inputs, use_cache=False, logits_to_keep=keep,
                       output_hidden_states=output_hidden_states)
    logits = out.logits[:, :-1].float()  # [B, C, V]: position t predicts completion token t
    out.loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch.labels[:, batch.prompt_len:].reshape(-1), ignore_index=-100)
    return out


def sequence_logprobs(rm, batch: PreparedBatch, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
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
    full = full_inputs(prompt_inputs, completion_ids.to(rm.device), completion_mask.to(rm.device), g)
    full_cmask = torch.cat(
        [torch.zeros((n, batch.prompt_len), dtype=torch.long, device=rm.device), completion_mask.to(rm.device)], 1
    )
    desc = batch.descriptors.repeat_interleave(g, 0) if batch.descriptors is not None else None
    ctx = rm.model.disable_adapter() if disable_adapter and hasattr(rm.model, "disable_adapter") else None
    with rm.injector.use(desc, completion_mask=full_cmask):
        if ctx is not None:
            with ctx:
                logits = rm.model(**full, use_cache=False, logits_to_keep=c + 1).logits
        else:
            logits = rm.model(**full, use_cache=False, logits_to_keep=c + 1).logits
    logits = logits[:, :-1].float()  # [N, C, V]: position t predicts completion token t
    logp = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.to(logits.device)[..., None]).squeeze(-1)
    return logp * completion_mask.to(logp.device, logp.dtype)


__all__ = ["attach_lora", "save_trainable", "sequence_logprobs", "sft_forward", "sft_loss"]
