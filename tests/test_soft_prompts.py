"""Soft prompts: pairs through the table download, the training loss falls, the learned embeddings change the edits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import FASHION_MNIST, requires_fashion_mnist
from tulip.cli.workflow import download_shard_names
from tulip.data.download import download_config, download_tables
from tulip.data.fashion_mnist import export_edit_pairs
from tulip.data.shards import read_manifest
from tulip.data.table import read_pairs_tables
from tulip.geco.image_views import ImageEditor, ImageEditSettings
from tulip.geco.soft_prompts import SoftPromptSettings, SoftPromptTrainer, read_edit_pairs
from tulip.geco.tiny_models import build_tiny_instruct_pix2pix

PAIR_COLUMNS = {"caption_column": "instruction", "recaption_column": None, "meta_columns": ["kind"], "threads": 2}


@pytest.fixture(scope="module")
def tiny_editor(tmp_path_factory):
    return str(build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("editor"), seed=0))


@pytest.fixture(scope="module")
def edit_pairs(tmp_path_factory):
    """The Fashion-MNIST pairs table, downloaded once by its source and once by its target column."""
    root = tmp_path_factory.mktemp("pairs")
    table = export_edit_pairs(FASHION_MNIST, root / "table", num_pairs=48, seed=0)
    manifests = []
    for side in ("source", "target"):
        columns, options = download_config({**PAIR_COLUMNS, "url_column": side, "rows_per_shard": 20})
        download_tables(read_pairs_tables([table], columns), root / side, options, base_dirs=[table.parent])
        manifests.append(root / side / "manifest.json")
    return manifests


@requires_fashion_mnist
def test_planned_shard_names_match_download(edit_pairs):
    """The workflow plans one GeCo job per shard from the table alone; the download writes exactly those shards."""
    table = edit_pairs[0].parent.parent / "table" / "edit_pairs.tsv"
    section = {**PAIR_COLUMNS, "url_column": "source", "rows_per_shard": 20}
    planned = download_shard_names([str(table)], None, section)
    written = [entry["name"].removesuffix(".tar") for entry in read_manifest(edit_pairs[0])["shards"]]
    assert planned == written == ["shard-000000", "shard-000001", "shard-000002"]
    assert download_shard_names(None, 48, section) == planned


@requires_fashion_mnist
def test_edit_pairs_join_by_kind(edit_pairs):
    pairs, counts = read_edit_pairs(*edit_pairs)
    assert (len(pairs["positive"]), len(pairs["negative"])) == (24, 24)
    assert counts["missing_target"] == 0
    source, target, instruction = pairs["negative"][0]
    assert instruction.startswith("turn the ")
    assert source.size == target.size == (28, 28)


@pytest.fixture(scope="module")
def learned(edit_pairs, tiny_editor, tmp_path_factory):
    """Soft prompts trained briefly, and untrained ones (the encoded instruction sentences), both saved."""
    pairs, _ = read_edit_pairs(*edit_pairs)
    folder = tmp_path_factory.mktemp("soft_prompts")
    untrained = SoftPromptTrainer(tiny_editor, SoftPromptSettings(steps=0, held_out=8))
    untrained.save(folder / "untrained.pt", untrained.fit(pairs))
    trained = SoftPromptTrainer(tiny_editor, SoftPromptSettings(steps=12, lr=1e-2, batch_size=4, held_out=8))
    unet_before = {k: v.clone() for k, v in trained.unet.state_dict().items()}
    history = trained.fit(pairs)
    trained.save(folder / "trained.pt", history)
    return {"folder": folder, "history": history, "trainer": trained, "unet_before": unet_before}


@requires_fashion_mnist
@pytest.mark.parametrize("view", ["positive", "negative"])
def test_soft_prompt_loss_falls(learned, view):
    """The held-out loss, on fixed noise and timesteps, is lower after training."""
    history = learned["history"]
    assert history["held_out_after"][view] < history["held_out_before"][view]


@requires_fashion_mnist
def test_soft_prompt_training_keeps_unet_frozen(learned):
    unet = learned["trainer"].unet.state_dict()
    assert all(torch.equal(value, unet[name]) for name, value in learned["unet_before"].items())


@requires_fashion_mnist
def test_learned_embeddings_change_the_edits(learned, tiny_editor):
    """Untrained soft prompts reproduce the instruction edits; trained ones give other edits."""
    images = [("000000001", Image.new("RGB", (28, 28), (90, 140, 200)))]
    settings = ImageEditSettings(num_inference_steps=2)

    def edits(soft_prompts: Path | None):
        view = ImageEditor(tiny_editor, settings, soft_prompts=soft_prompts).generate(images)["000000001"]
        return [list(view[name].getdata()) for name in ("positive", "negative")]

    instructed = edits(None)
    assert edits(learned["folder"] / "untrained.pt") == instructed
    trained = edits(learned["folder"] / "trained.pt")
    assert trained[0] != instructed[0]
    assert trained[1] != instructed[1]


def test_saved_embeddings_must_match_the_editor(tiny_editor, tmp_path):
    torch.save({"positive": torch.zeros(1, 77, 16), "negative": torch.zeros(1, 77, 16)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="shape"):
        ImageEditor(tiny_editor, ImageEditSettings(), soft_prompts=tmp_path / "wrong.pt")
