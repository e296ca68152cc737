"""Embedding extraction for evaluation, and the feature files that cache frozen image features.

Every function returns L2-normalised float32 features on the CPU, whatever device encodes them.
"""

from __future__ import annotations

import io
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from tulip.data.io import atomic_write_bytes
from tulip.eval import registry
from tulip.eval.datasets import open_dataset

if TYPE_CHECKING:
    from tulip.eval.models import EvalModel

logger = logging.getLogger(__name__)

FEATURE_FORMAT = 1  # bumped when the layout of feature files changes


@dataclass
class EvalSettings:
    """Settings every task shares; each field has a key of the same name in the workflow's ``eval`` section."""

    batch_size: int = 256
    workers: int = 0  # data-loader processes
    precision: str = "fp32"  # "bf16" autocast applies on CUDA only
    device: str = "cpu"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _autocast(device: str | torch.device, precision: str):
    """bf16 autocast on CUDA only: on CPUs without bf16 units it is hundreds of times slower than fp32."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; use 'fp32' or 'bf16'")
    device_type = torch.device(device).type
    if precision == "bf16" and device_type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _encode_images(model, images: torch.Tensor, device, precision: str) -> torch.Tensor:
    with _autocast(device, precision):
        features = model.encode_image(images.to(device), normalize=True)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


@torch.no_grad()
def image_features(
    model,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    precision: str = "fp32",
    indices: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (features [N, D], labels [N]) for a dataset yielding (image tensor, label), or for its ``indices``."""
    model.eval()
    source = Subset(dataset, indices) if indices is not None else dataset
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=workers)
    features, labels = [], []
    for images, batch_labels in loader:
        features.append(_encode_images(model, images, device, precision))
        labels.append(torch.as_tensor(batch_labels))
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def text_features(
    model, tokenizer, texts: list[str], batch_size: int = 256, device: str | torch.device = "cpu", precision: str = "fp32"
) -> torch.Tensor:
    """Return text features [len(texts), D]."""
    model.eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[start : start + batch_size]).to(device)
        with _autocast(device, precision):
            features = model.encode_text(tokens, normalize=True)
        chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
    return torch.cat(chunks)


def _collate_pairs(batch):
    images = torch.stack([images for images, _ in batch])  # [B, 2, C, H, W]
    return images, [texts for _, texts in batch]


@torch.no_grad()
def pair_features(
    model, tokenizer, dataset: Dataset, batch_size: int = 64, device="cpu", workers: int = 0, precision: str = "fp32",
    text_prefix: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (image features [P, 2, D], text features [P, 2, D]) for a dataset of image pairs with two texts each.

    ``text_prefix`` is prepended to every text, as MMVP-VLM's scorer prepends "a photo of ".
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate_pairs)
    image_chunks, text_chunks = [], []
    for images, texts in loader:
        count, per_item = images.shape[:2]
        if any(len(t) != per_item for t in texts):
            raise ValueError(f"every item needs {per_item} texts, one per image")
        encoded = _encode_images(model, images.flatten(0, 1), device, precision)  # [B * 2, D]
        image_chunks.append(encoded.view(count, per_item, -1))
        flat = [text_prefix + t for item in texts for t in item]
        text_chunks.append(text_features(model, tokenizer, flat, len(flat), device, precision).view(count, per_item, -1))
    return torch.cat(image_chunks), torch.cat(text_chunks)


def sample_per_class(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Return sorted indices of a seeded random choice of up to ``per_class`` examples per class (all when None)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique(sorted=True).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members if per_class is None else members[:per_class])
    return torch.cat(chosen).sort().values


def extract_features(model: EvalModel, dataset: str, entry: dict, role: str, per_class: int | None, seed: int,
                     settings: EvalSettings) -> dict:
    """Encode the ``role`` split ("test" or "train") of a classification dataset into a feature payload.

    For the training split, ``per_class`` bounds the images encoded per class to a seeded sample
    (None encodes all of them), so a 10-shot probe on ImageNet does not pay for 1.28 million images.
    """
    data = open_dataset(entry, role, model.transform)
    targets = torch.tensor(data.targets)
    indices = sample_per_class(targets, per_class, seed).tolist() if role == "train" else None
    features, labels = image_features(model.model, data, settings.batch_size, settings.device, settings.workers,
                                      settings.precision, indices)
    expected = targets[indices] if indices is not None else targets
    if not torch.equal(labels, expected):
        raise RuntimeError(f"{dataset}/{role}: labels returned by the data loader differ from the dataset's targets")
    logger.info("%s/%s: encoded %d of %d images into [%d, %d] features", dataset, role, len(labels), len(data),
                *features.shape)
    return {
        "model": model.name, "pretrained": model.pretrained, "dataset": dataset, "role": role,
        "split": registry.dataset_split(entry, role), "features": features, "labels": labels,
        "indices": torch.tensor(indices) if indices is not None else torch.arange(len(data)),
        "num_images": len(data), "classnames": list(data.classnames), "class_ids": list(data.class_ids),
    }


def save_features(path: str | Path, payload: dict) -> None:
    """Write a feature file atomically, so an interrupted job never leaves a truncated one."""
    buffer = io.BytesIO()
    torch.save({"format": FEATURE_FORMAT, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_features(path: str | Path) -> dict:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FEATURE_FORMAT:
        raise ValueError(
            f"{path} is not a tulip feature file of format {FEATURE_FORMAT}; rerun the eval_features job that writes it"
        )
    return payload


def load_split_features(paths: list[str | Path]) -> dict[str, dict]:
    """Load feature files of one (model, dataset) by role, checking that they share the model and class list."""
    splits = {}
    for path in paths:
        payload = load_features(path)
        splits[payload["role"]] = payload
    first = next(iter(splits.values()))
    for payload in splits.values():
        for key in ("model", "pretrained", "dataset", "class_ids"):
            if payload[key] != first[key]:
                raise ValueError(f"feature files {[str(p) for p in paths]} disagree on {key}")
    return splits
