"""The weighted TULIP objective: the one place where named loss terms become the total.

TULIP's total is lambda_c * (L_I-T + L_I-I + L_T-T) + lambda_r * (lambda_i * L_image-recons +
lambda_t * L_text-recons) (Tang et al., arXiv 2503.15485, Eqs. 5, 8 and 9). tulip weights each
term on its own; the paper's lambdas are products of these per-term weights.
"""

from __future__ import annotations

import torch

LOSS_TERMS = (
    "image_text_loss",
    "image_image_loss",
    "text_text_loss",
    "image_reconstruction_loss",
    "text_reconstruction_loss",
)


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Return sum(weights[name] * terms[name]); every term must have a weight, so none is dropped silently."""
    missing = sorted(set(terms) - set(weights))
    if missing:
        raise KeyError(f"loss term(s) {missing} have no weight; add them to the loss weights config")
    total = None
    for name, value in terms.items():
        contribution = weights[name] * value
        total = contribution if total is None else total + contribution
    if total is None:
        raise ValueError("no loss terms to combine")
    return total
