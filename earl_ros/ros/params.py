"""The node's parameters: types, defaults, ranges, descriptions, and which are runtime-tunable.

Values live in ONE file, config/earl.yaml (used by both launch/earl.launch.py and earl-launch);
this module only declares them (with descriptors and ranges, so `ros2 param describe` and the
rclpy range checks work) and validates the few checks a descriptor cannot express.
A test keeps config/earl.yaml and this table identical.
"""
from __future__ import annotations

from dataclasses import dataclass

STALE_POLICIES = ("describe", "use", "empty", "refuse")
QOS_RELIABILITY = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")
MASK_BACKENDS = ("torch", "onnxruntime", "tensorrt")
DTYPES = ("auto", "bfloat16", "float32", "float16")
TRACK_MODES = ("replace", "add")
TRACKING_METHODS = ("flow", "box", "memory")


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    description: str
    lo: float | None = None  # inclusive range (int or float params)
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = True  # False = runtime-tunable with `ros2 param set`


PARAMS: tuple[Param, ...] = (
    # lifecycle
    Param("autostart", True, "Configure and activate at startup. false = start unconfigured and wait for "
          "a lifecycle manager (lifecycle_msgs change_state on <ns>/earl/change_state).", read_only=True),
    # model
    Param("model_dir", "", "Model directory (with earl.yaml). Empty = the embedded default "
          "models/earl-tiny-synth if present, else the node exits with a one-line error.", read_only=True),
    Param("device", "cpu", "Torch device for the models (cpu, cuda, cuda:1, ...).", read_only=True),
    Param("mask_backend", "torch", "Mask decoder backend.", choices=MASK_BACKENDS, read_only=True),
    Param("dtype", "auto", "Torch dtype of the VLMs: auto = bfloat16 on CUDA; on a CPU the checkpoint's "
          "own dtype if bfloat16, else float32 (CPUs without bf16 units run bfloat16 several times slower "
          "than float32: docs/real_size.md).", choices=DTYPES, read_only=True),
    # camera input
    Param("image_transport", "raw",
          "raw: subscribe sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage on "
          "`image/compressed`.", choices=TRANSPORTS, read_only=True),
    Param("qos_reliability", "best_effort",
          "Image subscription reliability (best_effort = sensor-data QoS; reliable also matches "
          "reliable-only publishers such as bag players).", choices=QOS_RELIABILITY, read_only=True),
    Param("qos_depth", 5, "Image subscription history depth.", lo=1, hi=100, read_only=True),
    Param("buffer_size", 30, "Frames kept in the ring buffer by stamp (for queries with a stamp).",
          lo=1, hi=300, read_only=False),
    Param("buffer_max_mb", 512, "Bytes the ring buffer may hold, in MiB; the oldest frames are "
          "evicted first (counted as frames_evicted_from_buffer), the newest always stays.",
          lo=1, hi=65536, read_only=False),
    Param("max_frame_age", 1.0,
          "A query about the latest frame fails with FRAME_TOO_OLD when that frame arrived more "
          "than this many seconds ago (a stalled camera, a frame lost in transport); 0 = off.",
          lo=0.0, hi=3600.0, read_only=False),
    Param("stamp_tolerance", 0.05,
          "A query with a stamp uses the buffered frame nearest it if within this many seconds.",
          lo=0.0, hi=10.0, read_only=False),
    Param("stamp_wait", 0.2,
          "A query whose stamp is past every buffered frame waits up to this many seconds for that frame "
          "to arrive (a client on the same camera topic can see a frame before the node has buffered it), "
          "then fails with STAMP_NOT_BUFFERED; 0 = fail at once. Counted as stamp_waits.",
          lo=0.0, hi=5.0, read_only=False),
    # coarse worker
    Param("coarse_enabled", True, "Run the coarse worker (rolling interaction description).",
          read_only=False),
    Param("coarse_yields_to_queries", True,
          "The coarse worker pauses before its next transformer block while a query is in its model stages, "
          "and gives the coarse model up to a query that needs it (queries first on a small CPU).",
          read_only=False),
    Param("coarse_period", 0.0,
          "Minimum seconds between coarse passes; 0 = back to back on the newest frame.",
          lo=0.0, hi=60.0, read_only=False),
    Param("max_description_age", 2.0,
          "Seconds between the rolling description's frame and the query frame after which the "
          "description is stale (stale_policy applies); 0 = never stale.", lo=0.0, hi=3600.0,
          read_only=False),
    Param("stale_policy", "describe",
          "What a query does with a stale or missing description: describe = run the coarse model "
          "on the query frame first; use = answer with it anyway; empty = answer without one; "
          "refuse = fail with STALE_DESCRIPTION.", choices=STALE_POLICIES, read_only=False),
    # queries
    Param("max_query_bytes", 2048, "Longest accepted query (UTF-8 bytes); longer ones fail with "
          "QUERY_TOO_LONG.", lo=1, hi=1_000_000, read_only=False),
    Param("query_workers", 1,
          "Queries answered concurrently. The pipeline serialises each model (coarse, response, "
          "segmenter) internally, so >1 only overlaps different stages; useful with spare cores or a GPU.",
          lo=1, hi=8, read_only=True),
    Param("max_pending_queries", 16,
          "Requests that may wait for a query worker (a FIFO served in arrival order); a request "
          "arriving when this many wait is answered BUSY at once, with the queue length.",
          lo=1, hi=256, read_only=True),
    Param("query_timeout", 60.0,
          "Seconds a request may wait in the queue for a query worker before it is answered BUSY.",
          lo=0.1, hi=600.0, read_only=False),
    # tracking (queries with `track`)
    Param("tracking_rate", 10.0, "Most track updates per second (each on the newest frame; frames between are "
          "skipped, never queued).", lo=0.1, hi=60.0, read_only=False),
    Param("max_tracks", 3, "Tracks followed at once; a tracked query beyond it drops the oldest.", lo=1, hi=16,
          read_only=False),
    Param("track_mode", "replace", "What a tracked query does to the running tracks: replace them, or add its "
          "own.", choices=TRACK_MODES, read_only=False),
    Param("tracking_method", "flow", "flow = carry each mask by optical flow and keep the segmenter's mask where "
          "it agrees (default: holds on to a held object); box = prompt with the previous box grown by a margin; "
          "memory = SAM 2's video memory (needs the model's segmenter.video_memory) (earl_ros/live/tracking.py, "
          "bench/tracking.py).", choices=TRACKING_METHODS, read_only=False),
    Param("tracking_segment_every", 5, "flow, memory: run the segmenter (memory: its video memory) on every Nth "
          "update only and carry the masks by optical flow in between (less compute per frame; 5 leaves room "
          "for track_reask_period within a tenth of re-asking's compute; on bench/tracking.py's val clips 1 "
          "follows better alone, at 4x the compute).", lo=1, hi=30,
          read_only=False),
    Param("track_reask_period", 1.0, "Seconds between answering a tracked question again (on its own thread, on "
          "the newest frame) to put its tracks right: a first answer that named the wrong thing, or a track that "
          "drifted, is not followed for ever; tracks it no longer names end (lost), a lost one comes back when it names "
          "it again, until track/stop. 0 = never ask the VLM again "
          "while tracking. (1.0: chosen on bench/tracking.py's val clips within a tenth of re-asking's compute.)",
          lo=0.0, hi=600.0, read_only=False),
    Param("track_reask_min_score", 0.7, "An answer asked again replaces a running track's mask only where the "
          "segmenter scores its mask at least this (its own IoU estimate); below, the track keeps the mask it "
          "follows. 0 = every answer replaces. (0.7: chosen on bench/tracking.py's val clips, where answers "
          "scored below it were worse than the tracks they replaced.)", lo=0.0, hi=1.0, read_only=False),
    # outputs
    Param("publish_overlay", True, "Publish the rgb8 overlay image on `overlay`.", read_only=False),
    Param("publish_mask", True, "Publish the mono8 label map on `mask`.", read_only=False),
    Param("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", lo=0.1, hi=60.0,
          read_only=True),
)

BY_NAME = {p.name: p for p in PARAMS}


def validate(name: str, value) -> str | None:
    """Checks a descriptor cannot express; returns an error message or None."""
    p = BY_NAME.get(name)
    if p is None:
        return None
    if p.choices is not None and value not in p.choices:
        return f"parameter {name} = {value!r} is not one of {', '.join(p.choices)}"
    return None


def descriptor(p: Param):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
    d = ParameterDescriptor(name=p.name, type=types[type(p.default)], read_only=p.read_only)
    text = p.description
    if p.choices:
        text += " One of: " + ", ".join(p.choices) + "."
        d.additional_constraints = "one of: " + ", ".join(p.choices)
    d.description = text
    if p.lo is not None:
        if isinstance(p.default, int) and not isinstance(p.default, bool):
            d.integer_range = [IntegerRange(from_value=int(p.lo), to_value=int(p.hi), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(p.lo), to_value=float(p.hi), step=0.0)]
    return d
