"""A corpus of malformed inputs, one file per kind: each lands in its reason bucket, none crashes or
hangs, and every valid input arrives.

The first half feeds files and captions through the download stage; the second half feeds damaged
shards through the pre-flight check and the training loader. Every file is generated here.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import tulip
from tulip.data.captions import RecaptionMixer
from tulip.data.download import DownloadOptions, download_tables
from tulip.data.images import ImageOptions
from tulip.data.loader import LoaderOptions, build_train_loader
from tulip.data.preflight import ShardCheckError, preflight
from tulip.data.reader import caption_of, iter_samples
from tulip.models.transforms import image_transform

RED = (255, 0, 0)
GREEN_BACKGROUND = (0, 255, 0)


# ---------------------------------------------------------------- image files


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _without_app14(jpeg: bytes) -> bytes:
    """Remove Adobe's APP14 segment (marker FFEE), which records how a CMYK JPEG is stored."""
    out, i = bytearray(jpeg[:2]), 2
    while i < len(jpeg):
        marker, length = jpeg[i:i + 2], int.from_bytes(jpeg[i + 2:i + 4], "big")
        if marker == b"\xff\xda":  # start of scan: the rest is image data
            out += jpeg[i:]
            break
        if marker != b"\xff\xee":
            out += jpeg[i:i + 2 + length]
        i += 2 + length
    return bytes(out)


def _png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over chunk type and IHDR data
    return bytes(data)


def _exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG, left half black and right half white, whose EXIF orientation 6 means 'rotate 90 clockwise'."""
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(image.convert("RGB"), "JPEG", exif=exif, quality=95)


def _palette_png_with_transparency() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)  # index 0 blue, index 1 red
    image.paste(1, (0, 0, 8, 16))  # left half index 1, made transparent below
    return _encode(image, "PNG", transparency=1)


IMAGE_FILES = {
    # name: (bytes, expected reason or None when stored)
    "valid.jpg": (_encode(Image.new("RGB", (24, 16), RED), "JPEG"), None),
    "truncated.jpg": (_encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
                              "JPEG")[:900], "truncated"),
    "cmyk_adobe.jpg": (_encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"), None),
    "cmyk_plain.jpg": (_without_app14(_encode(Image.new("CMYK", (16, 16), (255, 0, 0, 255)), "JPEG")), None),
    "gray.png": (_encode(Image.new("L", (16, 16), 77), "PNG"), None),
    "gray16.png": (_encode(Image.fromarray(np.full((16, 16), 128 * 257, np.uint16)), "PNG"), None),
    "palette_transparent.png": (_palette_png_with_transparency(), None),
    "gray_alpha.png": (_encode(Image.new("LA", (16, 16), (200, 0)), "PNG"), None),
    "exif_rotated.jpg": (_exif_rotated_jpeg(), None),
    "html.jpg": (b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head></html>", "not_an_image"),
    "zero_bytes.jpg": (b"", "empty_file"),
    "huge.png": (_png_claiming_size(50_000, 50_000), "too_large"),
    "tiny.png": (_encode(Image.new("RGB", (4, 4), RED), "PNG"), "too_small"),
    "portable_pixmap.ppm": (_encode(Image.new("RGB", (16, 16), RED), "PPM"), "unsupported_format"),
}

CAPTIONS = {
    # name: (caption, expected reason or the stored caption)
    "empty": ("", "empty_caption"),
    "whitespace": ("  \t\n  ", "empty_caption"),
    "missing": (None, "missing_caption"),
    "very_long": ("a" * 5000, "a" * 300),
    "non_latin": ("一只猫 🐈 кошка قطة नमस्ते", "一只猫 🐈 кошка قطة नमस्ते"),
    "control_characters": ("red\x00 square\x07\r\n", "red square"),
}


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """Download a table whose rows are the image corpus (with a good caption) and the caption corpus (with a good image)."""
    root = tmp_path_factory.mktemp("corpus")
    for name, (data, _) in IMAGE_FILES.items():
        (root / name).write_bytes(data)
    rows = [{"url": name, "caption": f"file {name}"} for name in IMAGE_FILES]
    rows.append({"url": "no_such_file.jpg", "caption": "file no_such_file.jpg"})
    rows += [{"url": "valid.jpg", "caption": caption} for caption, _ in CAPTIONS.values()]
    options = DownloadOptions(rows_per_shard=8, threads=4, max_caption_chars=300,
                              image=ImageOptions(background=GREEN_BACKGROUND, min_size=8))
    stats = download_tables([pa.Table.from_pylist(rows)], root / "out", options, base_dirs=[root])
    samples = list(iter_samples(root / "out" / "manifest.json"))
    records = [json.loads(p.read_text()) for p in sorted((root / "out").glob("shard-*.json"))]
    skipped = {row["row"]: row["reason"] for record in records for row in record["skipped_rows"]}
    return rows, stats, samples, skipped


def _image_of(samples: list[dict], name: str) -> Image.Image:
    sample = next(s for s in samples if caption_of(s) == f"file {name}")
    return Image.open(io.BytesIO(sample["jpg"]))


def test_corpus_each_bad_file_in_its_bucket(downloaded):
    rows, _, _, skipped = downloaded
    for index, (name, (_, reason)) in enumerate(IMAGE_FILES.items()):
        assert skipped.get(index) == reason, name
    assert skipped[len(IMAGE_FILES)] == "missing_file"


def test_corpus_each_bad_caption_in_its_bucket(downloaded):
    rows, _, samples, skipped = downloaded
    first = len(IMAGE_FILES) + 1
    stored = [caption_of(s) for s in samples if not caption_of(s).startswith("file ")]
    expected_stored = []
    for offset, (name, (_, outcome)) in enumerate(CAPTIONS.items()):
        if outcome in ("empty_caption", "missing_caption"):
            assert skipped.get(first + offset) == outcome, name
        else:
            assert first + offset not in skipped, name
            expected_stored.append(outcome)
    assert stored == expected_stored


def test_corpus_counts_add_up(downloaded):
    """Every row is either stored or skipped with a reason, and the counts show which."""
    rows, stats, samples, skipped = downloaded
    assert stats["rows"] == len(rows)
    assert stats["stored"] == len(samples) == len(rows) - len(skipped)
    assert sum(stats["skipped"].values()) == len(skipped)
    assert stats["notes"]["caption_truncated"] == 1


def test_corpus_valid_images_arrive_as_rgb_jpeg(downloaded):
    _, _, samples, _ = downloaded
    for sample in samples:
        with Image.open(io.BytesIO(sample["jpg"])) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"


@pytest.mark.parametrize("name", ["cmyk_adobe.jpg", "cmyk_plain.jpg"])
def test_corpus_cmyk_jpegs_come_out_red(downloaded, name):
    """Adobe-inverted and plain CMYK JPEGs both decode to the red they encode."""
    image = _image_of(downloaded[2], name)
    assert image.getpixel((8, 8)) == pytest.approx(RED, abs=12)


def test_corpus_grayscale_and_16_bit_keep_their_level(downloaded):
    assert _image_of(downloaded[2], "gray.png").getpixel((8, 8)) == pytest.approx((77, 77, 77), abs=3)
    assert _image_of(downloaded[2], "gray16.png").getpixel((8, 8)) == pytest.approx((128, 128, 128), abs=3)


def test_corpus_transparency_lands_on_background(downloaded):
    palette = _image_of(downloaded[2], "palette_transparent.png")
    assert palette.getpixel((2, 8)) == pytest.approx(GREEN_BACKGROUND, abs=12)  # transparent red
    assert palette.getpixel((13, 8)) == pytest.approx((0, 0, 255), abs=12)  # opaque blue
    assert _image_of(downloaded[2], "gray_alpha.png").getpixel((8, 8)) == pytest.approx(GREEN_BACKGROUND, abs=12)


def test_corpus_exif_orientation_is_applied(downloaded):
    """Orientation 6 turns the 40x20 image upright: 20x40, the black left half now on top."""
    image = _image_of(downloaded[2], "exif_rotated.jpg")
    assert image.size == (20, 40)
    assert image.getpixel((10, 5))[0] < 40
    assert image.getpixel((10, 35))[0] > 215


# ---------------------------------------------------------------- damaged shards


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sample(key: str, caption: str | None = "a caption", image: bytes | None = None) -> list[tuple[str, bytes]]:
    members = []
    if image is not False:
        members.append((f"{key}.jpg", image or _encode(Image.new("RGB", (16, 16), (40, 90, 200)), "JPEG")))
    if caption is not None:
        members.append((f"{key}.txt", caption.encode()))
    return members


def _offset_of(tar: bytes, member: str) -> int:
    """Byte offset of ``member``'s header in ``tar``."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return archive.getmember(member).offset


@pytest.fixture()
def damaged_shards(tmp_path):
    """Five shards: malformed samples, a tar cut mid-member, a tar cut at a header, an empty file and a missing one."""
    malformed = _tar(
        _sample("k0") + _sample("k1") + _sample("nocaption", caption=None) + _sample("noimage", image=False)
        + _sample("a.b") + _sample("k2") + _sample("corrupt", image=b"\xff\xd8 not really a jpeg")
        + _sample("k1") + _sample("k3") + [("k4.txt", b"one"), ("k4.txt", b"two"), ("k4.jpg", _sample("x")[0][1])]
        + _sample("k5")
    )
    whole = _tar([m for i in range(6) for m in _sample(f"t{i}")])
    cut_mid_member = whole[: _offset_of(whole, "t4.jpg") + 512 + 10]  # 10 bytes into t4.jpg's data
    cut_at_header = whole[: _offset_of(whole, "t3.jpg")]
    shards = {
        "shard-000000.tar": (malformed, 12),
        "shard-000001.tar": (cut_mid_member, 6),
        "shard-000002.tar": (cut_at_header, 6),
        "shard-000003.tar": (b"", 3),
        "shard-000004.tar": (None, 3),
    }
    for name, (data, _) in shards.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    manifest = {"format": "tulip-shards/1", "num_samples": sum(n for _, n in shards.values()),
                "shards": [{"name": name, "num_samples": n} for name, (_, n) in shards.items()]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "manifest.json"


# The samples that decode: not k1's later copy, k4 (two captions), the samples at or after a cut,
# nor "corrupt", which is well formed but whose image does not decode. The tar cut at a header
# repeats keys t0 and t1 of the other cut tar.
VALID_KEYS = {"k0", "k1", "k2", "k3", "k5", "t0", "t1", "t2", "t3"}


def test_preflight_reports_every_damaged_shard(damaged_shards):
    with pytest.raises(ShardCheckError) as raised:
        preflight(damaged_shards, "full", "raise")
    report = str(raised.value)
    assert ("shard-000000.tar: short: 6 of 12 samples; dropped samples: 1 dotted_key, 2 duplicate_key, "
            "1 missing_caption, 1 missing_image") in report
    assert "shard-000001.tar: unreadable after 4 complete samples: unexpected end of data" in report
    assert "shard-000002.tar: unreadable after 2 complete samples: no end-of-archive marker" in report
    assert "2 key(s) also in other shards, e.g. 't0' in shard-000001.tar" in report
    assert "shard-000003.tar: empty file (0 bytes)" in report
    assert "shard-000004.tar: missing" in report
    assert "usable samples: 12 of 30 listed" in report


def test_preflight_skip_returns_usable_counts(damaged_shards):
    assert preflight(damaged_shards, "full", "skip") == [6, 4, 2, 0, 0]


def test_preflight_quick_finds_missing_and_empty_files(damaged_shards):
    with pytest.raises(ShardCheckError, match="shard-000004.tar: missing"):
        preflight(damaged_shards, "quick", "raise")


def _loader(manifest: Path, counts: list[int], workers: int):
    cfg = tulip.get_model_config("tulip-tiny")
    options = LoaderOptions(batch_size=1, num_workers=workers, shuffle_buffer=4, shuffle_initial=2, timeout_s=60)
    paths = [str(manifest.parent / entry["name"]) for entry in json.loads(manifest.read_text())["shards"]]
    return build_train_loader(paths, counts, image_transform(cfg, train=True), tulip.get_tokenizer(cfg), options,
                              RecaptionMixer())


def _epoch(loader) -> tuple[list[str], dict[str, int]]:
    keys, skipped = [], {}
    for batch in loader:
        assert batch["image"].shape == (1, 3, 32, 32)
        keys += batch["key"]
        for reason, count in batch["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    return keys, skipped


@pytest.mark.timeout(120)
def test_loader_reads_every_valid_sample_once_after_preflight(damaged_shards):
    """With the usable counts of a full check, one epoch yields each valid sample once; the undecodable one is replaced."""
    counts = preflight(damaged_shards, "full", "skip")
    keys, skipped = _epoch(_loader(damaged_shards, counts, workers=0))
    assert len(keys) == sum(counts) == 12
    assert set(keys) == VALID_KEYS
    assert skipped["decode_error"] == 1  # "corrupt"
    assert skipped["repeated_to_fill"] == 1
    assert {"missing_caption", "missing_image", "dotted_key", "duplicate_key"} <= set(skipped)


@pytest.mark.timeout(120)
def test_loader_survives_shards_damaged_after_the_check(damaged_shards):
    """Trusting the manifest's counts, two loader workers hit the cut shards, log them and still deliver full batches."""
    loader = _loader(damaged_shards, [12, 6, 6, 3, 3], workers=2)
    keys, skipped = _epoch(loader)
    assert len(keys) == len(loader) == 30
    assert set(keys) == VALID_KEYS
    assert skipped["shard_read_error"] >= 3  # the two cut tars and the empty file
    assert skipped["missing_shard"] >= 1
    assert skipped["repeated_to_fill"] == 30 - 11  # 11 samples decode: 5 + 4 + 2


def test_check_shards_command_reports_and_fails(damaged_shards):
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "tulip", "check-shards", "--manifest", str(damaged_shards)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "shard-000004.tar: missing" in result.stdout
    assert "usable samples: 12 of 30 listed" in result.stdout
