"""FSDP2 against DDP: two gloo processes train the full objective to the same curve, and the checkpoint is whole."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch

from test_train import FULL_OBJECTIVE, _full_config, views_manifest  # noqa: F401 - the fixture
from tulip.train import checkpoint as ckpt

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
CURVE_KEYS = ("loss", *FULL_OBJECTIVE["loss_weights"], "lr", "grad_norm", "logit_scale", "logit_bias")


def _worker(rank: int, world: int, port: int, manifest: str, out_dir: str, parallel: str) -> None:
    from tulip.train.loop import run_training

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = _full_config(steps=2, checkpoint_every=2, batch_size=8, parallel=parallel,
                       objective={**FULL_OBJECTIVE["objective"], "crops": {"global_crops": 2, "local_crops": 0}})
    run_training(cfg, manifest, out_dir, os.path.join(out_dir, "model.pt"))


def _train(manifest, out_dir, parallel: str) -> list[dict]:
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(manifest), str(out_dir), parallel), nprocs=2, join=True)
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_fsdp_matches_ddp(views_manifest, tmp_path):  # noqa: F811
    """Sharded training follows the replicated run within fp32 rounding; its saved weights are unsharded."""
    ddp = _train(views_manifest, tmp_path / "ddp", "ddp")
    fsdp = _train(views_manifest, tmp_path / "fsdp", "fsdp")
    for name in CURVE_KEYS:
        assert [r[name] for r in fsdp] == pytest.approx([r[name] for r in ddp], rel=1e-4, abs=1e-6), name
    sharded = torch.load(tmp_path / "fsdp" / "model.pt", weights_only=False)["model"]
    replicated = torch.load(tmp_path / "ddp" / "model.pt", weights_only=False)["model"]
    assert {k: v.shape for k, v in sharded.items()} == {k: v.shape for k, v in replicated.items()}
    assert all(type(v) is torch.Tensor for v in sharded.values())
    state = ckpt.load_checkpoint(tmp_path / "fsdp" / "checkpoints" / "step_00000002.pt")
    assert state["optimizer"]["state"]  # the optimizer's moments are saved too
