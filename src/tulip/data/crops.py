"""Multi-crop views of one training image: global crops for both towers' objectives, local crops for the student.

DINO-style multi-crop (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
arXiv 2104.14294): a few global crops covering much of the image at the model's resolution and
several small local crops at a lower resolution, with flips, colour jitter, greyscale, blur and
solarisation. The first global crop is different: the image-text term reads it, so it gets the
plain training transform (a random resized crop, no colour changes), and a caption that
names a colour still describes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import ImageFilter
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode


@dataclass
class MultiCropConfig:
    """Number, size and augmentation of the crops; sizes in pixels, scales as fractions of the image area."""

    global_crops: int = 2  # including the image-text crop; 1 gives the image-text crop alone
    local_crops: int = 0
    local_size: int | None = None  # None: 3/7 of the model's image size (96 px for 224), in whole patches
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    flip_p: float = 0.5
    color_jitter: float = 0.4  # brightness, contrast and saturation strength; hue gets a quarter of it
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.2  # extra global crops only, as in DINO's second global view

    def validate(self, image_size: int, patch_size: int) -> int:
        """Check the settings against the model and return the local crop size in pixels."""
        if self.global_crops < 1:
            raise ValueError(f"crops.global_crops must be at least 1 (the image-text crop), got {self.global_crops}")
        if self.local_crops < 0:
            raise ValueError(f"crops.local_crops must be 0 or more, got {self.local_crops}")
        size = self.local_size or max(patch_size, (image_size * 3 // 7) // patch_size * patch_size)
        if size % patch_size or size > image_size:
            raise ValueError(
                f"crops.local_size {size} must be a multiple of the patch size {patch_size} and at most the "
                f"image size {image_size}"
            )
        return size


class RandomGaussianBlur:
    """Blur a PIL image with probability ``p`` and a radius drawn uniformly from ``radius`` (pixels).

    PIL's blur runs in C on the image itself. torchvision's ``GaussianBlur`` converts a PIL image to
    a tensor and back, which took 14 ms per 32-px crop on the 2-core development machine.
    """

    def __init__(self, p: float, radius: tuple[float, float] = (0.1, 2.0)):
        self.p = p
        self.radius = radius

    def __call__(self, image):
        if random.random() >= self.p:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))


def _augment(size: int, scale: tuple[float, float], cfg: MultiCropConfig, interpolation, normalize, solarize: bool):
    jitter = T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter, cfg.color_jitter / 4)
    steps = [
        T.RandomResizedCrop(size, scale=scale, interpolation=interpolation),
        T.RandomHorizontalFlip(cfg.flip_p),
        T.RandomApply([jitter], p=cfg.color_jitter_p),
        T.RandomGrayscale(cfg.grayscale_p),
        RandomGaussianBlur(cfg.blur_p),
    ]
    if solarize:
        steps.append(T.RandomSolarize(128, p=cfg.solarize_p))
    return T.Compose([*steps, T.ToTensor(), normalize])


class MultiCropTransform:
    """PIL image -> ``{"global_crops": [G, C, S, S], "local_crops": [L, C, s, s]}`` (the second only when L > 0)."""

    def __init__(
        self,
        cfg: MultiCropConfig,
        first_crop: Callable,
        image_size: int,
        patch_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        interpolation: InterpolationMode = InterpolationMode.BICUBIC,
    ):
        self.cfg = cfg
        self.local_size = cfg.validate(image_size, patch_size)
        normalize = T.Normalize(mean=mean, std=std)
        self.first_crop = first_crop
        self.global_crop = _augment(image_size, cfg.global_scale, cfg, interpolation, normalize, solarize=True)
        self.local_crop = _augment(self.local_size, cfg.local_scale, cfg, interpolation, normalize, solarize=False)

    def __call__(self, image) -> dict[str, torch.Tensor]:
        image = image.convert("RGB") if image.mode != "RGB" else image
        crops = [self.first_crop(image)] + [self.global_crop(image) for _ in range(self.cfg.global_crops - 1)]
        views = {"global_crops": torch.stack(crops)}
        if self.cfg.local_crops:
            views["local_crops"] = torch.stack([self.local_crop(image) for _ in range(self.cfg.local_crops)])
        return views
