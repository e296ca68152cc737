"""The loader under torch.distributed: 2 ranks x 2 loader workers (gloo on localhost) over 3 shards."""

from __future__ import annotations

import io
import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

WORLD = 2
WORKERS = 2
BATCH = 4  # per rank


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_shards(root, sizes) -> list[str]:
    from tulip.data.shards import ShardWriter

    paths, key = [], 0
    for index, size in enumerate(sizes):
        path = root / f"shard-{index:06d}.tar"
        with ShardWriter(path) as writer:
            for _ in range(size):
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32), (key % 256, 0, 0)).save(buffer, format="JPEG")
                writer.add(f"{key:04d}", {"jpg": buffer.getvalue(), "txt": f"caption {key}".encode()})
                key += 1
        paths.append(str(path))
    return paths


def _tokenize(texts: list[str]) -> torch.Tensor:
    """Caption length as the only token: the test is about which samples arrive, and a real
    tokenizer would make each spawned rank import open_clip."""
    return torch.tensor([[len(text)] for text in texts])  # [N, 1]


def _rank_main(rank: int, port: int, paths: list[str], sizes: list[int], resample: bool, out: str) -> None:
    """Run two epochs on one rank; every step does an all-reduce, as training would, so unequal steps would hang."""
    import multiprocessing

    from torchvision import transforms

    # A process started with "spawn" starts its loader workers with "spawn" too; torchrun's ranks
    # fork them, as Linux does by default. Forking also spares each worker a fresh interpreter.
    multiprocessing.set_start_method("fork", force=True)

    from tulip.data.loader import LoaderOptions, build_train_loader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    transform = transforms.Compose([transforms.RandomResizedCrop(16), transforms.ToTensor()])
    options = LoaderOptions(batch_size=BATCH, num_workers=WORKERS, shuffle_buffer=8, shuffle_initial=4,
                            rank=rank, world_size=WORLD, resample=resample, timeout_s=120)
    loader = build_train_loader(paths, sizes, transform, _tokenize, options)
    epochs = []
    for _ in range(2):
        keys, steps = [], 0
        for batch in loader:
            assert batch["image"].shape == (BATCH, 3, 16, 16)
            dist.all_reduce(torch.ones(1))
            keys += batch["key"]
            steps += 1
        epochs.append({"steps": steps, "keys": keys})
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, epochs)
    if rank == 0:
        with open(out, "w") as handle:
            json.dump({"steps_per_epoch": len(loader), "ranks": gathered}, handle)
    dist.destroy_process_group()


def _run(tmp_path, sizes, resample=False) -> dict:
    paths = _write_shards(tmp_path, sizes)
    out = tmp_path / "result.json"
    mp.start_processes(_rank_main, args=(_free_port(), paths, list(sizes), resample, str(out)), nprocs=WORLD,
                       start_method="spawn")
    return json.loads(out.read_text())


def test_two_ranks_read_every_sample_once(tmp_path):
    """32 samples, global batch 8: 4 steps on each rank, and every sample exactly once per epoch."""
    result = _run(tmp_path, (10, 13, 9))
    for epoch in range(2):
        steps = [rank[epoch]["steps"] for rank in result["ranks"]]
        keys = [key for rank in result["ranks"] for key in rank[epoch]["keys"]]
        assert steps == [4, 4]
        assert sorted(keys) == [f"{k:04d}" for k in range(32)]
    assert result["ranks"][0][0]["keys"] != result["ranks"][0][1]["keys"]


def test_two_ranks_take_equal_steps_with_a_remainder(tmp_path):
    """35 samples: both ranks take 4 steps, and the 32 samples read are all different."""
    result = _run(tmp_path, (10, 13, 12))
    for epoch in range(2):
        keys = [key for rank in result["ranks"] for key in rank[epoch]["keys"]]
        assert [rank[epoch]["steps"] for rank in result["ranks"]] == [4, 4]
        assert len(keys) == len(set(keys)) == 32


def test_two_ranks_resampled_take_equal_steps(tmp_path):
    result = _run(tmp_path, (10, 13, 12), resample=True)
    assert result["steps_per_epoch"] == 4
    for epoch in range(2):
        assert [rank[epoch]["steps"] for rank in result["ranks"]] == [4, 4]
