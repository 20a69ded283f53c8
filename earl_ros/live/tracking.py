"""Keep segmenting what a query named, on every new frame, without asking the VLM again (issue 26).

A robot asks "what is the person holding?" to act on the answer over the next seconds. Each grounded
entity of a tracked answer becomes a track; each new frame costs one image encoding of the segmenter
however many tracks run, and no language model. Two ways to find a track on the next frame:
- `flow` (default): the previous mask is carried to the new frame by the motion of corner points on
  and around it (Lucas-Kanade optical flow, a RANSAC similarity transform; OpenCV), and the segmenter
  is prompted with the carried mask's box. Its mask is kept where it agrees with the carried one;
  where it does not (the box also holds the hand that holds the object, and the segmenter picks the
  hand), the carried mask is kept. Points that cannot be followed mean the entity is gone.
- `box`: the segmenter is prompted with the previous mask's box grown by a margin. Simple, but a
  held object's box drifts onto the hand holding it.
- `memory`: SAM 2's video memory (earl_ros/model/video_memory.py): each track's first mask is its
  memory, and the model finds it on later frames by attending to its last frames; no box prompt.
  Needs a segmenter with video memory (the manifest's segmenter.video_memory).
With `segment_every` N, flow and memory run the model on every Nth frame only and carry the masks by
flow in between; a track whose points flow loses there is lost for `flow`, while for `memory` its
last mask stands until the memory looks again.
bench/tracking.py measures all three. Whatever the method, `reground` puts tracks right from a fresh
answer to their question (the live loop asks again every `track_reask_period` s): a first answer that
named the wrong thing, or a track that drifted, is not followed for ever.
A track whose mask collapses (score, area, no points to follow) is reported once as `lost` and
dropped. ROS-free: the node publishes what `update` returns.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

TRACKING, LOST = "tracking", "lost"
METHODS = ("flow", "box", "memory")


@dataclass(eq=False)  # identity, not field equality (masks are arrays)
class Track:
    id: int
    entity: str
    box: np.ndarray  # float32 [x1, y1, x2, y2), original pixels of the last frame it was updated on
    score: float
    area: int  # mask pixels on the last frame
    state: str = TRACKING
    mask: np.ndarray | None = field(default=None, repr=False)  # bool [H, W] of the last frame
    memory: object = field(default=None, repr=False)  # memory: its ObjectMemory (begun on first use)


@dataclass
class TrackerSettings:
    method: str = "flow"  # METHODS
    max_tracks: int = 3
    margin: float = 0.15  # the previous box grows by this share of its size on each side
    min_score: float = 0.2  # below: lost
    min_area_ratio: float = 0.25  # a mask smaller than this share of the previous one: lost
    max_area_ratio: float = 4.0  # a mask that suddenly grows this much has jumped to the background: lost
    agree_cover: float = 0.6  # flow: the segmenter's mask is kept when it covers this share of the carried mask
    agree_precision: float = 0.2  # ... and at least this share of it lies on the carried mask
    agree_area: float = 0.75  # ... and it is not smaller than this share of the carried mask (a part of it)
    min_points: int = 6  # flow: fewer followed points than this and the track is lost
    segment_every: int = 5  # flow, memory: run the segmenter (its video memory) on every Nth frame only,
    # carry the masks by optical flow in between
    # (5: with a re-ask every 10th frame, within a tenth of re-asking's compute; bench/tracking.py, README)
    reground_min_score: float = 0.7  # reground: a fresh answer's mask that the segmenter scores below this
    # does not replace a running track's mask (on the val clips such masks were worse than the tracks they
    # would replace, above it better; bench/tracking_replay.py); 0: every answer replaces


@dataclass
class TrackUpdate:
    """One frame's result: every track updated on it (lost ones included, once) and their label map
    (0 = background, else the track id; the lowest id wins where masks overlap)."""
    tracks: list[Track]
    label_map: np.ndarray  # uint16 [H, W]


def _grown(box: np.ndarray, margin: float, hw: tuple[int, int]) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = hw
    return np.array([max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(w), x2 + dx), min(float(h), y2 + dy)],
                    np.float32)


def _mask_box(mask: np.ndarray) -> np.ndarray | None:
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if not cols.size:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def carry_mask(prev_gray: np.ndarray, gray: np.ndarray, mask: np.ndarray, min_points: int = 6) -> np.ndarray | None:
    """`mask` moved from the previous frame to this one by the motion of corner points on and just
    around it (its outline is where flat objects have corners); None when too few points follow."""
    import cv2

    around = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8))
    pts = cv2.goodFeaturesToTrack(prev_gray, maxCorners=80, qualityLevel=0.01, minDistance=3, mask=around)
    if pts is None or len(pts) < min_points:
        return None
    nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, pts, None, winSize=(15, 15), maxLevel=2)
    ok = status.ravel() == 1
    if ok.sum() < min_points:
        return None
    m, inliers = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC, ransacReprojThreshold=2.0)
    if m is None or int(inliers.sum()) < min_points:
        return None
    h, w = gray.shape
    return cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0


def _agrees(mask: np.ndarray, carried: np.ndarray, s: TrackerSettings) -> bool:
    """The segmenter's mask is the carried entity: it covers most of it and is not just a part of it (it
    may be larger: a hand coming into view) and does not lie mostly elsewhere (the hand in a held
    object's box)."""
    both, area, carried_area = np.logical_and(mask, carried).sum(), mask.sum(), carried.sum()
    return (both >= s.agree_cover * carried_area and area >= s.agree_area * carried_area
            and both >= s.agree_precision * max(1, area))


class EntityTracker:
    """The named entities of tracked answers, followed from frame to frame (`flow` or `box`, above).

    Thread-safe: the query workers start tracks while the tracking loop updates them."""

    def __init__(self, segmenter, settings: TrackerSettings | None = None, video=None):
        self.segmenter, self.video = segmenter, video  # video: a VideoMemory, for method "memory"
        self.settings = settings or TrackerSettings()
        self.check_method(self.settings.method)
        self._tracks: list[Track] = []
        self._next_id = 1
        self._prev_gray: np.ndarray | None = None  # the frame the tracks' masks are on
        self._frames = 0  # frames updated since the tracker was made (segment_every counts them)
        self._ended: list[Track] = []  # ended by reground, reported lost by the next update
        self._lock = threading.Lock()

    def check_method(self, method: str) -> None:
        """ValueError unless this tracker can follow tracks by `method`."""
        if method not in METHODS:
            raise ValueError(f"tracking method {method!r}: expected one of {', '.join(METHODS)}")
        if method == "memory" and self.video is None:
            raise ValueError("tracking method 'memory' needs a segmenter with SAM 2 video memory (the model's "
                             "segmenter.video_memory; `python -m training video-memory` trains one)")

    def tracks(self) -> list[Track]:
        with self._lock:
            return list(self._tracks)

    def start(self, grounding, frame: np.ndarray, replace: bool = True) -> list[Track]:
        """Tracks for each grounded entity of `grounding` (masks on `frame`, RGB); replace=False adds
        them to the running ones. At most `max_tracks` run: the oldest are dropped first."""
        new = []
        with self._lock:
            if replace:
                self._tracks = []
            for ent, mask, score in zip(grounding.entities, grounding.masks, grounding.scores):
                mask = np.asarray(mask, bool)
                if not mask.any():
                    continue  # nothing to follow
                new.append(Track(self._next_id, str(ent), _mask_box(mask), float(score), int(mask.sum()), mask=mask))
                self._next_id += 1
            self._tracks = (self._tracks + new)[-self.settings.max_tracks:]
            self._prev_gray = _gray(frame)
            if self.settings.method == "memory" and new:
                feats = self.video.encode(frame)  # each memory begins on the frame its mask is from
                for t in new:
                    t.memory = self.video.begin(feats, t.mask)
            return [t for t in new if any(t is u for u in self._tracks)]

    def reground(self, grounding, frame: np.ndarray, ids: set[int] | None = None) -> list[Track]:
        """Put a question's tracks right from a fresh answer to it, computed on `frame` (the tracks'
        last frame or an earlier one: the answer took a while). Each entity it names replaces the mask
        of the track with its name, carried by flow from `frame` to the tracks' frame, unless the
        segmenter doubts the new mask (score below `reground_min_score`: the track keeps its own), or
        starts a track while there is room; the question's tracks (`ids`) it no longer names end, reported
        `lost` by the next update. An answer that names nothing changes nothing: a miss of the model
        is not news about the scene. Not thread-safe against `update`: call it from the thread that
        updates."""
        named = [(str(e), np.asarray(m, bool), float(sc))
                 for e, m, sc in zip(grounding.entities, grounding.masks, grounding.scores) if np.asarray(m).any()]
        if not named:
            return []
        then, names = _gray(frame), {e for e, _, _ in named}
        out = []
        with self._lock:
            following = bool(self._tracks)
            ended = [t for t in self._tracks if ids is not None and t.id in ids and t.entity not in names]
            for t in ended:
                t.state, t.mask = LOST, np.zeros_like(t.mask)
            self._tracks = [t for t in self._tracks if all(t is not u for u in ended)]
            self._ended += ended
            if not following:  # nothing was followed up to now: the last frame seen may be long past
                self._prev_gray = then
            for ent, mask, score in named:
                mask = self._carried_to_now(mask, then)
                t = next((t for t in self._tracks if t.entity == ent), None)
                if mask is None or (t is None and len(self._tracks) >= self.settings.max_tracks):
                    continue
                if t is None:
                    t = Track(self._next_id, ent, _mask_box(mask), score, int(mask.sum()), mask=mask)
                    self._next_id += 1
                    self._tracks.append(t)
                elif score < self.settings.reground_min_score:
                    pass  # named again, but by a mask the segmenter doubts: the followed one stands
                else:  # memory: begins again from this mask on the next update
                    t.mask, t.box, t.area, t.score, t.memory = mask, _mask_box(mask), int(mask.sum()), score, None
                out.append(t)
        return out

    def _carried_to_now(self, mask: np.ndarray, then: np.ndarray) -> np.ndarray | None:
        now = self._prev_gray
        if now is None or now.shape != mask.shape:
            return None  # a camera that changed its frame size since
        if then.shape == now.shape and not np.array_equal(then, now):
            mask = carry_mask(then, now, mask, self.settings.min_points)
        return mask if mask is not None and mask.any() else None

    def stop(self, ids: list[int] | None = None) -> list[int]:
        """End the tracks with these ids (None or empty: all); returns the ids ended."""
        with self._lock:
            ended = [t.id for t in self._tracks if not ids or t.id in ids]
            self._tracks = [t for t in self._tracks if t.id not in ended]
            return ended

    def update(self, frame: np.ndarray, key=None) -> TrackUpdate | None:
        """Follow every track onto `frame` (RGB uint8 [H, W, 3]); None when nothing is tracked."""
        live = self.tracks()
        if not live:
            with self._lock:
                ended, self._ended = self._ended, []
            return TrackUpdate(ended, np.zeros(frame.shape[:2], np.uint16)) if ended else None
        hw, gray = frame.shape[:2], _gray(frame)
        self._frames += 1
        if self.settings.method != "memory":
            for t in live:
                t.memory = None  # switched away from memory: a later switch back begins afresh
        if self.settings.method in ("flow", "memory") and self._frames % max(1, self.settings.segment_every):
            out = [self._carried_only(t, gray) for t in live]  # between the segmenter's frames
        elif self.settings.method == "memory":
            out = self._remember(live, frame)
        else:
            out = self._prompted(live, frame, gray, key)
        with self._lock:
            lost = {t.id for t in out if t.state == LOST}
            self._tracks = [t for t in self._tracks if t.id not in lost]
            self._prev_gray = gray
            ended, self._ended = self._ended, []
        label = np.zeros(hw, np.uint16)
        for t in sorted((t for t in out if t.state == TRACKING), key=lambda t: -t.id):
            label[t.mask] = t.id
        return TrackUpdate(ended + out, label)

    def _prompted(self, live: list[Track], frame: np.ndarray, gray: np.ndarray, key) -> list[Track]:
        """flow and box: the segmenter prompted with each track's (carried) box."""
        carried = [self._carry(t, gray) for t in live] if self.settings.method == "flow" else [None] * len(live)
        hw = frame.shape[:2]
        prompts = np.stack([_grown(t.box if c is None or not c.any() else _mask_box(c), self._margin(), hw)
                            for t, c in zip(live, carried)])
        masks, scores = self.segmenter.segment(frame, prompts, key=key)
        return [self._follow(t, c, np.asarray(m, bool), float(sc)) for t, c, m, sc in zip(live, carried, masks, scores)]

    def _remember(self, live: list[Track], frame: np.ndarray) -> list[Track]:
        """memory: one image encoding for the frame, then each track's own memory finds it. A track
        started by another method begins its memory here, from its last mask (one frame late)."""
        feats = self.video.encode(frame)
        out = []
        for t in live:
            if t.memory is None:
                t.memory = self.video.begin(feats, t.mask)
                out.append(self._follow(t, None, t.mask, t.score))
                continue
            mask, score = self.video.step(t.memory, feats)
            out.append(self._follow(t, None, mask, score))
        return out

    def _margin(self) -> float:
        return self.settings.margin if self.settings.method == "box" else 0.1

    def _carried_only(self, t: Track, gray: np.ndarray) -> Track:
        c = self._carry(t, gray)
        if c is None:
            c = np.zeros(gray.shape, bool)  # a frame of another size: nothing to carry
        elif not c.any() and self.settings.method == "memory":
            return t  # flow lost it: the last mask stands until the memory looks again (it says what is lost)
        return self._follow(t, c, c, 0.5)

    def _carry(self, t: Track, gray: np.ndarray) -> np.ndarray | None:
        """t's mask carried by optical flow to `gray` (zeros: nothing followed it)."""
        if self._prev_gray is None or self._prev_gray.shape != gray.shape:
            return None
        c = carry_mask(self._prev_gray, gray, t.mask, self.settings.min_points)
        return c if c is not None and c.any() else np.zeros_like(t.mask)  # zeros: nothing followed it

    def _follow(self, t: Track, carried: np.ndarray | None, mask: np.ndarray, score: float) -> Track:
        s = self.settings
        if carried is not None and not carried.any():
            mask = carried  # the flow lost it
        elif carried is not None and not _agrees(mask, carried, s):
            mask, score = carried, 0.5  # the segmenter found something else: keep the carried mask (its score says nothing)
        area, box = int(mask.sum()), _mask_box(mask)
        if box is None or score < s.min_score or area < s.min_area_ratio * t.area or area > s.max_area_ratio * t.area:
            t.state, t.score, t.mask = LOST, score, np.zeros_like(mask)
            return t
        t.box, t.score, t.area, t.mask = box, score, area, mask
        return t
