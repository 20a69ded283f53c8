"""Draw a Grounding on its frame: semi-transparent coloured masks, boxes and entity labels (PIL).

Used by earl-infer (overlay.png), the ROS node's `overlay` topic and the demo. Entity i gets colour
PALETTE[i % len(PALETTE)], the same index as its value (i + 1) in the label map.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
]


def color_of(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def draw_overlay(img: np.ndarray, grounding, alpha: float = 0.45, draw_labels: bool = True) -> np.ndarray:
    """RGB uint8 [H, W, 3] image with masks blended in and boxes + labels drawn on top."""
    base = np.asarray(img, dtype=np.uint8)
    if base.ndim == 2:
        base = np.repeat(base[:, :, None], 3, axis=2)
    out = base[:, :, :3].astype(np.float32).copy()
    h, w = out.shape[:2]
    masks = np.asarray(grounding.masks)
    for i, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        if m.shape != (h, w):
            continue  # a mask for another frame size: never smear it over this image
        out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(color_of(i), np.float32)
    pil = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    width = max(1, round(min(h, w) / 200))
    boxes = np.asarray(grounding.boxes).reshape(-1, 4)
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = (int(v) for v in b)
        col = color_of(i)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=col, width=width)
        if draw_labels and i < len(grounding.entities):
            label = str(grounding.entities[i])
            if i < len(grounding.scores):
                label += f" {float(grounding.scores[i]):.2f}"
            tb = draw.textbbox((0, 0), label, font=font)
            tw, th = tb[2] - tb[0], tb[3] - tb[1]
            ty = y1 - th - 4 if y1 - th - 4 >= 0 else min(y1 + 1, max(0, h - th - 4))
            tx = min(max(0, x1), max(0, w - tw - 4))
            draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=col)
            draw.text((tx + 2, ty + 2 - tb[1]), label, fill=(255, 255, 255), font=font)
    return np.asarray(pil, dtype=np.uint8)
