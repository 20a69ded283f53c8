"""SAM 2's video memory for tracking what a query named (issue 26, `tracking_method: memory`).

Each track is one object of transformers' `Sam2VideoModel`: its first memory is the mask the query
answered with, and on every later frame memory attention over the object's last frames finds it
again, with no box prompt and no language model. The image encoder runs once per frame for all
tracks (its features are handed to every track's session), and each session keeps only the frames
its memory can still reach, so a track can run for hours in bounded memory.

The embedded segmenter gains its memory modules by `python -m training video-memory`; a published
SAM 2 / 2.1 checkpoint in transformers' format has them already. A segmenter directory without them
cannot track this way (`VideoMemoryError` names the fix).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelDirError


class VideoMemoryError(ModelDirError):
    """The model has no (usable) SAM 2 video memory."""


# Memory sizes for a segmenter too small for SAM 2's own (256 wide, 4 layers): the memory attention
# works at the segmenter's width; transformers fixes the memory width at 64 (its cross-attention
# takes 64-wide keys), so the memory encoder keeps 64.
SMALL_MEMORY = dict(memory_attention_num_layers=2, memory_attention_num_attention_heads=1,
                    memory_encoder_output_channels=64, memory_attention_dropout=0.0,
                    memory_attention_rope_dropout=0.0)


def memory_config(segmenter_config, **overrides):
    """A Sam2VideoConfig around a Sam2Model's config: same image encoder, prompt encoder and decoder,
    and memory modules sized to it (SMALL_MEMORY where it is narrower than SAM 2's 256)."""
    from transformers import Sam2VideoConfig

    c = segmenter_config
    hidden = int(c.vision_config.fpn_hidden_size)
    grid = [int(v) for v in c.vision_config.backbone_feature_sizes[-1]]
    sizes = {}
    if hidden < 256:
        sizes = dict(SMALL_MEMORY, memory_attention_hidden_size=hidden, memory_attention_feed_forward_hidden_size=4 * hidden,
                     memory_encoder_hidden_size=hidden, mask_downsampler_embed_dim=hidden,
                     memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=4 * hidden)
    sizes.update(overrides)
    return Sam2VideoConfig(vision_config=c.vision_config.to_dict(), prompt_encoder_config=c.prompt_encoder_config.to_dict(),
                           mask_decoder_config=c.mask_decoder_config.to_dict(),
                           image_size=int(c.prompt_encoder_config.image_size),
                           memory_attention_rope_feat_sizes=grid, **sizes)


def _video_model_class():
    import torch
    import torch.nn.functional as F
    from transformers import Sam2VideoModel

    class EarlSam2VideoModel(Sam2VideoModel):
        """Sam2VideoModel whose object pointers may be narrower than its memory.

        The embedded segmenter is 32 wide and transformers' memory is 64 wide; its pointers are zero-
        padded, which loses nothing (the memory attention's key and value projections act on them as a
        learned projection would). Every published SAM 2 has wider pointers and takes the library's path.
        """

        def _process_object_pointers(self, *args, **kwargs):
            ptr, pos = super()._process_object_pointers(*args, **kwargs)
            if ptr is not None and ptr.shape[-1] < self.mem_dim:
                ptr = F.pad(ptr.reshape(pos.shape[0], pos.shape[1], -1), (0, self.mem_dim - ptr.shape[-1]))
            return ptr, pos

        def stream_step(self, session, frame_idx: int, pixels):
            """`forward` on one streamed frame (its features already cached under frame_idx), with
            gradients when they are enabled (training: the library's forward runs under inference_mode)."""
            if torch.is_grad_enabled():
                return _undecorated_forward(Sam2VideoModel)(self, session, frame_idx=frame_idx, frame=pixels)
            return self(session, frame_idx=frame_idx, frame=pixels)

    return EarlSam2VideoModel


def _undecorated_forward(cls):
    fn = getattr(cls.forward, "__wrapped__", None)
    if fn is None:  # a transformers release that stops wrapping it: training must be rewritten against it
        raise VideoMemoryError("this transformers' Sam2VideoModel.forward has no __wrapped__: cannot train its memory")
    return fn


def has_video_memory(path) -> bool:
    """The directory holds a SAM 2 video model (its config is `sam2_video`)."""
    import json

    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("model_type") == "sam2_video"
    except (OSError, ValueError):
        return False


def share_weights(video_model, segmenter_model) -> int:
    """Point the video model's image encoder, prompt encoder and decoder at the segmenter's tensors
    where they are equal (they are when one was trained from the other): one copy in memory. Returns
    how many tensors are shared."""
    import torch

    seg = dict(segmenter_model.named_parameters())
    shared = 0
    for name, p in video_model.named_parameters():
        q = seg.get(name)
        if q is not None and q.shape == p.shape and q.dtype == p.dtype and torch.equal(q.data, p.data):
            p.data = q.data
            shared += 1
    return shared


def _require_sam2(segmenter) -> None:
    if segmenter.kind != "sam2":
        raise VideoMemoryError(f"video memory needs a SAM 2 segmenter; {segmenter.path} is {segmenter.kind}")


@dataclass
class FrameFeatures:
    """One frame's image encoding, shared by every track's session."""
    pixels: object  # torch [3, s, s]
    features: dict  # vision_feats, vision_pos_embeds as the video model caches them
    hw: tuple[int, int]


class ObjectMemory:
    """One track's SAM 2 session: conditioned on its first mask, then one step per frame."""

    def __init__(self, session, keep: int):
        self.session, self.keep, self.frame = session, keep, -1

    def next_frame(self, f: FrameFeatures) -> int:
        """The index of frame `f` in this session, its encoding cached there (the model's forward adds
        the frame itself: as a streamed frame, which lets it reach back to all the memory it keeps)."""
        self.frame += 1
        self.session.cache.cache_vision_features(self.frame, f.features)
        return self.frame

    def prune(self) -> None:
        """Forget what the memory can no longer reach (older than `keep` frames; the first mask stays)."""
        s, old = self.session, self.frame - self.keep + 1
        for k in [k for k in s.processed_frames if k < self.frame]:
            del s.processed_frames[k]
        for store in (s.output_dict_per_obj[0]["non_cond_frame_outputs"], s.frames_tracked_per_obj[0]):
            for k in [k for k in store if k < old]:
                del store[k]


class VideoMemory:
    """The segmenter's SAM 2 video model: `begin` a track from a mask, `step` it on each new frame.

    grad=False (serving): every call runs under inference_mode. grad=True (training the memory): the
    frozen image encoder runs under no_grad and the rest with gradients."""

    def __init__(self, model, segmenter, grad: bool = False):
        self.model, self.segmenter, self.grad = model, segmenter, grad
        c = model.config
        self.keep = max(int(c.num_maskmem), int(c.max_object_pointers_in_encoder)) + 1

    @classmethod
    def from_segmenter(cls, segmenter, grad: bool = False, **config) -> "VideoMemory":
        """Fresh memory modules (memory_config) around a loaded SAM 2 Segmenter's own weights; grad=True
        for training them (then the video model keeps its own copy of every weight)."""
        _require_sam2(segmenter)
        model = _video_model_class()(memory_config(segmenter.model.config, **config))
        model.load_state_dict(segmenter.model.state_dict(), strict=False)
        model = model.to(segmenter.device).eval()  # eval: the library's train mode drops the object score
        if not grad:
            share_weights(model, segmenter.model)
        return cls(model, segmenter, grad=grad)

    def _mode(self, encoder: bool = False):
        import contextlib

        import torch

        if not self.grad:
            return torch.inference_mode()
        return torch.no_grad() if encoder else contextlib.nullcontext()

    @classmethod
    def from_pretrained(cls, path, segmenter) -> "VideoMemory":
        """Load `path` (a sam2_video directory) beside a loaded Segmenter, sharing its equal weights."""
        p = Path(path)
        _require_sam2(segmenter)
        if not has_video_memory(p):
            raise VideoMemoryError(f"{p} is not a SAM 2 video model (config.json model_type sam2_video); train one "
                                   "with `python -m training video-memory`")
        try:
            model = _video_model_class().from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError) as e:
            raise VideoMemoryError(f"cannot load the video memory in {p}: {e}") from e
        if int(model.config.image_size) != int(segmenter.model.config.prompt_encoder_config.image_size):
            raise VideoMemoryError(f"{p} works at {model.config.image_size} px, the segmenter at "
                                   f"{segmenter.model.config.prompt_encoder_config.image_size}")
        model = model.to(segmenter.device).eval()
        share_weights(model, segmenter.model)
        return cls(model, segmenter)

    def encode(self, frame: np.ndarray) -> FrameFeatures:
        """The image encoder on one RGB frame (once per frame, whatever the number of tracks)."""
        px, _ = self.segmenter.preprocess_image(frame)
        with self._mode(encoder=True):
            out = self.model.get_image_features(px, return_dict=True)
        feats = {"vision_feats": out.fpn_hidden_states, "vision_pos_embeds": out.fpn_position_encoding}
        return FrameFeatures(px[0], feats, tuple(frame.shape[:2]))

    def begin(self, f: FrameFeatures, mask: np.ndarray) -> ObjectMemory:
        """A session for one object whose mask on frame `f` is `mask` (bool [H, W])."""
        import torch
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        session = Sam2VideoInferenceSession(video_height=f.hw[0], video_width=f.hw[1], dtype=torch.float32,
                                            inference_device=self.segmenter.device)
        mem = ObjectMemory(session, self.keep)
        k = mem.next_frame(f)
        size = int(self.model.config.image_size)
        m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
        m = (torch.nn.functional.interpolate(m, size=(size, size), mode="bilinear", antialias=True) >= 0.5).float()
        session.add_mask_inputs(session.obj_id_to_idx(1), k, m.to(self.segmenter.device))
        session.obj_with_new_inputs = [1]
        with self._mode():
            self.model.stream_step(session, k, f.pixels)
        return mem

    def track(self, mem: ObjectMemory, f: FrameFeatures):
        """The model's output for the object on frame `f` (low-res mask logits, object-score logits),
        with gradients when training."""
        k = mem.next_frame(f)
        with self._mode():
            return self.model.stream_step(mem.session, k, f.pixels)

    def step(self, mem: ObjectMemory, f: FrameFeatures) -> tuple[np.ndarray, float]:
        """The object on frame `f`: (mask bool [H, W], score = SAM 2's object-present probability)."""
        import torch

        out = self.track(mem, f)
        with torch.inference_mode():
            logits = self.segmenter.upscale_logits(out.pred_masks[:, 0], f.hw)[0]
            score = float(torch.sigmoid(out.object_score_logits.float()).reshape(-1)[0])
        mem.prune()
        return (logits > 0).cpu().numpy(), score
