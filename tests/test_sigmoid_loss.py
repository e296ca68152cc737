"""The sigmoid contrastive loss against open_clip's SigLipLoss and hand-computed label matrices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from tulip.losses import ImageTextLoss, diagonal_labels, sigmoid_loss


def _features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def test_matches_open_clip_siglip_forward_and_gradients():
    x0, y0 = _features(12, 16, 0), _features(12, 16, 1)
    scale, bias = torch.tensor(7.3, dtype=torch.float64), torch.tensor(-4.2, dtype=torch.float64)

    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    ours = ImageTextLoss()(x, y, scale, bias)["image_text_loss"]
    ours.backward()

    xr, yr = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    reference = SigLipLoss()(xr, yr, scale, bias)
    reference.backward()

    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(y.grad, yr.grad)


def test_zero_labels_drop_pairs():
    """A 2x2 case computed by hand: only labelled pairs contribute, divided by the number of rows."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([[1.0, -1.0], [-1.0, 0.0]])
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)
    # logits = 2 * x @ y.T - 1 = [[1, 0.2], [-1, 0.6]]
    expected = (-math.log(torch.sigmoid(torch.tensor(1.0)).item())
                - math.log(torch.sigmoid(torch.tensor(-0.2)).item())
                - math.log(torch.sigmoid(torch.tensor(1.0)).item())) / 2
    assert sigmoid_loss(x, y, scale, bias, labels).item() == pytest.approx(expected, rel=1e-6)


def test_diagonal_labels_with_offset():
    labels = diagonal_labels(2, 6, offset=2)
    expected = -torch.ones(2, 6)
    expected[0, 2] = expected[1, 3] = 1.0
    torch.testing.assert_close(labels, expected)
