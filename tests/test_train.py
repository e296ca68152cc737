"""The training loop on real Fashion-MNIST shards: a short run, checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FASHION_MNIST, requires_fashion_mnist
from tulip.data.download import DownloadOptions, download_tables
from tulip.data.fashion_mnist import export_pairs
from tulip.data.table import TableColumns, read_pairs_table
from tulip.train import checkpoint as ckpt
from tulip.train.config import TrainConfig
from tulip.train.loop import run_training
from tulip.train.schedule import learning_rate


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    root = tmp_path_factory.mktemp("train-data")
    table = export_pairs(FASHION_MNIST, root / "pairs", num_samples=256, seed=0)
    tables = [read_pairs_table(table, TableColumns(recaption="recaption"))]
    download_tables(tables, root / "download", DownloadOptions(rows_per_shard=64, threads=2))
    return root / "download" / "manifest.json"


def _config(**overrides):
    values = dict(steps=6, batch_size=32, lr=5e-4, warmup_steps=2, log_every=1, checkpoint_every=3, shuffle_buffer=64)
    values.update(overrides)
    return TrainConfig(**values)


def test_short_run_writes_weights_metrics_and_checkpoints(manifest, tmp_path):
    result = run_training(_config(), manifest, tmp_path, tmp_path / "model.pt")
    assert result.steps == 6
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "image_text_loss", "lr", "grad_norm", "logit_scale", "logit_bias", "samples_per_s"} <= set(records[0])
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [3, 6]
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert saved["step"] == 6 and saved["model_config"]["name"] == "tulip-tiny"
    assert not list(tmp_path.rglob("*.tmp"))


def test_resume_picks_up_checkpoint_and_history(manifest, tmp_path):
    """A checkpoint with the run's fingerprint is resumed and the metric history stays continuous."""
    partial = tmp_path / "partial"
    run_training(_config(steps=3), manifest, partial, partial / "model.pt")
    # Pretend the 3-step run was the first half of the 6-step run: same config, hence same run fingerprint.
    state = torch.load(partial / "checkpoints" / "step_00000003.pt", weights_only=False)
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    from tulip.train.loop import Trainer

    trainer = Trainer(_config(), manifest, resumed_dir)
    state["config_hash"] = trainer.config_hash
    torch.save(state, resumed_dir / "checkpoints" / "step_00000003.pt")
    del trainer
    result = run_training(_config(), manifest, resumed_dir, resumed_dir / "model.pt")
    assert result.resumed_from == 3
    records = [json.loads(line) for line in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_of_another_config_is_not_resumed(manifest, tmp_path):
    run_training(_config(steps=3), manifest, tmp_path, tmp_path / "model.pt")
    result = run_training(_config(steps=3, lr=1e-4), manifest, tmp_path, tmp_path / "model.pt")
    assert result.resumed_from is None


def test_learning_rate_schedule():
    assert learning_rate(0, 1.0, 100, 10, "cosine", 0.0) == pytest.approx(0.1)
    assert learning_rate(9, 1.0, 100, 10, "cosine", 0.0) == pytest.approx(1.0)
    assert learning_rate(55, 1.0, 100, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert learning_rate(100, 1.0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert learning_rate(70, 1.0, 100, 10, "constant", 0.0) == 1.0
