"""Label matrices in {+1, -1, 0} for the sigmoid contrastive terms, including GeCo's generated views.

Every embedding that enters a contrastive term carries a ``ViewIndex`` entry: the global id of the
batch sample it comes from, which view of that sample it is, and its role (original, generated
positive, generated negative, or padding). The label of a pair is a function of the two entries
alone, so any block of the global matrix, including blocks that pair this rank's rows with another
rank's columns, is built from the indices without materialising the rest.

The rules follow Figure 5 of TULIP (Tang et al., arXiv 2503.15485):

- Image-text (cross-modal): an original image and an original caption of the same sample are a
  positive (+1); pairs from different samples are negatives (-1). A generated negative is -1
  against every original, including its own sample's, and 0 against another generated negative,
  whose correspondence is unknown. For one sample with rows {image, negative image} and columns
  {caption, negative caption} this gives [[+1, -1], [-1, 0]].
- Image-image and text-text (same modality): two different views of the same sample are a
  positive (+1), and a view paired with itself is dropped (0). A generated negative is -1 against
  the views of its own sample, and every pair across samples is -1. Rows {original, positive} and
  columns {original, positive, negative} of one sample give (0, +1, -1) and (+1, 0, -1).

Padding entries, which fill ragged blocks up to a common size across ranks, are 0 against
everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

ORIGINAL = 0
POSITIVE = 1
NEGATIVE = 2
PADDING = 3


@dataclass(frozen=True)
class ViewIndex:
    """Per-embedding identity used to label pairs: three integer tensors of the same length [n].

    ``sample`` is the global id of the batch sample (rank * local batch + local position).
    ``view`` distinguishes the views of one sample (two crops of one image are different views).
    ``role`` is ORIGINAL, POSITIVE, NEGATIVE or PADDING.
    """

    sample: torch.Tensor
    view: torch.Tensor
    role: torch.Tensor

    def __post_init__(self):
        if not (self.sample.shape == self.view.shape == self.role.shape) or self.sample.ndim != 1:
            raise ValueError(
                f"ViewIndex fields must be 1-D tensors of one length, got sample {tuple(self.sample.shape)}, "
                f"view {tuple(self.view.shape)} and role {tuple(self.role.shape)}"
            )

    def __len__(self) -> int:
        return self.sample.shape[0]

    @property
    def device(self) -> torch.device:
        return self.sample.device

    def num_labelled(self) -> int:
        """Number of entries that are not padding."""
        return int((self.role != PADDING).sum())

    def stack(self) -> torch.Tensor:
        """Pack the index into one [n, 3] long tensor, for sending through a collective."""
        return torch.stack([self.sample, self.view, self.role], dim=1)

    @classmethod
    def unstack(cls, packed: torch.Tensor) -> "ViewIndex":
        """Inverse of ``stack``: [n, 3] -> ViewIndex."""
        return cls(packed[:, 0], packed[:, 1], packed[:, 2])

    def __getitem__(self, item: slice) -> "ViewIndex":
        return ViewIndex(self.sample[item], self.view[item], self.role[item])

    def pad_to(self, length: int) -> "ViewIndex":
        """Append PADDING entries up to ``length``."""
        extra = length - len(self)
        if extra < 0:
            raise ValueError(f"cannot pad an index of length {len(self)} down to {length}")
        if extra == 0:
            return self
        fill = torch.full((extra,), -1, dtype=torch.long, device=self.device)
        role = torch.full((extra,), PADDING, dtype=torch.long, device=self.device)
        return ViewIndex(torch.cat([self.sample, fill]), torch.cat([self.view, fill]), torch.cat([self.role, role]))


def cat_indices(indices: Sequence[ViewIndex]) -> ViewIndex:
    """Concatenate indices in order, matching a ``torch.cat`` of their embeddings."""
    if not indices:
        raise ValueError("cat_indices needs at least one index")
    return ViewIndex(
        torch.cat([i.sample for i in indices]),
        torch.cat([i.view for i in indices]),
        torch.cat([i.role for i in indices]),
    )


def sample_views(
    num_samples: int, sample_offset: int, view: int, role: int = ORIGINAL, device: torch.device | str | None = None
) -> ViewIndex:
    """Index of one view of every local sample, [num_samples]: samples ``offset .. offset + n - 1``."""
    sample = torch.arange(sample_offset, sample_offset + num_samples, dtype=torch.long, device=device)
    return ViewIndex(sample, torch.full_like(sample, view), torch.full_like(sample, role))


def sample_view_grid(
    num_samples: int, first_view: int, num_views: int, sample_offset: int, device: torch.device | str | None = None
) -> ViewIndex:
    """Index of ``num_views`` original views per sample, laid out sample-major like a [B, V, D] tensor flattened."""
    sample = torch.arange(sample_offset, sample_offset + num_samples, dtype=torch.long, device=device)
    view = torch.arange(first_view, first_view + num_views, dtype=torch.long, device=device)
    return ViewIndex(
        sample.repeat_interleave(num_views),
        view.repeat(num_samples),
        torch.full((num_samples * num_views,), ORIGINAL, dtype=torch.long, device=device),
    )


def generated_views(
    owners: torch.Tensor, sample_offset: int, view: int, role: int
) -> ViewIndex:
    """Index of generated views [K] whose local owners (batch positions) are ``owners`` [K]."""
    if role not in (POSITIVE, NEGATIVE):
        raise ValueError(f"a generated view is POSITIVE ({POSITIVE}) or NEGATIVE ({NEGATIVE}), got role {role}")
    sample = owners.to(torch.long) + sample_offset
    return ViewIndex(sample, torch.full_like(sample, view), torch.full_like(sample, role))


def pair_labels(
    rows: ViewIndex, cols: ViewIndex, same_modality: bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Return the label matrix [len(rows), len(cols)] in {+1, -1, 0} for the rules in the module docstring."""
    same_sample = rows.sample[:, None] == cols.sample[None, :]
    row_negative = (rows.role == NEGATIVE)[:, None]
    col_negative = (cols.role == NEGATIVE)[None, :]
    positive = same_sample & ~row_negative & ~col_negative
    dropped = row_negative & col_negative
    if same_modality:
        dropped = dropped | (same_sample & (rows.view[:, None] == cols.view[None, :]))
    dropped = dropped | (rows.role == PADDING)[:, None] | (cols.role == PADDING)[None, :]
    labels = torch.where(positive, 1.0, -1.0).to(dtype)
    return labels.masked_fill(dropped, 0.0)


def _has(owners: torch.Tensor | None) -> bool:
    return owners is not None and owners.numel() > 0


def image_text_indices(
    batch_size: int,
    sample_offset: int,
    negative_image_owners: torch.Tensor | None = None,
    negative_text_owners: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[ViewIndex, ViewIndex]:
    """Return (rows, columns) of the image-text matrix on one rank.

    Rows: the batch's images, then the generated negative images [K]. Columns: the captions, then the
    generated negative captions [K']. Owners are local batch positions.
    """
    rows = [sample_views(batch_size, sample_offset, view=0, device=device)]
    cols = [sample_views(batch_size, sample_offset, view=0, device=device)]
    if _has(negative_image_owners):
        rows.append(generated_views(negative_image_owners, sample_offset, view=1, role=NEGATIVE))
    if _has(negative_text_owners):
        cols.append(generated_views(negative_text_owners, sample_offset, view=1, role=NEGATIVE))
    return cat_indices(rows), cat_indices(cols)


def image_image_indices(
    batch_size: int,
    num_global: int,
    num_local: int,
    sample_offset: int,
    positive_owners: torch.Tensor | None = None,
    negative_owners: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[ViewIndex, ViewIndex]:
    """Return (rows, columns) of the image-image matrix on one rank.

    Rows (student): global crops [B * G] sample-major, local crops [B * L] sample-major, then the
    generated positives [K]. Columns (teacher): global crops [B * G], generated positives [K], then
    generated negatives [K']. View ids: global crops 0 .. G-1, local crops G .. G+L-1, the generated
    positive G+L and the generated negative G+L+1, so a crop's student and teacher embeddings form
    a self-pair (label 0).
    """
    positive_view, negative_view = num_global + num_local, num_global + num_local + 1
    rows = [sample_view_grid(batch_size, 0, num_global, sample_offset, device)]
    cols = [sample_view_grid(batch_size, 0, num_global, sample_offset, device)]
    if num_local:
        rows.append(sample_view_grid(batch_size, num_global, num_local, sample_offset, device))
    if _has(positive_owners):
        positives = generated_views(positive_owners, sample_offset, positive_view, POSITIVE)
        rows.append(positives)
        cols.append(positives)
    if _has(negative_owners):
        cols.append(generated_views(negative_owners, sample_offset, negative_view, NEGATIVE))
    return cat_indices(rows), cat_indices(cols)


def text_text_indices(
    batch_size: int,
    sample_offset: int,
    positive_owners: torch.Tensor | None = None,
    negative_owners: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    paired_owners: torch.Tensor | None = None,
) -> tuple[ViewIndex, ViewIndex]:
    """Return (rows, columns) of the text-text matrix on one rank.

    Rows: the captions [B], the generated positives [K], then the paired captions [K'']. Columns:
    the rows, then the generated negatives [K']. View ids: 0 caption, 1 positive, 2 negative,
    3 paired caption (the other one of a sample's caption and recaption, a positive too).
    """
    captions = sample_views(batch_size, sample_offset, view=0, device=device)
    rows, cols = [captions], [captions]
    for owners, view in ((positive_owners, 1), (paired_owners, 3)):
        if _has(owners):
            positives = generated_views(owners, sample_offset, view=view, role=POSITIVE)
            rows.append(positives)
            cols.append(positives)
    if _has(negative_owners):
        cols.append(generated_views(negative_owners, sample_offset, view=2, role=NEGATIVE))
    return cat_indices(rows), cat_indices(cols)
