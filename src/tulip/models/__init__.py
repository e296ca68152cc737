"""Model definitions, presets and the open_clip-compatible factory."""

from tulip.models.config import ModelConfig, TextConfig, TokenizerConfig, VisionConfig
from tulip.models.factory import (
    create_model,
    create_model_and_transforms,
    create_model_from_checkpoint,
    get_tokenizer,
)
from tulip.models.pretrained import LoadReport, load_pretrained, load_state_into, read_state_dict
from tulip.models.registry import add_model_config, get_model_config, list_models
from tulip.models.tulip import TulipModel

__all__ = [
    "LoadReport",
    "ModelConfig",
    "TextConfig",
    "TokenizerConfig",
    "TulipModel",
    "VisionConfig",
    "add_model_config",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_checkpoint",
    "get_model_config",
    "get_tokenizer",
    "list_models",
    "load_pretrained",
    "load_state_into",
    "read_state_dict",
]
