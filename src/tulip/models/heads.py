"""Projection heads for the image-image and text-text terms, each with its own temperature and bias.

TULIP trains new projection layers for the image-image and text-text contrastive terms on top of
the shared towers (Tang et al., arXiv 2503.15485, section 4.1), so those terms shape their own
embedding spaces instead of pulling the image-text space around. Each head also owns the
learnable (t, b) of its sigmoid loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ContrastiveHead(nn.Module):
    """Linear (or two-layer MLP) projection of tower embeddings, L2-normalised, plus its logit scale and bias.

    Args:
        in_dim: size of the tower embedding.
        out_dim: size of the head's space; None keeps ``in_dim``.
        hidden_dim: None for a linear head; an integer for Linear-GELU-Linear with that hidden size.
        init_logit_scale: initial log temperature (SigLIP: log 10).
        init_logit_bias: initial bias (SigLIP: -10).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        hidden_dim: int | None = None,
        init_logit_scale: float = math.log(10.0),
        init_logit_bias: float = -10.0,
    ):
        super().__init__()
        out_dim = out_dim or in_dim
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            self.proj = nn.Sequential(nn.Linear(in_dim, out_dim))
        for layer in self.proj:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map tower embeddings [B, in_dim] to normalised head embeddings [B, out_dim]."""
        return F.normalize(self.proj(features), dim=-1)
