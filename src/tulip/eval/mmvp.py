"""MMVP-VLM scoring (Tong et al., "Eyes Wide Shut?", 2024), by the rules of the benchmark's scorer.

Each statement, prefixed with "a photo of ", chooses between the two images of its pair. It picks
the first image only when that image is strictly more similar, so a tie picks the second image.

- ``pair_acc`` (the headline, the number published tables report): both statements of a pair pick
  their own image. Chance is 25 %.
- ``question_acc``: the share of single statements that pick their own image. Chance is 50 %.
- ``pair_acc.<category>``: pair accuracy within one visual-pattern category.
- ``image_pair_acc``: the converse reading, where each image picks between the two statements
  (strictly more similar first statement, otherwise the second) and both must pick their own.
  The published scorer does not report it; it is kept under its own name.

NOTE: the tie rule and the prompt prefix were written from the description of the MMVP repository's
``scripts/evaluate_vlm.py``, not checked against a copy of it. That script also assigns categories
by position (15 consecutive pairs each) where this module uses each pair's ``Type``.
"""

from __future__ import annotations

import re

import torch


def category_key(category: str) -> str:
    """Return a metric-name form of a category: "Quantity and Count" -> "quantity_and_count"."""
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


def mmvp_correct(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return per-statement and per-pair correctness for features [P, 2, D] (statement i describes image i).

    Returns ``question`` bool [P, 2], ``pair`` bool [P] and ``image_pair`` bool [P].
    """
    scores = image_features @ text_features.transpose(1, 2)  # [P, 2 images, 2 statements]
    picks_first_image = scores[:, 0, :] > scores[:, 1, :]  # [P, 2 statements]
    question = torch.stack([picks_first_image[:, 0], ~picks_first_image[:, 1]], dim=1)  # statement i -> image i
    picks_first_statement = scores[:, :, 0] > scores[:, :, 1]  # [P, 2 images]
    image_pair = picks_first_statement[:, 0] & ~picks_first_statement[:, 1]
    return {"question": question, "pair": question.all(dim=1), "image_pair": image_pair}


def mmvp_scores(image_features: torch.Tensor, text_features: torch.Tensor, categories: list[str]) -> dict[str, float]:
    """Return ``pair_acc``, ``question_acc``, ``image_pair_acc`` and ``pair_acc.<category>`` for each category."""
    if len(categories) != image_features.shape[0]:
        raise ValueError(f"{len(categories)} categories for {image_features.shape[0]} pairs")
    correct = mmvp_correct(image_features, text_features)
    metrics = {
        "pair_acc": correct["pair"].float().mean().item(),
        "question_acc": correct["question"].float().mean().item(),
        "image_pair_acc": correct["image_pair"].float().mean().item(),
    }
    for category in sorted(set(categories)):
        mask = torch.tensor([c == category for c in categories])
        metrics[f"pair_acc.{category_key(category)}"] = correct["pair"][mask].float().mean().item()
    return metrics
