"""Fashion-MNIST as image-caption pairs: the embedded real dataset that needs no network.

The IDX files come from Debian's ``dataset-fashion-mnist`` package (70,000 28x28 grayscale images,
10 classes, MIT licence). Training images become PNG files plus a pairs table whose captions fill
varied templates with class synonyms, and whose recaptions fill longer descriptive templates the
same way (standing in for Recap-DataComp's model-written captions). The official test split
becomes a class-folder evaluation set.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from tulip.data.io import atomic_write_text

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def class_info() -> list[dict]:
    """Return the ten classes in label order, each with a ``name`` and caption ``synonyms``."""
    text = (resources.files("tulip.data") / "templates" / "fashion_mnist_classes.json").read_text()
    return json.loads(text)["classes"]


def caption_templates(name: str = "caption_templates.txt") -> list[str]:
    text = (resources.files("tulip.data") / "templates" / name).read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (images [N, 28, 28] uint8 or labels [N] uint8)."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic number {magic:#x})")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images [N, 28, 28] uint8, labels [N] uint8) for ``split`` in {"train", "test"}."""
    root = Path(root)
    image_file, label_file = _FILES[split]
    missing = [name for name in (image_file, label_file) if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST file(s) {missing} not found under {root}; install them with "
            "'apt-get install dataset-fashion-mnist' or set data.fashion_mnist.root to their folder"
        )
    images, labels = read_idx(root / image_file), read_idx(root / label_file)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels in split {split!r}")
    return images, labels


def make_caption(label: int, rng: random.Random, classes: list[dict], templates: list[str]) -> str:
    return rng.choice(templates).format(rng.choice(classes[label]["synonyms"]))


def export_pairs(root: Path, out_dir: Path, num_samples: int, seed: int) -> Path:
    """Write ``num_samples`` training images as PNG plus ``pairs.tsv`` (url, caption, recaption, label); return its path.

    Samples are a seeded random subset of the official training split, so a run is reproducible.
    """
    images, labels = load_split(root, "train")
    if not 0 < num_samples <= len(images):
        raise ValueError(f"num_samples must be in [1, {len(images)}], got {num_samples}")
    rng = random.Random(seed)
    indices = sorted(rng.sample(range(len(images)), num_samples))
    classes, templates = class_info(), caption_templates()
    recaption_templates = caption_templates("recaption_templates.txt")
    # A separate generator, so the captions stay what they are without recaptions.
    recaption_rng = random.Random(f"{seed}-recaption")
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = ["url\tcaption\trecaption\tlabel"]
    for index in indices:
        path = image_dir / f"train_{index:05d}.png"
        Image.fromarray(images[index], mode="L").save(path)
        caption = make_caption(int(labels[index]), rng, classes, templates)
        recaption = make_caption(int(labels[index]), recaption_rng, classes, recaption_templates)
        rows.append(f"{path.resolve()}\t{caption}\t{recaption}\t{int(labels[index])}")
    table = Path(out_dir) / "pairs.tsv"
    atomic_write_text(table, "\n".join(rows) + "\n")
    logger.info("wrote %d Fashion-MNIST training pairs to %s", num_samples, table)
    return table


def export_eval_folders(root: Path, out_dir: Path, train_per_class: int, seed: int) -> Path:
    """Write the official test split and a labelled training pool as ``<split>/<label>/<index>.png`` class folders.

    The training pool (``train_per_class`` images per class) is what few-shot probes fit on; the test
    split is never used for pretraining. ``classnames.txt`` lists the class names in label order.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        images, labels = load_split(root, split)
        if split == "train":
            keep = np.concatenate(
                [rng.permutation(np.flatnonzero(labels == c))[:train_per_class] for c in range(10)]
            )
        else:
            keep = np.arange(len(images))
        for index in sorted(keep.tolist()):
            folder = out_dir / split / f"{int(labels[index]):02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index], mode="L").save(folder / f"{index:05d}.png")
    names = [c["name"] for c in class_info()]
    atomic_write_text(out_dir / "classnames.txt", "\n".join(names) + "\n")
    return out_dir


def _augmented_view(image: Image.Image, rng: random.Random) -> Image.Image:
    """Augment ``image`` classically: crop 70-100 % of its area, resize it back, maybe flip it, change its brightness."""
    from PIL import ImageEnhance, ImageOps

    width, height = image.size
    scale = rng.uniform(0.7, 1.0) ** 0.5
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = rng.randint(0, width - w), rng.randint(0, height - h)
    view = image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    return ImageEnhance.Brightness(view).enhance(rng.uniform(0.7, 1.3))


def export_edit_pairs(root: Path, out_dir: Path, num_pairs: int, seed: int) -> Path:
    """Write ``edit_pairs.tsv`` (source, target, kind, instruction) with PNG images: the soft-prompt training table.

    Half the rows are positive pairs: a training image and an augmented view of it. The other half
    are negative pairs: a training image and an image of another class, with the instruction that
    turns one into the other ("turn the sneaker into a bag"), as InstructPix2Pix triples have.
    """
    images, labels = load_split(root, "train")
    if num_pairs < 2:
        raise ValueError(f"num_pairs must be at least 2 (one positive, one negative), got {num_pairs}")
    rng = random.Random(f"{seed}-edit-pairs")
    classes = class_info()
    by_class = [np.flatnonzero(labels == c).tolist() for c in range(len(classes))]
    image_dir = Path(out_dir) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = ["source\ttarget\tkind\tinstruction"]
    for row in range(num_pairs):
        index = rng.randrange(len(images))
        source = Image.fromarray(images[index], mode="L")
        if row % 2 == 0:
            kind, target = "positive", _augmented_view(source, rng)
            instruction = "show the same item again"
        else:
            other = rng.choice([c for c in range(len(classes)) if c != int(labels[index])])
            kind, target = "negative", Image.fromarray(images[rng.choice(by_class[other])], mode="L")
            instruction = f"turn the {classes[int(labels[index])]['name']} into a {classes[other]['name']}"
        source.save(image_dir / f"edit_{row:05d}_source.png")
        target.save(image_dir / f"edit_{row:05d}_target.png")
        rows.append(f"images/edit_{row:05d}_source.png\timages/edit_{row:05d}_target.png\t{kind}\t{instruction}")
    table = Path(out_dir) / "edit_pairs.tsv"
    atomic_write_text(table, "\n".join(rows) + "\n")
    logger.info("wrote %d soft-prompt training pairs to %s", num_pairs, table)
    return table
