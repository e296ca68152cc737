"""open_clip-style entry points: build a model with its transforms, a tokenizer, and load weights strictly."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tulip.models.config import ModelConfig
from tulip.models.pretrained import load_pretrained, load_state_into
from tulip.models.registry import get_model_config
from tulip.models.tokenizer import Tokenizer
from tulip.models.transforms import image_transform
from tulip.models.tulip import TulipModel

logger = logging.getLogger(__name__)


def _resolve_config(model: str | ModelConfig) -> ModelConfig:
    return model if isinstance(model, ModelConfig) else get_model_config(model)


def create_model(
    model_name: str | ModelConfig,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
    skip_keys: tuple[str, ...] | list[str] = (),
    cache_dir: str | Path | None = None,
) -> TulipModel:
    """Build a model from a preset name (or config) and optionally initialise it from pretrained weights.

    Args:
        model_name: a registered preset, a preset JSON file or a ``ModelConfig``.
        pretrained: a local file (tulip checkpoint, open_clip or timm state dict, safetensors) or a
            hub id ``hf-hub:<org>/<repo>``; see ``tulip.models.pretrained`` for the key mapping.
        device: where the model is moved.
        strict: raise when the weights miss a parameter or carry a key the model lacks.
        skip_keys: ``fnmatch`` patterns of parameters to keep at initialisation.
        cache_dir: hub download cache; None uses the Hugging Face default.
    """
    cfg = _resolve_config(model_name)
    model = TulipModel(cfg)
    if pretrained:
        load_pretrained(model, pretrained, skip_keys=skip_keys, strict=strict, cache_dir=cache_dir)
    return model.to(device)


def create_model_and_transforms(
    model_name: str | ModelConfig,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
    skip_keys: tuple[str, ...] | list[str] = (),
    cache_dir: str | Path | None = None,
):
    """Return ``(model, preprocess_train, preprocess_val)``, as ``open_clip.create_model_and_transforms`` does."""
    model = create_model(
        model_name, pretrained=pretrained, device=device, strict=strict, skip_keys=skip_keys, cache_dir=cache_dir
    )
    return model, image_transform(model.cfg, train=True), image_transform(model.cfg, train=False)


def create_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> TulipModel:
    """Rebuild a model from a tulip checkpoint that stores its ``model_config`` beside the weights."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "model_config" not in payload:
        raise ValueError(f"{path} has no 'model_config'; use create_model(<preset>, pretrained={str(path)!r})")
    # A transformers text encoder is built from its config only, because the checkpoint contains its weights.
    model = TulipModel(ModelConfig.from_dict(payload["model_config"]), pretrained_text=False)
    load_state_into(model, payload["model"], source=str(path), strict=True)
    return model.to(device)


def get_tokenizer(model_name: str | ModelConfig, context_length: int | None = None) -> Tokenizer:
    """Return the tokenizer a preset uses, padding to the preset's context length unless one is given."""
    cfg = _resolve_config(model_name)
    tokenizer = Tokenizer(cfg.text.tokenizer, context_length or cfg.text.context_length)
    # A transformers encoder masks text.pad_id, so the two must agree; the built-in tower reads
    # every position and does not use it.
    if cfg.text.hf_model_name and tokenizer.pad_id != cfg.text.pad_id:
        raise ValueError(
            f"the tokenizer pads with id {tokenizer.pad_id} but the model config has text.pad_id {cfg.text.pad_id}; "
            "set text.pad_id to the tokenizer's padding id"
        )
    return tokenizer

