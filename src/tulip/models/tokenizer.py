"""Caption tokenizers: open_clip's bundled CLIP BPE or any transformers tokenizer, padded to a fixed length."""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch

from tulip.models.config import TokenizerConfig

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str) -> str:
    """Normalise a caption: ``canonicalize`` lower-cases and strips punctuation (SigLIP), ``whitespace`` collapses spaces."""
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split())
    if mode == "whitespace":
        return " ".join(text.split())
    if mode == "none":
        return text
    raise ValueError(f"unknown text cleaning mode {mode!r}; use 'canonicalize', 'whitespace' or 'none'")


class Tokenizer:
    """Callable that maps captions to token ids [B, context_length], right-padded and truncated."""

    def __init__(self, cfg: TokenizerConfig, context_length: int):
        self.cfg = cfg
        self.context_length = context_length
        if cfg.type == "openclip":
            from open_clip.tokenizer import SimpleTokenizer

            # Cleaning is done here, so the BPE tokenizer only collapses whitespace.
            self._impl = SimpleTokenizer(context_length=context_length, clean="whitespace")
            self.vocab_size = len(self._impl.encoder)
            self.pad_id = 0
        elif cfg.type == "hf":
            if not cfg.name:
                raise ValueError("tokenizer type 'hf' needs 'name': a hub id or a local tokenizer directory")
            from transformers import AutoTokenizer

            self._impl = AutoTokenizer.from_pretrained(cfg.name)
            self.vocab_size = len(self._impl)
            self.pad_id = self._impl.pad_token_id if self._impl.pad_token_id is not None else 0
        else:
            raise ValueError(f"unknown tokenizer type {cfg.type!r}; use 'openclip' or 'hf'")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        cleaned = [clean_text(t, self.cfg.clean) for t in texts]
        if self.cfg.type == "openclip":
            return self._impl(cleaned, context_length=length)
        encoded = self._impl(
            cleaned,
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        return encoded["input_ids"]
