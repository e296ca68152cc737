"""Download pairs tables straight into webdataset shards, resumably.

The tables are cut into fixed-size row ranges, one shard each. The rows of a range are fetched
concurrently by a thread pool, with at most ``per_host`` requests to one host at a time. They are
normalised to RGB JPEG and written in row order to ``shard-NNNNNN.tar`` under a temporary name,
which is renamed when the shard is complete. Next to it, ``shard-NNNNNN.json`` records the
shard's counts and every skipped row with its reason. ``manifest.json`` and ``stats.json`` are
written last.

A shard is complete when its tar and its record both exist and the record's fingerprint (the
shard's rows, the options that change stored bytes, the key width) matches. A rerun keeps complete
shards and redoes the rest, so an interrupted download resumes where it stopped and a changed
option redoes exactly the shards it affects.

Sample keys are the global row number, zero-padded: unique across the dataset, dot-free, and
traceable to their table row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from tulip.data.captions import clean_caption
from tulip.data.fetch import FetchOptions, fetch, host_of
from tulip.data.images import ImageOptions, normalise_image
from tulip.data.io import atomic_write_json, stable_hash
from tulip.data.shards import ShardWriter, shard_name, write_manifest
from tulip.data.stats import SkipSample
from tulip.data.table import TableColumns, table_rows

logger = logging.getLogger(__name__)

RECORD_FORMAT = "tulip-download-shard/1"


@dataclass(frozen=True)
class DownloadOptions:
    rows_per_shard: int = 10_000
    threads: int = 16  # concurrent fetches per process
    processes: int = 1  # shards downloaded at once, each in its own process
    per_host: int = 8  # concurrent requests to one host, per process; local files are not limited
    max_caption_chars: int = 1000  # longer captions are cut (and counted as caption_truncated)
    fetch: FetchOptions = field(default_factory=FetchOptions)
    image: ImageOptions = field(default_factory=ImageOptions)

    def __post_init__(self):
        for name in ("rows_per_shard", "threads", "processes", "per_host", "max_caption_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def content_fingerprint(self) -> dict:
        """Return the options that change the bytes of a stored sample (concurrency and timeouts do not)."""
        return {"image": dataclasses.asdict(self.image), "max_caption_chars": self.max_caption_chars,
                "max_bytes": self.fetch.max_bytes}


_FETCH_KEYS = {f.name for f in dataclasses.fields(FetchOptions)}
_IMAGE_KEYS = {f.name for f in dataclasses.fields(ImageOptions)}
_OWN_KEYS = {"rows_per_shard", "threads", "processes", "per_host", "max_caption_chars"}
_COLUMN_KEYS = {"url_column", "caption_column", "recaption_column", "meta_columns"}


def download_config(section: dict) -> tuple[TableColumns, DownloadOptions]:
    """Split the flat ``data.download`` config section into table columns and download options."""
    unknown = sorted(set(section) - _FETCH_KEYS - _IMAGE_KEYS - _OWN_KEYS - _COLUMN_KEYS)
    if unknown:
        valid = sorted(_FETCH_KEYS | _IMAGE_KEYS | _OWN_KEYS | _COLUMN_KEYS)
        raise ValueError(f"unknown data.download key(s) {unknown}; valid keys are {valid}")
    meta = section.get("meta_columns")
    columns = TableColumns(
        url=section.get("url_column", "url"),
        caption=section.get("caption_column", "caption"),
        recaption=section.get("recaption_column"),
        meta=None if meta is None else tuple(meta),
    )
    image = {k: v for k, v in section.items() if k in _IMAGE_KEYS}
    for key in ("background", "formats"):
        if key in image:
            image[key] = tuple(image[key])
    options = DownloadOptions(
        **{k: v for k, v in section.items() if k in _OWN_KEYS},
        fetch=FetchOptions(**{k: v for k, v in section.items() if k in _FETCH_KEYS}),
        image=ImageOptions(**image),
    )
    return columns, options


@dataclass(frozen=True)
class ShardPlan:
    index: int
    table: int  # position of the source table in the list
    start: int  # first row in that table
    stop: int  # one past the last row
    first_key: int  # global row number of the first row


def plan_shards(table_lengths: Sequence[int], rows_per_shard: int) -> list[ShardPlan]:
    """Cut each table into ranges of ``rows_per_shard`` rows; a table's last range may be shorter."""
    plans, global_row = [], 0
    for table, length in enumerate(table_lengths):
        for start in range(0, length, rows_per_shard):
            stop = min(start + rows_per_shard, length)
            plans.append(ShardPlan(len(plans), table, start, stop, global_row + start))
        global_row += length
    return plans


@dataclass
class RowResult:
    members: dict[str, bytes] | None = None
    skip: SkipSample | None = None
    notes: tuple[str, ...] = ()  # facts worth counting that did not stop the row


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def process_row(row: dict, global_row: int, options: DownloadOptions, base_dir: Path | None) -> RowResult:
    """Turn one table row into the members of a sample, or into a skip with its reason."""
    notes = []
    try:
        caption, cut = clean_caption(row.get("caption"), options.max_caption_chars)
        if cut:
            notes.append("caption_truncated")
        recaption = None
        if "recaption" in row:
            try:
                recaption, cut = clean_caption(row["recaption"], options.max_caption_chars)
                if cut:
                    notes.append("recaption_truncated")
            except SkipSample:
                notes.append("recaption_missing")
        url = row.get("url")
        if url is None or not str(url).strip():
            raise SkipSample("missing_url")
        fetched = fetch(str(url), options.fetch, base_dir)
        image = normalise_image(fetched.data, options.image, fetched.content_type)
    except SkipSample as skip:
        return RowResult(skip=skip, notes=tuple(notes))
    meta = {k: _jsonable(v) for k, v in row.items() if k not in ("url", "caption", "recaption")}
    meta["download"] = {
        "url": str(url).strip(),
        "row": global_row,
        "width": image.size[0],
        "height": image.size[1],
        "original_width": image.original_size[0],
        "original_height": image.original_size[1],
        "original_mode": image.original_mode,
        "original_format": image.original_format,
    }
    members = {"jpg": image.data, "txt": caption.encode("utf-8"),
               "json": json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")}
    if recaption is not None:
        members["recap.txt"] = recaption.encode("utf-8")
    return RowResult(members=members, notes=tuple(notes))


def _results_in_order(
    rows: list[dict], first_key: int, options: DownloadOptions, base_dir: Path | None, pool: ThreadPoolExecutor
) -> Iterator[tuple[int, RowResult]]:
    """Process ``rows`` on ``pool`` and yield (offset, result) in row order.

    At most ``per_host`` rows of one host are in flight. Rows of a busy host wait in a per-host
    queue while rows of other hosts go ahead. At most ``window`` rows are held between being
    taken from the table and being yielded, which bounds memory.
    """
    window = max(4 * options.threads, 64)
    todo = deque(range(len(rows)))
    waiting: dict[str, deque[int]] = defaultdict(deque)
    busy: Counter = Counter()
    running: dict[Future, tuple[int, str]] = {}
    done: dict[int, RowResult] = {}
    next_out = 0

    def submit(offset: int, host: str) -> None:
        busy[host] += 1
        future = pool.submit(process_row, rows[offset], first_key + offset, options, base_dir)
        running[future] = (offset, host)

    while next_out < len(rows):
        while todo and todo[0] - next_out < window:
            offset = todo.popleft()
            host = host_of(str(rows[offset].get("url") or ""))
            if host and busy[host] >= options.per_host:
                waiting[host].append(offset)
            else:
                submit(offset, host)
        if running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                offset, host = running.pop(future)
                busy[host] -= 1
                done[offset] = future.result()
                if waiting[host]:
                    submit(waiting[host].popleft(), host)
        while next_out in done:
            yield next_out, done.pop(next_out)
            next_out += 1


def _key_width(total_rows: int) -> int:
    return max(9, len(str(max(total_rows - 1, 0))))


def _fingerprint(rows: list[dict], options: DownloadOptions, key_width: int) -> str:
    return stable_hash({"rows": rows, "options": options.content_fingerprint(), "key_width": key_width}, length=32)


def download_shard(
    plan: ShardPlan, rows: list[dict], out_dir: Path, options: DownloadOptions, base_dir: Path | None,
    key_width: int, pool: ThreadPoolExecutor | None = None,
) -> dict:
    """Download one row range into its shard and write the shard's record; return the record."""
    start_time = time.monotonic()
    name = shard_name(plan.index)
    skipped, notes = Counter(), Counter()
    skipped_rows = []
    recaptions = 0
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix=f"fetch-{plan.index}")

    try:
        with ShardWriter(out_dir / name) as writer:
            for offset, result in _results_in_order(rows, plan.first_key, options, base_dir, pool):
                notes.update(result.notes)
                key = f"{plan.first_key + offset:0{key_width}d}"
                if result.skip is not None:
                    skipped[result.skip.reason] += 1
                    skipped_rows.append({"key": key, "row": plan.start + offset, "url": str(rows[offset].get("url")),
                                         "reason": result.skip.reason, "detail": result.skip.detail})
                else:
                    writer.add(key, result.members)
                    recaptions += "recap.txt" in result.members
    finally:
        if own_pool:
            pool.shutdown()

    record = {
        "format": RECORD_FORMAT,
        "name": name,
        "table": plan.table,
        "rows": [plan.start, plan.stop],
        "num_rows": len(rows),
        "num_samples": writer.num_samples,
        "num_bytes": writer.num_bytes,
        "num_recaptions": recaptions,
        "skipped": dict(sorted(skipped.items())),
        "notes": dict(sorted(notes.items())),
        "skipped_rows": skipped_rows,
        "fingerprint": _fingerprint(rows, options, key_width),
        "seconds": round(time.monotonic() - start_time, 3),
    }
    atomic_write_json(out_dir / record_name(plan.index), record)
    return record


def record_name(index: int) -> str:
    return shard_name(index).removesuffix(".tar") + ".json"


def read_complete_record(out_dir: Path, plan: ShardPlan, fingerprint: str) -> dict | None:
    """Return the record of a finished shard that matches ``fingerprint``, or None if the shard must be (re)done."""
    tar_path, record_path = out_dir / shard_name(plan.index), out_dir / record_name(plan.index)
    if not (tar_path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != fingerprint or record.get("num_bytes") != tar_path.stat().st_size:
        return None
    return record


def _shard_job(plan: ShardPlan, rows: list[dict], out_dir: Path, options: DownloadOptions,
               base_dir: Path | None, key_width: int) -> dict:
    """Entry point of a download process: one shard with its own thread pool."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return download_shard(plan, rows, out_dir, options, base_dir, key_width)


def _remove_stale_files(out_dir: Path, num_shards: int) -> None:
    """Delete temporary files of interrupted shards, and shards beyond the current plan."""
    for tmp in out_dir.glob(".shard-*.tar.tmp"):
        tmp.unlink()
    for path in [*out_dir.glob("shard-*.tar"), *out_dir.glob("shard-*.json")]:
        index = path.stem.removeprefix("shard-")
        if index.isdigit() and int(index) >= num_shards:
            path.unlink()


def _log_shard(record: dict, done: int, total: int) -> None:
    skipped = sum(record["skipped"].values())
    logger.info("shard %s (%d/%d): %d stored, %d skipped %s in %.1f s", record["name"], done, total,
                record["num_samples"], skipped, record["skipped"] or "", record["seconds"])


def download_tables(
    tables: Sequence[pa.Table],
    out_dir: str | Path,
    options: DownloadOptions | None = None,
    base_dirs: Sequence[Path | None] | None = None,
) -> dict:
    """Download every row of ``tables`` into shards in ``out_dir``; write the manifest and stats and return the stats.

    ``base_dirs`` gives, per table, the folder that relative image paths are taken from (usually
    the table's own folder). Complete shards from an earlier run with the same rows and options
    are kept.
    """
    options = options or DownloadOptions()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_dirs = list(base_dirs) if base_dirs is not None else [None] * len(tables)
    start_time = time.monotonic()
    plans = plan_shards([t.num_rows for t in tables], options.rows_per_shard)
    key_width = _key_width(sum(t.num_rows for t in tables))
    # Until the new manifest is written, the folder must not look like a finished download.
    for name in ("manifest.json", "stats.json"):
        (out_dir / name).unlink(missing_ok=True)
    _remove_stale_files(out_dir, len(plans))

    records: dict[int, dict] = {}
    pending: list[ShardPlan] = []
    for plan in plans:
        rows = table_rows(tables[plan.table], plan.start, plan.stop)
        record = read_complete_record(out_dir, plan, _fingerprint(rows, options, key_width))
        if record is not None:
            records[plan.index] = record
        else:
            pending.append(plan)
    resumed = len(records)
    if resumed:
        logger.info("keeping %d complete shard(s) from an earlier run; %d to download", resumed, len(pending))

    def rows_of(plan: ShardPlan) -> list[dict]:
        return table_rows(tables[plan.table], plan.start, plan.stop)

    if options.processes == 1:
        with ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="fetch") as pool:
            for plan in pending:
                records[plan.index] = download_shard(plan, rows_of(plan), out_dir, options, base_dirs[plan.table],
                                                     key_width, pool)
                _log_shard(records[plan.index], len(records), len(plans))
    else:
        context = multiprocessing.get_context("spawn")
        queue = deque(pending)
        with ProcessPoolExecutor(max_workers=options.processes, mp_context=context) as processes:
            running: dict[Future, ShardPlan] = {}
            while queue or running:
                # Submit only a few shards ahead, so the rows of the whole table are never pickled at once.
                while queue and len(running) < 2 * options.processes:
                    plan = queue.popleft()
                    future = processes.submit(_shard_job, plan, rows_of(plan), out_dir, options,
                                              base_dirs[plan.table], key_width)
                    running[future] = plan
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    plan = running.pop(future)
                    records[plan.index] = future.result()
                    _log_shard(records[plan.index], len(records), len(plans))

    ordered = [records[plan.index] for plan in plans]
    skipped, notes = Counter(), Counter()
    for record in ordered:
        skipped.update(record["skipped"])
        notes.update(record["notes"])
    shards = [{"name": r["name"], "num_samples": r["num_samples"], "num_bytes": r["num_bytes"], "table": r["table"],
               "rows": r["rows"], "skipped": r["skipped"]} for r in ordered]
    num_rows = sum(t.num_rows for t in tables)
    manifest = write_manifest(out_dir, shards, num_rows=num_rows,
                              num_recaptions=sum(r["num_recaptions"] for r in ordered),
                              skipped=dict(sorted(skipped.items())))
    stats = {
        "rows": num_rows,
        "stored": manifest["num_samples"],
        "recaptions": manifest["num_recaptions"],
        "skipped": dict(sorted(skipped.items())),
        "notes": dict(sorted(notes.items())),
        "shards": len(plans),
        "shards_resumed": resumed,
        "seconds": round(time.monotonic() - start_time, 2),
    }
    atomic_write_json(out_dir / "stats.json", stats)
    for reason, count in stats["skipped"].items():
        logger.warning("skipped %d row(s): %s", count, reason)
    logger.info("stored %d of %d rows in %d shards in %.1f s", stats["stored"], num_rows, len(plans), stats["seconds"])
    return stats
