"""Initialise a model from pretrained weights (SigLIP or tulip) with a strict, reported key mapping.

A source is a local file or a Hugging Face Hub id written ``hf-hub:<org>/<repo>[@<revision>]``.
Two layouts are recognised from the keys:

- ``open_clip``: whole-model weights with open_clip's ``CustomTextCLIP`` names (``visual.trunk.*``,
  ``text.*``, ``logit_scale``, ``logit_bias``), as open_clip's SigLIP checkpoints and tulip's own
  checkpoints store them. Every model parameter must be present.
- ``timm``: a timm ViT trunk alone (``patch_embed.*``, ``blocks.*``, ``attn_pool.*``, ...), as
  timm's SigLIP checkpoints store it. The keys map to ``visual.trunk.*``, and every trunk parameter
  must be present. The rest of the model (text tower, projection, logit scale and bias) keeps its
  initialisation, and the report lists it.

A position embedding for another patch grid (a 224-px checkpoint in a 384-px model) is resampled
bicubically. Any other shape difference, a missing parameter or a checkpoint key that the model
does not have raises, naming the keys, unless the key matches a ``skip_keys`` pattern: those keep
their initialisation. Nothing is left randomly initialised silently.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
# Tried in order in a hub repository: open_clip's file names first, then timm's and transformers'.
HUB_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_OPEN_CLIP_ROOTS = ("visual.", "text.", "logit_scale", "logit_bias")
_TIMM_PREFIX = "visual.trunk."
POS_EMBED_KEY = "visual.trunk.pos_embed"


@dataclass
class LoadReport:
    """Outcome of ``load_pretrained`` for each model key."""

    source: str
    layout: str  # "open_clip" or "timm"
    loaded: list[str] = field(default_factory=list)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # matched a skip pattern, kept at initialisation
    outside_checkpoint: list[str] = field(default_factory=list)  # not in a trunk-only checkpoint, kept at initialisation

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensor(s) loaded from {self.source} ({self.layout} layout)"]
        if self.resized:
            parts.append(f"resampled {', '.join(f'{k} {o} -> {n}' for k, (o, n) in self.resized.items())}")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped by pattern: {self.skipped[:8]}")
        if self.outside_checkpoint:
            parts.append(
                f"{len(self.outside_checkpoint)} not in the checkpoint, kept at initialisation: "
                f"{self.outside_checkpoint[:8]}"
            )
        return "; ".join(parts)


def fetch_weights(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Return a local file for ``source``: the path itself, or a file downloaded from a hub repository."""
    text = str(source)
    if not text.startswith(HUB_PREFIX):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained weights {text!r} not found; give a local file or a hub id as 'hf-hub:<org>/<repo>'"
            )
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, _, revision = text[len(HUB_PREFIX):].partition("@")
    for filename in HUB_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision or None, cache_dir=cache_dir))
        except EntryNotFoundError:
            continue
    raise FileNotFoundError(f"hub repository {repo_id!r} has none of the weight files {list(HUB_WEIGHT_FILES)}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from a safetensors file, a tulip checkpoint (``{"model": ...}``) or a flat state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    elif isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise ValueError(f"{path} contains a {type(payload).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """Return "open_clip" for whole-model keys, "timm" for a bare ViT trunk; raise for anything else."""
    if any(key.startswith(_OPEN_CLIP_ROOTS) for key in state):
        return "open_clip"
    if "patch_embed.proj.weight" in state:
        return "timm"
    raise ValueError(
        f"unrecognised weight layout (first keys {sorted(state)[:5]}); expected open_clip names "
        "(visual.*, text.*, logit_scale) or a timm ViT trunk (patch_embed.*, blocks.*)"
    )


def _grid(num_tokens: int) -> tuple[int, int]:
    side = int(round(num_tokens**0.5))
    if side * side != num_tokens:
        raise ValueError(f"a position embedding of {num_tokens} tokens is not a square patch grid")
    return side, side


def _resample_pos_embed(tensor: torch.Tensor, target: torch.Tensor, trunk: nn.Module) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(trunk, "no_embed_class", False) else trunk.num_prefix_tokens
    old_grid = _grid(tensor.shape[1] - prefix)
    new_grid = _grid(target.shape[1] - prefix)
    return resample_abs_pos_embed(tensor, new_size=new_grid, old_size=old_grid, num_prefix_tokens=prefix)


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def load_state_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str = "<state dict>",
    skip_keys: tuple[str, ...] | list[str] = (),
    strict: bool = True,
) -> LoadReport:
    """Map ``state`` onto ``model`` (a ``TulipModel``) and load it; see the module docstring for the rules.

    Args:
        model: the model to initialise.
        state: checkpoint tensors in open_clip or timm layout.
        source: where the tensors came from, for messages.
        skip_keys: ``fnmatch`` patterns of model keys to keep at initialisation even when present.
        strict: raise on missing and unexpected keys; with False they are only logged.
    """
    skip_keys = tuple(skip_keys)
    layout = detect_layout(state)
    if layout == "timm":
        state = {_TIMM_PREFIX + key: value for key, value in state.items()}
    expected = model.state_dict()
    report = LoadReport(source=str(source), layout=layout)
    required = [k for k in expected if layout == "open_clip" or k.startswith(_TIMM_PREFIX)]
    report.outside_checkpoint = [k for k in expected if k not in required]
    report.skipped = sorted(k for k in set(expected) | set(state) if _matches(k, skip_keys))

    missing = [k for k in required if k not in state and k not in report.skipped]
    unexpected = [k for k in state if k not in expected and k not in report.skipped]
    mismatched, to_load = [], {}
    for key, value in state.items():
        if key not in expected or key in report.skipped:
            continue
        target = expected[key]
        if value.shape != target.shape and key == POS_EMBED_KEY and value.ndim == 3:
            resampled = _resample_pos_embed(value, target, model.visual.trunk)
            report.resized[key] = (tuple(value.shape), tuple(resampled.shape))
            value = resampled
        if value.shape != target.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(target.shape)}")
            continue
        to_load[key] = value
    if mismatched:
        raise ValueError(
            f"{len(mismatched)} tensor(s) in {source} have another shape than the model: {mismatched[:8]}; use a "
            "preset whose towers match the checkpoint, or list the keys in skip_keys to keep them initialised"
        )
    if missing or unexpected:
        message = (
            f"weights in {source} do not match the model: {len(missing)} missing key(s) {missing[:8]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:8]}"
        )
        if strict:
            raise RuntimeError(message + "; list keys in skip_keys (or pass strict=False) to keep them initialised")
        logger.warning(message)
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    logger.info("%s", report.summary())
    return report


def load_pretrained(
    model: nn.Module,
    source: str | Path,
    skip_keys: tuple[str, ...] | list[str] = (),
    strict: bool = True,
    cache_dir: str | Path | None = None,
) -> LoadReport:
    """Load weights from a local file or ``hf-hub:`` id into ``model``; return what was loaded and kept."""
    path = fetch_weights(source, cache_dir=cache_dir)
    return load_state_into(model, read_state_dict(path), source=str(source), skip_keys=skip_keys, strict=strict)
