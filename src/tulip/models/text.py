"""Text tower: a pre-norm transformer encoder with SigLIP's last-token pooling.

Parameter names match open_clip's ``TextTransformer`` (``token_embedding``, ``positional_embedding``,
``transformer.resblocks.<i>.{ln_1,attn.in_proj_weight,attn.in_proj_bias,attn.out_proj,ln_2,
mlp.c_fc,mlp.c_proj}``, ``ln_final``, ``text_projection``), so a tulip text tower and an open_clip
one load each other's weights without renaming.

Two things make it faster than ``nn.MultiheadAttention`` blocks while computing the same function.
Attention reshapes the fused q/k/v projection straight into the [B, heads, L, head_dim] layout of
``scaled_dot_product_attention``. And ``forward`` runs the last block for the pooled position
only, because nothing reads the other positions' final states.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tulip.models.config import TextConfig


def _activation(name: str) -> nn.Module:
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown text activation {name!r}; use 'gelu_tanh' or 'gelu'")


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, -1).transpose(1, 2)  # [B, heads, L, head_dim]

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, query_positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend over x [B, L, W]; return [B, L, W], or [B, W] for the one query per row in ``query_positions`` [B]."""
        batch, length, width = x.shape
        if query_positions is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            q = self._split_heads(q)
        else:
            rows = torch.arange(batch, device=x.device)
            q = F.linear(x[rows, query_positions], self.in_proj_weight[:width], self.in_proj_bias[:width])
            q = q.view(batch, self.heads, 1, -1)  # [B, heads, 1, head_dim]
            k, v = F.linear(x, self.in_proj_weight[width:], self.in_proj_bias[width:]).chunk(2, dim=-1)
            if attn_mask is not None:
                attn_mask = attn_mask[query_positions][:, None, None, :]  # [B, 1, 1, L]
        out = F.scaled_dot_product_attention(q, self._split_heads(k), self._split_heads(v), attn_mask=attn_mask)
        if query_positions is None:
            out = out.transpose(1, 2).reshape(batch, length, width)
        else:
            out = out.reshape(batch, width)
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, hidden)), ("gelu", _activation(act)), ("c_proj", nn.Linear(hidden, width))]
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Map tokens [B, L, width] to [B, L, width]."""
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))

    def forward_positions(
        self, x: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the block's output [B, width] at one position per row (``positions`` [B]) of x [B, L, width]."""
        rows = torch.arange(x.shape[0], device=x.device)
        out = x[rows, positions] + self.attn(self.ln_1(x), attn_mask, query_positions=positions)
        return out + self.mlp(self.ln_2(out))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float):
        super().__init__()
        self.width = width
        self.layers = layers
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act, eps) for _ in range(layers)]
        )

    def _run(self, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return checkpoint(block, x, attn_mask, use_reentrant=False)
        return block(x, attn_mask)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = self._run(block, x, attn_mask)
        return x

    def forward_positions(
        self, x: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run every block, the last one at ``positions`` [B] only; return [B, width]."""
        for block in self.resblocks[:-1]:
            x = self._run(block, x, attn_mask)
        return self.resblocks[-1].forward_positions(x, positions, attn_mask)


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

    def _embed(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        seq_len = text.shape[1]
        if seq_len > self.context_length:
            raise ValueError(f"text has {seq_len} tokens but the tower's context length is {self.context_length}")
        x = self.token_embedding(text) + self.positional_embedding[:seq_len]
        mask = None if self.attn_mask is None else self.attn_mask[:seq_len, :seq_len]
        return x, mask

    def pool_positions(self, text: torch.Tensor) -> torch.Tensor:
        """Position [B] whose final state is the pooled one: the last, or the highest id (end of text)."""
        if self.cfg.pool == "last":
            return torch.full((text.shape[0],), text.shape[1] - 1, dtype=torch.long, device=text.device)
        return text.argmax(dim=-1)

    def forward_tokens(self, text: torch.Tensor) -> torch.Tensor:
        """Encode ids [B, L] into final-norm token states [B, L, width]."""
        x, mask = self._embed(text)
        return self.ln_final(self.transformer(x, mask))

    def pool(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Pool token states [B, L, width] into projected embeddings [B, embed_dim]."""
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        return self.text_projection(tokens[rows, self.pool_positions(text)])

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """Embed ids [B, L] into [B, embed_dim]; equals ``pool(forward_tokens(text), text)``."""
        x, mask = self._embed(text)
        pooled = self.transformer.forward_positions(x, self.pool_positions(text), mask)  # [B, width]
        return self.text_projection(self.ln_final(pooled))

    def get_token_embedding(self) -> nn.Embedding:
        return self.token_embedding

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable
