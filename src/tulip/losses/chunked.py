"""Tiled sigmoid contrastive loss whose peak memory does not grow with the square of the batch.

The dense loss materialises the [N, M] logits and, for backward, several [N, M] intermediates.
This form walks the matrix in tiles of at most ``chunk_size`` x ``chunk_size``. For each tile it
builds the labels from the two ``ViewIndex`` slices, forms the logits and adds up the loss. When a
gradient is needed, it folds the tile's gradient into the gradients of x, y, t and b right away.
Only tile-sized temporaries and the [N, D] and [M, D] gradients are ever held, so peak memory is
O(chunk_size^2 + (N + M) * D). Backward then only scales the stored gradients by the incoming
gradient, so no tile is computed twice.

For a pair with logit l = t * <x, y> + b and label z, the loss is -log sigmoid(z * l) and its
derivative is g = dloss/dl = -z * sigmoid(-z * l), which is 0 when z = 0. Hence
dx = t * G @ y, dy = t * G^T @ x, dt = sum(G * (x @ y^T)) and db = sum(G).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tulip.losses.labels import ViewIndex, pair_labels


class _TiledSigmoidLoss(torch.autograd.Function):
    """Summed sigmoid loss over all labelled pairs; gradients are accumulated during the forward pass."""

    @staticmethod
    def forward(ctx, x, y, logit_scale, logit_bias, rows, cols, same_modality, chunk_size):
        needs_grad = any(ctx.needs_input_grad[:4])
        scale, bias = float(logit_scale), float(logit_bias)
        total = x.new_zeros(())
        grad_x = torch.zeros_like(x) if needs_grad else None
        grad_y = torch.zeros_like(y) if needs_grad else None
        grad_scale = x.new_zeros(())
        grad_bias = x.new_zeros(())
        for i in range(0, x.shape[0], chunk_size):
            x_tile = x[i : i + chunk_size]
            rows_tile = rows[i : i + chunk_size]
            for j in range(0, y.shape[0], chunk_size):
                y_tile = y[j : j + chunk_size]
                labels = pair_labels(rows_tile, cols[j : j + chunk_size], same_modality, dtype=x.dtype)
                similarity = x_tile @ y_tile.T  # [c_x, c_y]
                signed = similarity.mul(scale).add_(bias).mul_(labels)  # z * (t * <x, y> + b)
                # logsigmoid(0) is not 0, so pairs labelled 0 are removed by weighting with |z|.
                total -= torch.dot(F.logsigmoid(signed).view(-1), labels.abs().view(-1))
                if needs_grad:
                    grad_logits = torch.sigmoid(signed.neg_()).mul_(labels).neg_()  # -z * sigmoid(-z * l); 0 if z = 0
                    grad_scale += torch.dot(grad_logits.view(-1), similarity.view(-1))
                    grad_bias += grad_logits.sum()
                    grad_x[i : i + chunk_size].addmm_(grad_logits, y_tile)
                    grad_y[j : j + chunk_size].addmm_(grad_logits.T, x_tile)
        if needs_grad:
            grad_x.mul_(scale)
            grad_y.mul_(scale)
            ctx.save_for_backward(grad_x, grad_y, grad_scale, grad_bias)
        ctx.scale_dtype, ctx.bias_dtype = logit_scale.dtype, logit_bias.dtype
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        grad_x, grad_y, grad_scale, grad_bias = ctx.saved_tensors
        # Scaled in place: the stored gradients are used once, and a copy of each would double
        # the linear memory this form keeps.
        return (
            grad_x.mul_(grad_output),
            grad_y.mul_(grad_output),
            (grad_scale * grad_output).to(ctx.scale_dtype),
            (grad_bias * grad_output).to(ctx.bias_dtype),
            None,
            None,
            None,
            None,
        )


def tiled_sigmoid_loss_sum(
    x: torch.Tensor,
    y: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    rows: ViewIndex,
    cols: ViewIndex,
    same_modality: bool,
    chunk_size: int,
) -> torch.Tensor:
    """Return the summed loss over the labelled pairs of x [N, D] and y [M, D], tile by tile.

    Args:
        x: normalised row embeddings [N, D].
        y: normalised column embeddings [M, D].
        logit_scale: temperature t (already exponentiated), a scalar tensor.
        logit_bias: bias b, a scalar tensor.
        rows: index of the rows, length N.
        cols: index of the columns, length M.
        same_modality: label rule, see ``tulip.losses.labels.pair_labels``.
        chunk_size: tile side; peak memory is O(chunk_size^2) besides the gradients.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    if len(rows) != x.shape[0] or len(cols) != y.shape[0]:
        raise ValueError(
            f"index lengths ({len(rows)}, {len(cols)}) do not match the embeddings ({x.shape[0]}, {y.shape[0]})"
        )
    return _TiledSigmoidLoss.apply(x, y, logit_scale, logit_bias, rows, cols, same_modality, chunk_size)
