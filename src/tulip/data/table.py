"""Read image-caption tables (CSV, TSV or Parquet) into plain records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_pairs_table(path: str | Path, url_column: str = "url", caption_column: str = "caption") -> list[dict]:
    """Return one dict per row with ``url``, ``caption`` and every other column under its own name.

    The format follows the file suffix: ``.csv``, ``.tsv`` (or ``.txt``) and ``.parquet``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in (".tsv", ".txt"):
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    elif suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        raise ValueError(f"unsupported table format {suffix!r} for {path}; use .csv, .tsv or .parquet")
    for column in (url_column, caption_column):
        if column not in frame.columns:
            raise ValueError(f"column {column!r} not found in {path}; columns are {list(frame.columns)}")
    frame = frame.rename(columns={url_column: "url", caption_column: "caption"})
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")
