"""Gradient accumulation with cached embeddings: 2 micro-batches of 4 give the gradient of one batch of 8.

The batch carries generated views and paired captions for some samples only, so each micro-batch
contains a different number of them.
"""

from __future__ import annotations

import pytest
import torch

import tulip
from tulip.train.accumulation import accumulate_gradients, split_batch
from tulip.train.config import TrainConfig
from tulip.train.task import TulipTask

# Every term whose value couples the samples of a batch, plus text reconstruction (formed on the
# cached embeddings too). fp32 on CPU: the two paths differ only in summation order.
CONTRASTIVE_TERMS = {"image_text_loss": 1.0, "image_image_loss": 0.5, "text_text_loss": 0.25,
                     "text_reconstruction_loss": 0.1}
SMALL_DECODERS = {"image_reconstruction": {"width": 32, "depth": 1, "heads": 4},
                  "text_reconstruction": {"layers": 1, "heads": 2, "ff_dim": 64}}
ATOL, RTOL = 1e-6, 1e-4


def _batch(batch_size: int = 8) -> dict:
    """Two global and two local crops per sample; generated captions for 4 samples, images for 3."""
    generator = torch.Generator().manual_seed(0)
    tokenizer = tulip.get_tokenizer("tulip-tiny")
    names = ["bag", "coat", "shirt", "sneaker", "dress", "sandal", "boot", "pullover"]
    global_crops = torch.randn(batch_size, 2, 3, 32, 32, generator=generator)
    text_views = [f"a picture of a {n}" for n in names[:4]] + [f"two {n}s" for n in names[4:]]
    return {
        "key": [f"k{i}" for i in range(batch_size)],
        "global_crops": global_crops,
        "image": global_crops[:, 0],
        "local_crops": torch.randn(batch_size, 2, 3, 16, 16, generator=generator),
        "text": tokenizer([f"a photo of a {n}" for n in names]),
        "recon_text": tokenizer([f"a {n}" for n in names]),
        "text_views": tokenizer(text_views).view(4, 2, -1),
        "text_views_index": torch.tensor([0, 3, 4, 6]),
        "image_views": torch.randn(3, 2, 3, 32, 32, generator=generator),
        "image_views_index": torch.tensor([1, 5, 7]),
        "text_pair": tokenizer([f"a long description of a {n}" for n in names[1:4]]),  # [3, L]
        "text_pair_index": torch.tensor([1, 2, 5]),
    }


def _gradients(weights: dict[str, float], parts: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    objective = {**SMALL_DECODERS, "text_text": {"recaption_positives": True}}
    cfg = TrainConfig.from_dict({"loss_weights": weights, "objective": objective})
    task = TulipTask(tulip.create_model("tulip-tiny"), cfg, pad_id=0)
    teacher = task.build_teacher()
    if parts == 1:
        out = task(_batch(), teacher)
        out["loss"].backward()
    else:
        out = accumulate_gradients(task, _batch(), teacher, parts)
    grads = {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}
    return grads, {k: v.detach() for k, v in out.items()}


def test_accumulation_matches_full_batch():
    full, full_out = _gradients(CONTRASTIVE_TERMS, parts=1)
    accumulated, accumulated_out = _gradients(CONTRASTIVE_TERMS, parts=2)
    assert accumulated.keys() == full.keys()
    for name, grad in full.items():
        torch.testing.assert_close(accumulated[name], grad, atol=ATOL, rtol=RTOL, msg=name)
    assert float(accumulated_out["loss"]) == pytest.approx(float(full_out["loss"]), rel=1e-6)


def test_summed_micro_losses_differ():
    """The reference the cached-embedding method must beat: mean of per-micro-batch losses has another gradient."""
    full, _ = _gradients({"image_text_loss": 1.0}, parts=1)
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict({"loss_weights": {"image_text_loss": 1.0}})
    task = TulipTask(tulip.create_model("tulip-tiny"), cfg, pad_id=0)
    for piece in split_batch(_batch(), 2):
        (task(piece)["loss"] / 2).backward()
    naive = task.model.logit_bias.grad
    assert not torch.allclose(naive, full["model.logit_bias"], atol=1e-4)


def test_accumulation_trains_image_decoder():
    weights = {**CONTRASTIVE_TERMS, "image_reconstruction_loss": 2.0}
    grads, out = _gradients(weights, parts=4)
    assert any(name.startswith("image_decoder.") for name in grads)
    assert torch.isfinite(out["image_reconstruction_loss"])


def test_split_batch_keeps_view_owners():
    pieces = split_batch(_batch(), 2)
    assert pieces[1]["image_views_index"].tolist() == [1, 3]
    assert torch.equal(pieces[1]["image_views"], _batch()["image_views"][1:])


def test_split_batch_keeps_text_pair_owners():
    pieces = split_batch(_batch(), 2)
    assert [piece["text_pair_index"].tolist() for piece in pieces] == [[1, 2], [1]]
    assert torch.equal(pieces[1]["text_pair"], _batch()["text_pair"][2:])


def test_split_batch_rejects_uneven_split():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        split_batch(_batch(), 3)
