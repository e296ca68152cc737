"""Epoch planning: which samples each rank and worker reads."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from tulip.data.sampling import (
    Consumer,
    ShardSlice,
    epoch_slices,
    resampled_slices,
    shard_order,
    steps_per_epoch,
    worker_batches,
)


def _positions(slices, counts, order):
    """Map slices back to positions in the epoch's sample sequence."""
    start_of = {}
    offset = 0
    for shard in order:
        start_of[shard] = offset
        offset += counts[shard]
    return [start_of[s.shard] + i for s in slices for i in range(s.start, s.stop)]


@pytest.mark.parametrize(
    ("counts", "world", "workers", "batch"),
    [
        ((10, 13, 9), 2, 2, 4),
        ((10, 13, 12), 2, 2, 4),
        ((100,), 4, 3, 5),  # one shard for twelve consumers
        ((3, 0, 7, 1, 9, 2), 3, 1, 2),  # an empty shard among them
        ((50, 50), 1, 4, 7),  # more workers than a fair share of batches
    ],
)
def test_epoch_slices_partition_the_epoch(counts, world, workers, batch):
    """Consumers read disjoint slices that together cover the first steps * batch * world samples."""
    steps = steps_per_epoch(sum(counts), batch, world)
    order = shard_order(len(counts), seed=5, epoch=2)
    seen = []
    for rank in range(world):
        per_rank = 0
        for worker in range(workers):
            slices = epoch_slices(counts, 5, 2, batch, steps, Consumer(rank, world, worker, workers))
            positions = _positions(slices, counts, order)
            assert len(positions) == worker_batches(steps, worker, workers) * batch
            per_rank += len(positions)
            seen += positions
        assert per_rank == steps * batch
    assert sorted(seen) == list(range(steps * batch * world))


def test_epoch_slices_hand_computed():
    """Shards of 3 and 5 samples in the order [1, 0]; rank 1 of 2 with batches of 2 takes samples 4..7."""
    counts = (3, 5)
    epoch = next(e for e in range(100) if shard_order(2, seed=0, epoch=e) == [1, 0])
    slices = epoch_slices(counts, 0, epoch, batch_size=2, steps=2, consumer=Consumer(rank=1, world_size=2))
    # Sequence: shard 1 samples 0-4 (positions 0-4), then shard 0 samples 0-2 (positions 5-7).
    assert slices == [ShardSlice(1, 4, 5), ShardSlice(0, 0, 3)]


def test_shard_order_changes_with_epoch():
    orders = {tuple(shard_order(10, seed=0, epoch=e)) for e in range(5)}
    assert len(orders) == 5
    assert shard_order(10, seed=0, epoch=3) == shard_order(10, seed=0, epoch=3)


def test_worker_batches_sum_to_steps():
    for steps in range(12):
        assert sum(worker_batches(steps, w, 5) for w in range(5)) == steps


def test_resampled_slices_follow_sample_counts():
    draws = Counter(s.shard for s in islice(resampled_slices([1, 0, 3], 0, 0, Consumer()), 8000))
    assert draws[1] == 0
    assert draws[2] / draws[0] == pytest.approx(3.0, rel=0.1)


def test_resampled_slices_differ_between_workers():
    first = [s.shard for s in islice(resampled_slices([5] * 20, 0, 0, Consumer(0, 1, 0, 2)), 50)]
    second = [s.shard for s in islice(resampled_slices([5] * 20, 0, 0, Consumer(0, 1, 1, 2)), 50)]
    assert first != second


def test_consumer_rejects_rank_outside_world():
    with pytest.raises(ValueError, match="rank 2 is outside world size 2"):
        Consumer(rank=2, world_size=2)
