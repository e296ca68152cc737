"""The training loop on real Fashion-MNIST shards: a short run, checkpoints and resume."""

from __future__ import annotations

import io
import json
import math

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


def _download_pairs(root, num_samples: int, seed: int):
    """Download Fashion-MNIST pairs into shards of 64 under ``root`` and return the manifest path."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    table = export_pairs(FASHION_MNIST, root / "pairs", num_samples=num_samples, seed=seed)
    tables = [read_pairs_table(table, TableColumns(recaption="recaption"))]
    download_tables(tables, root / "download", DownloadOptions(rows_per_shard=64, threads=2))
    return root / "download" / "manifest.json"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return _download_pairs(tmp_path_factory.mktemp("train-data"), num_samples=256, seed=0)


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


def _plant_partial_run(short_cfg, full_cfg, manifest, partial_dir, resumed_dir) -> dict:
    """Train ``short_cfg`` and file its last checkpoint in ``resumed_dir`` as the first part of a ``full_cfg`` run.

    The checkpoint gets the full run's fingerprint, so a trainer for ``full_cfg`` in ``resumed_dir``
    resumes from it. Returns the planted checkpoint state.
    """
    from tulip.train.loop import Trainer

    run_training(short_cfg, manifest, partial_dir, partial_dir / "model.pt")
    name = f"step_{short_cfg.steps:08d}.pt"
    state = torch.load(partial_dir / "checkpoints" / name, weights_only=False)
    (resumed_dir / "checkpoints").mkdir(parents=True)
    state["config_hash"] = Trainer(full_cfg, manifest, resumed_dir).config_hash
    torch.save(state, resumed_dir / "checkpoints" / name)
    return state


def test_resume_picks_up_checkpoint_and_history(manifest, tmp_path):
    """A checkpoint with the run's fingerprint is resumed and the metric history stays continuous."""
    resumed_dir = tmp_path / "resumed"
    _plant_partial_run(_config(steps=3), _config(), manifest, tmp_path / "partial", resumed_dir)
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


FULL_OBJECTIVE = {
    "loss_weights": {
        "image_text_loss": 1.0,
        "image_image_loss": 0.5,
        "text_text_loss": 0.5,
        "image_reconstruction_loss": 0.25,
        "text_reconstruction_loss": 0.1,
    },
    "objective": {
        "crops": {"global_crops": 2, "local_crops": 2, "local_size": 16},
        "text_text": {"recaption_positives": True},  # the Fashion-MNIST pairs carry recaptions
        "image_reconstruction": {"width": 32, "depth": 1, "heads": 4},
        "text_reconstruction": {"layers": 1, "heads": 2, "ff_dim": 64},
    },
}


@pytest.fixture(scope="module")
def views_manifest(tmp_path_factory):
    """Shards in which every fourth sample carries generated views (two edited images and two captions)."""
    from PIL import Image, ImageOps

    from tulip.data.reader import iter_shard
    from tulip.data.shards import read_manifest
    from tulip.data.views import write_training_shards

    root = tmp_path_factory.mktemp("views-data")
    source = _download_pairs(root, num_samples=128, seed=1)
    (root / "views").mkdir()
    text_views, image_views = {}, {}
    index = 0
    for entry in read_manifest(source)["shards"]:
        for raw in iter_shard(root / "download" / entry["name"], lambda reason, _: None):
            key = raw["__key__"]
            if index % 4 == 0:
                caption = raw["txt"].decode("utf-8")
                with Image.open(io.BytesIO(raw["jpg"])) as image:
                    ImageOps.mirror(image).save(root / "views" / f"{key}_pos.jpg")
                    ImageOps.invert(image.convert("RGB")).save(root / "views" / f"{key}_neg.jpg")
                image_views[key] = {"positive": str(root / "views" / f"{key}_pos.jpg"),
                                    "negative": str(root / "views" / f"{key}_neg.jpg")}
                text_views[key] = {"positive": "a picture of " + caption, "negative": "not " + caption}
            index += 1
    write_training_shards(source, root / "shards", text_views, image_views)
    return root / "shards" / "manifest.json"


def _full_config(**overrides) -> TrainConfig:
    values = dict(FULL_OBJECTIVE, steps=4, batch_size=16, lr=5e-4, warmup_steps=1, log_every=1, checkpoint_every=2,
                  shuffle_buffer=32)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def test_full_objective_run_logs_every_term(views_manifest, tmp_path):
    """All five terms train together; each record's loss is the weighted sum of its logged terms."""
    from tulip.models import create_model_from_checkpoint

    cfg = _full_config()
    run_training(cfg, views_manifest, tmp_path, tmp_path / "model.pt")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    weights = FULL_OBJECTIVE["loss_weights"]
    for record in records:
        assert record["loss"] == pytest.approx(sum(w * record[name] for name, w in weights.items()), rel=1e-5)
    assert {"teacher_momentum", "image_image_logit_scale", "text_text_logit_bias"} <= set(records[-1])
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "step_00000004.pt")
    assert any(key.startswith("image_decoder.") for key in state["objective"])
    teacher_weight = state["teacher"]["visual.trunk.patch_embed.proj.weight"]
    assert not torch.equal(teacher_weight, state["model"]["visual.trunk.patch_embed.proj.weight"])
    model = create_model_from_checkpoint(tmp_path / "model.pt")
    assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 128)


def test_full_objective_resume_restores_heads_and_teacher(views_manifest, tmp_path):
    from tulip.train.loop import Trainer

    resumed_dir = tmp_path / "resumed"
    state = _plant_partial_run(_full_config(steps=2), _full_config(), views_manifest, tmp_path / "partial", resumed_dir)
    trainer = Trainer(_full_config(), views_manifest, resumed_dir)
    assert trainer.resumed_from == 2
    for key, value in state["teacher"].items():
        assert torch.equal(trainer.teacher.state_dict()[key], value), key
    for key, value in state["objective"].items():
        assert torch.equal(trainer.task.objective_state_dict()[key], value), key


def _ddp_worker(rank: int, world: int, port: int, manifest: str, out_dir: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = _full_config(steps=2, checkpoint_every=2, objective={**FULL_OBJECTIVE["objective"],
                                                               "contrastive": {"exchange": "ring", "chunk_size": 4}})
    run_training(cfg, manifest, out_dir, os.path.join(out_dir, "model.pt"))


@pytest.mark.distributed
def test_full_objective_trains_with_two_processes(views_manifest, tmp_path):
    """DDP over the task with the ring-exchanged tiled loss: two gloo processes finish and log every term."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(views_manifest), str(tmp_path)), nprocs=2, join=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for name in FULL_OBJECTIVE["loss_weights"]:
        assert all(math.isfinite(r[name]) for r in records), name
    assert (tmp_path / "model.pt").is_file()
