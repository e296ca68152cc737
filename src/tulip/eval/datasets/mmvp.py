"""MMVP-VLM (Tong et al., "Eyes Wide Shut?", 2024): pairs of images with one statement each.

The benchmark probes visual patterns that CLIP-style encoders miss. Each pair contains two images
that differ in one visual property and two statements, one true of each image.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_FOLDER = "MLLM_VLM Images"
QUESTIONS_FILE = "Questions.csv"
COLUMNS = ("Question ID", "Type", "Statement")


@dataclass(frozen=True)
class StatementPair:
    """Two images and their statements; statement ``i`` describes image ``i``."""

    category: str
    question_ids: tuple[int, int]
    statements: tuple[str, str]
    images: tuple[Path, Path]


def read_statement_pairs(root: str | Path) -> list[StatementPair]:
    """Read the pairs of an MMVP-VLM folder, checking that every pair is complete."""
    root = Path(root)
    questions = root / QUESTIONS_FILE
    if not questions.is_file():
        raise FileNotFoundError(f"{questions} not found; an MMVP-VLM folder contains {QUESTIONS_FILE} and '{IMAGE_FOLDER}/'")
    with questions.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{questions} lacks column(s) {missing}; expected {list(COLUMNS)}")
        rows = {int(row["Question ID"]): row for row in reader}
    if not rows:
        raise ValueError(f"{questions} lists no statements")
    odd = sorted(q for q in rows if q % 2 == 1)
    unpaired = sorted(set(rows) - set(odd) - {q + 1 for q in odd}) + [q for q in odd if q + 1 not in rows]
    if unpaired:
        raise ValueError(f"{questions}: question id(s) {unpaired[:10]} have no partner; pairs are (1, 2), (3, 4), ...")

    pairs = []
    for first in odd:
        a, b = rows[first], rows[first + 1]
        if a["Type"] != b["Type"]:
            raise ValueError(f"{questions}: questions {first} and {first + 1} form a pair but have types "
                             f"{a['Type']!r} and {b['Type']!r}")
        images = tuple(root / IMAGE_FOLDER / a["Type"] / f"{q}.jpg" for q in (first, first + 1))
        absent = [str(p) for p in images if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"MMVP-VLM image(s) not found: {absent}")
        pairs.append(StatementPair(a["Type"], (first, first + 1), (a["Statement"], b["Statement"]), images))
    return pairs


class MMVPVLM(Dataset):
    """MMVP-VLM from a folder in the layout of the published benchmark (Hugging Face ``MMVP/MMVP_VLM``).

    Layout::

        <root>/Questions.csv                       columns "Question ID", "Type", "Statement"
        <root>/MLLM_VLM Images/<Type>/<Question ID>.jpg

    Statement ``q`` describes image ``q``. Consecutive ids form a pair, (1, 2), (3, 4), ..., and both
    rows of a pair share their ``Type``, the visual-pattern category (nine categories of 15 pairs in
    the published set). Items are (images [2, C, H, W] once transformed, the two statements).
    """

    def __init__(self, root: str | Path, transform=None):
        self.root = Path(root)
        self.transform = transform
        self.pairs = read_statement_pairs(self.root)

    @property
    def categories(self) -> list[str]:
        return [pair.category for pair in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        images = []
        for path in pair.images:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        if self.transform:
            images = torch.stack([self.transform(image) for image in images])
        return images, list(pair.statements)
