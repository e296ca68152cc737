"""Shard writing and reading: the sample layout, atomic shards, views linked by key, manifests."""

from __future__ import annotations

import io
import json

import pytest
import webdataset as wds
from PIL import Image

from tulip.data.reader import ShardReadError, iter_samples, iter_shard
from tulip.data.shards import ShardWriter, read_manifest, write_manifest
from tulip.data.views import read_views, write_training_shards


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (value, value, value)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _members(i: int, recaption: bool = False) -> dict[str, bytes]:
    members = {"jpg": _jpeg(10 * i), "txt": f"caption {i}".encode(), "json": json.dumps({"label": i}).encode()}
    if recaption:
        members["recap.txt"] = f"a much longer caption {i}".encode()
    return members


@pytest.fixture()
def source(tmp_path):
    """Two downloaded-style shards of 4 and 3 samples and their manifest."""
    shards = []
    for index, keys in enumerate([range(0, 4), range(4, 7)]):
        with ShardWriter(tmp_path / f"shard-{index:06d}.tar") as writer:
            for i in keys:
                writer.add(f"{i:09d}", _members(i, recaption=i % 2 == 0))
        shards.append({"name": f"shard-{index:06d}.tar", "num_samples": writer.num_samples, "num_bytes": writer.num_bytes})
    write_manifest(tmp_path, shards)
    return tmp_path / "manifest.json"


def test_writer_output_reads_back_with_webdataset(source):
    """webdataset itself groups the members into the samples written."""
    samples = list(wds.WebDataset(str(source.parent / "shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["000000000", "000000001", "000000002", "000000003"]
    assert samples[2]["txt"] == b"caption 2"
    assert samples[2]["recap.txt"] == b"a much longer caption 2"
    assert "recap.txt" not in samples[1]


def test_iter_shard_matches_webdataset(source):
    path = source.parent / "shard-000001.tar"
    ours = [{k: v for k, v in s.items() if k != "__shard__"} for s in iter_shard(path)]
    theirs = [{k: v for k, v in s.items() if k not in ("__url__", "__local_path__")} for s in wds.WebDataset(str(path), shardshuffle=False)]
    assert ours == theirs


def test_writer_keeps_members_of_a_sample_together(source):
    import tarfile

    with tarfile.open(source.parent / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names[:4] == ["000000000.jpg", "000000000.txt", "000000000.recap.txt", "000000000.json"]
    assert names[4:7] == ["000000001.jpg", "000000001.txt", "000000001.json"]


@pytest.mark.parametrize("key", ["a.b", "a/b", "", "x" * 129, "caf\u00e9"])
def test_writer_rejects_invalid_key(tmp_path, key):
    with ShardWriter(tmp_path / "shard.tar") as writer, pytest.raises(ValueError, match="is invalid"):
        writer.add(key, _members(0))


def test_writer_rejects_duplicate_key(tmp_path):
    with ShardWriter(tmp_path / "shard.tar") as writer:
        writer.add("000", _members(0))
        with pytest.raises(ValueError, match="already in shard.tar"):
            writer.add("000", _members(1))


def test_writer_rejects_sample_without_caption(tmp_path):
    with ShardWriter(tmp_path / "shard.tar") as writer, pytest.raises(ValueError, match="txt"):
        writer.add("000", {"jpg": _jpeg(0)})


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "shard.tar") as writer:
        writer.add("000", _members(0))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_writer_is_reproducible(tmp_path):
    for name in ("a.tar", "b.tar"):
        with ShardWriter(tmp_path / name) as writer:
            for i in range(3):
                writer.add(f"{i:03d}", _members(i))
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_training_shards_keep_views_with_their_sample(source, tmp_path):
    views = tmp_path / "augment"
    (views / "views").mkdir(parents=True)
    (views / "views" / "p.jpg").write_bytes(_jpeg(1))
    (views / "views" / "n.jpg").write_bytes(_jpeg(2))
    (views / "text_views.jsonl").write_text(
        json.dumps({"key": "000000005", "caption": "caption 5", "positive": "paraphrase 5", "negative": "not 5"}) + "\n"
        + json.dumps({"key": "999999999", "caption": "gone", "positive": "p", "negative": "n"}) + "\n")
    (views / "image_views.jsonl").write_text(
        json.dumps({"key": "000000002", "positive": "views/p.jpg", "negative": "views/n.jpg"}) + "\n")
    text_views, image_views = read_views(views / "text_views.jsonl", views / "image_views.jsonl")
    manifest = write_training_shards(source, tmp_path / "train", text_views, image_views)

    assert [s["name"] for s in manifest["shards"]] == ["shard-000000.tar", "shard-000001.tar"]
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 3]
    assert (manifest["num_text_views"], manifest["num_image_views"], manifest["num_recaptions"]) == (1, 1, 4)
    samples = {s["__key__"]: s for s in iter_samples(tmp_path / "train" / "manifest.json")}
    assert list(samples) == [f"{i:09d}" for i in range(7)]
    assert samples["000000005"]["pos.txt"] == b"paraphrase 5"
    assert samples["000000005"]["neg.txt"] == b"not 5"
    assert samples["000000002"]["pos.jpg"] == _jpeg(1)
    assert samples["000000002"]["recap.txt"] == b"a much longer caption 2"
    assert "pos.txt" not in samples["000000001"]
    assert json.loads(samples["000000003"]["json"]) == {"label": 3}


def test_read_views_names_bad_line(tmp_path):
    path = tmp_path / "text_views.jsonl"
    path.write_text('{"key": "1", "positive": "p", "negative": "n"}\n{"key": "2", "positive": \n')
    with pytest.raises(ValueError, match="line 2"):
        read_views(path, None)


def test_read_manifest_names_missing_shards(source):
    (source.parent / "shard-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match="shard-000001.tar"):
        read_manifest(source)


def test_iter_shard_raises_for_missing_file(tmp_path):
    with pytest.raises(ShardReadError) as raised:
        list(iter_shard(tmp_path / "absent.tar"))
    assert raised.value.reason == "missing_shard"
