"""Registry of model presets: one JSON file per preset, looked up by name."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from tulip.models.config import ModelConfig

_EXTRA_PRESETS: dict[str, Path] = {}


def _builtin_presets() -> dict[str, Path]:
    folder = resources.files("tulip.models") / "presets"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".json")}


def add_model_config(path: str | Path) -> None:
    """Register a preset file, or every ``*.json`` in a folder, under its file stem."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    for file in files:
        _EXTRA_PRESETS[file.stem] = file


def list_models() -> list[str]:
    return sorted({**_builtin_presets(), **_EXTRA_PRESETS})


def get_model_config(name: str) -> ModelConfig:
    """Load a preset by registered name, or from a path to a preset JSON file."""
    presets = {**_builtin_presets(), **_EXTRA_PRESETS}
    if name in presets:
        path = presets[name]
    elif name.endswith(".json") and Path(name).is_file():
        path = Path(name)
    else:
        raise ValueError(f"unknown model {name!r}; available presets: {', '.join(list_models())}")
    data = json.loads(path.read_text())
    data.setdefault("name", name)
    return ModelConfig.from_dict(data)
