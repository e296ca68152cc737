"""Light MAE-style pixel decoder with the pooled image embedding as a bottleneck token.

TULIP reconstructs pixels through the image embedding so that the embedding keeps colour,
texture and shape detail (Tang et al., arXiv 2503.15485, section 3.3). The paper gives no decoder
details, so this one follows MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners",
arXiv 2111.06377). A few transformer blocks read the visible patches' encoder states and one mask
token per masked patch, all with fixed 2-D sine-cosine positions, and a linear layer predicts each
masked patch's pixels. The pooled embedding, linearly mapped to the decoder width, is prepended as
an extra token. With ``visible_tokens`` off the decoder reads only that token and the mask tokens,
so every pixel it reconstructs has to pass through the embedding.
"""

from __future__ import annotations

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn


class ImageDecoder(nn.Module):
    """Predict masked patches [B, N_mask, patch * patch * channels] from an embedding and visible tokens.

    Args:
        embed_dim: size of the pooled image embedding (the bottleneck input).
        encoder_width: width of the encoder's patch tokens.
        grid_size: patch grid of the reconstructed image, (rows, columns).
        patch_size: side of a square patch in pixels.
        in_chans: image channels.
        width, depth, heads, mlp_ratio: decoder transformer sizes.
        visible_tokens: feed the visible patches' encoder states to the decoder, as MAE does.
    """

    def __init__(
        self,
        embed_dim: int,
        encoder_width: int,
        grid_size: tuple[int, int],
        patch_size: int,
        in_chans: int = 3,
        width: int = 256,
        depth: int = 2,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        visible_tokens: bool = True,
    ):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.patch_size = patch_size
        self.bottleneck = nn.Linear(embed_dim, width)
        self.visible = nn.Linear(encoder_width, width) if visible_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        pos = build_sincos2d_pos_embed(list(self.grid_size), dim=width)  # [rows * columns, width]
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(
            [Block(width, heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width)
        self.pred = nn.Linear(width, patch_size * patch_size * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _positions(self, ids: torch.Tensor) -> torch.Tensor:
        width = self.pos_embed.shape[-1]
        return self.pos_embed.expand(ids.shape[0], -1, -1).gather(1, ids[..., None].expand(-1, -1, width))

    def forward(
        self,
        embedding: torch.Tensor,
        mask_ids: torch.Tensor,
        visible_tokens: torch.Tensor | None = None,
        keep_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return pixel predictions [B, N_mask, p * p * C] for the patches at ``mask_ids`` [B, N_mask].

        Args:
            embedding: pooled image embeddings [B, embed_dim].
            mask_ids: masked patch positions [B, N_mask] in the row-major patch grid.
            visible_tokens: encoder states of the visible patches [B, N_keep, encoder_width].
            keep_ids: positions of the visible patches [B, N_keep].
        """
        batch, num_masked = mask_ids.shape
        parts = [self.bottleneck(embedding).unsqueeze(1)]  # [B, 1, width]; no position: it is global
        if self.visible is not None:
            if visible_tokens is None or keep_ids is None:
                raise ValueError("this decoder reads the visible patches; pass visible_tokens and keep_ids")
            parts.append(self.visible(visible_tokens) + self._positions(keep_ids))
        parts.append(self.mask_token.expand(batch, num_masked, -1) + self._positions(mask_ids))
        x = torch.cat(parts, dim=1)  # [B, 1 (+ N_keep) + N_mask, width]
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x[:, -num_masked:]))
