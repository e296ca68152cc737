"""Image-text sigmoid contrastive term (SigLIP), with GeCo's generated negatives as hard negatives."""

from __future__ import annotations

import torch
from torch import nn

from tulip import distributed
from tulip.losses.contrastive import SigmoidContrastiveLoss
from tulip.losses.labels import image_text_indices


def _with_extra(features: torch.Tensor, extra: torch.Tensor | None, owners: torch.Tensor | None) -> torch.Tensor:
    if owners is None or owners.numel() == 0:
        return features
    if extra is None or extra.shape[0] != owners.shape[0]:
        raise ValueError(f"{owners.shape[0]} generated-view owners need as many embeddings, got {extra}")
    return torch.cat([features, extra])


class ImageTextLoss(nn.Module):
    """Images of this rank against the captions of every rank, plus appended generated negatives.

    Rows are the images, then the generated negative images; columns are the captions, then the
    generated negative captions. Labels follow ``tulip.losses.labels`` (cross-modal rule): an image
    and its caption are +1, any pair with exactly one generated negative is -1, and two generated
    negatives are 0. Every rank must hold the same number of images.

    Args:
        exchange: "gather" or "ring", see ``SigmoidContrastiveLoss``.
        chunk_size: None for dense blocks, or the tile side of the tiled loss.
    """

    def __init__(self, exchange: str = "gather", chunk_size: int | None = None):
        super().__init__()
        self.contrastive = SigmoidContrastiveLoss(exchange, chunk_size)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        negative_images: torch.Tensor | None = None,
        negative_image_owners: torch.Tensor | None = None,
        negative_texts: torch.Tensor | None = None,
        negative_text_owners: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"image_text_loss": scalar}``.

        Args:
            image_features: normalised image embeddings [n, D] of this rank's samples.
            text_features: normalised caption embeddings [n, D] of the same samples.
            logit_scale: temperature t (already exponentiated); logit_bias: bias b.
            negative_images: normalised embeddings [K, D] of generated negative images.
            negative_image_owners: batch positions [K] of the samples they were generated from.
            negative_texts: normalised embeddings [K', D] of generated negative captions.
            negative_text_owners: batch positions [K'] of their samples.
        """
        n = image_features.shape[0]
        if text_features.shape[0] != n:
            raise ValueError(f"{n} images but {text_features.shape[0]} captions; image-text pairs must align")
        rows, cols = image_text_indices(
            n, distributed.get_rank() * n, negative_image_owners, negative_text_owners, device=image_features.device
        )
        loss = self.contrastive(
            _with_extra(image_features, negative_images, negative_image_owners), rows,
            _with_extra(text_features, negative_texts, negative_text_owners), cols,
            logit_scale, logit_bias, same_modality=False,
        )
        return {"image_text_loss": loss}
