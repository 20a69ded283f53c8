"""Synthetic clips with camera motion: one rendered scene seen through a moving, zooming, rolling window.

The tracking tests and bench/tracking.py need frames whose entities move while their exact masks stay
known. A scene is drawn once on a canvas larger than the frame (training/data/synth.py) and each frame
crops a window that pans, zooms and rolls along a smooth path, the label map cropped the same way
(nearest neighbour), so every frame has exact ground truth. The hands move with the scene, as they do
when the wearer turns their head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data.synth import SynthConfig, render_scene, scene_rng


@dataclass
class Clip:
    frames: list[np.ndarray]  # RGB uint8 [H, W, 3]
    labels: list[np.ndarray]  # uint8 [H, W] instance ids (0 = background)
    scene: dict  # render_scene's scene dict (hands, objects)
    rate_hz: float


def _window(t: float, phase: np.ndarray, cw: int, ch: int, w: int, h: int, amount: float):
    """Crop box and roll (degrees) of the window at time t in [0, 1]."""
    zoom = 1.0 + 0.15 * amount * (0.5 - 0.5 * math.cos(2 * math.pi * t + phase[0]))
    ww, wh = w / zoom, h / zoom
    slack_x, slack_y = (cw - ww) / 2, (ch - wh) / 2
    cx = cw / 2 + 0.7 * amount * slack_x * math.sin(2 * math.pi * t * 0.8 + phase[1])
    cy = ch / 2 + 0.7 * amount * slack_y * math.sin(2 * math.pi * t * 0.6 + phase[2])
    roll = 8.0 * amount * math.sin(2 * math.pi * t * 0.5 + phase[3])
    return (cx - ww / 2, cy - wh / 2, cx + ww / 2, cy + wh / 2), roll


def moving_clip(seed: int, n_frames: int = 40, rate_hz: float = 10.0, size: tuple[int, int] = (256, 192),
                motion: float = 1.0, style: str = "default", split: str = "clips") -> Clip:
    """`n_frames` frames of one scene (seed, split) at `rate_hz`; motion 0 = a still camera, 1 = the
    window pans over a quarter of the canvas, zooms by up to 15% and rolls up to 8 degrees. The random
    style draws its own canvas size, and the frames are then that canvas / 1.3, not `size`."""
    w, h = size
    cw, ch = int(round(w * 1.3)), int(round(h * 1.3))
    rng = scene_rng(seed, style, split, 0)
    rgb, lab, _depth, scene = render_scene(rng, SynthConfig(width=cw, height=ch, style=style))
    if lab.shape != (ch, cw):  # a style that draws its own frame size (random): the frame follows it
        ch, cw = lab.shape
        w, h = int(round(cw / 1.3)), int(round(ch / 1.3))
    phase = np.random.default_rng(seed).uniform(0, 2 * math.pi, 4)
    canvas, labels = Image.fromarray(rgb), Image.fromarray(lab, mode="L")
    frames, labs = [], []
    for k in range(n_frames):
        box, roll = _window(k / max(1, n_frames - 1), phase, cw, ch, w, h, motion)
        c, lb = canvas, labels
        if roll:
            c = c.rotate(roll, resample=Image.BILINEAR, center=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            lb = lb.rotate(roll, resample=Image.NEAREST, center=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
        frames.append(np.asarray(c.resize((w, h), Image.BILINEAR, box=box)))
        labs.append(np.asarray(lb.resize((w, h), Image.NEAREST, box=box)))
    return Clip(frames, labs, scene, rate_hz)


def entity_ids(scene: dict) -> dict[str, int]:
    """The answer's entity names (`the left hand`, `the active mug`) -> instance id in the label maps."""
    out = {}
    for hd in scene["hands"]:
        out[f"the {hd.side} hand"] = hd.iid
        if hd.obj is not None:
            out[f"the active {hd.obj.category}"] = hd.obj.iid
    return out
