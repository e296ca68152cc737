"""Winoground (Thrush et al., 2022): 400 examples of two images and two captions with the same words."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

_REQUIRED_KEYS = ("id", "caption_0", "caption_1", "image_0", "image_1")


class Winoground(Dataset):
    """Winoground from a local copy of the Hugging Face dataset repository ``facebook/winoground``.

    Layout::

        <root>/data/examples.jsonl     one JSON object per line: id, caption_0, caption_1,
                                       image_0, image_1 (image names without suffix), tag,
                                       secondary_tag, num_main_preds, collapsed_tag
        <root>/data/images/<image name>.png        the unpacked images.zip, or
        <root>/data/images.zip                     the archive as published (images/<name>.png)

    Caption ``i`` describes image ``i``. Items are (images [2, C, H, W] once transformed, the two
    captions); ``tags`` contains each example's ``collapsed_tag`` (Object, Relation or Both).
    """

    def __init__(self, root: str | Path, transform=None):
        self.root = Path(root)
        self.transform = transform
        examples_file = self.root / "data" / "examples.jsonl"
        if not examples_file.is_file():
            raise FileNotFoundError(f"{examples_file} not found; download the facebook/winoground dataset repository")
        self.examples = [json.loads(line) for line in examples_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, example in enumerate(self.examples, start=1):
            missing = [k for k in _REQUIRED_KEYS if k not in example]
            if missing:
                raise ValueError(f"{examples_file} line {number} lacks key(s) {missing}")
        self.image_dir = self.root / "data" / "images"
        self.archive = self.root / "data" / "images.zip"
        if not self.image_dir.is_dir() and not self.archive.is_file():
            raise FileNotFoundError(f"neither {self.image_dir} nor {self.archive} exists")
        self._zip: zipfile.ZipFile | None = None

    @property
    def tags(self) -> list[str]:
        return [example.get("collapsed_tag", "") for example in self.examples]

    def _open(self, name: str) -> Image.Image:
        path = self.image_dir / f"{name}.png"
        if path.is_file():
            with Image.open(path) as image:
                return image.convert("RGB")
        if self._zip is None:
            if not self.archive.is_file():
                raise FileNotFoundError(f"image {path} not found and there is no {self.archive}")
            self._zip = zipfile.ZipFile(self.archive)
        data = self._zip.read(f"images/{name}.png")
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int):
        example = self.examples[index]
        images = [self._open(example["image_0"]), self._open(example["image_1"])]
        if self.transform:
            images = torch.stack([self.transform(image) for image in images])
        return images, [example["caption_0"], example["caption_1"]]
