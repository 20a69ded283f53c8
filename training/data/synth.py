"""Synthetic egocentric hand-object scenes written in the Ego-IRGBench layout (METHOD.md section 4).

Every image is a procedurally drawn first-person view: forearms and hands enter from the lower edge
(left hand from the lower left, right hand from the lower right), HOI4D-like objects lie on a table,
and each hand holds, touches or does not touch an object. The generator writes exactly what the
benchmark loader reads:

    root/RGB/<id>.jpg            RGB frame
    root/depth/<id>.png          uint16 depth in millimetres (hands nearest, table gradient)
    root/mask/<id>.png           uint8 label map, pixel value = instance id (0 = background)
    root/dataset_split/<split>/<id>.json   a LIST of entries (masks_idx, with_mask, caption,
                                           answer, tokens, questions[{query, is_sentence, id}])

Determinism: image i of split s is drawn from its own generator seeded with (seed, style, s, i), so
the output depends only on those four values (not on the order or the number of images written).

Styles (for out-of-distribution splits): "default"; "easy" (plain background, one hand holding one
large object, no distractors, no blur); "dark" (low light, strong blur, noise); "clutter" (textured
backgrounds, many distractors); "gloves" (unusual hand colours and object colours); "random" (a fresh
look per image: frame size, hand shape, skin, textures, light, camera; training/data/synth_looks.py),
which never draws the held-out looks "dark" and "gloves".
"""
from __future__ import annotations

import dataclasses

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from earl_ros.model.prompts import NO_TARGET_ANSWER
from training.data.synth_draw import Painter, draw_hand, draw_object
from training.data.synth_looks import Look, camera, draw_look, kept_instances, occlude, roll_and_zoom, texture
from training.data.wording import WORDINGS, Wording, is_sentence

CATEGORIES = ("mug", "bottle", "kettle", "knife", "scissors", "laptop", "bowl", "toy car", "stapler", "bucket")
# width / height of each category's bounding box
_ASPECT = {"mug": 0.9, "bottle": 0.42, "kettle": 1.15, "knife": 3.2, "scissors": 1.3, "laptop": 1.4,
           "bowl": 1.7, "toy car": 1.8, "stapler": 2.6, "bucket": 0.95}
# relative size (fraction of image height for the box height)
_SIZE = {"mug": 0.22, "bottle": 0.34, "kettle": 0.3, "knife": 0.09, "scissors": 0.16, "laptop": 0.34,
         "bowl": 0.16, "toy car": 0.14, "stapler": 0.1, "bucket": 0.32}

COLOURS = {
    "red": (200, 40, 40), "blue": (40, 70, 200), "green": (40, 160, 60), "yellow": (230, 200, 40),
    "pink": (240, 120, 170), "white": (235, 235, 235), "black": (30, 30, 30), "orange": (240, 130, 30),
    "purple": (130, 60, 170), "grey": (128, 128, 128), "brown": (120, 75, 40), "silver": (190, 195, 200),
}
_GLOVE_COLOURS = {"cyan": (40, 200, 210), "magenta": (210, 40, 200), "lime": (160, 230, 40), "navy": (20, 30, 100)}
SKIN_TONES = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]

STYLES = ("default", "easy", "dark", "clutter", "gloves", "random")
HELDOUT_LOOKS = ("dark", "gloves")  # never drawn by the random style (synth_looks.is_heldout_look)


@dataclass
class SynthConfig:
    width: int = 256
    height: int = 192
    style: str = "default"
    jpeg_quality: int = 92
    wording: str = "templates"  # training/data/wording.py: templates | grammar | heldout
    # random looks: a frame size with more pixels is drawn at this many, same aspect ratio (a consumer
    # that resizes to at most this anyway, like the tiny processor, gets the same scene for a fifth
    # of the drawing: 1280x720 is 0.35 s a frame)
    max_pixels: int | None = None


@dataclass
class _Hand:
    side: str  # "left" | "right"
    iid: int
    state: str  # "held" | "touched" | "free"
    obj: "_Obj | None" = None


@dataclass
class _Obj:
    category: str
    colour: str
    iid: int
    box: tuple[float, float, float, float]  # x, y, w, h
    active_for: list[str] = field(default_factory=list)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """uniform(lo, hi) that tolerates an empty range (returns lo)."""
    return float(lo) if hi <= lo else float(rng.uniform(lo, hi))


def scene_rng(seed: int, style: str, split: str, index: int) -> np.random.Generator:
    """The generator of one scene: image `index` of `split` depends on nothing else, so splits and styles
    can be drawn in any order, in any process, and a test can redraw one scene alone."""
    return np.random.default_rng([seed, zlib.crc32(style.encode()), zlib.crc32(split.encode()), index])


def _background(rng, w, h, style, look=None):
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    wall = rng.uniform(60, 230, 3).astype(np.float32)
    table = rng.uniform(40, 220, 3).astype(np.float32)
    horizon = rng.uniform(0.15, 0.4) if style != "easy" else 0.0
    img = np.where(yy < horizon, wall, table * (0.85 + 0.3 * yy)).astype(np.float32)
    img = np.broadcast_to(img, (h, w, 3)).copy()
    if look is not None:
        below = (yy[..., 0] >= horizon).astype(np.float32)
        tex = texture(rng, look.texture, w, h)
        img *= (below * tex + (1 - below) * texture(rng, str(rng.choice(["plain", "noise"])), w, h))[..., None]
        return img, horizon
    if style in ("clutter", "default") and rng.random() < (0.9 if style == "clutter" else 0.4):
        # stripes or checker texture on the table
        period = int(rng.integers(8, 32))
        xx = np.arange(w)[None, :]
        yi = np.arange(h)[:, None]
        pat = ((xx // period + yi // period) % 2) if rng.random() < 0.5 else ((xx + yi) // period % 2)
        img *= (1.0 - 0.18 * pat[..., None]).astype(np.float32)
    return img, horizon


def _depth(lab: np.ndarray, horizon: float, near_ids: list[int], rng) -> np.ndarray:
    h, w = lab.shape
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    d = np.where(yy < horizon, 2500.0, 1400.0 - 800.0 * yy) * np.ones((1, w), np.float32)
    for iid in np.unique(lab):
        if iid == 0:
            continue
        m = lab == iid
        base = 350.0 if iid in near_ids else float(d[m].mean()) - float(rng.uniform(20, 80))
        d[m] = base
    return np.clip(d, 0, 65535).astype(np.uint16)


def _overlap(a, b, margin=0.0):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return not (ax + aw + margin < bx or bx + bw + margin < ax or ay + ah + margin < by or by + bh + margin < ay)


def _choose_hands(rng: np.random.Generator, style: str) -> list[_Hand]:
    """Which hands are in view and what each does (held / touched / free)."""
    if style == "easy":
        sides = [str(rng.choice(["left", "right"]))]
        states = {sides[0]: "held"}
    else:
        u = rng.random()
        sides = [] if u < 0.08 else (["left"] if u < 0.3 else (["right"] if u < 0.55 else ["left", "right"]))
        states = {s: str(rng.choice(["held", "touched", "free"], p=[0.5, 0.25, 0.25])) for s in sides}
    return [_Hand(side=s, iid=0, state=states[s]) for s in sides]


def _held_box(rng, cat: str, side: str, placed: list[tuple], W: int, H: int, horizon: float, size_mul: float):
    """Box of a hand's object on that hand's half of the table, clear of the placed boxes if 30
    tries find such a spot (else the last try)."""
    for _ in range(30):
        bh = _SIZE[cat] * H * size_mul * float(rng.uniform(0.85, 1.15))
        bw = min(bh * _ASPECT[cat], 0.45 * W)
        bh = bw / _ASPECT[cat]
        # right hand's object on the right half, left hand's on the left half
        lo, hi = (0.5 * W, W - bw - 4) if side == "right" else (4, 0.5 * W - bw)
        if hi <= lo:
            lo, hi = 4, W - bw - 4
        x = _u(rng, lo, hi)
        y = _u(rng, max(horizon * H, 0.1 * H), min(0.62 * H, H - bh - 2) - bh * 0.3)
        box = (x, y, bw, bh)
        if not any(_overlap(box, q, 4) for q in placed):
            break
    return box


def _distractor_box(rng, cat: str, placed: list[tuple], W: int, H: int, horizon: float):
    """Box of an object nobody uses, clear of the placed boxes; None when 20 tries find no spot."""
    for _ in range(20):
        bh = _SIZE[cat] * H * float(rng.uniform(0.6, 1.0))
        bw = min(bh * _ASPECT[cat], 0.4 * W)
        bh = bw / _ASPECT[cat]
        x = _u(rng, 2, W - bw - 2)
        y = _u(rng, max(horizon * H - 0.5 * bh, 2), 0.55 * H - bh)
        box = (x, y, bw, bh)
        if not any(_overlap(box, q, 2) for q in placed):
            return box
    return None


def _place_objects(rng, hands: list[_Hand], style: str, colours: dict, W: int, H: int, horizon: float):
    """One object per interacting hand (distinct categories, linked to its hand) plus distractors.
    Returns (objects, their boxes, the next free instance id)."""
    cats = list(rng.permutation(CATEGORIES))
    n_distract = 0 if style == "easy" else int(rng.integers(0, 5 if style in ("clutter", "random") else 3))
    objs: list[_Obj] = []
    next_id = 1
    placed: list[tuple] = []
    size_mul = 1.6 if style == "easy" else float(rng.uniform(0.8, 1.3))
    for hd in hands:
        if hd.state == "free":
            continue
        cat = cats.pop()
        box = _held_box(rng, cat, hd.side, placed, W, H, horizon, size_mul)
        placed.append(box)
        colour = str(rng.choice(list(colours)))
        o = _Obj(cat, colour, next_id, box, [hd.side])
        next_id += 1
        objs.append(o)
        hd.obj = o
    for _ in range(n_distract):
        cat = cats.pop()
        box = _distractor_box(rng, cat, placed, W, H, horizon)
        if box is not None:
            placed.append(box)
            objs.append(_Obj(cat, str(rng.choice(list(colours))), next_id, box))
            next_id += 1
    return objs, placed, next_id


def _hand_pose(rng, hd: _Hand, r: float, placed: list[tuple], W: int, H: int):
    """(forearm base below the lower edge, palm centre): at its object's side facing the hand, or
    for a free hand somewhere low, away from objects if possible."""
    right = hd.side == "right"
    base = (float(rng.uniform(0.6, 0.95) * W) if right else float(rng.uniform(0.05, 0.4) * W), H + 2 * r)
    if hd.obj is not None:
        x, y, w, h = hd.obj.box
        # contact point: the object's side facing the hand, at a random height
        tx = x + w * (0.85 if right else 0.15)
        ty = y + h * float(rng.uniform(0.45, 0.8))
        vx, vy = base[0] - tx, base[1] - ty
        vn = math.hypot(vx, vy) or 1.0
        dist = 0.35 * r if hd.state == "held" else 1.55 * r
        return base, (tx + vx / vn * dist, ty + vy / vn * dist)
    for _ in range(20):
        centre = (float(rng.uniform(0.55, 0.9) * W) if right else float(rng.uniform(0.1, 0.45) * W),
                  float(rng.uniform(0.55, 0.8) * H))
        hb = (centre[0] - 2 * r, centre[1] - 2 * r, 4 * r, 4 * r)
        if not any(_overlap(hb, q) for q in placed):
            break
    return base, centre


def _draw_hands(painter: Painter, rng, hands: list[_Hand], placed: list[tuple], style: str, W: int, H: int,
                next_id: int, look: Look | None = None) -> None:
    """Hands last (they occlude what they hold), one skin colour for both; assigns their instance ids."""
    if look is None:
        skin_pool = list(_GLOVE_COLOURS.values()) if style == "gloves" else SKIN_TONES
        skin = tuple(int(v) for v in skin_pool[int(rng.integers(len(skin_pool)))])
    else:
        skin = look.skin
    r = H * float(rng.uniform(0.075, 0.1)) * (1.2 if style == "easy" else 1.0) * (look.palm if look else 1.0)
    for hd in hands:
        hd.iid = next_id
        next_id += 1
        base, centre = _hand_pose(rng, hd, r, placed, W, H)
        draw_hand(painter, hd.side, hd.iid, skin, base, centre, r, hd.state, rng, look.hand if look else None)


def _camera_effects(rng, rgb: Image.Image, style: str, W: int, H: int) -> Image.Image:
    """Lighting, colour cast, noise and blur of the drawn frame."""
    img = np.asarray(rgb).astype(np.float32)
    # both dict values are drawn whatever the style: the draws keep every later value of the scene
    gain = {"dark": float(rng.uniform(0.25, 0.5)), "easy": 1.0}.get(style, float(rng.uniform(0.7, 1.2)))
    cast = np.ones(3, np.float32) if style == "easy" else rng.uniform(0.9, 1.1, 3).astype(np.float32)
    img = img * gain * cast
    if style != "easy":
        # a soft light falloff from a random point
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        fall = 1.0 - 0.25 * np.sqrt(((xx - cx) / W) ** 2 + ((yy - cy) / H) ** 2)
        img *= fall[..., None]
        sigma = 12.0 if style == "dark" else 3.0
        img += rng.normal(0, sigma, img.shape).astype(np.float32)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    blur = {"dark": float(rng.uniform(1.0, 2.5)), "easy": 0.0}.get(style, float(rng.choice([0, 0, 0.6, 1.2])))
    if blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(blur))
    return out


def fit_pixels(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """(w, h) scaled to at most `max_pixels`, aspect ratio kept."""
    scale = (max_pixels / (size[0] * size[1])) ** 0.5
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def render_scene(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Draw one scene. Returns (rgb uint8 HxWx3, label map uint8 HxW, depth uint16 HxW, scene dict).

    Every value comes from `rng` in a fixed order, so one generator state gives one image."""
    style = cfg.style
    look = draw_look(rng, SKIN_TONES) if style == "random" else None
    if look is not None and cfg.max_pixels and look.size[0] * look.size[1] > cfg.max_pixels:
        look = dataclasses.replace(look, size=fit_pixels(look.size, cfg.max_pixels))
    W, H = look.size if look is not None else (cfg.width, cfg.height)
    bg, horizon = _background(rng, W, H, style, look)
    rgb = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    lab = Image.new("L", (W, H), 0)
    painter = Painter(rgb, lab)
    colours = dict(COLOURS)
    if style == "gloves":
        colours = {**_GLOVE_COLOURS, **{k: v for k, v in COLOURS.items() if k in ("grey", "brown", "black")}}
    hands = _choose_hands(rng, style)
    objs, placed, next_id = _place_objects(rng, hands, style, colours, W, H, horizon)
    for o in objs:
        draw_object(painter, o, colours[o.colour])
    _draw_hands(painter, rng, hands, placed, style, W, H, next_id, look)
    if look is None:
        out = _camera_effects(rng, rgb, style, W, H)
    else:
        asked = [hd.iid for hd in hands] + [hd.obj.iid for hd in hands if hd.obj is not None]
        rgb, lab = _hide_and_turn(rng, rgb, lab, look, asked)
        out = camera(rng, rgb, look)
    lab_np = np.asarray(lab).copy()
    depth = _depth(lab_np, horizon, [hd.iid for hd in hands], rng)
    scene = {"hands": hands, "objects": objs, "look": look}
    return np.asarray(out), lab_np, depth, scene


def _hide_and_turn(rng, rgb: Image.Image, lab: Image.Image, look: Look, asked: list[int]):
    """The random look's occluder, camera roll and zoom, each kept only if every instance a question
    can ask for keeps at least half of its pixels."""
    if look.occluder:
        rgb2, lab2 = rgb.copy(), lab.copy()
        occlude(rng, Painter(rgb2, lab2), *rgb.size)
        if kept_instances(np.asarray(lab), np.asarray(lab2), asked):
            rgb, lab = rgb2, lab2
    rgb2, lab2 = roll_and_zoom(rgb, lab, look)
    if kept_instances(np.asarray(lab), np.asarray(lab2), asked):
        rgb, lab = rgb2, lab2
    return rgb, lab


# ----------------------------------------------------------------------------------------------
# text: captions, entries, queries

_VERB = {"held": "holding", "touched": "touching"}


def _hand_name(side):
    return f"the {side} hand"


def _obj_name(o: _Obj):
    return f"the active {o.category}"


def caption_for(scene: dict) -> str:
    hands: list[_Hand] = scene["hands"]
    objs: list[_Obj] = scene["objects"]
    if not hands:
        if objs:
            o = objs[0]
            return f"No hands are visible. There is a {o.colour} {o.category} on the table."
        return "No hands are visible and no object is being used."
    parts = []
    for hd in hands:
        if hd.obj is not None:
            parts.append(f"{_VERB[hd.state]} a {hd.obj.colour} {hd.obj.category} with the {hd.side} hand")
    free = [hd.side for hd in hands if hd.obj is None]
    if parts:
        text = "The camera wearer is " + " and ".join(parts) + "."
        if free:
            text += f" The {free[0]} hand is not interacting with any object."
        return text
    if len(free) == 2:
        return "Both hands of the camera wearer are visible but not interacting with any object."
    return f"The {free[0]} hand of the camera wearer is visible but not interacting with any object."


def _template_answer(tokens: list[str], hands_of: dict[str, str]) -> str:
    if not tokens:
        return NO_TARGET_ANSWER
    parts = []
    for i, t in enumerate(tokens):
        if t in hands_of:
            parts.append(f"the mask of {t} interacting with {hands_of[t]} is <MSK_{i}>")
        else:
            parts.append(f"the mask of {t} is <MSK_{i}>")
    s = ", and ".join(parts) + "."
    return s[0].upper() + s[1:]


N_SLOTS = 4  # entries carry a fixed number of mask slots; 0 / '' mark unused ones


def _entry(tokens: list[str], ids: list[int], caption: str, queries: list[str], qid0: str, k0: int,
           hands_of: dict[str, str], sentence=lambda q: q[:1].isupper()) -> dict:
    pad = N_SLOTS - len(tokens)
    return {
        "masks_idx": list(ids) + [0] * pad,
        "with_mask": 1 if tokens else 0,
        "caption": caption,
        "answer": _template_answer(tokens, hands_of),
        "tokens": list(tokens) + [""] * pad,
        "questions": [{"query": q, "is_sentence": sentence(q), "id": f"{qid0}_{k0 + j}"}
                      for j, q in enumerate(queries)],
    }


def entries_for(scene: dict, image_id: str, rng: np.random.Generator, max_q: int = 2,
                wording: str = "templates") -> list[dict]:
    """The scene's entries (one per target set) with up to `max_q` questions each, worded by `wording`
    (training/data/wording.py); the targets never depend on the wording."""
    hands: list[_Hand] = scene["hands"]
    caption = caption_for(scene)
    hands_of = {_obj_name(hd.obj): _hand_name(hd.side) for hd in hands if hd.obj is not None}
    words = Wording(wording)
    # the template lists keep their own capital-letter rule, so the shipped model's data redraws exactly
    sentence = (lambda q: q[:1].isupper()) if wording == "templates" else is_sentence
    entries, k = [], 0

    def add(tokens, ids, qs):
        nonlocal k
        entries.append(_entry(tokens, ids, caption, qs, image_id, k, hands_of, sentence))
        k += len(qs)

    for hd in hands:  # hand
        add([_hand_name(hd.side)], [hd.iid], words.questions("hand", rng, max_q, side=hd.side))
    for hd in hands:  # object of hand
        if hd.obj is not None:
            add([_obj_name(hd.obj)], [hd.obj.iid], words.questions(hd.state, rng, max_q, side=hd.side))
    pairs = [(hd, hd.obj) for hd in hands if hd.obj is not None]
    if pairs:  # hands + objects
        toks, ids = [], []
        for hd, o in pairs:
            toks += [_hand_name(hd.side), _obj_name(o)]
            ids += [hd.iid, o.iid]
        add(toks, ids, words.questions("both", rng, max_q))
    add([], [], _no_target_questions(scene, rng, words)[:max_q])
    return entries


def _no_target_questions(scene: dict, rng: np.random.Generator, words: Wording) -> list[str]:
    """Questions whose honest answer is "no target": a hand out of view, what a free hand holds, a
    category nobody uses, interactions when no hand is in view."""
    hands: list[_Hand] = scene["hands"]
    present = {hd.side for hd in hands}
    nq = []
    for side in ("left", "right"):
        if side not in present:
            nq.append(words.question("none_hand", rng, side=side))
        elif next(hd for hd in hands if hd.side == side).obj is None:
            nq.append(words.question("none_free", rng, side=side))
    if not hands:
        nq.append(words.question("none_all", rng))
    used = {o.category for o in scene["objects"]}
    absent = [c for c in CATEGORIES if c not in used]
    nq.append(words.question("none_obj", rng, cat=lambda: str(rng.choice(absent))))
    return nq


# ----------------------------------------------------------------------------------------------

def parse_splits(spec: str) -> dict[str, int]:
    """"train=40,val=5,test=5" -> {"train": 40, "val": 5, "test": 5}."""
    out = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, _, n = part.partition("=")
        if not name.strip() or not n.strip().isdigit():
            raise ValueError(f"bad split spec {part!r}: expected NAME=COUNT, e.g. train=40,val=5,test=5")
        out[name.strip()] = int(n)
    return out


def image_id(style: str, seed: int, split: str, index: int) -> str:
    return f"{style}_{seed}_{split}_{index:05d}"


def write_one(root: Path, split: str, index: int, seed: int, cfg: SynthConfig) -> str:
    rng = scene_rng(seed, cfg.style, split, index)
    rgb, lab, depth, scene = render_scene(rng, cfg)
    iid = image_id(cfg.style, seed, split, index)
    Image.fromarray(rgb).save(root / "RGB" / f"{iid}.jpg", quality=cfg.jpeg_quality)
    Image.fromarray(depth).save(root / "depth" / f"{iid}.png")
    Image.fromarray(lab, mode="L").save(root / "mask" / f"{iid}.png")
    entries = entries_for(scene, iid, rng, wording=cfg.wording)
    (root / "dataset_split" / split / f"{iid}.json").write_text(json.dumps(entries, indent=1))
    return iid


def _write_one_star(a):
    return write_one(*a)


def generate(root: str | Path, splits: dict[str, int], seed: int = 0, cfg: SynthConfig | None = None,
             progress: bool = True, workers: int = 1) -> dict[str, list[str]]:
    """Write `splits` (name -> image count) under `root`; returns the ids written per split.

    workers > 1 draws images in a process pool (same output: image i depends only on its seed)."""
    from training.progress import progress as progress_bar

    cfg = cfg or SynthConfig()
    if cfg.style not in STYLES:
        raise ValueError(f"unknown style {cfg.style!r}; choose one of {', '.join(STYLES)}")
    if cfg.wording not in WORDINGS:
        raise ValueError(f"unknown wording {cfg.wording!r}; choose one of {', '.join(WORDINGS)}")
    root = Path(root)
    for d in ("RGB", "depth", "mask"):
        (root / d).mkdir(parents=True, exist_ok=True)
    out = {}
    total = sum(splits.values())
    with progress_bar(total=total, desc=f"synth[{cfg.style}]", unit="img", quiet=not progress) as bar:
        for split, n in splits.items():
            (root / "dataset_split" / split).mkdir(parents=True, exist_ok=True)
            ids = []
            if workers > 1:
                from multiprocessing import Pool

                with Pool(int(workers)) as pool:
                    for iid in pool.imap(_write_one_star, [(root, split, i, seed, cfg) for i in range(n)], chunksize=16):
                        ids.append(iid)
                        bar.update(1)
            else:
                for i in range(n):
                    ids.append(write_one(root, split, i, seed, cfg))
                    bar.update(1)
            out[split] = ids
    return out


def write_corpus(root: str | Path, max_lines: int = 20000) -> Path:
    """root/corpus.txt: the distinct captions, queries, entity names and target responses of every
    split, one per line; feed it to the tiny tokenizer (`python -m earl_ros.model.tiny DIR
    --extra-texts ROOT/corpus.txt`) so a model trained from scratch gets a vocabulary that fits."""
    from earl_ros.model.prompts import format_response
    from training.data.irgbench import IRGBench

    root = Path(root)
    lines: dict[str, None] = {}
    for sdir in sorted((root / "dataset_split").iterdir()):
        if not sdir.is_dir():
            continue
        ds = IRGBench(root, sdir.name)
        for s in ds.samples:
            lines.setdefault(s.caption)
            lines.setdefault(s.query)
            for e in s.entities:
                lines.setdefault(e)
            if len(lines) < max_lines:
                lines.setdefault(format_response(s.entities, [tuple(b) for b in s.boxes()] if s.entities else None))
    out = root / "corpus.txt"
    out.write_text("\n".join(k.replace("\n", " ") for k in list(lines)[:max_lines]) + "\n")
    return out
