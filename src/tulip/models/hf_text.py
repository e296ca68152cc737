"""Text tower on a transformers encoder, for starting the text side from a pretrained language model.

The encoder (``AutoModel``) comes from a hub id or a local directory, with its pretrained weights
or, when the weights will come from a tulip checkpoint, from its config alone. Its output is
pooled (mean over non-padding tokens, first token, or last token) and projected linearly to the
shared embedding size. The encoder's own pooler, which the tower never reads, is removed so that
every parameter receives a gradient.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from tulip.models.config import TextConfig

logger = logging.getLogger(__name__)

HF_POOLS = ("mean", "cls", "last")


def _load_encoder(name: str, pretrained: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    if not pretrained:
        return AutoModel.from_config(AutoConfig.from_pretrained(name))
    encoder, info = AutoModel.from_pretrained(name, output_loading_info=True)
    mismatched = sorted(info.get("mismatched_keys", []))
    missing = sorted(info.get("missing_keys", []))
    if missing or mismatched:
        raise RuntimeError(
            f"pretrained text encoder {name!r} does not match its own config: {len(missing)} missing key(s) "
            f"{missing[:8]}, {len(mismatched)} key(s) of another shape {mismatched[:8]}; these would stay "
            "randomly initialised"
        )
    unexpected = sorted(info.get("unexpected_keys", []))
    if unexpected:
        logger.info("text encoder %s: %d checkpoint key(s) without a parameter: %s", name, len(unexpected), unexpected[:8])
    return encoder


class HFTextTower(nn.Module):
    """Token ids [B, L] -> pooled, projected text embeddings [B, embed_dim] from a transformers encoder."""

    def __init__(self, cfg: TextConfig, embed_dim: int, pretrained: bool | None = None):
        super().__init__()
        if cfg.pool not in HF_POOLS:
            raise ValueError(f"text pool {cfg.pool!r} is not available for a transformers encoder; use one of {HF_POOLS}")
        self.cfg = cfg
        self.context_length = cfg.context_length
        self.encoder = _load_encoder(cfg.hf_model_name, cfg.hf_pretrained if pretrained is None else pretrained)
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        hidden = self.encoder.config.hidden_size
        self.vocab_size = self.encoder.config.vocab_size
        if cfg.vocab_size != self.vocab_size:
            raise ValueError(
                f"text.vocab_size is {cfg.vocab_size} but encoder {cfg.hf_model_name!r} has {self.vocab_size} "
                "token embeddings; set text.vocab_size to match"
            )
        self.text_projection = nn.Linear(hidden, embed_dim, bias=cfg.proj_bias)
        nn.init.normal_(self.text_projection.weight, std=hidden**-0.5)
        if self.text_projection.bias is not None:
            nn.init.zeros_(self.text_projection.bias)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """Embed ids [B, L] into [B, embed_dim]; positions holding ``pad_id`` are masked out."""
        mask = (text != self.cfg.pad_id).long()  # [B, L]
        states = self.encoder(input_ids=text, attention_mask=mask).last_hidden_state  # [B, L, hidden]
        if self.cfg.pool == "mean":
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        elif self.cfg.pool == "cls":
            pooled = states[:, 0]
        else:
            last = mask.sum(1).clamp(min=1) - 1  # last non-padding position of each row
            pooled = states[torch.arange(states.shape[0], device=states.device), last]
        return self.text_projection(pooled)

    def get_token_embedding(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.encoder.gradient_checkpointing_enable()
        else:
            self.encoder.gradient_checkpointing_disable()
