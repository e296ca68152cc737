"""Multi-crop views and how the loader packs them into batches."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tulip.data.crops import MultiCropConfig, MultiCropTransform
from tulip.data.loader import SampleDecoder, collate


def _first_crop():
    return T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])


def _image(value: int = 120) -> Image.Image:
    return Image.new("RGB", (40, 30), (value, 60, 200))


def test_multicrop_shapes_and_first_crop():
    """G global crops at the model size, L local crops at the local size, crop 0 from the plain transform."""
    transform = MultiCropTransform(MultiCropConfig(global_crops=3, local_crops=4, local_size=16), _first_crop(),
                                   image_size=32, patch_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    views = transform(_image())
    assert views["global_crops"].shape == (3, 3, 32, 32)
    assert views["local_crops"].shape == (4, 3, 16, 16)
    torch.testing.assert_close(views["global_crops"][0], _first_crop()(_image()))


def test_default_local_size_is_three_sevenths_in_patches():
    assert MultiCropConfig(local_crops=2).validate(image_size=224, patch_size=16) == 96
    assert MultiCropConfig(local_crops=2).validate(image_size=32, patch_size=8) == 8


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (MultiCropConfig(global_crops=0), "global_crops"),
        (MultiCropConfig(local_crops=2, local_size=12), "multiple of the patch size"),
        (MultiCropConfig(local_crops=2, local_size=64), "at most the image size"),
    ],
)
def test_invalid_crop_settings_rejected(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg.validate(image_size=32, patch_size=8)


def _raw_sample(key: str) -> dict:
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG")
    return {"__key__": key, "jpg": buffer.getvalue(), "txt": b"a blue bag"}


def test_decoder_and_collate_pack_crops():
    """The batch's image is the first global crop, the same tensor memory, not a second copy."""
    transform = MultiCropTransform(MultiCropConfig(global_crops=2, local_crops=2, local_size=16), _first_crop(),
                                   image_size=32, patch_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    decoder = SampleDecoder(_first_crop(), lambda texts: torch.zeros(len(texts), 8, dtype=torch.long),
                            use_views=True, crop_transform=transform)
    batch = collate([decoder(_raw_sample("a")), decoder(_raw_sample("b"))])
    assert batch["global_crops"].shape == (2, 2, 3, 32, 32)
    assert batch["local_crops"].shape == (2, 2, 3, 16, 16)
    assert batch["image"].data_ptr() == batch["global_crops"].data_ptr()
    torch.testing.assert_close(batch["image"], batch["global_crops"][:, 0])
