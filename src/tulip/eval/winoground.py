"""Winoground text, image and group scores (Thrush et al., 2022, section 3.2).

For an example with images I0, I1 and captions C0, C1 (Ci describes Ii) and similarity s:

- text score: each image prefers its own caption, s(C0, I0) > s(C1, I0) and s(C1, I1) > s(C0, I1);
- image score: each caption prefers its own image, s(C0, I0) > s(C0, I1) and s(C1, I1) > s(C1, I0);
- group score: both hold.

The inequalities are strict, so a tie counts as a failure. Chance is 25 %, 25 % and 16.67 %.
"""

from __future__ import annotations

import torch


def winoground_correct(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return bool [E] tensors ``text``, ``image`` and ``group`` for features [E, 2, D] (index = pair member)."""
    scores = image_features @ text_features.transpose(1, 2)  # [E, 2 images, 2 captions]
    own = scores.diagonal(dim1=1, dim2=2)  # [E, 2]: s(I0, C0), s(I1, C1)
    text = (own[:, 0] > scores[:, 0, 1]) & (own[:, 1] > scores[:, 1, 0])
    image = (own[:, 0] > scores[:, 1, 0]) & (own[:, 1] > scores[:, 0, 1])
    return {"text": text, "image": image, "group": text & image}


def winoground_scores(
    image_features: torch.Tensor, text_features: torch.Tensor, tags: list[str] | None = None
) -> dict[str, float]:
    """Return ``text_score``, ``image_score`` and ``group_score``, and the three per tag as ``<score>.<tag>``."""
    correct = winoground_correct(image_features, text_features)
    metrics = {f"{name}_score": hits.float().mean().item() for name, hits in correct.items()}
    for tag in sorted(set(tags or []) - {""}):
        mask = torch.tensor([t == tag for t in tags])
        for name, hits in correct.items():
            metrics[f"{name}_score.{tag.lower()}"] = hits[mask].float().mean().item()
    return metrics
