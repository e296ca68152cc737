"""Image tower: a timm Vision Transformer trunk with its own pooling and an optional projection.

Parameter names follow open_clip's ``TimmModel`` (``trunk.*`` and ``head.*``), so the tower's
state dict maps one to one onto an open_clip SigLIP checkpoint.

The trunk is built with timm's ``dynamic_img_size``: images of another size than the preset's
(the local crops of multi-crop training) get a bicubically resampled position embedding. At the
preset's size timm skips the resampling, so embeddings equal those of a fixed-size trunk.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import timm
import torch
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tulip.models import timm_trunks  # noqa: F401  (registers tulip's trunks with timm)
from tulip.models.config import VisionConfig


@dataclass
class MaskedImageEncoding:
    """Result of a masked forward pass; patch positions index the trunk's row-major patch grid."""

    embedding: torch.Tensor  # [B, embed_dim], pooled from the visible patches only
    visible_tokens: torch.Tensor  # [B, N_keep, width], final-norm states of the visible patches
    keep_ids: torch.Tensor  # [B, N_keep], patch positions that were encoded
    mask_ids: torch.Tensor  # [B, N_mask], patch positions that were masked out


class VisionTower(nn.Module):
    """ViT trunk (timm) whose pooled output is optionally projected to the shared embedding size."""

    def __init__(self, cfg: VisionConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        timm_kwargs = {"dynamic_img_size": True, **cfg.timm_kwargs}
        if cfg.timm_model_name:
            self.trunk = timm.create_model(
                cfg.timm_model_name,
                pretrained=False,
                num_classes=0,
                global_pool=cfg.pool,
                img_size=cfg.image_size,
                **timm_kwargs,
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
                **timm_kwargs,
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

    @property
    def width(self) -> int:
        return self.trunk.num_features

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Return the trunk's normalised tokens, [B, N, width] (prefix tokens included)."""
        return self.trunk.forward_features(images)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool trunk tokens [B, N, width] into projected embeddings [B, embed_dim]."""
        return self.head(self.trunk.forward_head(tokens))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images [B, C, H, W] into [B, embed_dim]."""
        return self.head(self.trunk(images))

    def forward_masked(
        self, images: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> MaskedImageEncoding:
        """Encode a random ``1 - mask_ratio`` share of each image's patches, as MAE does, and pool them.

        Masked patches are removed before the first block, so the pass costs about
        ``1 - mask_ratio`` of a full one. Each image gets its own uniformly random mask.
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        trunk = self.trunk
        tokens = trunk._pos_embed(trunk.patch_embed(images))  # [B, P + N, width], P prefix tokens
        prefix_count = trunk.num_prefix_tokens
        prefix, patches = tokens[:, :prefix_count], tokens[:, prefix_count:]
        batch, num_patches, width = patches.shape
        num_keep = max(1, int(round(num_patches * (1.0 - mask_ratio))))
        noise = torch.rand(batch, num_patches, device=images.device, generator=generator)
        order = noise.argsort(dim=1)
        keep_ids, mask_ids = order[:, :num_keep], order[:, num_keep:]
        visible = patches.gather(1, keep_ids[..., None].expand(-1, -1, width))  # [B, N_keep, width]
        x = trunk.norm_pre(torch.cat([prefix, visible], dim=1))
        if trunk.grad_checkpointing and self.training:
            x = checkpoint_seq(trunk.blocks, x)
        else:
            x = trunk.blocks(x)
        x = trunk.norm(x)
        return MaskedImageEncoding(
            embedding=self.pool(x),
            visible_tokens=x[:, prefix_count:],
            keep_ids=keep_ids,
            mask_ids=mask_ids,
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)
