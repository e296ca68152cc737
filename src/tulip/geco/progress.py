"""Resumable per-shard output: an append-only JSONL committed record by record, then renamed.

A shard job appends one line per finished sample to ``<out>.partial`` and flushes it to disk
after every batch. When every sample is done, the lines are written to ``<out>`` by an atomic
rename and the partial file is removed. So ``<out>`` exists only for a complete shard, and a
partial file is never mistaken for a complete one. A killed job leaves the partial file: the
rerun keeps its whole lines (the last one may be cut by the kill and is dropped) and does only
the samples that are missing. The partial file starts with the job's fingerprint (model, settings,
input shard). A partial file left by a job with another fingerprint is discarded, not resumed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from tulip.data.io import atomic_write_text

logger = logging.getLogger(__name__)


class ShardProgress:
    """Records of one shard's finished samples, by key."""

    def __init__(self, out: str | Path, fingerprint: str):
        self.out = Path(out)
        self.fingerprint = fingerprint
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.records: dict[str, dict] = {}
        self.resumed = 0
        self._handle = None

    def open(self) -> ShardProgress:
        """Load the whole lines a previous attempt left and open the partial file for appending."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.partial.exists() and self._header_matches():
            valid_bytes = 0
            with self.partial.open("rb") as handle:
                valid_bytes += len(handle.readline())
                for line in handle:
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        break
                    if not line.endswith(b"\n"):
                        break
                    self.records[record["key"]] = record
                    valid_bytes += len(line)
            with self.partial.open("r+b") as handle:
                handle.truncate(valid_bytes)  # drop a line the kill cut short
            self.resumed = len(self.records)
            logger.info("resuming %s: %d samples already done", self.out.name, self.resumed)
            self._handle = self.partial.open("a", encoding="utf-8")
        else:
            if self.partial.exists():
                logger.warning("discarding %s: it was written by a job with other settings or input", self.partial)
            self._handle = self.partial.open("w", encoding="utf-8")
            self._handle.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
        return self

    def _header_matches(self) -> bool:
        with self.partial.open("rb") as handle:
            try:
                return json.loads(handle.readline()).get("fingerprint") == self.fingerprint
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                return False

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, records: list[dict]) -> None:
        """Append finished samples and force them to disk before returning."""
        for record in records:
            self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            self.records[record["key"]] = record
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def commit(self, keep=lambda record: True) -> list[dict]:
        """Write the records that ``keep`` accepts to the final file, in key order; remove the partial file."""
        self._handle.close()
        kept = [self.records[key] for key in sorted(self.records) if keep(self.records[key])]
        atomic_write_text(self.out, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in kept))
        self.partial.unlink()
        return kept

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
