"""Model configuration dataclasses, filled from the preset JSON files in ``presets/``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VisionConfig:
    """Image tower: a timm Vision Transformer trunk with attention-pool (MAP) pooling."""

    timm_model_name: str | None = None  # registered timm architecture; None builds a ViT from the fields below
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    in_chans: int = 3
    pool: str = "map"  # "map" (SigLIP attention pool), "avg" or "token"
    proj: bool = False  # linear map from width to embed_dim; SigLIP towers have none
    timm_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizerConfig:
    """Which tokenizer turns captions into ids; see ``tulip.models.tokenizer``."""

    type: str = "openclip"  # "openclip" (CLIP BPE bundled with open_clip) or "hf" (any transformers tokenizer)
    name: str | None = None  # hub id or local directory for type "hf"
    clean: str = "canonicalize"  # "canonicalize" (lower-case, no punctuation), "lower", "whitespace" or "none"


@dataclass
class TextConfig:
    """Text tower: a pre-norm transformer encoder with last-token pooling, as in SigLIP.

    With ``hf_model_name`` set, a transformers encoder (for example a BERT such as
    sentence-transformers/all-MiniLM-L6-v2) replaces the built-in transformer, and ``width``,
    ``heads``, ``layers``, ``mlp_ratio``, ``ln_eps``, ``act`` and ``causal`` are ignored.
    """

    context_length: int = 64
    vocab_size: int = 49408
    width: int = 768
    heads: int = 12
    layers: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    act: str = "gelu_tanh"  # "gelu_tanh" (SigLIP) or "gelu"
    # Built-in tower: "last" position (SigLIP) or "argmax" (the end-of-text id, CLIP).
    # transformers encoder: "mean" over non-padding tokens (sentence-transformers), "cls" (first token) or "last".
    pool: str = "last"
    causal: bool = False
    proj_bias: bool = True
    pad_id: int = 0  # the tokenizer's padding id; the text decoder ignores it, a transformers encoder masks it
    hf_model_name: str | None = None  # hub id or local directory of a transformers encoder
    hf_pretrained: bool = True  # load that encoder's pretrained weights when the model is built
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class ModelConfig:
    """A whole TULIP model: both towers, the shared embedding size and the image-text logit head."""

    name: str
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    init_logit_scale: float = math.log(10.0)
    init_logit_bias: float = -10.0
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    resize_mode: str = "squash"  # "squash" (resize to a square, SigLIP) or "shortest" (resize, then centre crop)
    description: str = ""  # what the preset is for and why its settings were chosen

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build a config from a preset dictionary, rejecting keys that no field declares."""
        data = dict(data)
        vision = _build(VisionConfig, data.pop("vision", {}), "vision")
        text_data = dict(data.pop("text", {}))
        tokenizer = _build(TokenizerConfig, text_data.pop("tokenizer", {}), "text.tokenizer")
        text = _build(TextConfig, text_data, "text")
        text.tokenizer = tokenizer
        for key in ("image_mean", "image_std"):
            if key in data:
                data[key] = tuple(data[key])
        return _build(cls, {**data, "vision": vision, "text": text}, "model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, data: dict[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in model config section '{where}'; valid keys are {sorted(known)}"
        )
    return cls(**data)
