"""Image tower: a timm Vision Transformer trunk with its own pooling and an optional projection.

Parameter names follow open_clip's ``TimmModel`` (``trunk.*`` and ``head.*``), so the tower's
state dict maps one to one onto an open_clip SigLIP checkpoint.
"""

from __future__ import annotations

from collections import OrderedDict

import timm
import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from tulip.models.config import VisionConfig


class VisionTower(nn.Module):
    """ViT trunk (timm) whose pooled output is optionally projected to the shared embedding size."""

    def __init__(self, cfg: VisionConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        if cfg.timm_model_name:
            self.trunk = timm.create_model(
                cfg.timm_model_name,
                pretrained=False,
                num_classes=0,
                global_pool=cfg.pool,
                img_size=cfg.image_size,
                **cfg.timm_kwargs,
            )
        else:
            self.trunk = VisionTransformer(
                img_size=cfg.image_size,
                patch_size=cfg.patch_size,
                in_chans=cfg.in_chans,
                embed_dim=cfg.width,
                depth=cfg.depth,
                num_heads=cfg.heads,
                mlp_ratio=cfg.mlp_ratio,
                class_token=cfg.pool == "token",
                global_pool=cfg.pool,
                num_classes=0,
                **cfg.timm_kwargs,
            )
        width = self.trunk.num_features
        head = OrderedDict()
        if cfg.proj:
            head["proj"] = nn.Linear(width, embed_dim, bias=False)
        elif width != embed_dim:
            raise ValueError(
                f"vision width {width} differs from embed_dim {embed_dim}; set vision.proj to true "
                "to add a linear projection"
            )
        self.head = nn.Sequential(head)

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def patch_size(self) -> int:
        return self.trunk.patch_embed.patch_size[0]

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Return the trunk's normalised patch tokens, [B, N, width] (prefix tokens included)."""
        return self.trunk.forward_features(images)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool trunk tokens [B, N, width] into projected embeddings [B, embed_dim]."""
        return self.head(self.trunk.forward_head(tokens))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images [B, C, H, W] into [B, embed_dim]."""
        return self.head(self.trunk(images))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)
