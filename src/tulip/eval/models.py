"""Models under evaluation: tulip checkpoints and open_clip models behind one interface.

A model spec is a dict, as in the workflow config:

- ``{"name": "tulip", "type": "tulip", "weights": "results/pretrain/model.pt"}`` rebuilds a tulip
  model from a checkpoint that stores its config; add ``"architecture": "<preset>"`` for a bare
  state dict of a preset.
- ``{"name": "vit-b-32", "type": "open_clip", "architecture": "ViT-B-32", "weights": "<file>"}``
  builds an open_clip model and loads the weights strictly. ``architecture`` is an open_clip model
  name (``open_clip.list_models()``), an ``hf-hub:<repo>`` id, or a path to a model config JSON,
  which is registered under its file stem. ``weights`` is a local file, an open_clip pretrained
  tag (fetched from the network when first used), or null for ``hf-hub`` models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

MODEL_TYPES = ("tulip", "open_clip")


@dataclass
class EvalModel:
    """A model with ``encode_image``/``encode_text``, its tokenizer and its evaluation image transform."""

    name: str
    pretrained: str  # what the weights were, for the ``pretrained`` field of result files
    model: torch.nn.Module
    tokenizer: Callable
    transform: Callable


def load_eval_model(spec: dict, device: str | torch.device = "cpu") -> EvalModel:
    """Build the model a spec describes, in eval mode on ``device``."""
    kind = spec.get("type", "tulip")
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model type {kind!r} in {spec}; use one of {MODEL_TYPES}")
    name = spec.get("name") or kind
    if kind == "tulip":
        model = _load_tulip(spec, device)
    else:
        model = _load_open_clip(spec, device)
    model.model.eval()
    model.name = name
    return model


def _load_tulip(spec: dict, device) -> EvalModel:
    from tulip.models import create_model, create_model_from_checkpoint, get_tokenizer
    from tulip.models.transforms import image_transform

    weights = spec.get("weights")
    if not weights:
        raise ValueError(f"tulip model spec {spec} needs 'weights', the path of a checkpoint or state dict")
    if spec.get("architecture"):
        model = create_model(spec["architecture"], pretrained=weights, device=device)
    else:
        model = create_model_from_checkpoint(weights, device=device)
    return EvalModel("tulip", str(weights), model, get_tokenizer(model.cfg), image_transform(model.cfg, train=False))


def _load_open_clip(spec: dict, device) -> EvalModel:
    import open_clip

    architecture = spec.get("architecture")
    if not architecture:
        raise ValueError(f"open_clip model spec {spec} needs 'architecture'")
    if architecture.endswith(".json"):
        path = Path(architecture)
        if not path.is_file():
            raise FileNotFoundError(f"open_clip model config {path} not found")
        open_clip.add_model_config(path)
        architecture = path.stem
    elif not architecture.startswith("hf-hub:") and architecture not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {architecture!r}; see open_clip.list_models()")
    weights = spec.get("weights")
    if weights and not Path(weights).is_file():
        logger.info("open_clip weights %r is not a local file; treating it as a pretrained tag", weights)
    elif not weights and not architecture.startswith("hf-hub:"):
        raise ValueError(f"open_clip model spec {spec} needs 'weights' (a file or pretrained tag) for {architecture!r}")
    model, _, transform = open_clip.create_model_and_transforms(architecture, pretrained=weights or None, device=device)
    return EvalModel("open_clip", str(weights or architecture), model, open_clip.get_tokenizer(architecture), transform)
