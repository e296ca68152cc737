"""Read image-caption tables (CSV, TSV or Parquet) into Arrow tables with standard column names.

Every table becomes string columns ``url``, ``caption`` and, when a recaption column is named,
``recaption`` (Recap-DataComp's longer captions), followed by the metadata columns that are kept.
Tables are held as Arrow columns, so a slice of rows costs no copy until it is converted to dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

STANDARD_COLUMNS = ("url", "caption", "recaption")


@dataclass(frozen=True)
class TableColumns:
    url: str = "url"  # image URL or local path
    caption: str = "caption"
    recaption: str | None = None  # optional second caption, stored as the sample's recap.txt
    meta: tuple[str, ...] | None = None  # columns kept in the sample's json; None keeps all others


def _read_frame(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix in (".tsv", ".txt"):
        # QUOTE_NONE: quotes in captions are text, and TSV has no quoting convention.
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding_errors="replace")
    elif suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    else:
        raise ValueError(f"unsupported table format {suffix!r} for {path}; use .csv, .tsv or .parquet")
    return pa.Table.from_pandas(frame, preserve_index=False)


def read_pairs_table(path: str | Path, columns: TableColumns | None = None) -> pa.Table:
    """Return the table at ``path`` with its columns renamed to ``url``, ``caption`` and ``recaption``.

    Raises:
        ValueError: for an unknown file format, a missing column, or a metadata column that would
            shadow a standard name.
    """
    path = Path(path)
    columns = columns or TableColumns()
    table = _read_frame(path)
    wanted = {"url": columns.url, "caption": columns.caption}
    if columns.recaption:
        wanted["recaption"] = columns.recaption
    for role, name in wanted.items():
        if name not in table.column_names:
            hint = " or to null" if role == "recaption" else ""
            raise ValueError(
                f"{role} column {name!r} not found in {path}; columns are {table.column_names}. "
                f"Set data.download.{role}_column to one of them{hint}"
            )
    sources = set(wanted.values())
    if columns.meta is None:
        meta = [c for c in table.column_names if c not in sources]
    else:
        missing = [c for c in columns.meta if c not in table.column_names]
        if missing:
            raise ValueError(f"metadata column(s) {missing} not found in {path}; columns are {table.column_names}")
        meta = list(columns.meta)
    clashes = [c for c in meta if c in STANDARD_COLUMNS and c not in sources]
    if clashes:
        raise ValueError(f"metadata column(s) {clashes} in {path} clash with the standard names {list(STANDARD_COLUMNS)}; "
                         "rename them or leave them out of data.download.meta_columns")
    arrays = [_as_strings(table.column(name)) for name in wanted.values()]
    arrays += [table.column(name) for name in meta]
    return pa.table(arrays, names=[*wanted, *meta])


def _as_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column
    return column.cast(pa.string())


def read_pairs_tables(paths: Sequence[str | Path], columns: TableColumns | None = None) -> list[pa.Table]:
    """Read several tables with the same column mapping; their rows are numbered one after the other."""
    if not paths:
        raise ValueError("no pairs table given; set data.table to a CSV, TSV or Parquet file (or a list of them)")
    return [read_pairs_table(path, columns) for path in paths]


def table_rows(table: pa.Table, start: int, stop: int) -> list[dict]:
    """Return rows ``[start, stop)`` as dicts; missing values are None."""
    return table.slice(start, stop - start).to_pylist()
