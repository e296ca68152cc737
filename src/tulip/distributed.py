"""Everything that touches torch.distributed: process-group setup, rank queries and collectives.

Other modules call these helpers instead of ``torch.distributed`` so that each of them runs
unchanged in a single process, where the collectives reduce to identities.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise the default process group from torchrun's environment, or return a single-process info.

    The backend defaults to NCCL when CUDA is available and gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        logger.info("joined process group: rank %d of %d, backend %s", rank, world_size, backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` [n, ...] from every rank into [world * n, ...]; gradients flow back to each rank."""
    if not is_initialized() or get_world_size() == 1:
        return tensor
    return torch.cat(dist_nn.all_gather(tensor), dim=0)


def all_gather_padded_with_grad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad ``tensor`` [m, ...] to ``length`` rows and gather it from every rank into [world * length, ...].

    Ranks may hold different numbers of rows; every rank must pass the same ``length`` (for
    example from ``all_reduce_max``). Gradients of the gathered rows flow back to their rank.
    """
    if tensor.shape[0] > length:
        raise ValueError(f"cannot pad {tensor.shape[0]} rows down to {length}")
    if tensor.shape[0] < length:
        tensor = torch.cat([tensor, tensor.new_zeros((length - tensor.shape[0], *tensor.shape[1:]))])
    return all_gather_with_grad(tensor)


def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` [n, ...] (equal shapes on every rank) into [world * n, ...] without autograd."""
    if not is_initialized() or get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(value: int) -> int:
    """Return the sum of an integer over ranks."""
    if not is_initialized() or get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return int(tensor.item())


def all_reduce_max(value: int) -> int:
    """Return the maximum of an integer over ranks."""
    if not is_initialized() or get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def _ring_neighbours() -> tuple[int, int]:
    rank, world = get_rank(), get_world_size()
    return (rank - 1) % world, (rank + 1) % world


def _exchange(send: torch.Tensor, to_rank: int, from_rank: int) -> torch.Tensor:
    """Send ``send`` to ``to_rank`` and return the equally shaped tensor received from ``from_rank``."""
    received = torch.empty_like(send)
    ops = [dist.P2POp(dist.isend, send.contiguous(), to_rank), dist.P2POp(dist.irecv, received, from_rank)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingShift(torch.autograd.Function):
    """Pass a tensor one step right around the ring; backward passes the gradient one step left."""

    @staticmethod
    def forward(ctx, tensor):
        left, right = _ring_neighbours()
        return _exchange(tensor, to_rank=right, from_rank=left)

    @staticmethod
    def backward(ctx, grad_output):
        left, right = _ring_neighbours()
        return _exchange(grad_output, to_rank=left, from_rank=right)


def ring_shift_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Send ``tensor`` to rank + 1 and return the block received from rank - 1 (modulo the world size).

    Every rank must pass a tensor of the same shape. After k calls a rank holds the block of rank
    - k. The backward pass sends each block's gradient back to the rank it came from, so the
    gradients of a ring-exchanged loss equal those of an all-gather. With one process it returns
    ``tensor`` unchanged.
    """
    if not is_initialized() or get_world_size() == 1:
        return tensor
    return _RingShift.apply(tensor)


def ring_shift(tensor: torch.Tensor) -> torch.Tensor:
    """``ring_shift_with_grad`` without autograd, for integer payloads such as view indices."""
    if not is_initialized() or get_world_size() == 1:
        return tensor
    left, right = _ring_neighbours()
    return _exchange(tensor, to_rank=right, from_rank=left)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Return the mean of ``tensor`` over ranks (no gradient)."""
    if not is_initialized() or get_world_size() == 1:
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank and return it."""
    if not is_initialized() or get_world_size() == 1:
        return obj
    payload = [obj]
    dist.broadcast_object_list(payload, src=src)
    return payload[0]


def all_reduce_gradients(parameters) -> None:
    """Replace every parameter's ``.grad`` by its mean over ranks, as DistributedDataParallel would."""
    if not is_initialized() or get_world_size() == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    for param in params:
        if param.grad is None:  # every rank must send the same layout
            param.grad = torch.zeros_like(param)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def all_gather_object(obj: Any) -> list[Any]:
    """Return the list of ``obj`` from every rank, in rank order."""
    if not is_initialized() or get_world_size() == 1:
        return [obj]
    payload: list[Any] = [None] * get_world_size()
    dist.all_gather_object(payload, obj)
    return payload


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    return bool(all_reduce_max(int(flag)))


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to the other ranks, in place."""
    if not is_initialized() or get_world_size() == 1:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=src)


def shard_module(module: torch.nn.Module, block_types: tuple[type, ...],
                 forward_methods: tuple[str, ...] = ("forward_positions",)) -> list[torch.nn.Parameter]:
    """Shard ``module`` in place with FSDP2: each block of ``block_types`` is one unit, the rest one more.

    Parameters become DTensors holding this rank's shard; a block's full weights exist only during
    its forward and backward. FSDP2 cannot shard scalars (temperatures and biases), so those stay
    whole on every rank and are returned: their gradients must be averaged with
    ``all_reduce_gradients`` after each backward pass.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    scalars = {p for p in module.parameters() if p.dim() == 0}
    for sub in module.modules():
        if isinstance(sub, block_types):
            fully_shard(sub, ignored_params={p for p in sub.parameters() if p in scalars} or None)
            # Blocks called through another method than forward gather their weights for it too.
            for method in forward_methods:
                if hasattr(sub, method):
                    register_fsdp_forward_method(sub, method)
    fully_shard(module, ignored_params=scalars or None)
    return [p for p in module.parameters() if p in scalars]


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded DTensor (a collective: every rank must call it); others unchanged."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dicts(module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """Unsharded (model, optimizer) state dicts of an FSDP2 module on CPU; complete on rank 0 only (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(module, options=options)
    optimizer_state = get_optimizer_state_dict(module, optimizer, options=options) if optimizer is not None else None
    return model_state, optimizer_state


def load_full_state_dicts(module: torch.nn.Module, model_state: dict, optimizer: torch.optim.Optimizer | None = None,
                          optimizer_state: dict | None = None) -> None:
    """Load unsharded state dicts (as ``full_state_dicts`` returns them, present on every rank) into an FSDP2 module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(module, model_state, options=options)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(module, optimizer, optimizer_state, options=options)


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()
