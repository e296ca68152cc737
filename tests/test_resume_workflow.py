"""Kill -9 of the training process at a random step, then the same Snakemake command: an exact resume."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FASHION_MNIST, copy_repository

pytestmark = pytest.mark.slow

STEPS, CHECKPOINT_EVERY = 12, 4
OVERRIDE = ".test/config/resume.yaml"
CURVE_KEYS = ("step", "loss", "image_text_loss", "image_image_loss", "text_text_loss", "image_reconstruction_loss",
              "text_reconstruction_loss", "lr", "grad_norm", "logit_scale", "logit_bias", "teacher_momentum")


def _command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "workflow" / "Snakefile"), "--cores", "2",
            "--configfile", ".test/config/config.yaml", OVERRIDE, "--", "results/pretrain/model.pt"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TULIP_MLFLOW_"))}


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(path: Path) -> list[tuple]:
    return [tuple(record[key] for key in CURVE_KEYS) for record in _records(path)]


def _training_pids(workdir: Path) -> list[int]:
    """Training processes running `-m tulip pretrain` in ``workdir``: not their torchrun agent or loader workers."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(workdir) and b"pretrain" in args and b"tulip" in args and not any(b"torchrun" in a for a in args):
            pids.append(int(entry.name))
    # Loader workers are forked from the training process and share its command line.
    return [pid for pid in pids if _parent(pid) not in pids]


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    workdir = copy_repository(tmp_path_factory.mktemp("resume"))
    override = {"train": {"steps": STEPS, "batch_size": 64, "log_every": 1, "checkpoint_every": CHECKPOINT_EVERY}}
    (workdir / OVERRIDE).write_text(yaml.safe_dump(override))
    return workdir


def test_kill_then_rerun_resumes_exactly(workdir):
    """The rerun after a kill -9 ends with the uninterrupted run's weights and loss curve, bit for bit."""
    pretrain = workdir / "results" / "pretrain"
    first = subprocess.run(_command(workdir), cwd=workdir, env=_env(), capture_output=True, text=True, timeout=2400)
    assert first.returncode == 0, first.stderr[-5000:]
    reference = workdir / "reference"
    shutil.copytree(pretrain, reference)
    shutil.rmtree(pretrain)

    kill_step = random.randint(CHECKPOINT_EVERY + 1, STEPS - 1)
    process = subprocess.Popen(_command(workdir), cwd=workdir, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 1200
    while len(_records(pretrain / "metrics.jsonl")) < kill_step:
        assert process.poll() is None, f"the run ended before step {kill_step}: {process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"step {kill_step} not reached"
        time.sleep(0.05)
    pids = _training_pids(workdir)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode != 0, stderr[-3000:]
    assert not (pretrain / "model.pt").exists()

    rerun = subprocess.run(_command(workdir), cwd=workdir, env=_env(), capture_output=True, text=True, timeout=2400)
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    log = (workdir / "logs" / "pretrain.log").read_text()
    assert "resumed from" in log, f"killed at step {kill_step} but the rerun did not resume:\n{log[-3000:]}"
    assert _curve(pretrain / "metrics.jsonl") == _curve(reference / "metrics.jsonl"), f"killed at step {kill_step}"
    resumed = torch.load(pretrain / "model.pt", weights_only=False)["model"]
    uninterrupted = torch.load(reference / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted), f"killed at step {kill_step}"
