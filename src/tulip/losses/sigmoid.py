"""Pairwise sigmoid contrastive loss with a {+1, -1, 0} label matrix.

SigLIP: Zhai et al., "Sigmoid Loss for Language Image Pre-Training", arXiv 2303.15343. For
L2-normalised x [N, D] and y [M, D], logits = t * x @ y.T + b and the loss is
-sum(log sigmoid(z * logits)) / N with z = +1 for a positive pair and -1 for a negative pair.
TULIP's generated views add z = 0, which drops a pair whose correspondence is unknown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diagonal_labels(num_rows: int, num_cols: int, offset: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
    """Return the standard SigLIP labels [num_rows, num_cols]: +1 at (i, i + offset), -1 elsewhere."""
    labels = -torch.ones(num_rows, num_cols, device=device, dtype=dtype)
    rows = torch.arange(num_rows, device=device)
    cols = rows + offset
    inside = (cols >= 0) & (cols < num_cols)
    labels[rows[inside], cols[inside]] = 1.0
    return labels


def sigmoid_pair_loss_sum(
    x: torch.Tensor,
    y: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Return the summed (not averaged) loss over all pairs of x [N, D] and y [M, D] under labels [N, M].

    ``logit_scale`` is the temperature t itself (already exponentiated). Pairs labelled 0 contribute nothing.
    """
    logits = logit_scale * x @ y.T + logit_bias  # [N, M]
    losses = -F.logsigmoid(labels * logits)
    return torch.where(labels != 0, losses, torch.zeros_like(losses)).sum()


def sigmoid_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense single-process sigmoid loss, normalised by the number of rows of x.

    Args:
        x: normalised embeddings [N, D].
        y: normalised embeddings [M, D].
        logit_scale: temperature t (exponentiated), a scalar tensor.
        logit_bias: bias b, a scalar tensor.
        labels: [N, M] in {+1, -1, 0}; defaults to +1 on the diagonal and -1 elsewhere.
    """
    if labels is None:
        labels = diagonal_labels(x.shape[0], y.shape[0], device=x.device, dtype=x.dtype)
    return sigmoid_pair_loss_sum(x, y, logit_scale, logit_bias, labels) / x.shape[0]
