"""AFS (Analysis-guided Feature Synthesizer) and its injection into a VLM's token embeddings.

METHOD.md section 2 describes the module as the EARL authors implemented it; this file follows that
description line by line (shape comments below use B = batch, H = hidden = S*S):

    F_ana [B, Din] --Linear--> [B, H] --LayerNorm--> reshape [B, 1, S, S]
        q, k, v = three 1x1 Conv2d(1 -> 1)                     each [B, 1, S, S] -> flatten [B, 1, H]
        q, k = L2-normalised along H
        A = softmax(q^T k) over the last axis                  [B, H, H]   (no 1/sqrt(d) scale)
        out = A v^T                                            [B, H, 1] -> [B, H]
        out = Linear(LayerNorm(out))                           [B, Dllm]
    return out + F_emb                                         (residual on the prompt embedding)

The injection (`AFSInjector`) adds the *modulation* `alpha * (AFS(F_ana, F_emb) - F_emb)` to the
input embedding of every non-image token, including tokens generated during decoding.

How F_emb is defined here (and why):
    F_emb is the mean input-token embedding over the non-image, non-padding PROMPT positions of each
    sequence. It is computed once per sequence on the first forward pass (the prefill, cache empty)
    and the resulting delta is cached for the decode steps that follow. In teacher-forced training the
    caller passes `prompt_mask` (or `completion_mask`) so that completion tokens are excluded from the
    mean: generation and training therefore see exactly the same delta for the same (image, query).

How it is wired (and why it is a hook, not a patched forward):
    The public release replaced the model's forward and passed `inputs_embeds` without `input_ids`,
    so the multimodal rotary positions (M-RoPE: 3-D temporal/height/width ids for image tokens) were
    recomputed as plain 1-D positions during training. Here nothing about the model call changes:
    `input_ids` still reach the model, which computes M-RoPE positions from them as usual. We only
    register
      * a forward hook on the input embedding module (`model.get_input_embeddings()`), which sees the
        token ids and returns the embeddings plus the delta on non-image positions, and
      * a forward pre-hook on the multimodal core (the module that owns `get_rope_index`), which
        records the attention mask and the KV-cache length of the current call so the embedding hook
        knows the padding and whether this is a prefill or a decode step.
    A call that passes `inputs_embeds` instead of `input_ids` bypasses the embedding module and is
    not injected (it would also lose the M-RoPE positions): EARL code never does that.
    Hooks live on module objects, so they keep working when the model is wrapped by peft
    (PeftModel / LoRA) and under `generate(num_return_sequences=G)` (the descriptor batch is repeated
    to match the expanded batch, in the same interleaved order `generate` uses).

An all-zero descriptor row disables injection for that row exactly (the delta is zero, so logits are
bit-identical to the base model): this is the "no description yet" state of the robot.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

AFS_CONFIG_NAME = "config.json"
AFS_WEIGHTS_NAME = "model.safetensors"


@dataclass
class AFSConfig:
    """Configuration of the AFS module.

    in_dim: hidden size of the coarse model (F_ana), e.g. 2048 for Qwen2.5-VL-3B.
    out_dim: hidden size of the response LLM (F_emb), e.g. 3584 for Qwen2.5-VL-7B.
    hidden: attention width; must be a perfect square because it is reshaped to 1 x S x S.
    layer_norm_eps: epsilon of both LayerNorms (torch default).
    """

    in_dim: int
    out_dim: int
    hidden: int = 1024
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("in_dim", "out_dim", "hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"AFSConfig.{name} must be a positive int, got {v!r}")
        side = math.isqrt(self.hidden)
        if side * side != self.hidden:
            raise ValueError(
                f"AFSConfig.hidden must be a perfect square (it is reshaped to 1 x S x S), got {self.hidden}"
            )

    @property
    def side(self) -> int:
        return math.isqrt(self.hidden)

    def to_dict(self) -> dict:
        return {"model_type": "earl_afs", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "AFSConfig":
        return cls(**{k: v for k, v in d.items() if k in ("in_dim", "out_dim", "hidden", "layer_norm_eps")})


class AFS(nn.Module):
    """Analysis-guided Feature Synthesizer: AFS(F_ana [B, Din], F_emb [B, Dllm]) -> [B, Dllm]."""

    def __init__(self, config: AFSConfig):
        super().__init__()
        self.config = config
        self.fc_in = nn.Linear(config.in_dim, config.hidden)
        self.norm_in = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.q_proj = nn.Conv2d(1, 1, kernel_size=1)
        self.k_proj = nn.Conv2d(1, 1, kernel_size=1)
        self.v_proj = nn.Conv2d(1, 1, kernel_size=1)
        self.norm_out = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.fc_out = nn.Linear(config.hidden, config.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' init: Linears N(0, 0.02) with zero bias, convs Xavier-uniform with zero bias."""
        for lin in (self.fc_in, self.fc_out):
            nn.init.normal_(lin.weight, mean=0.0, std=0.02)
            nn.init.zeros_(lin.bias)
        for conv in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.norm_in.reset_parameters()
        self.norm_out.reset_parameters()

    def zero_output(self) -> None:
        """Zero the output Linear, so AFS(F_ana, F_emb) = F_emb and the injected modulation is exactly 0.

        With the authors' init the first modulation of a tiny response model is about 4x the norm of its
        token embeddings (0.92 vs 0.23 at hidden 128), nearly the same vector for every frame: training
        starts from text embeddings drowned in a shared offset. Zeroed, the response model starts as the
        no-descriptor model and the AFS grows only as far as the descriptor lowers the loss (the output
        weights still get gradients: d loss / d W_out = delta-gradient x LayerNorm output, non-zero).
        """
        with torch.no_grad():
            self.fc_out.weight.zero_()
            self.fc_out.bias.zero_()

    def forward(self, f_ana: torch.Tensor, f_emb: torch.Tensor) -> torch.Tensor:
        b = f_ana.shape[0]
        s = self.config.side
        x = self.norm_in(self.fc_in(f_ana))  # [B, H]
        x = x.view(b, 1, s, s)  # [B, 1, S, S]
        q = self.q_proj(x).flatten(2)  # [B, 1, H]
        k = self.k_proj(x).flatten(2)  # [B, 1, H]
        v = self.v_proj(x).flatten(2)  # [B, 1, H]
        q = F.normalize(q, p=2.0, dim=-1)
        k = F.normalize(k, p=2.0, dim=-1)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # [B, H, H]; no 1/sqrt(d) scale (as theirs)
        out = (attn @ v.transpose(1, 2)).squeeze(-1)  # [B, H, 1] -> [B, H]
        out = self.fc_out(self.norm_out(out))  # [B, Dllm]
        return out + f_emb

    # ---- persistence: a directory with config.json + model.safetensors (no pickle) ----
    def save_pretrained(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / AFS_CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / AFS_WEIGHTS_NAME), metadata={"format": "pt"})
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "AFS":
        from safetensors.torch import load_file

        from .errors import ModelDirError

        path = Path(path)
        cfg_file, w_file = path / AFS_CONFIG_NAME, path / AFS_WEIGHTS_NAME
        for f in (cfg_file, w_file):
            if not f.is_file():
                raise ModelDirError(
                    f"AFS weights incomplete: {f} is missing (an AFS dir holds {AFS_CONFIG_NAME} + "
                    f"{AFS_WEIGHTS_NAME}; save one with AFS.save_pretrained)"
                )
        config = AFSConfig.from_dict(json.loads(cfg_file.read_text()))
        module = cls(config)
        module.load_state_dict(load_file(str(w_file)), strict=True)
        return module.to(device)


def find_multimodal_core(model: nn.Module) -> nn.Module | None:
    """The submodule that computes M-RoPE positions (owns `get_rope_index`), peft wrapping or not."""
    for m in model.modules():
        if hasattr(m, "get_rope_index") and hasattr(m, "language_model"):
            return m
    return None


class AFSInjector:
    """Adds `alpha * (AFS(F_ana, F_emb) - F_emb)` to every non-image token embedding of a VLM.

    Usage:
        injector = AFSInjector(afs, image_token_ids=[cfg.image_token_id, cfg.video_token_id]).attach(model)
        with injector.use(descriptor):            # descriptor: [B0, Din] or [Din]
            model.generate(**inputs)              # or model(**inputs) for training

    Outside a `use` block the hooks do nothing, so the same model serves as the un-injected base.
    State is per call sequence; callers serialise calls on one model (the pipeline holds a lock).
    """

    def __init__(
        self,
        afs: AFS,
        image_token_ids: Sequence[int],
        alpha: float = 1.0,
        pad_token_id: int | None = None,
    ):
        self.afs = afs
        self.image_token_ids = sorted({int(i) for i in image_token_ids if i is not None})
        self.alpha = float(alpha)
        self.pad_token_id = pad_token_id
        self._handles: list = []
        self._active = False
        self._descriptor: torch.Tensor | None = None
        self._prompt_mask: torch.Tensor | None = None
        self._delta: torch.Tensor | None = None  # [B, Dllm], cached at prefill for the decode steps
        self._call_attention_mask: torch.Tensor | None = None
        self._call_cache_len = 0
        self.last_f_emb: torch.Tensor | None = None  # for inspection/tests
        self.last_delta: torch.Tensor | None = None  # [B, Dllm] of the last prefill, for diagnostics

    # ---- wiring ----
    def attach(self, model: nn.Module) -> "AFSInjector":
        self.detach()
        embed = model.get_input_embeddings()
        self._handles.append(embed.register_forward_hook(self._embedding_hook))
        core = find_multimodal_core(model)
        if core is not None:
            self._handles.append(core.register_forward_pre_hook(self._core_pre_hook, with_kwargs=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @contextmanager
    def use(
        self,
        descriptor: torch.Tensor | None,
        prompt_mask: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
    ) -> Iterator["AFSInjector"]:
        """Inject `descriptor` into every model call inside the block.

        prompt_mask [B, S] (1 = prompt position) restricts the F_emb mean to the prompt in
        teacher-forced calls; `completion_mask` [B, S] is the complement form (1 = completion token).
        Without either, all non-image, non-padding positions of the prefill call are the prompt,
        which is exactly the situation in `generate`.
        """
        if descriptor is not None:
            descriptor = torch.as_tensor(descriptor)
            if descriptor.dim() == 1:
                descriptor = descriptor.unsqueeze(0)
            if descriptor.shape[-1] != self.afs.config.in_dim:
                raise ValueError(
                    f"descriptor has dim {descriptor.shape[-1]}, AFS expects {self.afs.config.in_dim}"
                )
        if prompt_mask is None and completion_mask is not None:
            prompt_mask = completion_mask == 0
        prev = (self._active, self._descriptor, self._prompt_mask, self._delta)
        self._active, self._descriptor, self._prompt_mask, self._delta = True, descriptor, prompt_mask, None
        try:
            yield self
        finally:
            self._active, self._descriptor, self._prompt_mask, self._delta = prev
            self._call_attention_mask, self._call_cache_len = None, 0

    # ---- hooks ----
    def _core_pre_hook(self, module, args, kwargs):
        if not self._active:
            return None
        self._call_attention_mask = kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        try:
            self._call_cache_len = int(cache.get_seq_length()) if cache is not None else 0
        except Exception:  # a cache object without get_seq_length: treat as decode if present
            self._call_cache_len = 1 if cache is not None else 0
        return None

    def _embedding_hook(self, module, args, output):
        if not self._active or self._descriptor is None or not args:
            return None
        ids = args[0]
        if not torch.is_tensor(ids) or ids.dim() != 2 or output.dim() != 3:
            return None  # e.g. the scalar image-token lookup in get_placeholder_mask
        text_mask = self._non_image_mask(ids)  # [B, S] bool
        if self._call_cache_len == 0 or self._delta is None:
            self._delta = self._compute_delta(ids, output, text_mask)
            self.last_delta = self._delta.detach()
        delta = self._delta
        if delta.shape[0] != ids.shape[0]:
            raise RuntimeError(
                f"AFS injection: cached delta has batch {delta.shape[0]} but this call has {ids.shape[0]}"
                " (beam search reorders the batch and is not supported)"
            )
        return output + delta.to(output.dtype)[:, None, :] * text_mask[..., None].to(output.dtype)

    # ---- computation ----
    def _non_image_mask(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.image_token_ids:
            return torch.ones_like(ids, dtype=torch.bool)
        special = torch.tensor(self.image_token_ids, device=ids.device, dtype=ids.dtype)
        return ~torch.isin(ids, special)

    def _expand_descriptor(self, batch: int, device, dtype) -> torch.Tensor:
        d = self._descriptor.to(device=device, dtype=dtype)
        if d.shape[0] == batch:
            return d
        if d.shape[0] == 1:
            return d.expand(batch, -1)
        if batch % d.shape[0] == 0:  # generate(num_return_sequences=G) repeats each prompt G times
            return d.repeat_interleave(batch // d.shape[0], dim=0)
        raise ValueError(f"descriptor batch {d.shape[0]} does not divide the model batch {batch}")

    def _compute_delta(self, ids: torch.Tensor, emb: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = emb.shape
        mask = text_mask.clone()
        am = self._call_attention_mask
        if am is not None and am.dim() == 2 and am.shape == ids.shape:
            mask &= am.to(mask.device).bool()
        elif self.pad_token_id is not None:
            mask &= ids != self.pad_token_id
        pm = self._prompt_mask
        if pm is not None:
            pm = pm.to(mask.device).bool()
            if pm.shape[0] != b and b % pm.shape[0] == 0:
                pm = pm.repeat_interleave(b // pm.shape[0], dim=0)
            if pm.shape == mask.shape:
                mask &= pm
        afs_dtype = next(self.afs.parameters()).dtype
        w = mask.to(afs_dtype)[..., None]  # [B, S, 1]
        f_emb = (emb.to(afs_dtype) * w).sum(1) / w.sum(1).clamp_min(1.0)  # [B, Dllm]
        self.last_f_emb = f_emb.detach()
        f_ana = self._expand_descriptor(b, emb.device, afs_dtype)  # [B, Din]
        enabled = (f_ana != 0).any(dim=-1)  # all-zero descriptor => exactly no delta
        if bool(enabled.all()):
            return self.alpha * (self.afs(f_ana, f_emb) - f_emb)  # [B, Dllm]
        delta = torch.zeros_like(f_emb)
        if bool(enabled.any()):
            # Run the AFS on the enabled rows only, so a disabled row never enters the AFS graph: with
            # torch.where, a non-finite value computed for a masked row would still reach the AFS
            # gradients as 0 * inf/NaN.
            idx = enabled.nonzero(as_tuple=True)[0]
            d = self.alpha * (self.afs(f_ana[idx], f_emb[idx]) - f_emb[idx])
            delta = delta.index_put((idx,), d.to(delta.dtype))
        return delta
