"""Classification datasets stored as one folder per class: tulip's index-named layout and ImageNet-1K.

Both readers map a folder to its class by name, never by listing order, so a missing or extra
folder cannot shift the class index of the others.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def _images_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


class _ImageLabelDataset(Dataset):
    """Shared part of the readers: ``samples`` is a list of (image path, class index)."""

    root: Path
    transform = None
    classnames: list[str]
    class_ids: list[str]
    samples: list[tuple[Path, int]]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def keys(self) -> list[str]:
        """Image paths relative to the root, which identify samples in feature files."""
        return [str(path.relative_to(self.root)) for path, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label


class ClassFolderDataset(_ImageLabelDataset):
    """``<root>/<split>/<class index>/<image>``, with class names in index order in ``<root>/classnames.txt``.

    Folder names are integer class indices (``3`` and ``03`` both mean class 3), which is the layout
    the Fashion-MNIST preparation stage writes. Any image suffix in ``IMAGE_SUFFIXES`` is read.
    """

    def __init__(self, root: str | Path, split: str, transform=None):
        self.root = Path(root)
        self.transform = transform
        names_file = self.root / "classnames.txt"
        if not names_file.is_file():
            raise FileNotFoundError(f"{names_file} not found; a class-folder dataset needs its class names")
        self.classnames = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        self.class_ids = [str(i) for i in range(len(self.classnames))]
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"split folder {split_dir} not found")
        self.samples = []
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not folder.name.isdigit() or int(folder.name) >= len(self.classnames):
                raise ValueError(
                    f"class folder {folder} must be named by an index below {len(self.classnames)} (classnames.txt)"
                )
            label = int(folder.name)
            self.samples += [(p, label) for p in _images_in(folder)]
        if not self.samples:
            raise ValueError(f"no images found under {split_dir}")


def imagenet_classes() -> tuple[list[str], list[str]]:
    """Return (WordNet ids, class names) of ImageNet-1K in the standard label order."""
    text = (resources.files("tulip.eval") / "data" / "imagenet1k_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [wnid for wnid, _ in rows], [name for _, name in rows]


class ImageNetFolder(_ImageLabelDataset):
    """ImageNet-1K as ``<root>/<split>/<WordNet id>/<image>.JPEG``, the layout torchvision's ``ImageNet`` writes.

    ``split`` is ``val`` (50,000 images, 50 per class) or ``train`` (1,281,167 images). The validation
    images must already be sorted into WordNet-id folders, for example by torchvision's
    ``ImageNet(root, split="val")`` or the widely used ``valprep.sh``. Class indices follow the
    standard order of the sorted WordNet ids and the names are the curated CLIP names, both shipped in
    ``tulip/eval/data/imagenet1k_classes.tsv``. A folder that is not an ImageNet-1K id raises
    ``ValueError``. Missing classes are allowed but logged, and every model is still scored over all
    1,000 classes, so a partial copy cannot turn into an easier task.
    """

    def __init__(self, root: str | Path, split: str, transform=None):
        self.root = Path(root)
        self.transform = transform
        self.class_ids, self.classnames = imagenet_classes()
        index = {wnid: i for i, wnid in enumerate(self.class_ids)}
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"ImageNet split folder {split_dir} not found; expected {split_dir}/<wnid>/*.JPEG")
        folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
        unknown = [f.name for f in folders if f.name not in index]
        if unknown:
            raise ValueError(
                f"{len(unknown)} folder(s) under {split_dir} are not ImageNet-1K WordNet ids, e.g. {unknown[:5]}; "
                "each class folder must be named by its id, such as n01440764"
            )
        self.samples = []
        for folder in folders:
            self.samples += [(p, index[folder.name]) for p in _images_in(folder)]
        if not self.samples:
            raise ValueError(f"no images found under {split_dir}")
        self.missing_classes = sorted(set(self.class_ids) - {f.name for f in folders})
        if self.missing_classes:
            logger.warning("%s: %d of %d ImageNet classes have no folder, e.g. %s",
                           split_dir, len(self.missing_classes), len(self.class_ids), self.missing_classes[:5])
