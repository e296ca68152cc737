"""Next-token cross-entropy of the caption decoder, averaged over the caption tokens of the global batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tulip import distributed


class TextReconstructionLoss(nn.Module):
    """Cross-entropy summed over this rank's tokens and divided by the global token count / world size.

    Captions differ in length, so ranks hold different token counts. Scaling each rank's sum by
    W / (global count) makes the mean over ranks, which DDP optimises, the mean over all tokens.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{"text_reconstruction_loss": scalar}`` for logits [T, vocab] and target ids [T]."""
        total_tokens = distributed.all_reduce_sum(targets.numel())
        summed = F.cross_entropy(logits.float(), targets, reduction="sum")
        if total_tokens == 0:
            return {"text_reconstruction_loss": summed * 0.0}
        return {"text_reconstruction_loss": summed * (distributed.get_world_size() / total_tokens)}
