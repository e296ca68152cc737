"""Evaluation datasets read from local folders in their published layouts.

Each reader documents the exact layout it expects; ``tulip.eval.registry`` lists the readers with
their default tasks and splits. ``open_dataset`` builds a reader from a dataset entry of the
workflow config (``reader``, ``root`` and reader options).
"""

from __future__ import annotations

from pathlib import Path

from tulip.eval.datasets.class_folder import ClassFolderDataset, ImageNetFolder, imagenet_classes
from tulip.eval.datasets.karpathy import KarpathyCaptions
from tulip.eval.datasets.mmvp import MMVPVLM, StatementPair, read_statement_pairs
from tulip.eval.datasets.rxrx1 import RxRx1
from tulip.eval.datasets.winoground import Winoground
from tulip.eval.registry import dataset_split, reader_info

__all__ = [
    "MMVPVLM",
    "ClassFolderDataset",
    "ImageNetFolder",
    "KarpathyCaptions",
    "RxRx1",
    "StatementPair",
    "Winoground",
    "imagenet_classes",
    "open_dataset",
    "read_statement_pairs",
]

_CLASSIFICATION = {"class_folder": ClassFolderDataset, "imagenet": ImageNetFolder, "rxrx1": RxRx1}
_KARPATHY_FILES = {"coco_karpathy": "dataset_coco.json", "flickr30k_karpathy": "dataset_flickr30k.json"}


def open_dataset(entry: dict, role: str = "test", transform=None):
    """Open the ``role`` split ("train" or "test") of the dataset a config entry describes."""
    reader = reader_info(entry["reader"]).name
    if not entry.get("root"):
        raise ValueError(f"dataset entry {entry} has no root; set it to the folder holding the dataset")
    root = Path(entry["root"])
    if reader in _CLASSIFICATION:
        return _CLASSIFICATION[reader](root, dataset_split(entry, role), transform)
    if reader in _KARPATHY_FILES:
        return KarpathyCaptions(root, _KARPATHY_FILES[reader], dataset_split(entry, role), transform)
    if reader == "mmvp_vlm":
        return MMVPVLM(root, transform)
    if reader == "winoground":
        return Winoground(root, transform)
    raise ValueError(f"reader {reader!r} is registered but has no implementation")
