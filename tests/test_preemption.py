"""Stopping on SIGTERM and resuming: real signals to a real training process, and bitwise-exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_train import manifest  # noqa: F401 - the shard-set fixture
from tulip.train import checkpoint as ckpt
from tulip.train.preemption import REQUEUE_EXIT_CODE

pytestmark = pytest.mark.slow

STEPS = 8
CONFIG = {"steps": STEPS, "batch_size": 32, "lr": 5e-4, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 100,
          "shuffle_buffer": 64, "workers": 1}
CURVE_KEYS = ("step", "loss", "image_text_loss", "lr", "grad_norm", "logit_scale", "logit_bias")


def _command(manifest_path: Path, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tulip", "pretrain", "--manifest", str(manifest_path), "--out-dir", str(out_dir),
            "--weights", str(out_dir / "model.pt"), "--threads", "1", "--config-json", json.dumps(CONFIG)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TULIP_MLFLOW_"))}
    env["PYTHONPATH"] = str(REPO / "src")
    return env


def _records(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(out_dir: Path) -> list[tuple]:
    return [tuple(record[key] for key in CURVE_KEYS) for record in _records(out_dir)]


def _stop_after(process: subprocess.Popen, out_dir: Path, step: int, sig: signal.Signals, timeout_s: float = 300) -> int:
    """Send ``sig`` to the process group once ``step`` steps are logged; return the exit code."""
    deadline = time.monotonic() + timeout_s
    while len(_records(out_dir)) < step:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training ended or stalled before step {step}: {process.communicate()[1][-3000:]}")
        time.sleep(0.05)
    os.killpg(process.pid, sig)
    _, stderr = process.communicate(timeout=timeout_s)
    assert "stopping after the current step" in stderr, stderr[-3000:]
    return process.returncode


@pytest.fixture(scope="module")
def uninterrupted(manifest, tmp_path_factory):  # noqa: F811
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(manifest, out_dir), env=_env(), check=True, capture_output=True, timeout=600)
    return out_dir


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_checkpoints_and_exits(manifest, uninterrupted, tmp_path, sig):  # noqa: F811
    """The signal ends training at a step boundary with a checkpoint of that step and exit code 75."""
    process = subprocess.Popen(_command(manifest, tmp_path), env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    code = _stop_after(process, tmp_path, 3, sig)
    assert code == REQUEUE_EXIT_CODE
    steps = [step for step, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert len(steps) == 1
    assert 3 <= steps[0] < STEPS
    assert not (tmp_path / "model.pt").exists()


def test_resume_after_stop_is_exact(manifest, uninterrupted, tmp_path):  # noqa: F811
    """Stopped at step 4 and started again, the run ends with the uninterrupted run's weights and curve, bit for bit."""
    process = subprocess.Popen(_command(manifest, tmp_path), env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert _stop_after(process, tmp_path, 4, signal.SIGTERM) == REQUEUE_EXIT_CODE
    subprocess.run(_command(manifest, tmp_path), env=_env(), check=True, capture_output=True, timeout=600)
    assert _curve(tmp_path) == _curve(uninterrupted)
    resumed = torch.load(tmp_path / "model.pt", weights_only=False)["model"]
    reference = torch.load(uninterrupted / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)
