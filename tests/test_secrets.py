"""Credentials planted in the environment reach no log, param, tag, metric file or artifact of a training run."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_train import manifest  # noqa: F401 - the shard-set fixture
from tulip.tracking import redact

pytestmark = pytest.mark.slow

SECRETS = {
    "HF_TOKEN": "hf_plantedHubToken0123456789",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-4567",
    "AWS_SECRET_ACCESS_KEY": "planted/aws+secret/key+8901",
}
CONFIG = {"steps": 2, "batch_size": 32, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 1, "shuffle_buffer": 64}


def _run_pretrain(manifest_path: Path, workdir: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TULIP_MLFLOW_"))}
    env.update(SECRETS, PYTHONPATH=str(REPO / "src"), MLFLOW_TRACKING_URI=tracking_uri,
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    out_dir = workdir / "results" / "pretrain"
    command = [sys.executable, "-m", "tulip", "pretrain", "--manifest", str(manifest_path), "--out-dir", str(out_dir),
               "--weights", str(out_dir / "model.pt"), "--threads", "1", "--config-json", json.dumps(CONFIG)]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    (workdir / "pretrain.log").write_text(result.stdout + result.stderr)
    return result


def _files_with_secrets(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {name}" for name, value in SECRETS.items() if value.encode() in data]
    return found


def test_secrets_absent_from_outputs(manifest, tmp_path):  # noqa: F811
    """Logs, metrics, checkpoints, weights, the MLflow store and its artifacts hold none of the planted values."""
    result = _run_pretrain(manifest, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        params = dict(db.execute("select key, value from params").fetchall())
        metric_names = {row[0] for row in db.execute("select distinct key from metrics")}
    assert params["steps"] == "2"  # the store contains the run being searched
    assert {"mfu", "samples_per_s", "samples_per_s_per_device"} <= metric_names
    assert list(tmp_path.rglob("mlruns/**/model.pt"))  # artifacts were written, and are searched too
    assert _files_with_secrets(tmp_path) == []


def test_dead_tracking_server_is_harmless(manifest, tmp_path):  # noqa: F811
    """An unreachable server behind a URI with credentials: training finishes and the log shows no password."""
    password = SECRETS["MLFLOW_TRACKING_PASSWORD"]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    result = _run_pretrain(manifest, tmp_path, f"http://tulip:{password}@127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "results" / "pretrain" / "model.pt").is_file()
    assert "MLflow" in result.stderr
    assert "failed after 3 attempts" in result.stderr
    assert _files_with_secrets(tmp_path) == []


def test_redact_masks_values_and_credentials(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    text = redact.redact(f"token {SECRETS['HF_TOKEN']} at https://user:pw@example.org/x")
    assert text == "token *** at https://***@example.org/x"


def test_redact_ignores_ordinary_variables():
    values = redact.secret_values({"API_KEY": "abc", "HOME": "/root/secret-home", "GH_TOKEN": "ghp_123456"})
    assert values == ["ghp_123456"]


def test_redaction_covers_library_loggers(monkeypatch, caplog):
    """A record logged through any logger is masked when it is created."""
    monkeypatch.setattr(redact, "_installed", False)
    previous = logging.getLogRecordFactory()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["AWS_SECRET_ACCESS_KEY"])
    try:
        redact.install()
        with caplog.at_level(logging.WARNING):
            logging.getLogger("mlflow.some.library").warning("key is %s", SECRETS["AWS_SECRET_ACCESS_KEY"])
    finally:
        logging.setLogRecordFactory(previous)
    assert caplog.records[-1].getMessage() == "key is ***"
