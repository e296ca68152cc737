"""The training image transform: crop boxes, byte decoding at reduced scale, and parity with PIL."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode

from tulip.models.transforms import RandomCropBox, TrainTransform

MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def _photo(width: int, height: int, period: float = 100.0) -> Image.Image:
    """A smooth colour pattern (waves of ``period`` pixels), so that resizing filters can be compared pixel by pixel."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([127 + 120 * np.sin(x / period * 6.28), 127 + 120 * np.cos(y / period * 4.0),
                       127 + 120 * np.sin((x + y) / period * 2.0)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_crop_box_stays_inside_and_within_ranges():
    """Every box fits the image, covers 30-100 % of its area and keeps its aspect ratio in [3/4, 4/3]."""
    torch.manual_seed(0)
    box = RandomCropBox(scale=(0.3, 1.0))
    for _ in range(2000):
        top, left, h, w = box(300, 400)
        assert 0 <= top
        assert top + h <= 300
        assert 0 <= left
        assert left + w <= 400
        assert 0.3 * 0.95 <= h * w / 120_000 <= 1.0
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


def test_crop_box_falls_back_to_central_crop():
    """A square box of the whole area cannot fit a 2:1 image, so the centre square is taken."""
    assert RandomCropBox(scale=(1.0, 1.0), ratio=(1.0, 1.0))(50, 100) == (0, 25, 50, 50)


def test_crop_box_is_seeded_by_torch():
    box = RandomCropBox(scale=(0.5, 1.0))
    torch.manual_seed(3)
    first = [box(200, 200) for _ in range(5)]
    torch.manual_seed(3)
    assert [box(200, 200) for _ in range(5)] == first


def test_crop_box_area_matches_torchvision():
    """The mean crop area equals torchvision's RandomResizedCrop on the same image, within sampling error."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    ours = [h * w for _, _, h, w in (RandomCropBox((0.08, 1.0))(240, 320) for _ in range(4000))]
    image = torch.zeros(3, 240, 320)
    theirs = [h * w for _, _, h, w in (RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(4000))]
    assert np.mean(ours) == pytest.approx(np.mean(theirs), rel=0.05)


def test_transform_matches_pil_resize_of_the_same_box():
    """The uint8 antialiased resize agrees with PIL's bicubic filter to within 3 grey levels."""
    photo = _photo(300, 260)
    transform = TrainTransform(64, (0.5, 1.0), InterpolationMode.BICUBIC, MEAN, STD)
    torch.manual_seed(5)
    ours = transform(photo)
    torch.manual_seed(5)
    top, left, h, w = transform.box(260, 300)
    # Crop, then resize: what torchvision's RandomResizedCrop does to a PIL image.
    reference = photo.crop((left, top, left + w, top + h)).resize((64, 64), Image.Resampling.BICUBIC)
    expected = torch.from_numpy(np.array(reference)).permute(2, 0, 1).float() / 127.5 - 1.0
    assert ours.shape == (3, 64, 64)
    assert ours.dtype == torch.float32
    assert (ours - expected).abs().max() <= 3 / 127.5


def test_transform_of_bytes_equals_transform_of_pixels():
    """Without reduced-scale decoding the encoded and the decoded image give the same tensor."""
    data = _jpeg(_photo(120, 100))
    transform = TrainTransform(96, (0.9, 1.0), InterpolationMode.BICUBIC, MEAN, STD)
    torch.manual_seed(1)
    from_bytes = transform(data)
    torch.manual_seed(1)
    from_pixels = transform(Image.open(io.BytesIO(data)))
    assert torch.equal(from_bytes, from_pixels)


def test_reduced_scale_decoding_keeps_the_crop():
    """A 1024-pixel JPEG cropped to 64 pixels is decoded at 1/8 scale, yet crops the same region.

    The box is rounded to whole pixels of the reduced image, up to 4 pixels of the full one, so
    the pattern's waves are made long enough for that not to matter.
    """
    data = _jpeg(_photo(1024, 1024, period=600.0))
    transform = TrainTransform(64, (0.6, 1.0), InterpolationMode.BICUBIC, MEAN, STD)
    for seed in range(5):
        torch.manual_seed(seed)
        pixels, box = transform._decode_with_box(data)
        assert pixels.shape[-1] == 128  # decoded at 1/8 scale
        torch.manual_seed(seed)
        fast = transform(data)
        torch.manual_seed(seed)
        full = transform(Image.open(io.BytesIO(data)))
        assert (fast - full).abs().mean() < 0.05


def test_transform_takes_grayscale():
    transform = TrainTransform(32, (0.8, 1.0), InterpolationMode.BILINEAR, MEAN, STD)
    out = transform(Image.new("L", (40, 40), 255))
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, torch.ones_like(out))


def test_crop_box_draws_a_fixed_count():
    """All random numbers of one box come from a single draw: the RNG advances the same for every call."""
    box = RandomCropBox(scale=(0.08, 1.0))
    torch.manual_seed(0)
    box(10, 10_000)  # needs many tries
    after_hard = torch.rand(1)
    torch.manual_seed(0)
    box(500, 500)  # fits at once
    after_easy = torch.rand(1)
    assert torch.equal(after_hard, after_easy)
    assert math.isfinite(float(after_easy))
