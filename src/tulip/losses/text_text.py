"""Text-text sigmoid contrastive term: captions against their LLM paraphrases and hard negatives.

There is no teacher on the text side: the caption and its generated views go through the same
(tied) text tower and text-text head (Tang et al., arXiv 2503.15485, section 3.1 and Figure 3).
Rows are the captions and the generated positive paraphrases; columns are the captions, the
positives and the generated negative captions. With the same-modality rule of
``tulip.losses.labels`` one sample's rows {caption, positive} against columns {caption, positive,
negative} are (0, +1, -1) and (+1, 0, -1), as in the paper's Figure 5; all pairs across samples
are -1. A caption without generated views has no positive: it only serves as a negative.

Without GeCo, a sample's other caption (its recaption, or the original caption when the recaption
was drawn as the contrastive caption) can serve as the positive instead: ``paired_texts`` enter
rows and columns like the paraphrases, under their own view id, so a sample with both has three
mutually positive texts.
"""

from __future__ import annotations

import torch
from torch import nn

from tulip import distributed
from tulip.losses.contrastive import SigmoidContrastiveLoss
from tulip.losses.labels import text_text_indices


class TextTextLoss(nn.Module):
    """Sigmoid loss among captions and their generated paraphrases; view ids 0 caption, 1 positive, 2 negative."""

    def __init__(self, exchange: str = "gather", chunk_size: int | None = None):
        super().__init__()
        self.contrastive = SigmoidContrastiveLoss(exchange, chunk_size)

    def forward(
        self,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        positive_texts: torch.Tensor | None = None,
        positive_owners: torch.Tensor | None = None,
        negative_texts: torch.Tensor | None = None,
        negative_owners: torch.Tensor | None = None,
        paired_texts: torch.Tensor | None = None,
        paired_owners: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"text_text_loss": scalar}``; all embeddings are L2-normalised.

        Args:
            text_features: caption embeddings [B, D] of this rank's samples.
            logit_scale: temperature t (already exponentiated); logit_bias: bias b.
            positive_texts: embeddings [K, D] of paraphrases, owned by batch positions ``positive_owners`` [K].
            negative_texts: embeddings [K', D] of hard-negative captions, owned by ``negative_owners`` [K'].
            paired_texts: embeddings [K'', D] of each owner's other caption, owned by ``paired_owners`` [K''].
        """
        batch = text_features.shape[0]
        has_positives = positive_owners is not None and positive_owners.numel() > 0
        has_negatives = negative_owners is not None and negative_owners.numel() > 0
        has_pairs = paired_owners is not None and paired_owners.numel() > 0
        row_index, col_index = text_text_indices(
            batch, distributed.get_rank() * batch,
            positive_owners if has_positives else None, negative_owners if has_negatives else None,
            device=text_features.device, paired_owners=paired_owners if has_pairs else None,
        )
        rows, cols = [text_features], [text_features]
        if has_positives:
            rows.append(positive_texts)
            cols.append(positive_texts)
        if has_pairs:
            rows.append(paired_texts)
            cols.append(paired_texts)
        if has_negatives:
            cols.append(negative_texts)
        loss = self.contrastive(
            torch.cat(rows), row_index, torch.cat(cols), col_index, logit_scale, logit_bias, same_modality=True
        )
        return {"text_text_loss": loss}
