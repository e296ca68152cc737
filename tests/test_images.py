"""Image normalisation at download time: resize modes, reduced-scale JPEG decoding and option checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tulip.data.images import ImageOptions, looks_like_markup, normalise_image
from tulip.data.stats import SkipSample


def _encoded(size, fmt="JPEG", mode="RGB") -> bytes:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    pixels = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, 90)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "size", "upscale", "expected"),
    [
        ("none", None, False, (400, 300)),
        ("shorter", 150, False, (200, 150)),
        ("longer", 200, False, (200, 150)),
        ("shorter", 600, False, (400, 300)),  # never enlarged unless asked
        ("shorter", 600, True, (800, 600)),
    ],
)
def test_resize_modes(mode, size, upscale, expected):
    options = ImageOptions(resize_mode=mode, resize_size=size, upscale=upscale)
    image = normalise_image(_encoded((400, 300)), options)
    assert image.size == expected
    assert image.original_size == (400, 300)
    with Image.open(io.BytesIO(image.data)) as stored:
        assert stored.size == expected


def test_reduced_scale_jpeg_decode_matches_full_decode():
    """A JPEG shrunk 8x is decoded at reduced scale; the result stays close to resizing a full decode."""
    data = _encoded((1600, 1200))
    fast = normalise_image(data, ImageOptions(resize_mode="shorter", resize_size=150))
    full = Image.open(io.BytesIO(data)).convert("RGB").resize((200, 150), Image.Resampling.BICUBIC)
    stored = np.asarray(Image.open(io.BytesIO(fast.data)), dtype=np.float64)
    assert fast.size == (200, 150)
    assert np.abs(stored - np.asarray(full, dtype=np.float64)).mean() < 4.0


def test_png_source_is_stored_as_jpeg():
    image = normalise_image(_encoded((40, 30), fmt="PNG", mode="RGBA"), ImageOptions())
    assert image.original_format == "PNG"
    assert image.original_mode == "RGBA"
    assert Image.open(io.BytesIO(image.data)).format == "JPEG"


def test_format_outside_allow_list_is_skipped():
    with pytest.raises(SkipSample) as raised:
        normalise_image(_encoded((40, 30), fmt="PNG"), ImageOptions(formats=("JPEG",)))
    assert raised.value.reason == "unsupported_format"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(resize_mode="shortest"), "resize_mode 'shortest' is invalid"),
        (dict(resize_mode="shorter"), "needs a positive resize_size"),
        (dict(jpeg_quality=0), "jpeg_quality"),
        (dict(background=(0, 0)), "background"),
        (dict(formats=("JPEG", "JPG")), "unknown image format"),
    ],
)
def test_image_options_name_invalid_values(options, message):
    with pytest.raises(ValueError, match=message):
        ImageOptions(**options)


def test_markup_detection():
    assert looks_like_markup(b"  \n<!DOCTYPE html><html>")
    assert looks_like_markup(b'{"error": "not found"}')
    assert not looks_like_markup(_encoded((8, 8)))
