"""Evaluation datasets read from local folders."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class ClassFolderDataset(Dataset):
    """``<root>/<split>/<class index>/<image>`` with class names, in index order, in ``<root>/classnames.txt``.

    Folder names are integer class indices, so the index-to-name mapping cannot drift with sorting.
    """

    def __init__(self, root: str | Path, split: str, transform=None):
        self.root = Path(root)
        self.transform = transform
        names_file = self.root / "classnames.txt"
        if not names_file.is_file():
            raise FileNotFoundError(f"{names_file} not found; a class-folder dataset needs its class names")
        self.classnames = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"split folder {split_dir} not found")
        self.samples: list[tuple[Path, int]] = []
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if not folder.name.isdigit() or int(folder.name) >= len(self.classnames):
                raise ValueError(
                    f"class folder {folder} must be named by an index below {len(self.classnames)} (classnames.txt)"
                )
            label = int(folder.name)
            self.samples += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise ValueError(f"no images found under {split_dir}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), label
