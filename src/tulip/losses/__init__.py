"""Training objectives, one module per term; ``objective.weighted_total`` forms the weighted sum."""

from tulip.losses.contrastive import SigmoidContrastiveLoss
from tulip.losses.image_image import ImageImageLoss
from tulip.losses.image_reconstruction import ImageReconstructionLoss, patchify
from tulip.losses.image_text import ImageTextLoss
from tulip.losses.objective import LOSS_TERMS, weighted_total
from tulip.losses.sigmoid import diagonal_labels, sigmoid_loss, sigmoid_pair_loss_sum
from tulip.losses.text_reconstruction import TextReconstructionLoss
from tulip.losses.text_text import TextTextLoss

__all__ = [
    "LOSS_TERMS",
    "ImageImageLoss",
    "ImageReconstructionLoss",
    "ImageTextLoss",
    "SigmoidContrastiveLoss",
    "TextReconstructionLoss",
    "TextTextLoss",
    "diagonal_labels",
    "patchify",
    "sigmoid_loss",
    "sigmoid_pair_loss_sum",
    "weighted_total",
]
