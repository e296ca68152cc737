"""The sigmoid contrastive loss against open_clip's SigLipLoss and hand-computed label matrices."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss

from tulip.losses import ImageTextLoss, diagonal_labels, sigmoid_loss, sigmoid_pair_loss_sum


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


def _loss_and_grads(loss_fn, rows0, cols0, rows_index, cols_index, same_modality):
    rows, cols = rows0.clone().requires_grad_(), cols0.clone().requires_grad_()
    log_scale = torch.tensor(2.1, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.3, dtype=torch.float64, requires_grad=True)
    loss = loss_fn(rows, rows_index, cols, cols_index, log_scale.exp(), bias, same_modality)
    loss.backward()
    return [loss.detach(), rows.grad, cols.grad, log_scale.grad, bias.grad]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
@pytest.mark.parametrize("same_modality", [False, True], ids=["image-text", "text-text"])
def test_tiled_loss_equals_dense(chunk_size, same_modality):
    """Tiles of any size, including ones that do not divide the matrix, give the dense loss and gradients."""
    from tulip.losses import SigmoidContrastiveLoss
    from tulip.losses.labels import image_text_indices, text_text_indices

    owners = torch.tensor([0, 3, 4])
    if same_modality:
        rows_index, cols_index = text_text_indices(10, 0, owners, owners)
        rows0, cols0 = _features(13, 16, 5), _features(16, 16, 6)
    else:
        rows_index, cols_index = image_text_indices(10, 0, owners, owners[:2])
        rows0, cols0 = _features(13, 16, 5), _features(12, 16, 6)
    dense = _loss_and_grads(SigmoidContrastiveLoss(), rows0, cols0, rows_index, cols_index, same_modality)
    tiled = _loss_and_grads(
        SigmoidContrastiveLoss(chunk_size=chunk_size), rows0, cols0, rows_index, cols_index, same_modality
    )
    for name, got, expected in zip(["loss", "rows", "cols", "log_scale", "bias"], tiled, dense):
        torch.testing.assert_close(got, expected, msg=name)


def test_tiled_loss_without_gradients_equals_dense():
    from tulip.losses.chunked import tiled_sigmoid_loss_sum
    from tulip.losses.labels import image_text_indices, pair_labels

    rows_index, cols_index = image_text_indices(9, 0)
    x, y = _features(9, 8, 7), _features(9, 8, 8)
    scale, bias = torch.tensor(6.0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    with torch.no_grad():
        tiled = tiled_sigmoid_loss_sum(x, y, scale, bias, rows_index, cols_index, False, chunk_size=4)
    dense = sigmoid_pair_loss_sum(x, y, scale, bias, pair_labels(rows_index, cols_index, False, torch.float64))
    torch.testing.assert_close(tiled, dense)


def test_tiled_loss_rejects_bad_chunk_size():
    from tulip.losses import SigmoidContrastiveLoss

    with pytest.raises(ValueError, match="chunk_size"):
        SigmoidContrastiveLoss(chunk_size=0)


def test_contrastive_loss_runs_in_float32_under_bf16_autocast():
    """bf16 inputs and autocast still give the float32 loss of the rounded inputs."""
    from tulip.losses import SigmoidContrastiveLoss
    from tulip.losses.labels import image_text_indices

    rows_index, cols_index = image_text_indices(6, 0)
    x, y = _features(6, 8, 9).to(torch.bfloat16), _features(6, 8, 10).to(torch.bfloat16)
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = SigmoidContrastiveLoss()(x, rows_index, y, cols_index, scale, bias, False)
    expected = sigmoid_loss(x.float(), y.float(), scale, bias)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
