"""A small vision-centric probe in MMVP-VLM's layout, composed offline from real photographs of objects.

MMVP-VLM tests whether an image-text model can tell apart two images that differ in one visual
property. This builder makes such pairs from single-object images (by default the Fashion-MNIST
test split, which pretraining never sees) on a black 2 x 2 grid canvas:

- "Quantity and Count": the same object class shown n and m times (1 to 4, n != m), statements
  "two bags" / "three bags";
- "Positional and Relational Context": two objects side by side or stacked, then swapped,
  statements "a bag to the left of a sneaker" / "a sneaker to the left of a bag" (or "above").

The result is written in the MMVP-VLM layout (``Questions.csv`` and ``MLLM_VLM Images/``), so the
MMVP-VLM reader and scorer evaluate it unchanged; a bag-of-words text tower scores at chance on the
positional pairs, whose statements hold the same words.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tulip.data.io import atomic_write_json, atomic_write_text
from tulip.eval.datasets.mmvp import COLUMNS, IMAGE_FOLDER, QUESTIONS_FILE

logger = logging.getLogger(__name__)

COUNT_CATEGORY = "Quantity and Count"
POSITION_CATEGORY = "Positional and Relational Context"
NUMBER_WORDS = ("one", "two", "three", "four")

# (singular, plural) noun phrases of the Fashion-MNIST classes, in label order.
FASHION_MNIST_NOUNS = (
    ("t-shirt", "t-shirts"), ("pair of trousers", "pairs of trousers"), ("pullover", "pullovers"),
    ("dress", "dresses"), ("coat", "coats"), ("sandal", "sandals"), ("shirt", "shirts"),
    ("sneaker", "sneakers"), ("bag", "bags"), ("ankle boot", "ankle boots"),
)


@dataclass
class ProbeSettings:
    """How many pairs to build and how; each field has a key of the same name in ``eval.vision_probe``."""

    pairs_per_category: int = 50
    cell_size: int = 32  # pixels per grid cell; the canvas is 2 x 2 cells, objects are pasted with a random offset
    seed: int = 0


def _with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


class _Composer:
    """Pastes single-object images [H, W] into cells of a black canvas."""

    def __init__(self, images: np.ndarray, cell: int, rng: np.random.Generator):
        if images.shape[1] > cell or images.shape[2] > cell:
            raise ValueError(f"object images of {images.shape[1:]} pixels do not fit cells of {cell} pixels")
        self.images, self.cell, self.rng = images, cell, rng

    def canvas(self, placements: list[tuple[int, int]]) -> Image.Image:
        """Return an RGB canvas with image ``index`` pasted in grid ``cell`` (0..3, row-major) per placement."""
        size = 2 * self.cell
        canvas = np.zeros((size, size), dtype=np.uint8)
        for index, cell in placements:
            image = self.images[index]
            top = (cell // 2) * self.cell + int(self.rng.integers(0, self.cell - image.shape[0] + 1))
            left = (cell % 2) * self.cell + int(self.rng.integers(0, self.cell - image.shape[1] + 1))
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
        return Image.fromarray(canvas, mode="L").convert("RGB")


def _count_pair(composer, by_class, nouns, rng):
    label = int(rng.choice([c for c, members in by_class.items() if len(members) >= 4]))
    counts = rng.choice(np.arange(1, 5), size=2, replace=False)
    instances = rng.choice(by_class[label], size=4, replace=False)
    images, statements = [], []
    for count in counts:
        cells = rng.choice(4, size=count, replace=False)
        images.append(composer.canvas(list(zip(instances[:count], cells))))
        singular, plural = nouns[label]
        statements.append(f"{NUMBER_WORDS[count - 1]} {singular if count == 1 else plural}")
    return images, statements


def _position_pair(composer, by_class, nouns, rng, vertical: bool):
    first, second = rng.choice(sorted(by_class), size=2, replace=False)
    a, b = int(rng.choice(by_class[first])), int(rng.choice(by_class[second]))
    line = int(rng.integers(0, 2))  # the grid row (or column) that contains the two objects
    cells = (line, line + 2) if vertical else (2 * line, 2 * line + 1)  # (top, bottom) or (left, right)
    relation = "above" if vertical else "to the left of"
    one, other = _with_article(nouns[first][0]), _with_article(nouns[second][0])
    images = [composer.canvas([(a, cells[0]), (b, cells[1])]), composer.canvas([(b, cells[0]), (a, cells[1])])]
    return images, [f"{one} {relation} {other}", f"{other} {relation} {one}"]


def build_vision_probe(
    images: np.ndarray, labels: np.ndarray, nouns: tuple[tuple[str, str], ...], out_dir: str | Path,
    settings: ProbeSettings, source: str = "",
) -> dict:
    """Write the probe to ``out_dir`` in the MMVP-VLM layout and return its description.

    Args:
        images: uint8 [N, H, W] single-object images on a black background.
        labels: [N] class indices into ``nouns``.
        nouns: (singular, plural) noun phrase per class.
        source: where the images come from, recorded in ``probe.json``.
    """
    if settings.pairs_per_category < 1:
        raise ValueError(f"pairs_per_category must be at least 1, got {settings.pairs_per_category}")
    if labels.max() >= len(nouns):
        raise ValueError(f"labels go up to {labels.max()} but only {len(nouns)} noun phrases are given")
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    if len(by_class) < 2 or not any(len(m) >= 4 for m in by_class.values()):
        raise ValueError("the probe needs at least two classes and one class with four or more images")
    rng = np.random.default_rng(settings.seed)
    composer = _Composer(images, settings.cell_size, rng)

    pairs = []
    for _ in range(settings.pairs_per_category):
        pairs.append((COUNT_CATEGORY, *_count_pair(composer, by_class, nouns, rng)))
    for number in range(settings.pairs_per_category):
        pairs.append((POSITION_CATEGORY, *_position_pair(composer, by_class, nouns, rng, vertical=number % 2 == 1)))

    out_dir = Path(out_dir)
    image_root = out_dir / IMAGE_FOLDER
    if image_root.exists():
        shutil.rmtree(image_root)
    rows = []
    for number, (category, pair_images, statements) in enumerate(pairs):
        folder = image_root / category
        folder.mkdir(parents=True, exist_ok=True)
        for offset, (image, statement) in enumerate(zip(pair_images, statements)):
            question_id = 2 * number + 1 + offset
            image.save(folder / f"{question_id}.jpg", quality=95)
            rows.append((question_id, category, statement))

    description = {"source": source, "settings": asdict(settings), "num_pairs": len(pairs),
                   "pairs_per_category": {COUNT_CATEGORY: settings.pairs_per_category,
                                          POSITION_CATEGORY: settings.pairs_per_category}}
    atomic_write_json(out_dir / "probe.json", description)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    # Questions.csv is written last: its presence marks a complete probe.
    atomic_write_text(out_dir / QUESTIONS_FILE, buffer.getvalue())
    logger.info("wrote %d statement pairs (%d images) to %s", len(pairs), 2 * len(pairs), out_dir)
    return description


def build_fashion_mnist_probe(root: str | Path, out_dir: str | Path, settings: ProbeSettings) -> dict:
    """Build the probe from the Fashion-MNIST test split in the IDX files under ``root``."""
    from tulip.data.fashion_mnist import load_split

    images, labels = load_split(Path(root), "test")
    return build_vision_probe(images, labels, FASHION_MNIST_NOUNS, out_dir, settings,
                              source=f"Fashion-MNIST test split ({Path(root)})")
