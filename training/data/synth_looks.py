"""Domain randomisation of the synthetic scenes: the "random" style draws a fresh look per image.

A model trained on one drawn world learns that world's colours and shapes. The random style varies
what a camera on another person in another room would change: frame size and aspect ratio, hand
shape (palm, finger length and spread, arm width, sleeves), a continuous skin-tone range, table and
wall textures, light level and colour cast, noise, blur, JPEG artefacts, camera roll and zoom, an
occluder at the frame's edge and more distractor objects.

Two looks are held out of it on purpose, so that splits drawn in them measure looks the model never
saw (`is_heldout_look` is what the no-leak test checks):
- "dark": light gain below DARK_GAIN_MAX; the random style's gain starts above it.
- "gloves": hand colours that are not skin (skin tones have red >= green >= blue); the random style
  draws skin between neighbouring tones of SKIN_TONES only.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# (width, height) and how often each is drawn: robot cameras are mostly VGA or 720p, the training
# default is 256x192; everything is resized by the processor anyway, the aspect ratio is what changes
FRAME_SIZES = ((256, 192), (320, 240), (384, 216), (448, 336), (512, 288), (640, 480), (1280, 720))
_SIZE_P = (0.25, 0.15, 0.15, 0.1, 0.1, 0.15, 0.1)
TEXTURES = ("plain", "stripes", "checker", "noise", "wood", "tiles")
DARK_GAIN_MAX = 0.5  # the dark style's light gain is drawn in 0.25..0.5
RANDOM_GAIN = (0.6, 1.4)


@dataclass(frozen=True)
class HandShape:
    """Proportions of a drawn hand; the defaults are the hand every non-random style draws."""
    arm_width: float = 1.5
    finger_length: float = 1.0
    finger_width: float = 0.32
    spread: float = 1.0
    fingers: tuple[float, float, float, float] = (0.85, 1.0, 1.0, 0.85)
    sleeve: tuple[int, int, int] | None = None  # None: the arm is the skin, a shade darker


@dataclass(frozen=True)
class Look:
    size: tuple[int, int]
    skin: tuple[int, int, int]
    hand: HandShape
    palm: float
    texture: str
    gain: float
    cast: tuple[float, float, float]
    noise: float
    blur: float
    jpeg: int
    roll: float
    zoom: float
    occluder: bool


def skin_tone(rng: np.random.Generator, tones) -> tuple[int, int, int]:
    """A colour between two neighbouring tones of `tones` (light to dark), so the range is continuous
    but stays skin: red >= green >= blue."""
    i = int(rng.integers(len(tones) - 1))
    t = float(rng.random())
    c = (1 - t) * np.asarray(tones[i], np.float32) + t * np.asarray(tones[i + 1], np.float32)
    return tuple(int(round(v)) for v in c)


def draw_look(rng: np.random.Generator, tones) -> Look:
    """Every randomised parameter of one image, drawn before anything is painted."""
    size = FRAME_SIZES[int(rng.choice(len(FRAME_SIZES), p=_SIZE_P))]
    sleeve = tuple(int(v) for v in rng.integers(20, 235, 3)) if rng.random() < 0.5 else None
    hand = HandShape(arm_width=float(rng.uniform(1.2, 1.9)), finger_length=float(rng.uniform(0.75, 1.3)),
                     finger_width=float(rng.uniform(0.24, 0.4)), spread=float(rng.uniform(0.75, 1.35)),
                     fingers=tuple(float(v) for v in rng.uniform(0.7, 1.15, 4)), sleeve=sleeve)
    return Look(size=size, skin=skin_tone(rng, tones), hand=hand, palm=float(rng.uniform(0.8, 1.25)),
                texture=str(rng.choice(TEXTURES)), gain=float(rng.uniform(*RANDOM_GAIN)),
                cast=tuple(float(v) for v in rng.uniform(0.8, 1.2, 3)), noise=float(rng.uniform(0, 8)),
                blur=float(rng.choice([0.0, 0.0, rng.uniform(0.3, 1.5)])), jpeg=int(rng.integers(35, 96)),
                roll=float(rng.uniform(-12, 12)) if rng.random() < 0.6 else 0.0,
                zoom=float(rng.uniform(1.0, 1.2)) if rng.random() < 0.5 else 1.0, occluder=bool(rng.random() < 0.3))


def is_skin(colour) -> bool:
    r, g, b = (int(v) for v in colour)
    return r >= g >= b


def is_heldout_look(look: Look) -> bool:
    """Whether a drawn look falls in a held-out look's range (dark light, non-skin hands)."""
    return look.gain <= DARK_GAIN_MAX or not is_skin(look.skin)


def texture(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    """A multiplicative texture in about 0.75..1.1, shape (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = float(rng.uniform(6, 40)) * max(w, h) / 256.0
    if kind == "stripes":
        angle = float(rng.uniform(0, np.pi))
        pat = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == "checker":
        pat = ((xx // period + yy // period) % 2).astype(np.float32)
    elif kind == "noise":
        small = rng.random((max(2, int(h / period) + 2), max(2, int(w / period) + 2))).astype(np.float32)
        pat = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                         np.float32) / 255.0
    elif kind == "wood":
        wobble = np.sin(xx / (3 * period) + float(rng.uniform(0, 6))) * period
        pat = 0.5 + 0.5 * np.sin((yy + wobble) * 2 * np.pi / period)
    elif kind == "tiles":
        grout = max(1.0, period / 10)
        pat = (((xx % period) < grout) | ((yy % period) < grout)).astype(np.float32)
    else:
        return np.ones((h, w), np.float32)
    return (1.1 - float(rng.uniform(0.1, 0.35)) * pat).astype(np.float32)


def occlude(rng: np.random.Generator, painter, w: int, h: int) -> None:
    """A dark triangle entering from the top or a side edge (a sleeve, a door frame, a tool held
    close to the lens), painted as background on the label map: what it hides is hidden."""
    edge = int(rng.integers(3))
    depth = float(rng.uniform(0.08, 0.22))
    a, b = sorted(rng.uniform(0, 1, 2))
    if edge == 0:  # top
        pts = [(a * w, 0), (b * w, 0), ((a + b) / 2 * w, depth * h)]
    elif edge == 1:  # left
        pts = [(0, a * h * 0.7), (0, b * h * 0.7), (depth * w, (a + b) / 2 * h * 0.7)]
    else:  # right
        pts = [(w, a * h * 0.7), (w, b * h * 0.7), ((1 - depth) * w, (a + b) / 2 * h * 0.7)]
    colour = tuple(int(v) for v in rng.integers(10, 90, 3))
    painter.polygon(pts, colour, 0)


def roll_and_zoom(rgb: Image.Image, lab: Image.Image, look: Look) -> tuple[Image.Image, Image.Image]:
    """Camera roll about the centre and a zoom into the centre, applied alike to frame and labels
    (labels with nearest-neighbour so every pixel keeps an exact instance id)."""
    w, h = rgb.size
    if look.roll:
        fill = tuple(int(v) for v in np.asarray(rgb).reshape(-1, 3).mean(0))
        rgb = rgb.rotate(look.roll, resample=Image.BILINEAR, fillcolor=fill)
        lab = lab.rotate(look.roll, resample=Image.NEAREST, fillcolor=0)
    if look.zoom > 1.0:
        cw, ch = w / look.zoom, h / look.zoom
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        rgb = rgb.resize((w, h), Image.BILINEAR, box=box)
        lab = lab.resize((w, h), Image.NEAREST, box=box)
    return rgb, lab


def camera(rng: np.random.Generator, rgb: Image.Image, look: Look) -> Image.Image:
    """Light, colour cast, a soft falloff, sensor noise, blur and JPEG compression of one look."""
    w, h = rgb.size
    img = np.asarray(rgb).astype(np.float32) * look.gain * np.asarray(look.cast, np.float32)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img *= (1.0 - 0.3 * np.sqrt(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2))[..., None]
    img += rng.normal(0, look.noise, img.shape).astype(np.float32)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if look.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(look.blur))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=look.jpeg)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def kept_instances(before: np.ndarray, after: np.ndarray, ids, keep: float = 0.5) -> bool:
    """Whether every instance in `ids` keeps at least `keep` of its pixels (and 20 pixels) after a
    change that can hide parts of the frame, so no question points at a mask that is all but gone."""
    for iid in ids:
        n0, n1 = int((before == iid).sum()), int((after == iid).sum())
        if n1 < max(20, keep * n0):
            return False
    return True
