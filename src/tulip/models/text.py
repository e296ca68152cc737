"""Text tower: a pre-norm transformer encoder with SigLIP's last-token pooling.

Parameter names match open_clip's ``TextTransformer`` (``token_embedding``, ``positional_embedding``,
``transformer.resblocks.<i>.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}``, ``ln_final``, ``text_projection``),
so a tulip text tower and an open_clip one load each other's weights without renaming.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tulip.models.config import TextConfig


def _activation(name: str) -> nn.Module:
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown text activation {name!r}; use 'gelu_tanh' or 'gelu'")


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, hidden)), ("gelu", _activation(act)), ("c_proj", nn.Linear(hidden, width))]
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map tokens [B, L, width] to [B, L, width]."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        self.width = width
        self.layers = layers
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act, eps) for _ in range(layers)]
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, attn_mask, use_reentrant=False)
            else:
                x = block(x, attn_mask)
        return x


class TextTower(nn.Module):
    """Token ids [B, L] -> pooled text embeddings [B, embed_dim]."""

    def __init__(self, cfg: TextConfig, embed_dim: int):
        super().__init__()
        if cfg.pool not in ("last", "argmax"):
            raise ValueError(f"unknown text pool {cfg.pool!r}; use 'last' or 'argmax'")
        self.cfg = cfg
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.act, cfg.ln_eps)
        self.ln_final = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.text_projection = nn.Linear(cfg.width, embed_dim, bias=cfg.proj_bias)
        if cfg.causal:
            mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
            self.register_buffer("attn_mask", mask, persistent=False)
        else:
            self.attn_mask = None
        self.init_parameters()

    def init_parameters(self) -> None:
        width, layers = self.cfg.width, self.cfg.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection.weight, std=width**-0.5)
        if self.text_projection.bias is not None:
            nn.init.zeros_(self.text_projection.bias)

    def forward_tokens(self, text: torch.Tensor) -> torch.Tensor:
        """Encode ids [B, L] into final-norm token states [B, L, width]."""
        seq_len = text.shape[1]
        if seq_len > self.context_length:
            raise ValueError(f"text has {seq_len} tokens but the tower's context length is {self.context_length}")
        x = self.token_embedding(text) + self.positional_embedding[:seq_len]
        mask = None if self.attn_mask is None else self.attn_mask[:seq_len, :seq_len]
        return self.ln_final(self.transformer(x, mask))

    def pool(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Pool token states [B, L, width] into projected embeddings [B, embed_dim]."""
        if self.cfg.pool == "last":
            pooled = tokens[:, -1]
        else:
            pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), text.argmax(dim=-1)]
        return self.text_projection(pooled)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_tokens(text), text)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable
