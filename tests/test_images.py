"""Image input: every form a caller may hold becomes RGB uint8; broken input is a typed error."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from earl_ros.model.errors import InvalidImageError
from earl_ros.model.images import fit_within, load_image


def _png_bytes(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


RGB = (np.arange(6 * 8 * 3) % 251).astype(np.uint8).reshape(6, 8, 3)


def test_rgb_array_passes_through_unchanged():
    out = load_image(RGB)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    assert np.array_equal(out, RGB)


def test_path_and_bytes_and_pil_agree(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(RGB).save(p)
    for src in (p, str(p), p.read_bytes(), bytearray(p.read_bytes()), Image.fromarray(RGB)):
        assert np.array_equal(load_image(src), RGB)


def test_grayscale_is_replicated_to_three_channels():
    gray = np.array([[0, 128], [255, 7]], np.uint8)
    for src in (gray, gray[:, :, None], Image.fromarray(gray, "L")):
        out = load_image(src)
        assert out.shape == (2, 2, 3)
        assert np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)


def test_rgba_is_composited_on_black():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3], rgba[0, 1, 3] = 255, 0
    out = load_image(rgba)
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (200, 200, 200) and tuple(out[0, 1]) == (0, 0, 0)
    out_pil = load_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    assert np.array_equal(out, out_pil)


def test_palette_image_is_converted():
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = load_image(_png_bytes(pal))
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(pal.convert("RGB")))


def test_float_and_16bit_arrays_are_scaled_to_uint8():
    f = np.full((3, 3), 0.5, np.float32)
    assert load_image(f)[0, 0, 0] == 128
    u16 = np.array([[0, 65535]], np.uint16)
    assert load_image(u16)[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize(
    "src",
    [
        b"",
        b"not an image at all",
        _png_bytes(Image.fromarray(RGB))[:40],  # truncated PNG
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((5, 0), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.full((2, 2), np.nan, np.float32),
        12,
        None,
    ],
)
def test_corrupt_or_empty_inputs_raise_invalid_image(src):
    with pytest.raises(InvalidImageError) as e:
        load_image(src)
    assert e.value.code == "INVALID_IMAGE"


def test_missing_and_empty_files_raise_invalid_image(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_fit_within_never_upscales():
    img = np.zeros((100, 50, 3), np.uint8)
    out, s = fit_within(img, 200)
    assert out is img and s == 1.0
    out, s = fit_within(img, None)
    assert out is img and s == 1.0


def test_fit_within_downscales_the_longer_side():
    img = np.zeros((1000, 3000, 3), np.uint8)
    out, s = fit_within(img, 1280)
    assert out.shape == (427, 1280, 3) and out.dtype == np.uint8
    assert s == pytest.approx(1280 / 3000)
