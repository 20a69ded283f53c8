"""The EARL inference pipeline: frame -> description + descriptor -> answer + boxes -> masks.

    pipe = EarlPipeline.from_dir("models/earl-tiny-synth", device="cpu", mask_backend="torch")
    inter = pipe.describe(frame)                       # stage 1 (slow, query-independent)
    g = pipe.answer(frame, "which hand is holding something?", inter)   # stage 2 + masks

Coordinate frames: frames larger than `limits.max_image_side` (earl.yaml) are downscaled once for the
VLMs (`images.fit_within`); the response model further resizes to its own input frame. Boxes are
mapped back through both scales to ORIGINAL pixels, and masks are predicted on the original frame, so
a Grounding always refers to the frame the caller passed.

Threading: the ROS node calls `describe` from its coarse worker and `answer` from the query thread.
Each model has its own lock (coarse, response; the segmenter locks itself), so a description in
progress never blocks the response model and no model is ever entered by two threads at once. A
background description (`describe(..., background=True)`) also pauses between transformer blocks
while any `answer` runs, and gives its model up to a query that needs it (priority.py).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np

from .coordinates import boxes_to_original, chain_scales, frame_scale, nonempty_boxes
from .errors import EmptyQueryError
from .images import check_frame_shape, fit_within, load_image
from .manifest import Manifest
from .priority import QueryPriority, pausable_blocks
from .prompts import NO_TARGET_ANSWER, answer_sentence, parse_response
from .shared_base import attach_stage_adapters, same_base, stage_adapter
from .streaming import AnswerProgress
from .types import Grounding, Interaction
from .vlm import CoarseModel, ResponseModel, load_vlm
from .vlm_processing import load_processor


def _load_stages(m: Manifest, device, dtype) -> tuple[CoarseModel, ResponseModel]:
    lim = m.limits
    coarse = CoarseModel.from_pretrained(m.coarse.path, device=device, dtype=dtype, pooling=m.coarse.pooling,
                                         lora_path=m.coarse.lora, max_new_tokens=lim["coarse_max_new_tokens"])
    response = ResponseModel.from_pretrained(
        m.response.path, m.response.afs, lora_path=m.response.lora, device=device, dtype=dtype,
        afs_alpha=m.response.afs_alpha, max_query_tokens=lim["max_query_tokens"],
        max_new_tokens=lim["max_new_tokens"], coordinates=m.response.coordinates,
    )
    return coarse, response


def _load_shared_stages(m: Manifest, device, dtype):
    """Both stages on one base model (loaded once), each with its own LoRA adapter (or none)."""
    from .afs import AFS

    lim = m.limits
    model, adapters = attach_stage_adapters(load_vlm(m.coarse.path, device, dtype),
                                            {"coarse": m.coarse.lora, "response": m.response.lora})
    processor = load_processor(m.coarse.path)
    coarse = CoarseModel(model, processor, device, m.coarse.pooling, lim["coarse_max_new_tokens"])
    response = ResponseModel(model, processor, AFS.from_pretrained(m.response.afs, device=device), device,
                             m.response.afs_alpha, lim["max_query_tokens"], lim["max_new_tokens"],
                             m.response.coordinates)
    return coarse, response, adapters


class EarlPipeline:
    def __init__(self, manifest: Manifest, coarse: CoarseModel, response: ResponseModel, segmenter,
                 device: str = "cpu"):
        if coarse.descriptor_dim != response.descriptor_dim:
            raise ValueError(
                f"coarse hidden size {coarse.descriptor_dim} != AFS input size {response.descriptor_dim} "
                f"(check {manifest.file})"
            )
        self.manifest = manifest
        self.coarse = coarse
        self.response = response
        self.segmenter = segmenter
        self.video_memory = None  # VideoMemory where the manifest names one (tracking_method: memory)
        self.device = device
        self.max_image_side = int(manifest.limits["max_image_side"])
        self.max_new_tokens = int(manifest.limits["max_new_tokens"])
        self.box_refine = int(manifest.segmenter.box_refine)
        self._coarse_lock = threading.Lock()
        self._response_lock = threading.Lock()
        self.adapters: dict | None = None  # stage -> adapter name, when both stages share one base
        self.priority = QueryPriority()

    @classmethod
    def from_dir(cls, model_dir, device: str = "cpu", mask_backend: str = "torch", dtype=None,
                 providers=None) -> "EarlPipeline":
        """Load every part named by <model_dir>/earl.yaml (fails fast with ModelDirError).

        A manifest naming one directory for coarse and response loads that base once (shared_base.py).
        """
        from .segmenter import Segmenter

        m = Manifest.load(model_dir)
        if same_base(m.coarse.path, m.response.path):
            coarse, response, adapters = _load_shared_stages(m, device, dtype)
        else:
            (coarse, response), adapters = _load_stages(m, device, dtype), None
        segmenter = Segmenter.from_pretrained(m.segmenter.path, backend=mask_backend, device=device,
                                              decoder_path=m.segmenter.decoder_onnx, providers=providers)
        pipe = cls(m, coarse, response, segmenter, device=device)
        if m.segmenter.video_memory is not None:
            from .video_memory import VideoMemory

            pipe.video_memory = VideoMemory.from_pretrained(m.segmenter.video_memory, segmenter)
        if adapters is not None:
            pipe.share_base(adapters)
        return pipe

    def share_base(self, adapters: dict) -> None:
        """Both stages run on one model: one lock for both, each call under its stage's adapter."""
        self.adapters = dict(adapters)
        self._response_lock = self._coarse_lock

    @property
    def shared_base(self) -> bool:
        return self.adapters is not None

    @contextmanager
    def _stage(self, name: str, query: bool = True):
        """Hold stage `name`'s model. A query (or a foreground describe) that finds the model taken
        says so, and a background pass paused on it gives it up (priority.py)."""
        lock = self._coarse_lock if name == "coarse" else self._response_lock
        if not query:
            lock.acquire()
        elif not lock.acquire(blocking=False):
            with self.priority.waiting_for_model():
                lock.acquire()
        try:
            if self.adapters is None:
                yield
            else:
                with stage_adapter(self.coarse.model, self.adapters[name]):
                    yield
        finally:
            lock.release()

    # ---- properties the ROS node reports ----
    @property
    def descriptor_dim(self) -> int:
        return self.coarse.descriptor_dim

    @property
    def model_id(self) -> str:
        return self.manifest.name

    @property
    def mask_backend(self) -> str:
        return getattr(self.segmenter, "backend_name", "torch")

    def empty_interaction(self) -> Interaction:
        """The "no description yet" state: an all-zero descriptor disables AFS injection."""
        return Interaction.empty(self.descriptor_dim)

    # ---- stages ----
    def _work_image(self, frame) -> tuple[np.ndarray, np.ndarray]:
        img = load_image(frame)
        check_frame_shape(*img.shape[:2])
        work, _ = fit_within(img, self.max_image_side)
        return img, work

    def describe(self, frame, stamp: float | None = None, background: bool = False,
                 progress: AnswerProgress | None = None) -> Interaction:
        """Stage 1 on one frame (thread-safe; serialised on the coarse model).

        background=True: the live node's rolling description, which waits while queries run and may
        raise priority.Preempted (priority.py); a plain call is part of a query or a tool's request,
        whose progress (if given) can cancel it between tokens (CancelledError)."""
        _, work = self._work_image(frame)
        if not background:
            return self._describe_work(work, stamp, progress)
        self.priority.wait_idle()
        with self._stage("coarse", query=False), pausable_blocks(self.coarse.model, self.priority.background_step):
            return self.coarse.describe(work, stamp=stamp)

    def _describe_work(self, work, stamp: float | None, progress: AnswerProgress | None) -> Interaction:
        stop = [progress.stopping_criteria()] if progress is not None else None
        with self._stage("coarse"):
            inter = self.coarse.describe(work, stamp=stamp, stopping_criteria=stop)
        if progress is not None:
            progress.check()
        return inter

    def answer(self, frame, query: str, interaction: Interaction | None = None,
               stamp: float | None = None, progress: AnswerProgress | None = None) -> Grounding:
        """Stage 2 + masks for one (frame, query); background descriptions pause meanwhile.

        interaction: the rolling stage-1 result to use; None runs stage 1 on this frame first (its
        time is reported as timings_ms["coarse"]). stamp: cache key for the segmenter's image
        embedding (None = hash of the pixels). progress: receives the stages and the answer text
        as generated; cancelling it ends the answer with CancelledError at the next token.
        """
        with self.priority.query():
            return self._answer(frame, query, interaction, stamp, progress)

    def _answer(self, frame, query: str, interaction: Interaction | None, stamp: float | None,
                progress: AnswerProgress | None) -> Grounding:
        t_start = time.perf_counter()
        if not isinstance(query, str) or not query.strip():
            raise EmptyQueryError("the query is empty")
        img, work = self._work_image(frame)
        timings: dict[str, float] = {}

        t = time.perf_counter()
        # a plain call (the service) has no listener: its steps are no-ops and nothing streams
        steps = progress or AnswerProgress()
        if interaction is None:
            steps.stage("describing")
            interaction = self._describe_work(work, stamp, progress)
        timings["coarse"] = (time.perf_counter() - t) * 1000.0

        t = time.perf_counter()
        steps.stage("answering")
        with self._stage("response"):
            raw = self.response.respond(work, query, interaction.descriptor, max_new_tokens=self.max_new_tokens,
                                        progress=progress)
        timings["response"] = (time.perf_counter() - t) * 1000.0
        steps.check()  # a cancelled generation stopped part-way: no parse of half an answer

        return self._ground(img, work, raw, interaction, stamp, steps, timings, t_start)

    def answer_many(self, frame, queries, interaction: Interaction | None = None,
                    stamp: float | None = None) -> list[Grounding]:
        """Every query about one frame, generated in one batch (python -m training eval's path: an
        image's questions share its frame and description). The greedy answers are those of
        `answer` one by one; no progress or cancel, so the node keeps using `answer`."""
        queries = list(queries)
        if any(not isinstance(q, str) or not q.strip() for q in queries):
            raise EmptyQueryError("the query is empty")
        if not queries:
            return []
        with self.priority.query():
            t_start = time.perf_counter()
            img, work = self._work_image(frame)
            if interaction is None:
                interaction = self._describe_work(work, stamp, None)
            t = time.perf_counter()
            with self._stage("response"):
                raws = self.response.respond_many(work, queries, interaction.descriptor,
                                                  max_new_tokens=self.max_new_tokens)
            share = (time.perf_counter() - t) * 1000.0 / len(queries)  # the batch's time, shared out
            return [self._ground(img, work, raw, interaction, stamp, AnswerProgress(),
                                 {"coarse": 0.0, "response": share}, t_start) for raw in raws]

    def _ground(self, img, work, raw, interaction: Interaction, stamp: float | None, steps: AnswerProgress,
                timings: dict[str, float], t_start: float) -> Grounding:
        """Parse an answer, map its boxes to the original frame and segment them."""
        h, w = img.shape[:2]
        t = time.perf_counter()
        parsed = parse_response(raw.text)
        pairs = parsed.grounded_entities()
        # model frame -> work frame (raw.scale_xy) -> original frame (work -> original)
        scale = chain_scales(raw.scale_xy, frame_scale((h, w), work.shape[:2]))
        entities, boxes = [], []
        if pairs:
            mapped = boxes_to_original([b for _, b in pairs], scale, (h, w))
            for (ent, _), b, keep in zip(pairs, mapped, nonempty_boxes(mapped)):
                if keep:  # drop boxes that collapse after clipping
                    entities.append(ent)
                    boxes.append(b)
        boxes_arr = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        timings["parse"] = (time.perf_counter() - t) * 1000.0

        t = time.perf_counter()
        steps.stage("segmenting")
        if len(boxes_arr):
            masks, scores = self.segmenter.segment(img, boxes_arr.astype(np.float32), key=stamp,
                                                   refine=self.box_refine)
        else:
            masks, scores = np.zeros((0, h, w), dtype=bool), np.zeros((0,), dtype=np.float32)
        timings["segment"] = (time.perf_counter() - t) * 1000.0
        timings["total"] = (time.perf_counter() - t_start) * 1000.0

        no_target = bool(parsed.no_target)
        if entities:
            answer = answer_sentence(entities)
        elif no_target:
            answer = NO_TARGET_ANSWER
        else:
            answer = ""  # unparseable output: parse_status says why
        return Grounding(
            entities=entities,
            boxes=boxes_arr,
            masks=np.asarray(masks, dtype=bool),
            scores=[float(s) for s in np.asarray(scores).reshape(-1)],
            answer=answer,
            no_target=no_target,
            description=interaction.text,
            timings_ms=timings,
            raw_text=raw.text,
            parse_status=parsed.status,
            query_truncated=raw.query_truncated,
            image_size=(h, w),
        )
