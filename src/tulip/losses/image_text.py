"""Image-text sigmoid contrastive term (SigLIP), with GeCo's generated negatives as hard negatives."""

from __future__ import annotations

import torch
from torch import nn

from tulip import distributed
from tulip.losses.contrastive import SigmoidContrastiveLoss
from tulip.losses.labels import NEGATIVE, cat_indices, generated_views, sample_views


def _append(features: list, indices: list, extra: torch.Tensor | None, owners: torch.Tensor | None, offset: int):
    if extra is None or extra.shape[0] == 0:
        return
    if owners is None or owners.shape[0] != extra.shape[0]:
        raise ValueError(f"{extra.shape[0]} generated negatives need as many owner indices, got {owners}")
    features.append(extra)
    indices.append(generated_views(owners, offset, view=1, role=NEGATIVE))


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
        offset = distributed.get_rank() * n
        rows, row_index = [image_features], [sample_views(n, offset, view=0, device=image_features.device)]
        cols, col_index = [text_features], [sample_views(n, offset, view=0, device=text_features.device)]
        _append(rows, row_index, negative_images, negative_image_owners, offset)
        _append(cols, col_index, negative_texts, negative_text_owners, offset)
        loss = self.contrastive(
            torch.cat(rows), cat_indices(row_index), torch.cat(cols), cat_indices(col_index),
            logit_scale, logit_bias, same_modality=False,
        )
        return {"image_text_loss": loss}
