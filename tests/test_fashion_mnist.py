"""The embedded Fashion-MNIST source: IDX parsing, caption templates and the evaluation folders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from conftest import FASHION_MNIST, requires_fashion_mnist
from tulip.data.fashion_mnist import class_info, export_eval_folders, export_pairs, load_split, read_idx
from tulip.data.table import TableColumns, read_pairs_table


def test_read_idx_on_handmade_file(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    np.testing.assert_array_equal(read_idx(path), images)


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_split(tmp_path, "train")


@requires_fashion_mnist
def test_official_splits_have_published_sizes():
    train_images, train_labels = load_split(FASHION_MNIST, "train")
    test_images, test_labels = load_split(FASHION_MNIST, "test")
    assert train_images.shape == (60000, 28, 28)
    assert test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10


@requires_fashion_mnist
def test_export_pairs_captions_name_the_class(tmp_path):
    table = export_pairs(FASHION_MNIST, tmp_path, num_samples=200, seed=3)
    records = read_pairs_table(table, TableColumns(recaption="recaption")).to_pylist()
    assert len(records) == 200
    classes = class_info()
    for record in records:
        synonyms = classes[int(record["label"])]["synonyms"]
        assert any(s in record["caption"] for s in synonyms), record
        assert any(s in record["recaption"] for s in synonyms), record
        assert len(record["recaption"]) > len(record["caption"])
    assert len({r["caption"] for r in records}) > 50  # templates and synonyms vary


@requires_fashion_mnist
def test_eval_folders_hold_test_split_and_pool(tmp_path):
    export_eval_folders(FASHION_MNIST, tmp_path, train_per_class=3, seed=0)
    assert len(list((tmp_path / "test").rglob("*.png"))) == 10000
    assert sorted(len(list(d.iterdir())) for d in (tmp_path / "train").iterdir()) == [3] * 10
    assert (tmp_path / "classnames.txt").read_text().split("\n")[0] == "t-shirt"
