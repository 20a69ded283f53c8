"""SAM 2's video memory as a way to track (earl_ros/model/video_memory.py, `tracking_method: memory`):
what a track costs in memory over a long run, how its weights are shared with the segmenter, and how
the tracker refuses it on a model without it, and that the embedded model's trained memory follows a
hand where untrained memory modules lose it at once. Quality against the other methods is measured by
bench/tracking.py, not here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from earl_ros.live.tracking import LOST, TRACKING, EntityTracker, TrackerSettings
from earl_ros.model.types import Grounding
from training.data.synth_clips import entity_ids, moving_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def segmenter():
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.segmenter import Segmenter

    return Segmenter.from_pretrained(Manifest.load(REPO / "models" / "earl-tiny-synth").segmenter.path)


@pytest.fixture(scope="module")
def saved_memory(segmenter, tmp_path_factory):
    """Fresh (untrained) memory modules around the embedded segmenter, saved as a model would ship them
    (drawn from a fixed seed: the same modules whatever order the tests run in)."""
    import torch

    from earl_ros.model.video_memory import VideoMemory

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("sam_video")
    VideoMemory.from_segmenter(segmenter, grad=False).model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def memory(saved_memory, segmenter):
    from earl_ros.model.video_memory import VideoMemory

    return VideoMemory.from_pretrained(saved_memory, segmenter)


def _hand(clip) -> tuple[str, list[np.ndarray]]:
    name = f"the {clip.scene['hands'][0].side} hand"
    lid = entity_ids(clip.scene)[name]
    return name, [lab == lid for lab in clip.labels]


@pytest.fixture(scope="module")
def shipped(segmenter):
    """The embedded model's trained memory."""
    from earl_ros.model.manifest import Manifest
    from earl_ros.model.video_memory import VideoMemory

    return VideoMemory.from_pretrained(Manifest.load(REPO / "models" / "earl-tiny-synth").segmenter.video_memory,
                                       segmenter)


def test_a_track_keeps_only_the_frames_its_memory_can_reach(memory):
    clip = moving_clip(3, n_frames=30, motion=0.5)
    _, masks = _hand(clip)
    feats = [memory.encode(f) for f in clip.frames]
    mem = memory.begin(feats[0], masks[0])
    for f in feats[1:]:
        mask, score = memory.step(mem, f)
        assert mask.shape == clip.frames[0].shape[:2] and mask.dtype == bool and 0.0 <= score <= 1.0
    s = mem.session
    assert len(s.processed_frames) <= 1
    assert len(s.output_dict_per_obj[0]["non_cond_frame_outputs"]) <= memory.keep
    assert list(s.output_dict_per_obj[0]["cond_frame_outputs"]) == [0]  # the query's mask is never forgotten


def test_the_video_model_holds_the_segmenters_encoder_once(memory, segmenter):
    shared = dict(segmenter.model.named_parameters())
    enc = [(n, p) for n, p in memory.model.named_parameters() if n.startswith("vision_encoder.")]
    assert enc and all(p.data_ptr() == shared[n].data_ptr() for n, p in enc)


def test_memory_modules_are_loaded_not_drawn_afresh(saved_memory, segmenter):
    from earl_ros.model.video_memory import VideoMemory

    a = VideoMemory.from_pretrained(saved_memory, segmenter).model.state_dict()
    b = VideoMemory.from_pretrained(saved_memory, segmenter).model.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a if k.startswith("memory_attention."))


def test_a_directory_without_video_memory_is_refused_with_the_fix(segmenter):
    from earl_ros.model.video_memory import VideoMemory, VideoMemoryError

    with pytest.raises(VideoMemoryError, match="training video-memory"):
        VideoMemory.from_pretrained(segmenter.path, segmenter)


def test_tracking_by_memory_needs_a_model_with_it(segmenter):
    with pytest.raises(ValueError, match="segmenter.video_memory"):
        EntityTracker(segmenter, TrackerSettings(method="memory"))
    tracker = EntityTracker(segmenter)
    with pytest.raises(ValueError, match="video memory"):
        tracker.check_method("memory")


def _grounding(name: str, mask: np.ndarray) -> Grounding:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return Grounding(entities=[name], boxes=np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]]),
                     masks=mask[None], scores=[1.0], answer="", no_target=False, description="", timings_ms={},
                     image_size=mask.shape)


def test_a_tracked_answer_begins_its_memory_on_the_query_frame(segmenter, memory):
    clip = moving_clip(3, n_frames=3, motion=0.5)
    name, masks = _hand(clip)
    tracker = EntityTracker(segmenter, TrackerSettings(method="memory", segment_every=1), video=memory)
    (track,) = tracker.start(_grounding(name, masks[0]), clip.frames[0])
    assert track.memory is not None and track.memory.frame == 0
    up = tracker.update(clip.frames[1])
    assert [t.entity for t in up.tracks] == [name] and track.memory.frame == 1


def test_switching_to_memory_mid_track_begins_it_from_the_last_mask(segmenter, memory):
    clip = moving_clip(3, n_frames=4, motion=0.5)
    name, masks = _hand(clip)
    tracker = EntityTracker(segmenter, TrackerSettings(method="flow", segment_every=1), video=memory)
    (track,) = tracker.start(_grounding(name, masks[0]), clip.frames[0])
    assert tracker.update(clip.frames[1]).tracks[0].state == TRACKING and track.memory is None
    last = track.mask.copy()
    tracker.settings.method = "memory"
    up = tracker.update(clip.frames[2])
    assert up.tracks[0].state == TRACKING and np.array_equal(up.tracks[0].mask, last) and track.memory is not None
    tracker.settings.method = "flow"
    tracker.update(clip.frames[3])
    assert track.memory is None  # a later switch back begins afresh


def test_between_memory_frames_the_masks_are_carried_by_flow(segmenter, shipped):
    clip = moving_clip(3, n_frames=7, motion=0.5)
    name, masks = _hand(clip)
    tracker = EntityTracker(segmenter, TrackerSettings(method="memory", segment_every=3), video=shipped)
    (track,) = tracker.start(_grounding(name, masks[0]), clip.frames[0])
    steps, ious = [], []
    for frame, gt in zip(clip.frames[1:], masks[1:]):
        (t,) = tracker.update(frame).tracks
        assert t.state == TRACKING
        steps.append(track.memory.frame)
        ious.append(np.logical_and(t.mask, gt).sum() / np.logical_or(t.mask, gt).sum())
    assert steps == [0, 0, 1, 1, 1, 2]  # the memory saw frames 3 and 6 only
    assert ious[0] > 0.8, ious  # frame 1: the first mask, carried with the camera


def test_where_flow_loses_a_track_between_memory_frames_the_memory_decides(segmenter, shipped):
    clip = moving_clip(3, n_frames=3, motion=0.5)
    name, masks = _hand(clip)
    blank = np.full_like(clip.frames[1], 128)  # no corner to follow
    states = {}
    for method in ("memory", "flow"):
        tracker = EntityTracker(segmenter, TrackerSettings(method=method, segment_every=2), video=shipped)
        tracker.start(_grounding(name, masks[0]), clip.frames[0])
        (t,) = tracker.update(blank).tracks
        states[method] = t.state
        if method == "memory":
            assert np.array_equal(t.mask, masks[0])  # the last mask stands
    assert states == {"memory": TRACKING, "flow": LOST}  # flow alone: points lost mean the entity is gone


def test_the_shipped_memory_follows_a_hand_that_untrained_memory_loses(segmenter, memory, shipped):
    clip = moving_clip(0, n_frames=20, motion=0.6)  # the hand of tests/test_track_entities.py's first clip
    name, masks = _hand(clip)

    def mean_iou(video) -> float:
        tracker = EntityTracker(segmenter, TrackerSettings(method="memory", segment_every=1), video=video)
        tracker.start(_grounding(name, masks[0]), clip.frames[0])
        ious = []
        for frame, gt in zip(clip.frames[1:], masks[1:]):
            up = tracker.update(frame)
            live = [t for t in (up.tracks if up else []) if t.state == TRACKING]
            ious.append(float(np.logical_and(live[0].mask, gt).sum() / np.logical_or(live[0].mask, gt).sum())
                        if live else 0.0)
        return float(np.mean(ious))
    trained, untrained = mean_iou(shipped), mean_iou(memory)
    assert trained > 0.4 and trained > untrained + 0.25, (trained, untrained)
