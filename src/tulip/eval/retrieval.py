"""Zero-shot image-text retrieval: Recall@K in both directions, with several captions per image.

Names follow CLIP_benchmark: ``image_retrieval_recall@K`` ranks images for each caption (text to
image) and ``text_retrieval_recall@K`` ranks captions for each image (image to text), where an
image is a hit when any one of its captions is in the top K. Items with equal similarity rank in
index order, so the result does not depend on the backend's sort.
"""

from __future__ import annotations

import torch


def first_positive_rank(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Return, per query, the 0-based rank of its best-ranked positive.

    Args:
        scores: similarities [Q, G] of Q queries against G gallery items.
        positives: bool [Q, G], True where the gallery item matches the query.

    Returns:
        long [Q]; rank 0 means a positive is ranked first. Among equal scores the lower gallery
        index ranks first.
    """
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive gallery item")
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [Q, G]
    hits = positives.gather(1, order)  # [Q, G], hits in rank order
    return hits.to(torch.uint8).argmax(dim=1)  # first True


def retrieval_ranks(
    image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (rank of each caption's image [T], rank of each image's best caption [I]).

    Args:
        image_features: normalised [I, D].
        text_features: normalised [T, D].
        text_image: long [T], the index of the image each caption describes.
        chunk: queries scored at once, which bounds memory at ``chunk`` x max(I, T) scores.
    """
    num_images = image_features.shape[0]
    if text_image.numel() and (text_image.min() < 0 or text_image.max() >= num_images):
        raise ValueError(f"caption image indices must lie in [0, {num_images})")
    missing = torch.bincount(text_image, minlength=num_images) == 0
    if bool(missing.any()):
        raise ValueError(f"{int(missing.sum())} image(s) have no caption, e.g. image {int(missing.nonzero()[0])}")

    text_ranks = []
    for start in range(0, text_features.shape[0], chunk):
        scores = text_features[start : start + chunk] @ image_features.T  # [t, I]
        targets = text_image[start : start + chunk]
        positives = torch.zeros_like(scores, dtype=torch.bool)
        positives[torch.arange(len(targets)), targets] = True
        text_ranks.append(first_positive_rank(scores, positives))

    image_ranks = []
    for start in range(0, num_images, chunk):
        rows = torch.arange(start, min(start + chunk, num_images))
        scores = image_features[rows] @ text_features.T  # [i, T]
        positives = text_image[None, :] == rows[:, None]  # [i, T]
        image_ranks.append(first_positive_rank(scores, positives))
    return torch.cat(text_ranks), torch.cat(image_ranks)


def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor, recall_k: list[int]
) -> dict[str, float]:
    """Return Recall@K for every K in ``recall_k``, in both directions."""
    text_ranks, image_ranks = retrieval_ranks(image_features, text_features, text_image)
    metrics = {}
    for k in recall_k:
        metrics[f"image_retrieval_recall@{k}"] = (text_ranks < k).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (image_ranks < k).float().mean().item()
    return metrics
