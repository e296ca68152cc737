"""Shards with linked views, and the training loader reading them."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
import webdataset as wds
from PIL import Image

import tulip
from tulip.data.loader import LoaderOptions, build_train_loader
from tulip.data.shards import shard_paths, write_shards
from tulip.models.transforms import image_transform


def _image(path, value):
    Image.new("L", (28, 28), value).save(path)
    return str(path)


@pytest.fixture()
def samples(tmp_path):
    rows = []
    for i in range(10):
        sample = {"key": f"{i:09d}", "image": _image(tmp_path / f"{i}.jpg", 20 * i), "caption": f"caption {i}",
                  "meta": {"label": i % 3}}
        if i % 4 == 0:
            sample["text_views"] = {"positive": f"paraphrase {i}", "negative": f"negative {i}"}
            sample["image_views"] = {"positive": _image(tmp_path / f"{i}p.jpg", 5), "negative": _image(tmp_path / f"{i}n.jpg", 250)}
        rows.append(sample)
    return rows


def test_shards_keep_views_with_their_sample(samples, tmp_path):
    manifest = write_shards(samples, tmp_path / "shards", samples_per_shard=4, seed=0)
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest["num_text_views"] == manifest["num_image_views"] == 3
    seen = {}
    for sample in wds.WebDataset(shard_paths(tmp_path / "shards" / "manifest.json"), shardshuffle=False):
        seen[sample["__key__"]] = sample
    assert sorted(seen) == [s["key"] for s in samples]
    assert seen["000000004"]["pos.txt"] == b"paraphrase 4"
    assert {"pos.jpg", "neg.jpg", "neg.txt"} <= set(seen["000000008"])
    assert "pos.txt" not in seen["000000001"]
    assert json.loads(seen["000000005"]["json"]) == {"label": 2}


def test_dotted_or_duplicate_keys_are_rejected(samples, tmp_path):
    samples[1]["key"] = "a.b"
    with pytest.raises(ValueError, match="a.b"):
        write_shards(samples, tmp_path / "dotted", 4)
    samples[1]["key"] = samples[0]["key"]
    with pytest.raises(ValueError, match="duplicated"):
        write_shards(samples, tmp_path / "duplicate", 4)


def test_shards_are_reproducible(samples, tmp_path):
    write_shards(samples, tmp_path / "a", 4, seed=1)
    write_shards(samples, tmp_path / "b", 4, seed=1)
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_loader_yields_fixed_batches_with_packed_views(samples, tmp_path):
    write_shards(samples, tmp_path / "shards", samples_per_shard=5, seed=0)
    cfg = tulip.get_model_config("tulip-tiny")
    loader = build_train_loader(
        shard_paths(tmp_path / "shards" / "manifest.json"),
        image_transform(cfg, train=True),
        tulip.get_tokenizer(cfg),
        LoaderOptions(batch_size=4, shuffle_buffer=10, shuffle_initial=5),
        batches_per_epoch=3,
    )
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch["image"].shape == (4, 3, 32, 32)
        assert batch["text"].shape == (4, 24)
        k = len(batch["text_views_index"])
        if k:
            assert batch["text_views"].shape == (k, 2, 24)
            assert batch["image_views"].shape == (k, 2, 3, 32, 32)
    assert len(list(loader)) == 3  # the next epoch has the same length


def test_corrupt_member_is_skipped_and_counted(tmp_path):
    from tulip.data.stats import SkipCounter

    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, payload in [("000000000", b"not a jpeg"), ("000000001", None)]:
            data = payload
            if data is None:
                buffer = io.BytesIO()
                Image.new("RGB", (28, 28)).save(buffer, format="JPEG")
                data = buffer.getvalue()
            for ext, content in [("jpg", data), ("txt", b"a caption")]:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    cfg = tulip.get_model_config("tulip-tiny")
    skips = SkipCounter("test")
    loader = build_train_loader([str(shard)], image_transform(cfg, train=False), tulip.get_tokenizer(cfg),
                                LoaderOptions(batch_size=1, shuffle_buffer=1, shuffle_initial=1), 2, skips)
    batches = list(loader)
    assert len(batches) == 2
    assert all(b["key"] == ["000000001"] for b in batches)
    assert skips.total >= 1
