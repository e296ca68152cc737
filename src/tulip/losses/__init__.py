"""Training objectives, one module per term."""

from tulip.losses.image_text import ImageTextLoss
from tulip.losses.objective import weighted_total
from tulip.losses.sigmoid import diagonal_labels, sigmoid_loss, sigmoid_pair_loss_sum

__all__ = ["ImageTextLoss", "diagonal_labels", "sigmoid_loss", "sigmoid_pair_loss_sum", "weighted_total"]
