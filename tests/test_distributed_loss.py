"""Every distributed form of the sigmoid loss equals the dense single-process loss, in value and gradient.

Each world size starts that many gloo processes on 127.0.0.1. Every process builds the same global
problem (ragged GeCo negatives: ranks hold different numbers of generated views), computes its
share with each exchange ("gather", "ring") and block form (dense, tiled), backpropagates, and
saves its loss and gradients. The parent checks them against the dense loss over the concatenated
global matrix. The mean of the per-rank losses must equal it, and so must the mean of the per-rank
gradients of the temperature and bias. Each rank's embedding gradients must be W times the dense
gradients of its slice, because DDP divides by W when it averages.
For plain SigLIP labels the per-rank losses and gradients are also compared with open_clip 3.3's
``SigLipLoss`` in each of its exchange modes.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tulip.losses import SigmoidContrastiveLoss, sigmoid_pair_loss_sum
from tulip.losses.labels import cat_indices, image_text_indices, pair_labels, text_text_indices

pytestmark = pytest.mark.distributed

LOCAL_BATCH = 3
DIM = 6
FORMS = [("gather", None), ("gather", 2), ("ring", None), ("ring", 2)]
OPEN_CLIP_IMPLS = ("bidir", "shift", "gather", "reduce")


def _unit(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _rank_problem(rank: int) -> dict:
    """The features and generated-view owners that rank ``rank`` holds; deterministic in the rank."""
    num_negative_images, num_negative_texts, num_pairs = rank % 3, (rank + 1) % 3, (rank + 2) % 3
    return {
        "images": _unit(LOCAL_BATCH, 100 + rank),
        "texts": _unit(LOCAL_BATCH, 200 + rank),
        "negative_images": _unit(num_negative_images, 300 + rank),
        "negative_texts": _unit(num_negative_texts, 400 + rank),
        "negative_image_owners": torch.arange(num_negative_images),
        "negative_text_owners": torch.arange(num_negative_texts) % LOCAL_BATCH,
        "positive_texts": _unit(num_negative_texts, 500 + rank),
        "paired_texts": _unit(num_pairs, 600 + rank),
        "paired_owners": torch.arange(num_pairs).flip(0) % LOCAL_BATCH,
    }


def _local_tensors(case: str, rank: int, leaves: dict) -> tuple:
    """Rows, row index, columns and column index of one rank, built from its leaf tensors."""
    owners_i, owners_t = leaves["negative_image_owners"], leaves["negative_text_owners"]
    offset = rank * LOCAL_BATCH
    if case == "image_text":
        rows_index, cols_index = image_text_indices(LOCAL_BATCH, offset, owners_i, owners_t)
        rows = torch.cat([leaves["images"], leaves["negative_images"]])
        cols = torch.cat([leaves["texts"], leaves["negative_texts"]])
    else:  # text-text: captions, paraphrases and paired captions against those and the negatives
        rows_index, cols_index = text_text_indices(LOCAL_BATCH, offset, owners_t, owners_t,
                                                   paired_owners=leaves["paired_owners"])
        rows = torch.cat([leaves["texts"], leaves["positive_texts"], leaves["paired_texts"]])
        cols = torch.cat([leaves["texts"], leaves["positive_texts"], leaves["paired_texts"],
                          leaves["negative_texts"]])
    return rows, rows_index, cols, cols_index


def _leaves(rank: int) -> dict:
    problem = _rank_problem(rank)
    return {k: v.clone().requires_grad_() if v.is_floating_point() else v for k, v in problem.items()}


def _scalars() -> tuple[torch.Tensor, torch.Tensor]:
    log_scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.5, dtype=torch.float64, requires_grad=True)
    return log_scale, bias


def _grads(leaves: dict, log_scale: torch.Tensor, bias: torch.Tensor) -> dict:
    grads = {k: v.grad.clone() for k, v in leaves.items() if torch.is_tensor(v) and v.grad is not None}
    return {**grads, "log_scale": log_scale.grad.clone(), "bias": bias.grad.clone()}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    try:
        for case in ("image_text", "text_text"):
            for exchange, chunk in FORMS:
                leaves = _leaves(rank)
                log_scale, bias = _scalars()
                rows, rows_index, cols, cols_index = _local_tensors(case, rank, leaves)
                loss = SigmoidContrastiveLoss(exchange, chunk)(
                    rows, rows_index, cols, cols_index, log_scale.exp(), bias, same_modality=case == "text_text"
                )
                loss.backward()
                results[(case, exchange, chunk)] = {"loss": loss.detach(), **_grads(leaves, log_scale, bias)}
        from open_clip.loss import SigLipLoss

        for impl in OPEN_CLIP_IMPLS:
            for name, loss_fn in (("open_clip", SigLipLoss(rank=rank, world_size=world, dist_impl=impl)),
                                  ("tulip", None)):
                leaves = _leaves(rank)
                log_scale, bias = _scalars()
                if loss_fn is None:
                    rows_index, cols_index = image_text_indices(LOCAL_BATCH, rank * LOCAL_BATCH)
                    loss = SigmoidContrastiveLoss("ring")(
                        leaves["images"], rows_index, leaves["texts"], cols_index, log_scale.exp(), bias, False
                    )
                else:
                    loss = loss_fn(leaves["images"], leaves["texts"], log_scale.exp(), bias)
                loss.backward()
                results[(name, impl)] = {"loss": loss.detach(), **_grads(leaves, log_scale, bias)}
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def _dense_reference(case: str, world: int) -> dict:
    """The single-process loss over the concatenated global matrix, with gradients of every rank's slices."""
    per_rank = [_leaves(rank) for rank in range(world)]
    log_scale, bias = _scalars()
    pieces = [_local_tensors(case, rank, per_rank[rank]) for rank in range(world)]
    rows = torch.cat([p[0] for p in pieces])
    cols = torch.cat([p[2] for p in pieces])
    labels = pair_labels(cat_indices([p[1] for p in pieces]), cat_indices([p[3] for p in pieces]),
                         same_modality=case == "text_text", dtype=torch.float64)
    loss = sigmoid_pair_loss_sum(rows, cols, log_scale.exp(), bias, labels) / rows.shape[0]
    loss.backward()
    return {"loss": loss.detach(), "ranks": [_grads(leaves, log_scale, bias) for leaves in per_rank]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", params=[1, 2, 3, 4], ids=lambda w: f"world{w}")
def world_results(request, tmp_path_factory):
    world = request.param
    out_dir = tmp_path_factory.mktemp(f"world{world}")
    mp.spawn(_worker, args=(world, _free_port(), str(out_dir)), nprocs=world, join=True)
    return world, [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


@pytest.mark.parametrize("case", ["image_text", "text_text"])
@pytest.mark.parametrize(("exchange", "chunk"), FORMS, ids=[f"{e}-{'dense' if c is None else 'tiled'}" for e, c in FORMS])
def test_distributed_loss_equals_dense(world_results, case, exchange, chunk):
    world, results = world_results
    reference = _dense_reference(case, world)
    got = [r[(case, exchange, chunk)] for r in results]
    torch.testing.assert_close(torch.stack([g["loss"] for g in got]).mean(), reference["loss"])
    torch.testing.assert_close(torch.stack([g["log_scale"] for g in got]).mean(), reference["ranks"][0]["log_scale"])
    torch.testing.assert_close(torch.stack([g["bias"] for g in got]).mean(), reference["ranks"][0]["bias"])
    for rank in range(world):
        for name, dense_grad in reference["ranks"][rank].items():
            if name in ("log_scale", "bias"):
                continue
            torch.testing.assert_close(got[rank][name] / world, dense_grad, msg=f"rank {rank}, gradient of {name}")


@pytest.mark.parametrize("impl", OPEN_CLIP_IMPLS)
def test_ring_matches_open_clip_siglip_per_rank(world_results, impl):
    """Plain SigLIP labels: each rank's loss and gradients equal open_clip's SigLipLoss on that rank."""
    world, results = world_results
    for rank in range(world):
        ours, theirs = results[rank][("tulip", impl)], results[rank][("open_clip", impl)]
        for name in ("loss", "images", "texts", "log_scale", "bias"):
            torch.testing.assert_close(ours[name], theirs[name], msg=f"rank {rank}, {name}")
