"""Masked-patch pixel reconstruction loss (MAE's objective).

He et al., "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377: mean squared
error between predicted and true pixels of the masked patches only. With ``norm_pix_loss`` each
target patch is first standardised by its own mean and variance, which MAE reports to give better
representations.
"""

from __future__ import annotations

import torch
from torch import nn


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Split images [B, C, H, W] into patches [B, N, patch * patch * C], row-major like a ViT's patch grid."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch_size * patch_size * channels)


class ImageReconstructionLoss(nn.Module):
    """Mean squared error over the pixels of the masked patches, averaged over patches and images."""

    def __init__(self, norm_pix_loss: bool = True, eps: float = 1e-6):
        super().__init__()
        self.norm_pix_loss = norm_pix_loss
        self.eps = eps

    def forward(
        self, predictions: torch.Tensor, images: torch.Tensor, mask_ids: torch.Tensor, patch_size: int
    ) -> dict[str, torch.Tensor]:
        """Return ``{"image_reconstruction_loss": scalar}``.

        Args:
            predictions: predicted pixels of the masked patches [B, N_mask, patch * patch * C].
            images: the images that were masked [B, C, H, W], as the encoder saw them.
            mask_ids: positions of the masked patches [B, N_mask].
            patch_size: patch side in pixels.
        """
        patches = patchify(images, patch_size)  # [B, N, P]
        target = patches.gather(1, mask_ids[..., None].expand(-1, -1, patches.shape[-1]))  # [B, N_mask, P]
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + self.eps).sqrt()
        if predictions.shape != target.shape:
            raise ValueError(f"predictions {tuple(predictions.shape)} do not match the targets {tuple(target.shape)}")
        loss = (predictions.float() - target.float()).pow(2).mean()
        return {"image_reconstruction_loss": loss}
