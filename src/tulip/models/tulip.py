"""The two-tower TULIP model with open_clip's inference interface."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tulip.models.config import ModelConfig
from tulip.models.hf_text import HFTextTower
from tulip.models.text import TextTower
from tulip.models.vision import VisionTower


class TulipModel(nn.Module):
    """Image and text towers plus the learnable image-text temperature and bias.

    ``logit_scale`` is stored in log space, as in open_clip and SigLIP; ``forward`` returns its
    exponential, the temperature t in logits = t * cos(x, y) + b.
    """

    def __init__(self, cfg: ModelConfig, pretrained_text: bool | None = None):
        """Build both towers; ``pretrained_text`` overrides ``cfg.text.hf_pretrained`` for a transformers encoder."""
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.visual = VisionTower(cfg.vision, cfg.embed_dim)
        if cfg.text.hf_model_name:
            self.text = HFTextTower(cfg.text, cfg.embed_dim, pretrained=pretrained_text)
        else:
            self.text = TextTower(cfg.text, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))

    @property
    def context_length(self) -> int:
        return self.text.context_length

    @property
    def image_size(self) -> int:
        return self.visual.image_size

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embed images [B, C, H, W] into [B, embed_dim], L2-normalised when ``normalize``."""
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embed token ids [B, L] into [B, embed_dim], L2-normalised when ``normalize``."""
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Return normalised ``image_features`` [B, D], ``text_features`` [B, D], ``logit_scale`` and ``logit_bias``."""
        out = {"logit_scale": self.logit_scale.exp(), "logit_bias": self.logit_bias}
        if image is not None:
            out["image_features"] = self.encode_image(image, normalize=True)
        if text is not None:
            out["text_features"] = self.encode_text(text, normalize=True)
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)
