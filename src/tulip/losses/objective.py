"""The weighted TULIP objective: the one place where named loss terms become the total."""

from __future__ import annotations

import torch


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
