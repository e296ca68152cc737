"""Write samples and their generated views into webdataset tar shards with a manifest.

A sample is the run of tar members that share a key: ``<key>.jpg`` (image), ``<key>.txt``
(caption), ``<key>.json`` (metadata) and, when GeCo produced them, ``<key>.pos.txt``,
``<key>.neg.txt``, ``<key>.pos.jpg`` and ``<key>.neg.jpg``. Keeping the views under the source key
is what links them to their sample. Each shard is written under a temporary name and renamed when
complete; ``manifest.json`` is written last.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tarfile
from pathlib import Path

from tulip.data.io import atomic_write_json

logger = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{index:06d}.tar"


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # identical inputs give byte-identical shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def sample_members(sample: dict) -> list[tuple[str, bytes]]:
    """Return (extension, bytes) pairs for one sample dict with ``image``, ``caption``, ``meta`` and optional views."""
    members = [
        ("jpg", Path(sample["image"]).read_bytes()),
        ("txt", sample["caption"].encode("utf-8")),
        ("json", json.dumps(sample.get("meta", {}), sort_keys=True).encode("utf-8")),
    ]
    text_views = sample.get("text_views")
    if text_views:
        members += [("pos.txt", text_views["positive"].encode()), ("neg.txt", text_views["negative"].encode())]
    image_views = sample.get("image_views")
    if image_views:
        members += [
            ("pos.jpg", Path(image_views["positive"]).read_bytes()),
            ("neg.jpg", Path(image_views["negative"]).read_bytes()),
        ]
    return members


def write_shards(samples: list[dict], out_dir: str | Path, samples_per_shard: int, seed: int = 0) -> dict:
    """Shuffle ``samples`` with ``seed``, write them as shards into ``out_dir`` and return the manifest."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = list(samples)
    random.Random(seed).shuffle(order)
    seen: set[str] = set()
    shards = []
    for index, start in enumerate(range(0, len(order), samples_per_shard)):
        chunk = order[start : start + samples_per_shard]
        name = SHARD_PATTERN.format(index=index)
        tmp = out_dir / f".{name}.tmp"
        counts = {"num_samples": 0, "num_text_views": 0, "num_image_views": 0}
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in chunk:
                key = sample["key"]
                if "." in key or key in seen:
                    raise ValueError(f"sample key {key!r} is duplicated or contains a dot; keys must be unique and dot-free")
                seen.add(key)
                for extension, data in sample_members(sample):
                    _add_member(tar, f"{key}.{extension}", data)
                counts["num_samples"] += 1
                counts["num_text_views"] += bool(sample.get("text_views"))
                counts["num_image_views"] += bool(sample.get("image_views"))
        os.replace(tmp, out_dir / name)
        shards.append({"name": name, **counts})
    manifest = {
        "num_samples": sum(s["num_samples"] for s in shards),
        "num_text_views": sum(s["num_text_views"] for s in shards),
        "num_image_views": sum(s["num_image_views"] for s in shards),
        "shards": shards,
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    logger.info("wrote %d samples in %d shards to %s", manifest["num_samples"], len(shards), out_dir)
    return manifest


def read_manifest(path: str | Path) -> dict:
    """Load a manifest and check that every listed shard exists."""
    path = Path(path)
    manifest = json.loads(path.read_text())
    missing = [s["name"] for s in manifest["shards"] if not (path.parent / s["name"]).is_file()]
    if missing:
        raise FileNotFoundError(f"manifest {path} lists shard(s) that do not exist: {missing[:5]}")
    return manifest


def shard_paths(manifest_path: str | Path) -> list[str]:
    manifest_path = Path(manifest_path)
    return [str(manifest_path.parent / s["name"]) for s in read_manifest(manifest_path)["shards"]]
