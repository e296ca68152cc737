"""Pre-flight check of a shard set before training: every problem is found and reported up front.

Two depths:

- ``quick`` checks that every shard listed in the manifest exists, is not empty and has the size
  the manifest recorded (shards are never rewritten in place, so a different size means a cut or
  replaced file). It reads no tar member and costs one ``stat`` per shard.
- ``full`` also reads every shard with :func:`tulip.data.reader.iter_shard` and counts its usable
  samples: short or unreadable shards, keys without an image or caption, dotted keys, and keys
  repeated within or across shards. Cross-shard duplicates are found with a set of all keys,
  which takes about 100 bytes of memory per sample, so use ``quick`` for shard sets of hundreds
  of millions of samples.

The result gives the usable sample count of every shard, which the loader plans its epochs with.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tulip.data.reader import ShardReadError, iter_shard
from tulip.data.shards import read_manifest

logger = logging.getLogger(__name__)

CHECK_MODES = ("full", "quick", "off")
_MAX_LISTED = 20  # shards listed one by one in a report; the rest are summed up


class ShardCheckError(ValueError):
    """The shard set has problems and the policy is to stop."""


@dataclass
class ShardStatus:
    name: str
    listed: int  # samples the manifest lists
    usable: int  # samples the loader can read
    problems: list[str] = field(default_factory=list)


@dataclass
class ShardSetReport:
    manifest: str
    mode: str
    shards: list[ShardStatus]
    problems: list[str] = field(default_factory=list)  # problems of the whole set
    skips: Counter = field(default_factory=Counter)  # dropped samples by reason

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.shards)

    @property
    def usable_counts(self) -> list[int]:
        return [s.usable for s in self.shards]

    def format(self) -> str:
        """Return the report as readable lines."""
        bad = [s for s in self.shards if s.problems]
        listed, usable = sum(s.listed for s in self.shards), sum(self.usable_counts)
        lines = [f"shard check ({self.mode}) of {self.manifest}: {len(bad)} of {len(self.shards)} shard(s) have problems"]
        lines += [f"  {problem}" for problem in self.problems]
        for status in bad[:_MAX_LISTED]:
            lines.append(f"  {status.name}: {'; '.join(status.problems)}")
        if len(bad) > _MAX_LISTED:
            lines.append(f"  ... and {len(bad) - _MAX_LISTED} more shard(s) with problems")
        if self.skips:
            lines.append(f"  samples dropped by reason: {dict(sorted(self.skips.items()))}")
        lines.append(f"  usable samples: {usable} of {listed} listed")
        return "\n".join(lines)


def _check_file(path: Path, entry: dict) -> list[str]:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return ["missing"]
    if size == 0:
        return ["empty file (0 bytes)"]
    expected = entry.get("num_bytes")
    if expected is not None and size != expected:
        return [f"{size} bytes but the manifest records {expected} (cut short or replaced)"]
    return []


def _read_shard(path: Path, status: ShardStatus, skips: Counter, keys: dict[str, str]) -> None:
    """Count the usable samples of one shard; record its problems in ``status``.

    Samples the reader drops (see ``iter_shard``) are not usable. A key already met in another
    shard is reported but stays usable: the loader reads both copies.
    """
    dropped: Counter = Counter()
    repeated: list[tuple[str, str]] = []
    found = 0
    try:
        for sample in iter_shard(path, lambda reason, detail: dropped.update([reason])):
            found += 1
            other = keys.setdefault(sample["__key__"], status.name)
            if other != status.name:
                repeated.append((sample["__key__"], other))
    except ShardReadError as error:
        status.problems.append(f"unreadable after {error.samples_read} complete samples: {error.detail}")
    status.usable = found
    if found < status.listed and not status.problems:
        status.problems.append(f"short: {found} of {status.listed} samples")
    elif found > status.listed:
        status.problems.append(f"{found} samples but the manifest lists {status.listed}")
    if dropped:
        status.problems.append("dropped samples: " + ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())))
    if repeated:
        key, other = repeated[0]
        status.problems.append(f"{len(repeated)} key(s) also in other shards, e.g. {key!r} in {other}")
    skips.update(dropped)


def check_shard_set(manifest_path: str | Path, mode: str = "full") -> ShardSetReport:
    """Check the shards of a manifest at depth ``mode`` ("full" or "quick") and return the report."""
    if mode not in ("full", "quick"):
        raise ValueError(f"shard check mode {mode!r} is invalid; use 'full' or 'quick'")
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path, check_files=False)
    report = ShardSetReport(str(manifest_path), mode, [])
    if not manifest["shards"]:
        report.problems.append("the manifest lists no shards")
    keys: dict[str, str] = {}
    for entry in manifest["shards"]:
        path = manifest_path.parent / entry["name"]
        status = ShardStatus(entry["name"], int(entry["num_samples"]), int(entry["num_samples"]))
        status.problems = _check_file(path, entry)
        if status.problems:
            status.usable = 0
        elif mode == "full":
            _read_shard(path, status, report.skips, keys)
        if status.listed == 0 and not status.problems:
            status.problems.append("lists no samples")
        report.shards.append(status)
    if report.shards and sum(report.usable_counts) == 0:
        report.problems.append("no usable sample in any shard")
    return report


def preflight(manifest_path: str | Path, mode: str = "full", on_error: str = "raise") -> list[int]:
    """Check the shard set before training and return the usable sample count of every shard.

    ``mode`` is "full", "quick" or "off" (no check: the manifest's counts are trusted).
    ``on_error`` is "raise" (stop with the report) or "skip" (log the report and go on with the
    usable samples). A set without any usable sample raises in both cases.

    Raises:
        ShardCheckError: the check found problems and ``on_error`` is "raise", or nothing is usable.
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"train.preflight {mode!r} is invalid; use one of {list(CHECK_MODES)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"train.bad_shards {on_error!r} is invalid; use 'raise' or 'skip'")
    if mode == "off":
        return [int(s["num_samples"]) for s in read_manifest(manifest_path)["shards"]]
    report = check_shard_set(manifest_path, mode)
    if report.ok:
        logger.info("shard check (%s): %d shards, %d samples, no problems", mode, len(report.shards),
                    sum(report.usable_counts))
        return report.usable_counts
    if on_error == "raise" or sum(report.usable_counts) == 0:
        raise ShardCheckError(report.format() + "\nfix or rewrite these shards, or set train.bad_shards: skip "
                                                "to train on the usable samples")
    logger.warning("%s\ntraining on the usable samples (train.bad_shards: skip)", report.format())
    return report.usable_counts
