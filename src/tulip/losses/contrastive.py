"""The sigmoid contrastive loss over the global batch, in every exchange and memory form.

Each rank has its own rows and columns with their ``ViewIndex`` entries. The loss pairs this
rank's rows with the columns of every rank, in one of two exchange forms:

- ``gather``: all-gather the columns (ragged blocks are zero-padded and labelled 0) and score the
  local rows against all of them at once;
- ``ring``: keep one column block at a time and pass it to the next rank W - 1 times, so only two
  blocks are in memory. The backward pass sends each block's gradient back around the ring.
  Works for any world size, odd ones included.

Each block is scored densely (``chunk_size`` None) or tile by tile (``tulip.losses.chunked``),
whose peak memory does not grow with the square of the batch.

Normalisation: the summed pair losses are divided by the number of rows in the global batch
(padding excluded), as SigLIP divides by the batch size. Each rank returns its partial sum times
W / rows, so the mean over ranks, which is what DDP's gradient averaging optimises, equals the dense
single-process loss, in value and in gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from tulip import distributed
from tulip.losses.chunked import tiled_sigmoid_loss_sum
from tulip.losses.labels import ViewIndex, pair_labels
from tulip.losses.sigmoid import sigmoid_pair_loss_sum

EXCHANGES = ("gather", "ring")


def _full_precision(tensor: torch.Tensor) -> torch.Tensor:
    # The loss runs in at least float32: bf16 logits of a 10-100 temperature lose the small
    # differences that rank hard negatives.
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _pad_rows(tensor: torch.Tensor, length: int) -> torch.Tensor:
    if tensor.shape[0] == length:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((length - tensor.shape[0], *tensor.shape[1:]))])


class SigmoidContrastiveLoss(nn.Module):
    """Sigmoid loss of this rank's rows against the columns of all ranks, labelled by view indices.

    Args:
        exchange: "gather" (all-gather the columns) or "ring" (pass column blocks around the ring).
        chunk_size: None scores each block densely; an integer scores it in tiles of that side.
    """

    def __init__(self, exchange: str = "gather", chunk_size: int | None = None):
        super().__init__()
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown loss exchange {exchange!r}; use one of {EXCHANGES}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        self.exchange = exchange
        self.chunk_size = chunk_size

    def _block(self, rows, row_index, cols, col_index, logit_scale, logit_bias, same_modality) -> torch.Tensor:
        if self.chunk_size is None:
            labels = pair_labels(row_index, col_index, same_modality, dtype=rows.dtype)
            return sigmoid_pair_loss_sum(rows, cols, logit_scale, logit_bias, labels)
        return tiled_sigmoid_loss_sum(
            rows, cols, logit_scale, logit_bias, row_index, col_index, same_modality, self.chunk_size
        )

    def forward(
        self,
        rows: torch.Tensor,
        row_index: ViewIndex,
        cols: torch.Tensor,
        col_index: ViewIndex,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        same_modality: bool,
    ) -> torch.Tensor:
        """Return this rank's share of the loss (a scalar) for normalised rows [n, D] and columns [m, D].

        ``logit_scale`` is the temperature t itself (already exponentiated), ``logit_bias`` the bias b.
        """
        if len(row_index) != rows.shape[0] or len(col_index) != cols.shape[0]:
            raise ValueError(
                f"index lengths ({len(row_index)}, {len(col_index)}) do not match rows {rows.shape[0]} "
                f"and columns {cols.shape[0]}"
            )
        world = distributed.get_world_size()
        num_rows = distributed.all_reduce_sum(row_index.num_labelled())
        with torch.autocast(device_type=rows.device.type, enabled=False):
            rows, cols = _full_precision(rows), _full_precision(cols)
            logit_scale, logit_bias = _full_precision(logit_scale), _full_precision(logit_bias)
            length = distributed.all_reduce_max(cols.shape[0])
            col_index = col_index.pad_to(length)
            if self.exchange == "gather":
                all_cols = distributed.all_gather_padded_with_grad(cols, length)  # [world * length, D]
                all_index = ViewIndex.unstack(distributed.all_gather_no_grad(col_index.stack()))
                total = self._block(rows, row_index, all_cols, all_index, logit_scale, logit_bias, same_modality)
            else:
                block = _pad_rows(cols, length)  # [length, D]
                total = self._block(rows, row_index, block, col_index, logit_scale, logit_bias, same_modality)
                for _ in range(world - 1):
                    block = distributed.ring_shift_with_grad(block)
                    col_index = ViewIndex.unstack(distributed.ring_shift(col_index.stack()))
                    total = total + self._block(
                        rows, row_index, block, col_index, logit_scale, logit_bias, same_modality
                    )
        if num_rows == 0:
            # No labelled rows anywhere: a zero that keeps every input in the graph, so DDP receives a
            # gradient (of zero) for each parameter.
            return total * 0.0
        return total * (world / num_rows)
