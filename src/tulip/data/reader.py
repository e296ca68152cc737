"""Read samples back from tar shards, surviving truncated shards and malformed samples.

A reader of shards from elsewhere meets tars cut short by a failed copy, keys with dots, repeated
keys and samples that lack a member. :func:`iter_shard` yields only complete, well-formed samples,
reports every dropped one with its reason, and raises :class:`ShardReadError` for a shard that
cannot be read to its end, after yielding the samples before the damage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from tulip.data.shards import MEMBERS, REQUIRED_MEMBERS, read_manifest

logger = logging.getLogger(__name__)

SkipReport = Callable[[str, str], None]  # (reason, detail)
_TAR_BLOCK = 512
_END_MARKER_BYTES = 2 * _TAR_BLOCK  # a tar ends with two zero blocks
_ZERO_BLOCK = bytes(_TAR_BLOCK)
_REGULAR_TYPES = (b"0", b"\0", b"7")  # regular file (old and new flag), contiguous file
_READ_BUFFER = 1 << 20


class ShardReadError(Exception):
    """A shard that could not be opened or read to its end."""

    def __init__(self, path: str | Path, samples_read: int, detail: str, reason: str = "shard_read_error"):
        super().__init__(f"{path}: {detail} (after {samples_read} complete samples)")
        self.path = str(path)
        self.samples_read = samples_read
        self.detail = detail
        self.reason = reason


class _DamagedTar(Exception):
    """The tar stream is cut short or its header is corrupt."""


def _octal(field: bytes) -> int:
    """Parse a numeric header field: octal digits, or GNU's base-256 form for sizes of 8 GiB and more."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b"\0 ")
    return int(digits, 8) if digits else 0


def _pax_path(records: bytes) -> str | None:
    """Return the ``path`` of a pax extended header ("<length> <key>=<value>\\n" records), if it has one."""
    position = 0
    while position < len(records):
        space = records.find(b" ", position)
        if space < 0:
            break
        length = int(records[position:space])
        key, _, value = records[space + 1: position + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", errors="replace")
        position += length
    return None


def _read_exact(handle, size: int) -> bytes:
    data = handle.read(size)
    if len(data) < size:
        raise _DamagedTar(f"unexpected end of data: {len(data)} of {size} bytes")
    return data


def _tar_members(handle) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield (name, read) for each regular file of a tar stream; ``read()`` returns its bytes.

    A reader for the subset of tar that shards use (ustar, GNU long names, pax paths), several times
    faster than ``tarfile`` per member because it parses only the fields it needs. A member whose
    ``read`` is not called is skipped. Headers are checksummed, so a corrupt header is an error
    instead of a wrong member.
    """
    long_name = None
    while True:
        header = handle.read(_TAR_BLOCK)
        if not header or header == _ZERO_BLOCK:
            return  # end of the archive, or of a stream cut at a block boundary (see has_end_marker)
        if len(header) < _TAR_BLOCK:
            raise _DamagedTar(f"header cut short after {len(header)} bytes")
        checksum = sum(header[:148]) + 8 * 32 + sum(header[156:])  # the checksum field counts as spaces
        if checksum != _octal(header[148:156]):
            raise _DamagedTar("invalid header checksum")
        size, kind = _octal(header[124:136]), header[156:157]
        padding = -size % _TAR_BLOCK
        if kind == b"L" or kind == b"x":  # GNU long name, or pax extended header
            payload = _read_exact(handle, size + padding)[:size]
            long_name = payload.rstrip(b"\0").decode("utf-8", errors="replace") if kind == b"L" else _pax_path(payload)
            continue
        if kind not in _REGULAR_TYPES:
            _read_exact(handle, size + padding)  # directories, links, global pax headers
            long_name = None
            continue
        name = long_name
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", errors="replace")
            prefix = header[345:500].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8", errors="replace") + "/" + name
        long_name = None
        consumed = False

        def read(size=size, padding=padding) -> bytes:
            nonlocal consumed
            consumed = True
            data = _read_exact(handle, size)
            _read_exact(handle, padding)
            return data

        yield name, read
        if not consumed:
            _read_exact(handle, size + padding)


def _split_name(name: str) -> tuple[str | None, str]:
    """Split a member name into (key, extension) at the first dot after the last slash, as webdataset does."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not dot or not stem:
        return None, ""
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _dotted_member(extension: str) -> str | None:
    """Return the known member a dotted key's name ends with ("v2.jpg" ends with "jpg"), or None."""
    if extension in MEMBERS:
        return None
    return next((m for m in MEMBERS if extension.endswith("." + m)), None)


def has_end_marker(path: str | Path) -> bool:
    """Return whether the file ends like a complete tar: a whole number of blocks, the last two of them zero."""
    size = os.path.getsize(path)
    if size < _END_MARKER_BYTES or size % _TAR_BLOCK:
        return False
    with open(path, "rb") as handle:
        handle.seek(size - _END_MARKER_BYTES)
        return not any(handle.read(_END_MARKER_BYTES))


def _ignore(reason: str, detail: str) -> None:
    pass


def iter_shard(path: str | Path, on_skip: SkipReport | None = None) -> Iterator[dict]:
    """Yield the complete samples of one shard in file order.

    A sample is a dict of member extension to bytes, plus ``__key__`` and ``__shard__`` (the
    path). Samples dropped on the way are passed to ``on_skip(reason, detail)`` with the reason
    ``missing_image``, ``missing_caption``, ``dotted_key`` or ``duplicate_key``. A duplicate key is
    a key met before in this shard, or a member repeated within one sample, and every copy after
    the first is dropped.

    Raises:
        ShardReadError: the shard is missing (reason ``missing_shard``), unreadable, or ends early.
            A truncated tar can end silently at a cut header, so the end-of-archive marker is
            checked before reading; the last sample before a cut is dropped, as it may be partial.
    """
    path = Path(path)
    on_skip = on_skip or _ignore
    try:
        truncated = not has_end_marker(path)
    except FileNotFoundError:
        raise ShardReadError(path, 0, "file not found", reason="missing_shard") from None
    except OSError as error:
        raise ShardReadError(path, 0, f"cannot open: {error}") from error

    def finished(sample: dict | None) -> dict | None:
        """Return the sample if it is complete and well formed; report it otherwise."""
        if sample is None:
            return None
        key = sample["__key__"]
        if sample.pop("__duplicate__", False):
            on_skip("duplicate_key", f"{key} in {path.name}")
            return None
        for member, reason in (("jpg", "missing_image"), ("txt", "missing_caption")):
            if member not in sample:
                on_skip(reason, f"{key} in {path.name} has members {sorted(k for k in sample if not k.startswith('__'))}")
                return None
        return sample

    seen: set[str] = set()
    dotted: str | None = None
    current: dict | None = None
    count = 0
    try:
        with open(path, "rb", buffering=_READ_BUFFER) as handle:
            for name, read in _tar_members(handle):
                key, extension = _split_name(name)
                if key is None:
                    continue
                known = _dotted_member(extension)
                if known is not None:
                    intended = f"{key}.{extension[: -len(known) - 1]}"
                    if intended != dotted:
                        on_skip("dotted_key", f"{intended!r} in {path.name}")
                        dotted = intended
                    continue
                if current is None or key != current["__key__"]:
                    # The previous sample is complete once another key starts, before this member's
                    # data is read (and may turn out to be cut).
                    sample = finished(current)
                    if sample is not None:
                        count += 1
                        yield sample
                    current = {"__key__": key, "__shard__": str(path)}
                    if key in seen:
                        current["__duplicate__"] = True
                    seen.add(key)
                if extension in current:
                    current["__duplicate__"] = True
                current[extension] = read()
    except (_DamagedTar, OSError) as error:
        raise ShardReadError(path, count, str(error) if isinstance(error, _DamagedTar) else
                             f"{type(error).__name__}: {error}") from error
    if truncated:
        raise ShardReadError(path, count, "no end-of-archive marker: the file was cut short")
    sample = finished(current)
    if sample is not None:
        yield sample


def iter_samples(manifest_path: str | Path, on_skip: SkipReport | None = None) -> Iterator[dict]:
    """Yield every sample of the manifest's shards, shard by shard, in file order.

    Raises:
        ShardReadError: for the first shard that cannot be read to its end.
    """
    manifest_path = Path(manifest_path)
    for shard in read_manifest(manifest_path)["shards"]:
        yield from iter_shard(manifest_path.parent / shard["name"], on_skip)


def caption_of(sample: dict, member: str = "txt") -> str | None:
    """Return a text member of a raw sample as a string, or None when the sample has none."""
    data = sample.get(member)
    return None if data is None else data.decode("utf-8", errors="replace")
