"""Image-image sigmoid contrastive term: student views against EMA-teacher targets.

TULIP contrasts an image with transformed versions of itself, classic augmentations and GeCo's
generated views, with a DINOv2-style EMA teacher that receives global views only (Tang et al., arXiv
2503.15485, section 3.1). Here the loss is SigLIP's sigmoid loss between

- rows: the student's embeddings of every global crop, every local crop and the generated
  positive views, and
- columns: the teacher's embeddings of every global crop, the generated positives and the
  generated negatives,

labelled with the same-modality rule of ``tulip.losses.labels``: two different views of one
sample are +1, a view against itself (the student's and the teacher's embedding of the same crop)
is 0, a generated negative is -1 against its own sample's views, and everything across samples
is -1. Row {original, positive} x column {original, positive, negative} blocks are therefore
(0, +1, -1) and (+1, 0, -1), as in the paper's Figure 5.
"""

from __future__ import annotations

import torch
from torch import nn

from tulip import distributed
from tulip.losses.contrastive import SigmoidContrastiveLoss
from tulip.losses.labels import image_image_indices


class ImageImageLoss(nn.Module):
    """Sigmoid loss of student image views (rows) against teacher targets (columns), see the module docstring.

    Rows and columns are laid out by ``tulip.losses.labels.image_image_indices``. Every rank must
    hold the same number of samples.
    """

    def __init__(self, exchange: str = "gather", chunk_size: int | None = None):
        super().__init__()
        self.contrastive = SigmoidContrastiveLoss(exchange, chunk_size)

    def forward(
        self,
        student_global: torch.Tensor,
        teacher_global: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        student_local: torch.Tensor | None = None,
        student_positive: torch.Tensor | None = None,
        teacher_positive: torch.Tensor | None = None,
        positive_owners: torch.Tensor | None = None,
        teacher_negative: torch.Tensor | None = None,
        negative_owners: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"image_image_loss": scalar}``; all embeddings are L2-normalised.

        Args:
            student_global: student embeddings of the global crops [B, G, D].
            teacher_global: teacher embeddings of the same crops [B, G, D].
            logit_scale: temperature t (already exponentiated); logit_bias: bias b.
            student_local: student embeddings of the local crops [B, L, D].
            student_positive, teacher_positive: both embeddings of the generated positives [K, D].
            positive_owners: batch positions [K] of the samples the positives were generated from.
            teacher_negative: teacher embeddings of the generated negatives [K', D].
            negative_owners: batch positions [K'] of their samples.
        """
        batch, num_global, dim = student_global.shape
        if teacher_global.shape != student_global.shape:
            raise ValueError(
                f"teacher global crops {tuple(teacher_global.shape)} do not match the student's {tuple(student_global.shape)}"
            )
        num_local = 0 if student_local is None else student_local.shape[1]
        has_positives = positive_owners is not None and positive_owners.numel() > 0
        has_negatives = negative_owners is not None and negative_owners.numel() > 0
        if has_positives and (student_positive is None or teacher_positive is None):
            raise ValueError("generated positives need both the student's and the teacher's embeddings")
        if has_negatives and teacher_negative is None:
            raise ValueError("generated negatives need the teacher's embeddings")
        row_index, col_index = image_image_indices(
            batch, num_global, num_local, distributed.get_rank() * batch,
            positive_owners if has_positives else None, negative_owners if has_negatives else None,
            device=student_global.device,
        )
        rows = [student_global.reshape(batch * num_global, dim)]
        cols = [teacher_global.reshape(batch * num_global, dim)]
        if num_local:
            rows.append(student_local.reshape(batch * num_local, dim))
        if has_positives:
            rows.append(student_positive)
            cols.append(teacher_positive)
        if has_negatives:
            cols.append(teacher_negative)
        loss = self.contrastive(
            torch.cat(rows), row_index, torch.cat(cols), col_index, logit_scale, logit_bias, same_modality=True
        )
        return {"image_image_loss": loss}
