"""GeCo label matrices checked against matrices written out by hand from the rules of TULIP's Figure 5."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tulip.losses import ImageImageLoss, ImageTextLoss, TextTextLoss, sigmoid_loss
from tulip.losses.labels import (
    ORIGINAL,
    PADDING,
    ViewIndex,
    image_image_indices,
    image_text_indices,
    pair_labels,
    text_text_indices,
)

P, N, Z = 1.0, -1.0, 0.0

# Two samples. Rows: image 0, image 1, negative image of sample 1.
# Columns: caption 0, caption 1, negative caption of sample 0, negative caption of sample 1.
IMAGE_TEXT = [
    [P, N, N, N],  # an image is +1 with its own caption only, -1 with any generated negative
    [N, P, N, N],
    [N, N, Z, Z],  # a generated negative is -1 with originals, 0 with other generated negatives
]

# Two samples, 2 global crops and 1 local crop each; sample 0 also has a generated positive and negative.
# Rows (student): s0 g0, s0 g1, s1 g0, s1 g1, s0 local, s1 local, s0 positive.
# Columns (teacher): s0 g0, s0 g1, s1 g0, s1 g1, s0 positive, s0 negative.
IMAGE_IMAGE = [
    [Z, P, N, N, P, N],  # a crop against itself is 0, against the sample's other views +1
    [P, Z, N, N, P, N],
    [N, N, Z, P, N, N],
    [N, N, P, Z, N, N],
    [P, P, N, N, P, N],  # local crops only appear as rows, so they have no self-pair
    [N, N, P, P, N, N],
    [P, P, N, N, Z, N],  # Figure 5's positive row: (+1, 0, -1) against (original, positive, negative)
]

# Two samples; sample 0 has a paraphrase and a hard negative.
# Rows: caption 0, caption 1, positive 0. Columns: caption 0, caption 1, positive 0, negative 0.
TEXT_TEXT = [
    [Z, N, P, N],  # Figure 5's original row: (0, +1, -1)
    [N, Z, N, N],  # a caption without views only serves as a negative
    [P, N, Z, N],  # Figure 5's positive row: (+1, 0, -1)
]

# Two samples; sample 0 has a paraphrase, a hard negative and a paired caption (its recaption),
# sample 1 a paired caption only.
# Rows: caption 0, caption 1, positive 0, pair 0, pair 1.
# Columns: the rows, then negative 0.
TEXT_TEXT_PAIRED = [
    [Z, N, P, P, N, N],  # the caption, its paraphrase and its recaption are mutually positive
    [N, Z, N, N, P, N],  # without GeCo views, the recaption is the only positive
    [P, N, Z, P, N, N],
    [P, N, P, Z, N, N],
    [N, P, N, N, Z, N],  # every pair across samples is -1, negatives included
]


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_image_text_labels_figure5():
    rows, cols = image_text_indices(2, 0, torch.tensor([1]), torch.tensor([0, 1]))
    assert pair_labels(rows, cols, same_modality=False).tolist() == IMAGE_TEXT


def test_image_image_labels_figure5_multicrop():
    rows, cols = image_image_indices(2, num_global=2, num_local=1, sample_offset=0,
                                     positive_owners=torch.tensor([0]), negative_owners=torch.tensor([0]))
    assert pair_labels(rows, cols, same_modality=True).tolist() == IMAGE_IMAGE


def test_text_text_labels_figure5():
    rows, cols = text_text_indices(2, 0, torch.tensor([0]), torch.tensor([0]))
    assert pair_labels(rows, cols, same_modality=True).tolist() == TEXT_TEXT


def test_text_text_labels_with_paired_captions():
    rows, cols = text_text_indices(2, 0, torch.tensor([0]), torch.tensor([0]), paired_owners=torch.tensor([0, 1]))
    assert pair_labels(rows, cols, same_modality=True).tolist() == TEXT_TEXT_PAIRED


def test_cross_rank_block_has_no_positives():
    """Rank 0's rows against rank 1's columns: originals -1, two generated negatives 0."""
    rows, _ = image_text_indices(2, sample_offset=0, negative_image_owners=torch.tensor([1]))
    _, cols = image_text_indices(2, sample_offset=2, negative_text_owners=torch.tensor([0]))
    expected = [
        [N, N, N],
        [N, N, N],
        [N, N, Z],
    ]
    assert pair_labels(rows, cols, same_modality=False).tolist() == expected


def test_padding_is_labelled_zero():
    rows = ViewIndex(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([ORIGINAL, ORIGINAL]))
    cols = rows.pad_to(3)
    assert cols.role.tolist() == [ORIGINAL, ORIGINAL, PADDING]
    assert pair_labels(rows, cols, same_modality=False).tolist() == [[P, N, Z], [N, P, Z]]


def test_view_index_stack_round_trip():
    index = ViewIndex(torch.tensor([3, 4]), torch.tensor([0, 2]), torch.tensor([ORIGINAL, PADDING]))
    packed = index.stack()
    assert packed.shape == (2, 3)
    restored = ViewIndex.unstack(packed)
    assert torch.equal(restored.sample, index.sample)
    assert torch.equal(restored.view, index.view)
    assert torch.equal(restored.role, index.role)


def test_image_text_loss_uses_figure5_labels():
    """The loss module's value equals the dense loss under the hand-written matrix, divided by its 3 rows."""
    images, texts = _unit(3, 8, 0), _unit(4, 8, 1)
    scale, bias = torch.tensor(5.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    got = ImageTextLoss()(images[:2], texts[:2], scale, bias, images[2:], torch.tensor([1]),
                          texts[2:], torch.tensor([0, 1]))["image_text_loss"]
    expected = sigmoid_loss(images, texts, scale, bias, torch.tensor(IMAGE_TEXT, dtype=torch.float64))
    torch.testing.assert_close(got, expected)


def test_image_image_loss_uses_figure5_labels():
    student, teacher = _unit(7, 8, 2), _unit(6, 8, 3)
    scale, bias = torch.tensor(4.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    got = ImageImageLoss()(
        student[:4].view(2, 2, 8), teacher[:4].view(2, 2, 8), scale, bias,
        student_local=student[4:6].view(2, 1, 8), student_positive=student[6:], teacher_positive=teacher[4:5],
        positive_owners=torch.tensor([0]), teacher_negative=teacher[5:], negative_owners=torch.tensor([0]),
    )["image_image_loss"]
    expected = sigmoid_loss(student, teacher, scale, bias, torch.tensor(IMAGE_IMAGE, dtype=torch.float64))
    torch.testing.assert_close(got, expected)


def test_text_text_loss_uses_figure5_labels():
    texts = _unit(4, 8, 4)  # caption 0, caption 1, positive 0, negative 0
    scale, bias = torch.tensor(3.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    got = TextTextLoss()(texts[:2], scale, bias, texts[2:3], torch.tensor([0]), texts[3:], torch.tensor([0]))
    expected = sigmoid_loss(texts[:3], texts, scale, bias, torch.tensor(TEXT_TEXT, dtype=torch.float64))
    torch.testing.assert_close(got["text_text_loss"], expected)


def test_text_text_loss_hand_computed_value():
    """One sample with one paraphrase and one negative, all three embeddings orthogonal or equal, by hand."""
    caption = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    positive = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    negative = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    scale, bias = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    got = TextTextLoss()(caption, scale, bias, positive, torch.tensor([0]), negative, torch.tensor([0]))
    # Labelled pairs: (caption, positive) +1 and (positive, caption) +1 at logit 2 * 1 - 1 = 1, and
    # (caption, negative), (positive, negative) -1 at logit 2 * 0 - 1 = -1. Two rows.
    positive_pair = -math.log(1 / (1 + math.exp(-1.0)))
    negative_pair = -math.log(1 / (1 + math.exp(-1.0)))
    assert got["text_text_loss"].item() == pytest.approx((2 * positive_pair + 2 * negative_pair) / 2)


def test_text_text_loss_paired_labels():
    texts = _unit(6, 8, 5)  # caption 0, caption 1, positive 0, pair 0, pair 1, negative 0
    scale, bias = torch.tensor(3.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    got = TextTextLoss()(texts[:2], scale, bias, texts[2:3], torch.tensor([0]), texts[5:], torch.tensor([0]),
                         paired_texts=texts[3:5], paired_owners=torch.tensor([0, 1]))
    expected = sigmoid_loss(texts[:5], texts, scale, bias, torch.tensor(TEXT_TEXT_PAIRED, dtype=torch.float64))
    torch.testing.assert_close(got["text_text_loss"], expected)


def test_paired_caption_loss_by_hand():
    """A caption and its orthogonal recaption of one sample: two +1 pairs, by hand."""
    caption = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    paired = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    scale, bias = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    got = TextTextLoss()(caption, scale, bias, paired_texts=paired, paired_owners=torch.tensor([0]))
    # The two labelled pairs, (caption, pair) and (pair, caption), are +1 at logit 2 * 0 - 1 = -1; two rows.
    assert got["text_text_loss"].item() == pytest.approx(2 * math.log(1 + math.exp(1.0)) / 2)
