"""open_clip-style entry points: build a model with its transforms, a tokenizer, and load weights strictly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tulip.models.config import ModelConfig
from tulip.models.registry import get_model_config
from tulip.models.tokenizer import Tokenizer
from tulip.models.transforms import image_transform
from tulip.models.tulip import TulipModel

logger = logging.getLogger(__name__)


def _resolve_config(model: str | ModelConfig) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else get_model_config(model)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read model weights from a tulip training checkpoint (``{"model": ...}``) or a flat state dict file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {str(path)!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        payload = payload["model"]
    elif isinstance(payload, dict) and "state_dict" in payload:
        payload = payload["state_dict"]
    return {k.removeprefix("module."): v for k, v in payload.items()}


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load ``state_dict`` into ``model``, raising with the key lists on any mismatch when ``strict``."""
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        message = (
            f"weights do not match the model: {len(result.missing_keys)} missing key(s) "
            f"{result.missing_keys[:8]}, {len(result.unexpected_keys)} unexpected key(s) {result.unexpected_keys[:8]}"
        )
        if strict:
            raise RuntimeError(message + "; pass strict=False to keep the unmatched parameters as initialised")
        logger.warning(message)


def create_model(
    model_name: str | ModelConfig,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
) -> TulipModel:
    """Build a model from a preset name (or config) and optionally load weights from a local file."""
    cfg = _resolve_config(model_name)
    model = TulipModel(cfg)
    if pretrained:
        load_weights(model, read_state_dict(pretrained), strict=strict)
    return model.to(device)


def create_model_and_transforms(
    model_name: str | ModelConfig,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
):
    """Return ``(model, preprocess_train, preprocess_val)``, as ``open_clip.create_model_and_transforms`` does."""
    model = create_model(model_name, pretrained=pretrained, device=device, strict=strict)
    return model, image_transform(model.cfg, train=True), image_transform(model.cfg, train=False)


def create_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> TulipModel:
    """Rebuild a model from a tulip checkpoint that stores its ``model_config`` beside the weights."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "model_config" not in payload:
        raise ValueError(f"{path} has no 'model_config'; use create_model(<preset>, pretrained={str(path)!r})")
    model = TulipModel(ModelConfig.from_dict(payload["model_config"]))
    load_weights(model, payload["model"], strict=True)
    return model.to(device)


def get_tokenizer(model_name: str | ModelConfig, context_length: int | None = None) -> Tokenizer:
    """Return the tokenizer a preset uses, padding to the preset's context length unless one is given."""
    cfg = _resolve_config(model_name)
    return Tokenizer(cfg.text.tokenizer, context_length or cfg.text.context_length)
