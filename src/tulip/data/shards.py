"""webdataset tar shards: the sample layout, a writer that never leaves a partial shard, and manifests.

A sample is the run of consecutive tar members that share a key:

- ``<key>.jpg`` the image and ``<key>.txt`` the caption (both required);
- ``<key>.recap.txt`` a second, longer caption when the source table has one;
- ``<key>.json`` metadata (source URL and row, sizes, kept table columns);
- ``<key>.pos.txt``, ``<key>.neg.txt``, ``<key>.pos.jpg``, ``<key>.neg.jpg`` GeCo views.

Keys are unique across a dataset and contain no dot: webdataset splits a member name at the first
dot after the last slash. ``manifest.json`` lists the shards with their sample counts and sizes.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path

from tulip.data.io import atomic_write_json

logger = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{index:06d}.tar"
MANIFEST_FORMAT = "tulip-shards/1"
MEMBERS = ("jpg", "txt", "recap.txt", "json", "pos.txt", "neg.txt", "pos.jpg", "neg.jpg")
REQUIRED_MEMBERS = ("jpg", "txt")
MAX_KEY_CHARS = 128  # webdataset's indexes truncate longer keys
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index=index)


def check_key(key: str) -> None:
    """Raise ValueError unless ``key`` is a valid sample key: letters, digits, ``_`` and ``-`` only."""
    if not _KEY.match(key) or len(key) > MAX_KEY_CHARS:
        raise ValueError(
            f"sample key {key!r} is invalid: keys have 1 to {MAX_KEY_CHARS} characters from A-Z, a-z, 0-9, '_' "
            "and '-' (a dot would split the key in webdataset)"
        )


class ShardWriter:
    """Write one tar shard under a temporary name and rename it into place when it is complete.

    Use it as a context manager: leaving the block normally commits the shard, an exception
    deletes the temporary file. Each sample's members are written together, in ``MEMBERS`` order,
    with fixed timestamps and modes, so identical samples give byte-identical shards.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(f".{self.path.name}.tmp")
        self._tar = tarfile.open(self.tmp_path, "w", format=tarfile.USTAR_FORMAT)
        self._keys: set[str] = set()
        self.num_samples = 0
        self.num_bytes = 0

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample; ``members`` maps extensions from ``MEMBERS`` to their bytes."""
        check_key(key)
        if key in self._keys:
            raise ValueError(f"sample key {key!r} is already in {self.path.name}; keys must be unique")
        unknown = sorted(set(members) - set(MEMBERS))
        if unknown:
            raise ValueError(f"sample {key!r} has unknown member(s) {unknown}; known members are {list(MEMBERS)}")
        missing = [m for m in REQUIRED_MEMBERS if m not in members]
        if missing:
            raise ValueError(f"sample {key!r} has no {missing} member; every sample needs {list(REQUIRED_MEMBERS)}")
        self._keys.add(key)
        for extension in MEMBERS:
            if extension in members:
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(members[extension])
                info.mtime = 0
                info.mode = 0o644
                self._tar.addfile(info, io.BytesIO(members[extension]))
        self.num_samples += 1

    def commit(self) -> None:
        self._tar.close()
        self.num_bytes = self.tmp_path.stat().st_size
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        self._tar.close()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_manifest(out_dir: str | Path, shards: Sequence[dict], **totals) -> dict:
    """Write ``manifest.json`` for ``shards`` (dicts with ``name``, ``num_samples``, ``num_bytes``); return it.

    Call it after every shard is complete: the manifest's presence means the shard set is whole.
    """
    manifest = {
        "format": MANIFEST_FORMAT,
        "num_shards": len(shards),
        "num_samples": sum(s["num_samples"] for s in shards),
        **totals,
        "shards": list(shards),
    }
    atomic_write_json(Path(out_dir) / "manifest.json", manifest)
    return manifest


def read_manifest(path: str | Path, check_files: bool = True) -> dict:
    """Load a manifest; with ``check_files`` raise FileNotFoundError when a listed shard is missing."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"shard manifest {path} not found; run the download (or shard) stage first") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"shard manifest {path} is not valid JSON ({error}); rerun the stage that wrote it") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise ValueError(f"{path} is not a shard manifest: it has no 'shards' list")
    for shard in manifest["shards"]:
        if "name" not in shard or "num_samples" not in shard:
            raise ValueError(f"{path}: shard entry {shard} has no 'name' or 'num_samples'")
    if check_files:
        missing = [s["name"] for s in manifest["shards"] if not (path.parent / s["name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"manifest {path} lists {len(missing)} shard(s) that do not exist: {missing[:5]}")
    return manifest


def shard_paths(manifest_path: str | Path) -> list[str]:
    manifest_path = Path(manifest_path)
    return [str(manifest_path.parent / s["name"]) for s in read_manifest(manifest_path)["shards"]]
