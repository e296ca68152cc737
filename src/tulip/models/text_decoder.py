"""Causal T5 decoder that reconstructs a caption from an embedding.

TULIP reconstructs the caption with a causal decoder "based on T5", with the embedding as the
first token (Tang et al., arXiv 2503.15485, section 3.3 and Figure 3). Here the embedding is
mapped linearly to ``prefix_tokens`` decoder-width tokens that precede the caption in the causal
stream. The T5 decoder blocks also cross-attend to that prefix, the only encoder state there is. Weights start random (the paper does not say whether T5 was pretrained). The
output projection is tied to the decoder's token embedding, scaled by width^-1/2 as in T5. That
embedding can be the text tower's own (``token_embedding``), as CoCa shares it between its text
encoder and decoder: with a 49k-entry vocabulary it is most of a small decoder's parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class TextDecoder(nn.Module):
    """Teacher-forced next-token logits for a caption, conditioned on one embedding per caption.

    Args:
        embed_dim: size of the conditioning embedding.
        vocab_size: size of the caption tokenizer's vocabulary.
        pad_id: padding id of that tokenizer; padding positions are not predicted.
        width, layers, heads, ff_dim: T5 decoder sizes (``d_model``, ``num_layers``, ``num_heads``, ``d_ff``).
        prefix_tokens: number of tokens the embedding is mapped to.
        dropout: T5 dropout rate.
        token_embedding: an embedding [vocab_size, width] to share (the text tower's); None creates one.
    """

    def __init__(
        self,
        embed_dim: int,
        vocab_size: int,
        pad_id: int = 0,
        width: int = 256,
        layers: int = 2,
        heads: int = 4,
        ff_dim: int = 1024,
        prefix_tokens: int = 1,
        dropout: float = 0.0,
        token_embedding: nn.Embedding | None = None,
    ):
        super().__init__()
        from transformers import T5Config
        from transformers.models.t5.modeling_t5 import T5Stack

        if width % heads:
            raise ValueError(f"text decoder width {width} is not divisible by {heads} heads")
        if prefix_tokens < 1:
            raise ValueError(f"prefix_tokens must be at least 1, got {prefix_tokens}")
        config = T5Config(
            vocab_size=vocab_size,
            d_model=width,
            d_kv=width // heads,
            d_ff=ff_dim,
            num_layers=layers,
            num_heads=heads,
            dropout_rate=dropout,
            feed_forward_proj="gated-gelu",
            is_decoder=True,
            is_encoder_decoder=False,
            use_cache=False,
            pad_token_id=pad_id,
            decoder_start_token_id=pad_id,
        )
        self.width = width
        self.pad_id = pad_id
        self.prefix_tokens = prefix_tokens
        self.prefix = nn.Linear(embed_dim, prefix_tokens * width)
        self.stack = T5Stack(config)
        if token_embedding is not None:
            if tuple(token_embedding.weight.shape) != (vocab_size, width):
                raise ValueError(
                    f"a shared token embedding must be [vocab_size, width] = [{vocab_size}, {width}], got "
                    f"{list(token_embedding.weight.shape)}; set the decoder width to the text tower's width"
                )
            self.stack.set_input_embeddings(token_embedding)

    def forward(self, embedding: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits [T, vocab], targets [T]) for the T non-padding tokens of ``tokens``.

        Args:
            embedding: conditioning embeddings [B, embed_dim].
            tokens: caption ids [B, L]; position i is predicted from the prefix and positions < i.
        """
        batch = tokens.shape[0]
        prefix = self.prefix(embedding).view(batch, self.prefix_tokens, self.width)  # [B, P, width]
        inputs = torch.cat([prefix, self.stack.embed_tokens(tokens[:, :-1])], dim=1)  # [B, P + L - 1, width]
        hidden = self.stack(inputs_embeds=inputs, encoder_hidden_states=prefix).last_hidden_state
        hidden = hidden[:, self.prefix_tokens - 1 :]  # [B, L, width]: the state that predicts token i
        keep = tokens != self.pad_id  # [B, L]
        # Only predicted positions meet the vocabulary matrix, the costly part for large vocabularies.
        selected = hidden[keep] * self.width**-0.5  # [T, width]
        return selected @ self.stack.embed_tokens.weight.T, tokens[keep]
