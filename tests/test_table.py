"""Pairs tables in CSV, TSV and Parquet: column mapping, recaptions, kept metadata and errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tulip.data.table import TableColumns, read_pairs_table, read_pairs_tables

ROWS = [
    {"image_url": "http://example.invalid/a.jpg", "text": 'a "quoted" caption, with a comma', "recap": "long a", "label": 3},
    {"image_url": "b.png", "text": "caption b", "recap": "", "label": 4},
]
COLUMNS = TableColumns(url="image_url", caption="text", recaption="recap")


def _write(tmp_path, suffix: str):
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif suffix == ".csv":
        path.write_text('image_url,text,recap,label\nhttp://example.invalid/a.jpg,"a ""quoted"" caption, with a comma",long a,3\n'
                        "b.png,caption b,,4\n")
    else:
        path.write_text('image_url\ttext\trecap\tlabel\nhttp://example.invalid/a.jpg\ta "quoted" caption, with a comma\tlong a\t3\n'
                        "b.png\tcaption b\t\t4\n")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_formats_give_the_same_rows(tmp_path, suffix):
    rows = read_pairs_table(_write(tmp_path, suffix), COLUMNS).to_pylist()
    assert [r["url"] for r in rows] == ["http://example.invalid/a.jpg", "b.png"]
    assert [r["caption"] for r in rows] == ['a "quoted" caption, with a comma', "caption b"]
    assert [r["recaption"] for r in rows] == ["long a", ""]
    assert [str(r["label"]) for r in rows] == ["3", "4"]


def test_table_keeps_only_named_metadata(tmp_path):
    columns = TableColumns(url="image_url", caption="text", meta=())
    table = read_pairs_table(_write(tmp_path, ".parquet"), columns)
    assert table.column_names == ["url", "caption"]


def test_table_names_missing_column(tmp_path):
    with pytest.raises(ValueError, match="caption column 'caption' not found"):
        read_pairs_table(_write(tmp_path, ".csv"), TableColumns(url="image_url"))


def test_table_missing_recaption_column_suggests_null(tmp_path):
    with pytest.raises(ValueError, match="or to null"):
        read_pairs_table(_write(tmp_path, ".csv"), TableColumns(url="image_url", caption="text", recaption="recaption"))


def test_table_rejects_unknown_format(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="unsupported table format '.json'"):
        read_pairs_table(path)


def test_table_list_must_not_be_empty():
    with pytest.raises(ValueError, match="no pairs table given"):
        read_pairs_tables([])
