"""Drawing primitives of the synthetic scenes (training/data/synth.py): objects and hands as flat
shapes, painted at once on the RGB frame and, with the instance id, on the label map, so every
drawn pixel's label is exact by construction."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw

from training.data.synth_looks import HandShape


class Painter:
    """Draws every primitive on the RGB canvas and, with the instance id, on the label map."""

    def __init__(self, rgb: Image.Image, lab: Image.Image):
        self.rgb, self.lab = ImageDraw.Draw(rgb), ImageDraw.Draw(lab)

    def polygon(self, pts, colour, iid):
        pts = [(float(x), float(y)) for x, y in pts]
        self.rgb.polygon(pts, fill=colour)
        self.lab.polygon(pts, fill=iid)

    def ellipse(self, box, colour, iid):
        self.rgb.ellipse(box, fill=colour)
        self.lab.ellipse(box, fill=iid)

    def rect(self, box, colour, iid):
        self.rgb.rectangle(box, fill=colour)
        self.lab.rectangle(box, fill=iid)

    def line(self, pts, colour, iid, width):
        w = max(1, int(round(width)))
        self.rgb.line(pts, fill=colour, width=w)
        self.lab.line(pts, fill=iid, width=w)
        for x, y in (pts[0], pts[-1]):  # round caps
            r = w / 2
            self.rgb.ellipse((x - r, y - r, x + r, y + r), fill=colour)
            self.lab.ellipse((x - r, y - r, x + r, y + r), fill=iid)

    def arc(self, box, start, end, colour, iid, width):
        w = max(1, int(round(width)))
        self.rgb.arc(box, start, end, fill=colour, width=w)
        self.lab.arc(box, start, end, fill=iid, width=w)


def shade(c, f):
    return tuple(int(max(0, min(255, v * f))) for v in c)


def draw_object(p: Painter, o, rgb: tuple[int, int, int]):
    x, y, w, h = o.box
    iid, dark, light = o.iid, shade(rgb, 0.65), shade(rgb, 1.25)
    c = o.category
    if c == "mug":
        p.arc((x + 0.62 * w, y + 0.2 * h, x + w, y + 0.75 * h), -90, 90, dark, iid, 0.09 * w)
        p.rect((x, y + 0.08 * h, x + 0.75 * w, y + h), rgb, iid)
        p.ellipse((x, y, x + 0.75 * w, y + 0.16 * h), dark, iid)
    elif c == "bottle":
        p.rect((x + 0.05 * w, y + 0.35 * h, x + 0.95 * w, y + h), rgb, iid)
        p.polygon([(x + 0.05 * w, y + 0.36 * h), (x + 0.3 * w, y + 0.18 * h), (x + 0.7 * w, y + 0.18 * h),
                   (x + 0.95 * w, y + 0.36 * h)], rgb, iid)
        p.rect((x + 0.3 * w, y, x + 0.7 * w, y + 0.18 * h), dark, iid)
        p.rect((x + 0.15 * w, y + 0.55 * h, x + 0.85 * w, y + 0.75 * h), light, iid)
    elif c == "kettle":
        p.arc((x + 0.15 * w, y, x + 0.85 * w, y + 0.6 * h), 180, 360, dark, iid, 0.07 * h)
        p.polygon([(x + 0.78 * w, y + 0.6 * h), (x + w, y + 0.3 * h), (x + 0.95 * w, y + 0.28 * h),
                   (x + 0.7 * w, y + 0.5 * h)], rgb, iid)
        p.ellipse((x + 0.05 * w, y + 0.25 * h, x + 0.85 * w, y + h), rgb, iid)
        p.ellipse((x + 0.35 * w, y + 0.22 * h, x + 0.55 * w, y + 0.32 * h), dark, iid)
    elif c == "knife":
        p.rect((x, y + 0.2 * h, x + 0.38 * w, y + 0.85 * h), dark, iid)
        p.polygon([(x + 0.38 * w, y), (x + w, y + 0.55 * h), (x + 0.38 * w, y + h)], (200, 205, 210), iid)
    elif c == "scissors":
        p.line([(x + 0.3 * w, y + 0.55 * h), (x + w, y)], (190, 195, 200), iid, 0.1 * h)
        p.line([(x + 0.3 * w, y + 0.45 * h), (x + w, y + h)], (190, 195, 200), iid, 0.1 * h)
        p.arc((x, y, x + 0.32 * w, y + 0.45 * h), 0, 360, rgb, iid, 0.1 * h)
        p.arc((x, y + 0.55 * h, x + 0.32 * w, y + h), 0, 360, rgb, iid, 0.1 * h)
    elif c == "laptop":
        p.polygon([(x + 0.1 * w, y), (x + 0.9 * w, y), (x + 0.85 * w, y + 0.6 * h), (x + 0.15 * w, y + 0.6 * h)],
                  dark, iid)
        p.polygon([(x + 0.15 * w, y + 0.05 * h), (x + 0.85 * w, y + 0.05 * h), (x + 0.82 * w, y + 0.55 * h),
                   (x + 0.18 * w, y + 0.55 * h)], (60, 90, 140), iid)
        p.polygon([(x + 0.15 * w, y + 0.6 * h), (x + 0.85 * w, y + 0.6 * h), (x + w, y + h), (x, y + h)], rgb, iid)
    elif c == "bowl":
        p.ellipse((x, y + 0.45 * h, x + w, y + h), dark, iid)
        p.polygon([(x, y + 0.3 * h), (x + w, y + 0.3 * h), (x + 0.8 * w, y + 0.9 * h), (x + 0.2 * w, y + 0.9 * h)],
                  rgb, iid)
        p.ellipse((x, y, x + w, y + 0.55 * h), light, iid)
        p.ellipse((x + 0.08 * w, y + 0.08 * h, x + 0.92 * w, y + 0.47 * h), dark, iid)
    elif c == "toy car":
        p.rect((x, y + 0.35 * h, x + w, y + 0.8 * h), rgb, iid)
        p.polygon([(x + 0.22 * w, y + 0.35 * h), (x + 0.35 * w, y), (x + 0.7 * w, y), (x + 0.8 * w, y + 0.35 * h)],
                  light, iid)
        p.ellipse((x + 0.1 * w, y + 0.6 * h, x + 0.32 * w, y + h), (20, 20, 20), iid)
        p.ellipse((x + 0.68 * w, y + 0.6 * h, x + 0.9 * w, y + h), (20, 20, 20), iid)
    elif c == "stapler":
        p.rect((x, y + 0.7 * h, x + w, y + h), dark, iid)
        p.polygon([(x, y + 0.75 * h), (x + 0.1 * w, y), (x + w, y + 0.25 * h), (x + w, y + 0.75 * h)], rgb, iid)
    elif c == "bucket":
        p.arc((x + 0.05 * w, y, x + 0.95 * w, y + 0.6 * h), 180, 360, dark, iid, 0.04 * h)
        p.polygon([(x, y + 0.25 * h), (x + w, y + 0.25 * h), (x + 0.85 * w, y + h), (x + 0.15 * w, y + h)],
                  rgb, iid)
        p.ellipse((x, y + 0.17 * h, x + w, y + 0.33 * h), dark, iid)
    else:  # pragma: no cover
        raise ValueError(c)


def draw_hand(p: Painter, side: str, iid: int, skin, base, centre, r: float, state: str, rng, shape=None):
    """Forearm from `base` (below the lower edge) to the wrist, palm at `centre`, fingers beyond;
    `shape` (training/data/synth_looks.HandShape) sets the proportions, None the usual hand."""
    shape = shape or HandShape()
    bx, by = base
    cx, cy = centre
    ux, uy = cx - bx, cy - by
    n = math.hypot(ux, uy) or 1.0
    ux, uy = ux / n, uy / n
    px, py = -uy, ux  # perpendicular
    wx, wy = cx - ux * 0.9 * r, cy - uy * 0.9 * r
    arm_w = shape.arm_width * r
    sleeve = shape.sleeve or shade(skin, 0.85)
    p.polygon([(bx + px * arm_w * 0.6, by + py * arm_w * 0.6), (bx - px * arm_w * 0.6, by - py * arm_w * 0.6),
               (wx - px * arm_w * 0.45, wy - py * arm_w * 0.45), (wx + px * arm_w * 0.45, wy + py * arm_w * 0.45)],
              sleeve, iid)
    p.ellipse((cx - r, cy - r, cx + r, cy + r), skin, iid)
    curl = {"held": 0.55, "touched": 1.0, "free": float(rng.uniform(0.7, 1.1))}[state]
    flen, fw = shape.finger_length * r * curl, shape.finger_width * r
    finger = shade(skin, 0.95)
    for k, off in enumerate((-0.6, -0.2, 0.2, 0.6)):
        off *= shape.spread
        sx, sy = cx + ux * 0.6 * r + px * off * r, cy + uy * 0.6 * r + py * off * r
        ln = flen * shape.fingers[k]
        p.line([(sx, sy), (sx + ux * ln, sy + uy * ln)], finger, iid, fw)
    # thumb on the inner side: +perp for the right hand (pointing left), -perp for the left hand
    tside = 1.0 if side == "right" else -1.0
    tx, ty = cx + px * tside * 0.8 * r, cy + py * tside * 0.8 * r
    dx, dy = (ux + px * tside * 0.8), (uy + py * tside * 0.8)
    dn = math.hypot(dx, dy) or 1.0
    p.line([(tx, ty), (tx + dx / dn * 0.7 * r, ty + dy / dn * 0.7 * r)], finger, iid, fw * 1.1)
