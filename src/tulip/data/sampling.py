"""Which samples each training process and loader worker reads in an epoch.

A *consumer* is one loader worker of one rank (a rank without workers is one consumer). Every
random choice below is drawn from (seed, epoch) or (seed, epoch, rank, worker), so a consumer's
stream is fully determined by those numbers and the shard counts.

Epoch mode (no resampling). The shard order is shuffled from (seed, epoch), the same on every
rank, and the shards' samples in that order form the epoch's sample sequence. Each rank takes
``steps`` batches: rank ``r`` owns the contiguous slice ``[r * steps * B, (r + 1) * steps * B)``,
cut between its workers in whole batches. Every sample is therefore read at most once per epoch,
and exactly once when the number of samples is a multiple of the global batch ``B * world``.
The remainder, fewer than ``B * world`` samples at the end of the sequence, is left out; which
samples those are changes with the shard order every epoch. Splitting at sample level rather
than shard level keeps ranks equal for any shard sizes, also with fewer shards than consumers; a
consumer whose slice starts inside a shard reads past the samples before it without decoding them.

Resampled mode. Each consumer draws shards with replacement, weighted by their sample counts,
from (seed, epoch, rank, worker), and reads each drawn shard whole. The stream never ends; the
epoch length alone fixes the number of steps.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def derive_seed(*parts: object) -> int:
    """Return a 63-bit seed that depends only on ``parts``, identically in every process."""
    text = "|".join(map(str, parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Consumer:
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1  # loader workers per rank; 1 when the rank reads in its main process

    def __post_init__(self):
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if not 0 <= self.worker < self.num_workers:
            raise ValueError(f"worker {self.worker} is outside {self.num_workers} workers")


@dataclass(frozen=True)
class ShardSlice:
    shard: int  # index into the shard list
    start: int  # first sample, counted over the shard's usable samples
    stop: int | None  # one past the last sample; None reads to the end of the shard


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Return the whole global batches in ``num_samples`` samples: the steps every rank takes per epoch."""
    return num_samples // (batch_size * world_size)


def worker_batches(steps: int, worker: int, num_workers: int) -> int:
    """Return how many of a rank's ``steps`` batches worker ``worker`` builds (the first ones take the remainder).

    A data loader requests batches from its workers in turn, so this matches the order it reads them in.
    """
    return steps // num_workers + (worker < steps % num_workers)


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """Return the epoch's shard order, the same on every rank and worker."""
    order = list(range(num_shards))
    random.Random(derive_seed(seed, epoch, "shard-order")).shuffle(order)
    return order


def epoch_slices(counts: Sequence[int], seed: int, epoch: int, batch_size: int, steps: int,
                 consumer: Consumer) -> list[ShardSlice]:
    """Return the pieces of shards that make up ``consumer``'s part of the epoch, in reading order."""
    if steps * batch_size * consumer.world_size > sum(counts):
        raise ValueError(f"{steps} steps of {batch_size} x {consumer.world_size} samples need more than the "
                         f"{sum(counts)} samples in the shards")
    done_before = sum(worker_batches(steps, w, consumer.num_workers) for w in range(consumer.worker))
    first = (consumer.rank * steps + done_before) * batch_size
    last = first + worker_batches(steps, consumer.worker, consumer.num_workers) * batch_size
    slices, offset = [], 0
    for shard in shard_order(len(counts), seed, epoch):
        begin, end = offset, offset + counts[shard]
        offset = end
        if end <= first or begin >= last or begin == end:
            continue
        slices.append(ShardSlice(shard, max(first, begin) - begin, min(last, end) - begin))
        if end >= last:
            break
    return slices


def resampled_slices(counts: Sequence[int], seed: int, epoch: int, consumer: Consumer) -> Iterator[ShardSlice]:
    """Yield whole shards drawn with replacement, weighted by sample count, without end."""
    rng = random.Random(derive_seed(seed, epoch, consumer.rank, consumer.worker, "resample"))
    candidates = [i for i, count in enumerate(counts) if count > 0]
    if not candidates:
        raise ValueError("no shard has a usable sample; nothing to resample from")
    weights = [counts[i] for i in candidates]
    while True:
        yield ShardSlice(rng.choices(candidates, weights=weights)[0], 0, None)
