"""RxRx1 (Taylor et al., 2019) in the layout the WILDS benchmark distributes, ``rxrx1_v1.0``.

TULIP reports RxRx1 as a few-shot linear probe on frozen features: 1,139 siRNA classes of
fluorescence microscopy images, where batch effects between experiments make it hard.
"""

from __future__ import annotations

import csv
from pathlib import Path

from tulip.eval.datasets.class_folder import _ImageLabelDataset

# WILDS "official" split scheme: the metadata's `dataset` column names train/val/test, and the
# training experiments' second imaging site is held out as the in-distribution test split.
SPLITS = ("train", "val", "test", "id_test")
_REQUIRED_COLUMNS = {"dataset", "experiment", "plate", "well", "site", "sirna", "sirna_id"}


class RxRx1(_ImageLabelDataset):
    """RxRx1 read from ``<root>/rxrx1_v1.0/``, the folder WILDS' ``RxRx1Dataset`` downloads.

    Layout::

        <root>/rxrx1_v1.0/metadata.csv
        <root>/rxrx1_v1.0/images/<experiment>/Plate<plate>/<well>_s<site>.png

    ``metadata.csv`` has one row per image with at least the columns ``dataset`` (train, val or
    test), ``experiment``, ``plate``, ``well``, ``site`` (1 or 2), ``sirna`` and ``sirna_id`` (the
    class index, 0 to 1138). Splits follow WILDS' official scheme: ``train`` is site 1 of the
    training experiments, ``id_test`` site 2 of those same experiments, and ``val`` and ``test``
    (out-of-distribution experiments) both sites. Class names are the siRNA ids, in ``sirna_id`` order.
    """

    def __init__(self, root: str | Path, split: str, transform=None):
        if split not in SPLITS:
            raise ValueError(f"unknown RxRx1 split {split!r}; use one of {SPLITS}")
        self.root = Path(root) / "rxrx1_v1.0"
        self.transform = transform
        metadata = self.root / "metadata.csv"
        if not metadata.is_file():
            raise FileNotFoundError(f"{metadata} not found; point the dataset root at the folder holding rxrx1_v1.0/")
        with metadata.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        missing = _REQUIRED_COLUMNS - set(rows[0] if rows else {})
        if missing:
            raise ValueError(f"{metadata} lacks column(s) {sorted(missing)}")

        names: dict[int, str] = {}
        for row in rows:
            label = int(row["sirna_id"])
            if names.setdefault(label, row["sirna"]) != row["sirna"]:
                raise ValueError(f"{metadata}: sirna_id {label} names both {names[label]!r} and {row['sirna']!r}")
        num_classes = max(names) + 1
        self.class_ids = [names.get(i, f"sirna_id_{i}") for i in range(num_classes)]
        self.classnames = list(self.class_ids)

        self.samples = []
        for row in rows:
            if _split_of(row) != split:
                continue
            path = self.root / "images" / row["experiment"] / f"Plate{row['plate']}" / f"{row['well']}_s{row['site']}.png"
            self.samples.append((path, int(row["sirna_id"])))
        if not self.samples:
            raise ValueError(f"{metadata} has no rows in split {split!r}")
        absent = [p for p, _ in self.samples if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} image(s) of split {split!r} listed in {metadata} are missing, e.g. {absent[0]}")


def _split_of(row: dict) -> str:
    if row["dataset"] == "train" and int(row["site"]) == 2:
        return "id_test"
    return row["dataset"]
