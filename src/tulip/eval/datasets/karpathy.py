"""Image-caption retrieval sets in Karpathy's split files: MS-COCO (5k test) and Flickr30k (1k test).

Karpathy and Fei-Fei (2015) published ``dataset_coco.json`` and ``dataset_flickr30k.json``, which
fix the train/val/test images that retrieval results in CLIP, SigLIP and TULIP are reported on.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

# Image folder under the root for each split file, used when an entry has no "filepath" of its own.
DEFAULT_IMAGE_DIRS = {"dataset_coco.json": "", "dataset_flickr30k.json": "flickr30k-images"}


class KarpathyCaptions(Dataset):
    """Images of one split with all of their captions, read from a Karpathy split file.

    Layout (MS-COCO)::

        <root>/dataset_coco.json
        <root>/val2014/COCO_val2014_000000391895.jpg    <filepath>/<filename> from each entry

    Layout (Flickr30k)::

        <root>/dataset_flickr30k.json
        <root>/flickr30k-images/1000092795.jpg          entries have no filepath

    The file contains ``{"images": [...]}``, each entry with ``filename``, ``split`` (train, val, test
    or, for COCO, restval), optionally ``filepath``, and ``sentences``, a list of ``{"raw": caption}``.
    An image may have more than five captions (some COCO test images have six or seven); all are
    kept. Items are (image, list of captions); ``captions`` and ``caption_image`` give every caption
    with the index of its image, in file order.
    """

    def __init__(self, root: str | Path, annotation: str, split: str = "test", transform=None):
        self.root = Path(root)
        self.transform = transform
        path = self.root / annotation
        if not path.is_file():
            raise FileNotFoundError(f"Karpathy split file {path} not found")
        entries = json.loads(path.read_text(encoding="utf-8")).get("images")
        if not isinstance(entries, list):
            raise ValueError(f"{path} has no 'images' list; is it a Karpathy split file?")
        default_dir = DEFAULT_IMAGE_DIRS.get(annotation, "")

        self.images: list[Path] = []
        self.captions: list[str] = []
        self.caption_image: list[int] = []
        for entry in entries:
            if entry.get("split") != split:
                continue
            sentences = [s["raw"].strip() for s in entry.get("sentences", []) if s.get("raw", "").strip()]
            if not sentences:
                raise ValueError(f"{path}: image {entry.get('filename')!r} has no captions")
            self.caption_image += [len(self.images)] * len(sentences)
            self.captions += sentences
            self.images.append(self.root / entry.get("filepath", default_dir) / entry["filename"])

        if not self.images:
            splits = sorted({e.get("split") for e in entries})
            raise ValueError(f"{path} has no images in split {split!r}; its splits are {splits}")
        self._by_image: list[list[str]] = [[] for _ in self.images]
        for caption, image_index in zip(self.captions, self.caption_image):
            self._by_image[image_index].append(caption)

        absent = [p for p in self.images if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} image(s) of split {split!r} are missing, e.g. {absent[0]}")

    def captions_of(self, index: int) -> list[str]:
        return list(self._by_image[index])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        with Image.open(self.images[index]) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), self.captions_of(index)
