"""tulip: TULIP (Towards Unified Language-Image Pretraining) in PyTorch.

The top level mirrors open_clip's entry points::

    model, preprocess_train, preprocess_val = tulip.create_model_and_transforms("tulip-tiny")
    tokenizer = tulip.get_tokenizer("tulip-tiny")

They are imported on first use, so ``python -m tulip <stage>`` for a data stage does not pay for
importing torch, timm and open_clip.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_MODEL_API = (
    "add_model_config",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_checkpoint",
    "get_model_config",
    "get_tokenizer",
    "list_models",
)

__all__ = list(_MODEL_API)


def __getattr__(name: str):
    if name in _MODEL_API:
        return getattr(importlib.import_module("tulip.models"), name)
    raise AttributeError(f"module 'tulip' has no attribute {name!r}")
