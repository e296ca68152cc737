"""torchrun launches: two agents meeting at a c10d rendezvous train exactly as one agent with two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_train import manifest  # noqa: F401 - the shard-set fixture

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

CONFIG = {"steps": 4, "batch_size": 32, "lr": 5e-4, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 100,
          "shuffle_buffer": 64}
CURVE_KEYS = ("step", "loss", "image_text_loss", "lr", "grad_norm", "logit_scale", "logit_bias")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pretrain_args(manifest_path: Path, out_dir: Path) -> list[str]:
    return ["-m", "tulip", "pretrain", "--manifest", str(manifest_path), "--out-dir", str(out_dir),
            "--weights", str(out_dir / "model.pt"), "--threads", "1", "--config-json", json.dumps(CONFIG)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TULIP_MLFLOW_"))}
    env["PYTHONPATH"] = str(REPO / "src")
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _curve(out_dir: Path) -> list[tuple]:
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [tuple(record[key] for key in CURVE_KEYS) for record in records]


def test_two_agents_match_one_agent(manifest, tmp_path):  # noqa: F811
    """Two torchrun agents of one process each (two nodes) give the curve and weights of one agent with two."""
    single, multi = tmp_path / "one-node", tmp_path / "two-nodes"
    subprocess.run(_torchrun("--standalone", "--nproc-per-node", "2", *_pretrain_args(manifest, single)),
                   env=_env(), check=True, capture_output=True, timeout=900)
    endpoint = f"127.0.0.1:{_free_port()}"
    agent = _torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                      endpoint, "--rdzv-id", "two-agents", *_pretrain_args(manifest, multi))
    agents = [subprocess.Popen(agent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    outputs = [process.communicate(timeout=900) for process in agents]
    assert [process.returncode for process in agents] == [0, 0], [err[-3000:] for _, err in outputs]
    assert json.loads((multi / "summary.json").read_text())["world_size"] == 2
    assert _curve(multi) == _curve(single)
    one = torch.load(single / "model.pt", weights_only=False)["model"]
    two = torch.load(multi / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(one[name], two[name]) for name in one)


def _resume_worker(rank: int, world: int, port: int, manifest_path: str, out_dir: str) -> None:
    import logging

    from test_train import _config
    from tulip.train.loop import run_training

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    handler = logging.FileHandler(os.path.join(out_dir, f"rank{rank}.log"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    run_training(_config(), manifest_path, out_dir, os.path.join(out_dir, "model.pt"))


def test_world_size_change_keeps_schedule(manifest, tmp_path):  # noqa: F811
    """A one-process checkpoint resumed by two processes continues the learning rate by samples seen and logs it."""
    import torch.multiprocessing as mp

    from test_train import _config
    from tulip.train.loop import Trainer, run_training

    reference = run_training(_config(), manifest, tmp_path / "one", tmp_path / "one" / "model.pt")
    assert reference.steps == 6
    partial = tmp_path / "partial"
    run_training(_config(steps=3), manifest, partial, partial / "model.pt")
    state = torch.load(partial / "checkpoints" / "step_00000003.pt", weights_only=False)
    resumed = tmp_path / "two"
    (resumed / "checkpoints").mkdir(parents=True)
    state["config_hash"] = Trainer(_config(), manifest, resumed).config_hash  # as if the 6-step run had stopped
    torch.save(state, resumed / "checkpoints" / "step_00000003.pt")
    mp.spawn(_resume_worker, args=(2, _free_port(), str(manifest), str(resumed)), nprocs=2, join=True)
    lr = {r["step"]: r["lr"] for r in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines())}
    expected = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())}
    assert lr == expected
    log = (resumed / "rank0.log").read_text()
    assert "resuming a run of 1 processes with 2" in log
    assert "the learning rate follows the 96 samples seen" in log
