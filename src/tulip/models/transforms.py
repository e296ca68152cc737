"""Image preprocessing for training and evaluation, built from a model config."""

from __future__ import annotations

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from tulip.models.config import ModelConfig

INTERPOLATION_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def _to_rgb(image):
    return image.convert("RGB") if image.mode != "RGB" else image


def image_transform(cfg: ModelConfig, train: bool, crop_scale: tuple[float, float] = (0.8, 1.0)) -> T.Compose:
    """Return the PIL -> tensor [3, S, S] pipeline: a random resized crop for training, a resize for evaluation."""
    size = cfg.vision.image_size
    interpolation = INTERPOLATION_MODES[cfg.interpolation]
    normalize = T.Normalize(mean=cfg.image_mean, std=cfg.image_std)
    if train:
        steps = [_to_rgb, T.RandomResizedCrop(size, scale=crop_scale, interpolation=interpolation)]
    elif cfg.resize_mode == "squash":
        steps = [_to_rgb, T.Resize((size, size), interpolation=interpolation)]
    elif cfg.resize_mode == "shortest":
        steps = [_to_rgb, T.Resize(size, interpolation=interpolation), T.CenterCrop(size)]
    else:
        raise ValueError(f"unknown resize_mode {cfg.resize_mode!r}; use 'squash' or 'shortest'")
    return T.Compose([*steps, T.ToTensor(), normalize])
