"""Image-text sigmoid contrastive term (SigLIP) over the global batch."""

from __future__ import annotations

import torch
from torch import nn

from tulip import distributed
from tulip.losses.sigmoid import diagonal_labels, sigmoid_pair_loss_sum


class ImageTextLoss(nn.Module):
    """Local image rows against the texts of every rank.

    Each rank scores its n images against all world * n texts and normalises by n. Averaging the
    per-rank losses (as DDP does with gradients) gives the dense loss over the global batch.
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"image_text_loss": scalar}`` for normalised features [n, D] on this rank."""
        all_text = distributed.all_gather_with_grad(text_features)  # [world * n, D]
        n = image_features.shape[0]
        labels = diagonal_labels(
            n, all_text.shape[0], offset=distributed.get_rank() * n, device=image_features.device,
            dtype=image_features.dtype,
        )
        loss = sigmoid_pair_loss_sum(image_features, all_text, logit_scale, logit_bias, labels) / n
        return {"image_text_loss": loss}
