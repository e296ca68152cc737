"""A SQLite cache of generated text views, shared by every shard job of a run and by later runs.

An entry is keyed by (model id, prompt version, generation settings, caption hash): the text views
depend on nothing else, because sampling is seeded from the caption's hash. So a rerun, or the same
caption in another shard, reads its views instead of generating them. Captions whose every attempt
was rejected are cached too, with their rejection counts, so they are not retried either.

Several jobs may share one cache file on one machine (SQLite's write-ahead log and a busy timeout
serialise their writes). NOTE: SQLite locking is unreliable on some network filesystems (NFS in
particular), so on a cluster put the cache on a filesystem with working POSIX locks, or give each
node's jobs their own cache file on local disk.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from tulip.data.io import stable_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS text_views (
    namespace TEXT NOT NULL,
    caption_hash TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (namespace, caption_hash)
)
"""


def caption_hash(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def cache_namespace(model_id: str, prompt_version: str, settings: dict) -> str:
    """Return the part of the key shared by one generator: its model, prompt version and settings."""
    return stable_hash({"model": model_id, "prompt": prompt_version, "settings": settings}, length=32)


class ViewCache:
    """Get and put JSON results by caption under one namespace; ``path=None`` caches nothing."""

    def __init__(self, path: str | Path | None, namespace: str):
        self.namespace = namespace
        self._db = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=60.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()

    def get_many(self, hashes: list[str]) -> dict[str, dict]:
        if self._db is None or not hashes:
            return {}
        found = {}
        for start in range(0, len(hashes), 500):  # SQLite limits the number of bound parameters
            chunk = hashes[start : start + 500]
            rows = self._db.execute(
                f"SELECT caption_hash, result FROM text_views WHERE namespace = ? AND caption_hash IN "
                f"({','.join('?' * len(chunk))})",
                [self.namespace, *chunk],
            )
            found.update({digest: json.loads(result) for digest, result in rows})
        return found

    def put_many(self, results: dict[str, dict]) -> None:
        if self._db is None or not results:
            return
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO text_views (namespace, caption_hash, result) VALUES (?, ?, ?)",
                [(self.namespace, digest, json.dumps(result, sort_keys=True)) for digest, result in results.items()],
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ViewCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def model_fingerprint(model_name_or_path: str) -> str:
    """Identify a model for the cache: a hub id as it is, a local folder by its name and its files.

    A folder's files are identified by name, size and the hash of their first and last MiB, so a
    model rebuilt or retrained in place gets a new identity without reading gigabytes of weights.
    """
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        return model_name_or_path
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = stable_hash([(str(file.relative_to(folder)), file_fingerprint(file)) for file in files])
    return f"{folder.name}@{digest}"


def file_fingerprint(path: str | Path) -> str:
    """Hash a file's size and its first and last MiB: cheap for weights, and changed by any rewrite of them."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}|".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), 2)
            digest.update(handle.read())
    return digest.hexdigest()[:16]
