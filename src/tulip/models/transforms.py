"""Image preprocessing for training and evaluation, built from a model config."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from tulip.models.config import ModelConfig

INTERPOLATION_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def _to_rgb(image):
    return image.convert("RGB") if image.mode != "RGB" else image


def _uint8_chw(image) -> torch.Tensor:
    """PIL image in any mode, or uint8 tensor [C, H, W] with 1 or 3 channels -> uint8 RGB tensor [3, H, W]."""
    if isinstance(image, torch.Tensor):
        return image.expand(3, -1, -1) if image.shape[-3] == 1 else image
    return torch.from_numpy(np.array(_to_rgb(image))).permute(2, 0, 1)  # HWC pixels seen as CHW, no copy


class RandomCropBox:
    """Crop boxes drawn as torchvision's ``RandomResizedCrop`` draws them, from the torch RNG.

    The area is uniform in ``scale`` of the image and the log aspect ratio uniform in log ``ratio``.
    The first of ``tries`` boxes that fits wins, else a central crop of the clamped aspect ratio.
    All random numbers of a call are drawn at once, because separate small tensor calls cost more
    than a resize of a small image.
    """

    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10):
        self.scale, self.ratio, self.tries = scale, ratio, tries
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __call__(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Return (top, left, height, width) of a box inside a ``height`` x ``width`` image."""
        draws = torch.rand(2 * self.tries + 2, dtype=torch.float64).tolist()
        low, high = self.scale
        for attempt in range(self.tries):
            area = height * width * (low + draws[2 * attempt] * (high - low))
            aspect = math.exp(self.log_ratio[0] + draws[2 * attempt + 1] * (self.log_ratio[1] - self.log_ratio[0]))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(draws[-2] * (height - h + 1)), int(draws[-1] * (width - w + 1)), h, w
        if width / height < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w


class TrainTransform:
    """Random resized crop to a normalised float tensor [3, S, S].

    Takes a PIL image, a uint8 tensor [C, H, W], or encoded image bytes (``accepts_bytes``). Crops
    are resized as uint8 pixels with antialiasing, which matches PIL's filters at a fraction of
    their cost. Bytes are decoded after the crop box is drawn. When the box is at least twice the
    output size on both sides, a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT
    scaling. That skips part of the decoding work and still leaves more pixels than the output has.
    """

    accepts_bytes = True

    def __init__(self, size: int, scale: tuple[float, float], interpolation: InterpolationMode,
                 mean: list[float], std: list[float]):
        self.size, self.interpolation = size, interpolation
        self.box = RandomCropBox(scale)
        std_tensor = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std_tensor)  # (x / 255 - mean) / std == x * scale + shift
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) / std_tensor

    def _reduction(self, box_height: int, box_width: int) -> int:
        for factor in (8, 4, 2):
            if min(box_height, box_width) >= factor * self.size:
                return factor
        return 1

    def _decode_with_box(self, data: bytes) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            top, left, h, w = self.box(height, width)
            factor = self._reduction(h, w)
            if factor > 1 and image.format == "JPEG":
                image.draft("RGB", (width // factor, height // factor))
            pixels = _uint8_chw(image)
        scale_y, scale_x = pixels.shape[-2] / height, pixels.shape[-1] / width
        box = (int(top * scale_y), int(left * scale_x), max(1, round(h * scale_y)), max(1, round(w * scale_x)))
        return pixels, box

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, (bytes, bytearray, memoryview)):
            pixels, box = self._decode_with_box(bytes(image))
        else:
            pixels = _uint8_chw(image)
            box = self.box(pixels.shape[-2], pixels.shape[-1])
        crop = F.resized_crop(pixels, *box, [self.size, self.size], interpolation=self.interpolation, antialias=True)
        return crop.to(torch.float32).mul_(self.scale).add_(self.shift)  # [3, S, S]


def image_transform(cfg: ModelConfig, train: bool, crop_scale: tuple[float, float] = (0.8, 1.0)):
    """Return the image -> tensor [3, S, S] pipeline: a random resized crop for training, a resize for evaluation.

    Evaluation takes PIL images; training also takes uint8 tensors and encoded bytes (see
    :class:`TrainTransform`).
    """
    size = cfg.vision.image_size
    interpolation = INTERPOLATION_MODES[cfg.interpolation]
    if train:
        return TrainTransform(size, crop_scale, interpolation, cfg.image_mean, cfg.image_std)
    normalize = T.Normalize(mean=cfg.image_mean, std=cfg.image_std)
    if cfg.resize_mode == "squash":
        steps = [_to_rgb, T.Resize((size, size), interpolation=interpolation)]
    elif cfg.resize_mode == "shortest":
        steps = [_to_rgb, T.Resize(size, interpolation=interpolation), T.CenterCrop(size)]
    else:
        raise ValueError(f"unknown resize_mode {cfg.resize_mode!r}; use 'squash' or 'shortest'")
    return T.Compose([*steps, T.ToTensor(), normalize])
