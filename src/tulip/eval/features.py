"""Embedding extraction for evaluation: images through the image tower, prompts through the text tower."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def image_features(model, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu", workers: int = 0):
    """Return (normalised features [N, D], labels [N]) for a dataset yielding (image tensor, label)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    features, labels = [], []
    for images, batch_labels in loader:
        features.append(model.encode_image(images.to(device), normalize=True).float().cpu())
        labels.append(torch.as_tensor(batch_labels))
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def text_features(model, tokenizer, texts: list[str], batch_size: int = 256, device: str | torch.device = "cpu"):
    """Return normalised text features [len(texts), D]."""
    model.eval()
    chunks = [
        model.encode_text(tokenizer(texts[i : i + batch_size]).to(device), normalize=True).float().cpu()
        for i in range(0, len(texts), batch_size)
    ]
    return torch.cat(chunks)
