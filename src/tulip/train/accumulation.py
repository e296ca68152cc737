"""Gradient accumulation that leaves the contrastive terms exact, because each loss reads the whole batch.

A sigmoid or softmax contrastive loss couples every pair in the batch, so summing the gradients of
micro-batch losses is not the gradient of the batch's loss. Instead (as in GradCache, Gao et al.,
arXiv 2101.06983):

  1. embed each micro-batch without a graph, saving the RNG state before each;
  2. form every term on the concatenated embeddings, and backpropagate it to those embeddings and
     to the parameters the terms own (heads, decoders, temperatures and biases);
  3. embed each micro-batch again with a graph, from its saved RNG state so dropout and drop-path
     repeat, and backpropagate the cached embedding gradients through the towers.

The result equals one pass over the whole batch up to floating-point rounding. Masked-image
reconstruction reruns the image tower on masked inputs, so it is formed per micro-batch in step 3
and weighted by the micro-batch's share: its mean over samples is exact, but the masks are drawn
per micro-batch rather than once for the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from tulip import distributed

VIEW_FIELDS = ("text_views", "image_views", "text_pair")  # fields packed with their owners' batch rows


def split_batch(batch: dict, parts: int) -> list[dict]:
    """Split a batch into ``parts`` consecutive slices of equal size; views go with the rows that own them."""
    size = batch["text"].shape[0]
    if size % parts:
        raise ValueError(f"a batch of {size} per process does not split into {parts} equal micro-batches; "
                         f"make train.batch_size / processes divisible by train.grad_accum_steps")
    step = size // parts
    micro = []
    for lo in range(0, size, step):
        hi = lo + step
        piece: dict = {}
        for name, value in batch.items():
            if name in VIEW_FIELDS or (name.endswith("_index") and name[: -len("_index")] in VIEW_FIELDS):
                continue
            if name == "key":
                piece[name] = value[lo:hi]
            elif torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == size:
                piece[name] = value[lo:hi]
            else:
                piece[name] = value
        for name in VIEW_FIELDS:
            owners = batch.get(f"{name}_index")
            if owners is None:
                continue
            keep = (owners >= lo) & (owners < hi)
            piece[f"{name}_index"] = owners[keep] - lo
            if name in batch:
                piece[name] = batch[name][keep]
        micro.append(piece)
    return micro


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def accumulate_gradients(
    task: nn.Module,
    batch: dict,
    teacher: nn.Module | None,
    parts: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, torch.Tensor]:
    """Accumulate into ``task``'s ``.grad`` the gradient of its weighted total on ``batch``, in ``parts`` micro-batches.

    ``task`` is a ``tulip.train.task.TulipTask`` (not its DistributedDataParallel wrapper, whose
    hooks would reduce every micro-batch): the gradients are averaged over processes here, once,
    after the last micro-batch. Returns the terms and logged scalars as ``TulipTask.forward``
    does, detached.
    """
    micro = split_batch(batch, parts)
    states, cached = [], []
    with torch.no_grad():
        for piece in micro:
            states.append(_rng_state())
            with autocast():
                cached.append(task.embed(piece))
    after_embedding = _rng_state()
    leaves = {name: torch.cat([c[name] for c in cached]).detach().requires_grad_(True) for name in cached[0]}
    with autocast():
        out = task.objective_terms(batch, leaves, teacher)
    terms = {k: v for k, v in out.items() if k.endswith("_loss")}
    if terms:
        task.total(terms)["loss"].backward()

    recon_weight = task.weights.get("image_reconstruction_loss", 0.0)
    recon_values = []
    for index, piece in enumerate(micro):
        _set_rng_state(states[index])
        with autocast():
            embeddings = task.embed(piece)
            surrogate = None
            for name, value in embeddings.items():
                grad = leaves[name].grad
                if grad is None:
                    continue
                offset = sum(c[name].shape[0] for c in cached[:index])
                part = (value * grad[offset: offset + value.shape[0]].to(value.dtype)).sum()
                surrogate = part if surrogate is None else surrogate + part
            if task.image_decoder is not None:
                recon = task.image_reconstruction_terms(piece)["image_reconstruction_loss"]
                recon_values.append(recon.detach())
                scaled = recon * (recon_weight / len(micro))
                surrogate = scaled if surrogate is None else surrogate + scaled
        if surrogate is not None:
            surrogate.backward()
    if not recon_values:
        _set_rng_state(after_embedding)
    distributed.all_reduce_gradients(task.parameters())
    values = {k: v.detach() for k, v in out.items()}
    if recon_values:
        values["image_reconstruction_loss"] = torch.stack(recon_values).mean()
    return task.total(values)
