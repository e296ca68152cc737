"""The training loader in one process: batch shapes, epochs, determinism, resampling and recaptions."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

import tulip
from tulip.data.captions import RecaptionMixer
from tulip.data.loader import LoaderOptions, SampleDecoder, build_train_loader
from tulip.data.shards import ShardWriter, write_manifest
from tulip.models.transforms import image_transform

SHARD_SIZES = (7, 5, 8)


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (value, 255 - value, (7 * value) % 256)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of 7, 5 and 8 samples; every third sample has views, every other one a recaption."""
    root = tmp_path_factory.mktemp("loader-shards")
    paths, entries, key = [], [], 0
    for index, size in enumerate(SHARD_SIZES):
        path = root / f"shard-{index:06d}.tar"
        with ShardWriter(path) as writer:
            for _ in range(size):
                members = {"jpg": _jpeg(12 * key), "txt": f"caption {key}".encode(), "json": b"{}"}
                if key % 2:
                    members["recap.txt"] = f"recaption {key}".encode()
                if key % 3 == 0:
                    members.update({"pos.txt": b"paraphrase", "neg.txt": b"negative",
                                    "pos.jpg": _jpeg(1), "neg.jpg": _jpeg(250)})
                writer.add(f"{key:04d}", members)
                key += 1
        paths.append(str(path))
        entries.append({"name": path.name, "num_samples": size, "num_bytes": writer.num_bytes})
    write_manifest(root, entries)
    return paths


def _loader(shards, **overrides):
    cfg = tulip.get_model_config("tulip-tiny")
    values = dict(batch_size=4, shuffle_buffer=6, shuffle_initial=3, seed=0)
    values.update(overrides)
    captions = values.pop("captions", None)
    return build_train_loader(shards, list(SHARD_SIZES), image_transform(cfg, train=True), tulip.get_tokenizer(cfg),
                              LoaderOptions(**values), captions)


def _keys(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def test_loader_batches_have_fixed_shapes_and_views(shards):
    loader = _loader(shards)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    for batch in batches:
        assert batch["image"].shape == (4, 3, 32, 32)
        assert batch["text"].shape == (4, 24)
        assert batch["recon_text"].shape == (4, 24)
        owners = batch["text_views_index"].tolist()
        assert owners == [i for i, key in enumerate(batch["key"]) if int(key) % 3 == 0]
        if owners:
            assert batch["text_views"].shape == (len(owners), 2, 24)
            assert batch["image_views"].shape == (len(owners), 2, 3, 32, 32)


@pytest.mark.parametrize("workers", [0, 2])
def test_epoch_reads_every_sample_once(shards, workers):
    """20 samples in batches of 4: every sample exactly once per epoch, in a different order each epoch."""
    loader = _loader(shards, num_workers=workers)
    first, second = _keys(loader), _keys(loader)
    assert sorted(first) == sorted(second) == [f"{k:04d}" for k in range(20)]
    assert first != second


def test_epoch_leaves_out_less_than_a_batch(shards):
    loader = _loader(shards, batch_size=6)
    keys = _keys(loader)
    assert len(loader) == 3
    assert len(keys) == len(set(keys)) == 18


def test_same_seed_and_epoch_give_identical_batches(shards):
    """The stream, augmentations included, depends on (seed, epoch), not on the process's RNG state."""
    torch.manual_seed(1)
    first = list(_loader(shards))
    torch.manual_seed(2)
    second = list(_loader(shards))
    assert [b["key"] for b in first] == [b["key"] for b in second]
    for a, b in zip(first, second):
        assert torch.equal(a["image"], b["image"])


def test_set_epoch_replays_an_epoch(shards):
    loader = _loader(shards)
    epoch0, epoch1 = _keys(loader), _keys(loader)
    loader.set_epoch(0)
    assert _keys(loader) == epoch0
    assert _keys(loader) == epoch1


def test_other_seed_gives_other_order(shards):
    assert _keys(_loader(shards, seed=0)) != _keys(_loader(shards, seed=1))


def test_resampled_epoch_has_fixed_length(shards):
    loader = _loader(shards, resample=True, samples_per_epoch=36)
    assert len(loader) == 9
    assert len(_keys(loader)) == 36
    assert len(_keys(loader)) == 36


def test_too_few_samples_for_a_global_batch(shards):
    with pytest.raises(ValueError, match="fewer than one global batch of 8 x 3"):
        _loader(shards, batch_size=8, world_size=3)


def test_recon_text_is_the_recaption_when_chosen(shards):
    """With every recaption taken for reconstruction only, recon_text contains it and text keeps the caption."""
    cfg = tulip.get_model_config("tulip-tiny")
    tokenizer = tulip.get_tokenizer(cfg)
    loader = _loader(shards, captions=RecaptionMixer(contrastive=0.0, reconstruction=1.0))
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            caption = f"caption {int(key)}"
            recaption = f"recaption {int(key)}" if int(key) % 2 else caption
            assert torch.equal(batch["text"][i], tokenizer([caption])[0])
            assert torch.equal(batch["recon_text"][i], tokenizer([recaption])[0])


@pytest.mark.parametrize("contrastive", [0.0, 1.0])
def test_text_pair_is_other_caption(shards, contrastive):
    """Samples with a recaption (odd keys) get the other caption as ``text_pair``; the rest get none."""
    tokenizer = tulip.get_tokenizer(tulip.get_model_config("tulip-tiny"))
    mixer = RecaptionMixer(contrastive=contrastive, reconstruction=0.5)
    seen = 0
    for batch in _loader(shards, text_pairs=True, captions=mixer):
        owners = batch["text_pair_index"].tolist()
        assert owners == [i for i, key in enumerate(batch["key"]) if int(key) % 2]
        for row, owner in enumerate(owners):
            key = int(batch["key"][owner])
            text, other = (f"caption {key}", f"recaption {key}")[:: 1 if contrastive == 0.0 else -1]
            assert torch.equal(batch["text"][owner], tokenizer([text])[0])
            assert torch.equal(batch["text_pair"][row], tokenizer([other])[0])
            seen += 1
    assert seen == 10


def test_loader_without_text_pairs_has_none(shards):
    batch = next(iter(_loader(shards)))
    assert batch["text_pair_index"].numel() == 0
    assert "text_pair" not in batch


def test_decoder_without_recaption_uses_caption_twice():
    cfg = tulip.get_model_config("tulip-tiny")
    decoder = SampleDecoder(image_transform(cfg, train=False), tulip.get_tokenizer(cfg), use_views=False,
                            captions=RecaptionMixer(1.0, 1.0))
    sample = decoder({"__key__": "1", "jpg": _jpeg(3), "txt": b"a red square", "json": json.dumps({}).encode()})
    assert torch.equal(sample["text"], sample["recon_text"])


def test_recaption_mixer_draws_the_configured_fractions():
    """Over 20,000 keys: 20 % contrastive, 50 % reconstruction, drawn independently (10 % both)."""
    mixer = RecaptionMixer(contrastive=0.2, reconstruction=0.5, seed=3)
    picks = [mixer(f"{k:09d}", "caption", "recaption") for k in range(20_000)]
    contrastive = sum(text == "recaption" for text, _ in picks) / len(picks)
    reconstruction = sum(recon == "recaption" for _, recon in picks) / len(picks)
    both = sum(text == recon == "recaption" for text, recon in picks) / len(picks)
    assert contrastive == pytest.approx(0.2, abs=0.015)
    assert reconstruction == pytest.approx(0.5, abs=0.015)
    assert both == pytest.approx(0.1, abs=0.01)


def test_recaption_mixer_is_deterministic_per_key_and_seed():
    keys = [f"{k:09d}" for k in range(200)]
    first = [RecaptionMixer(0.5, 0.5, seed=0)(k, "c", "r") for k in keys]
    assert first == [RecaptionMixer(0.5, 0.5, seed=0)(k, "c", "r") for k in keys]
    assert first != [RecaptionMixer(0.5, 0.5, seed=1)(k, "c", "r") for k in keys]


def test_recaption_mixer_rejects_fraction_above_one():
    with pytest.raises(ValueError, match="recaption.contrastive"):
        RecaptionMixer(contrastive=1.5)
