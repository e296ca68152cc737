"""Caption tokenizers: open_clip's bundled CLIP BPE or any transformers tokenizer, padded to a fixed length."""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import torch

from tulip.models.config import TokenizerConfig

_PUNCTUATION = str.maketrans("", "", string.punctuation)


CLEAN_MODES = ("canonicalize", "lower", "whitespace", "none")


def clean_text(text: str, mode: str) -> str:
    """Normalise a caption with one of open_clip's cleaning modes.

    ``canonicalize`` lower-cases and strips punctuation (SigLIP), ``lower`` lower-cases, and both
    collapse whitespace like ``whitespace`` does; ``none`` keeps the text.
    """
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split())
    if mode == "lower":
        return " ".join(text.split()).lower()
    if mode == "whitespace":
        return " ".join(text.split())
    if mode == "none":
        return text
    raise ValueError(f"unknown text cleaning mode {mode!r}; use one of {CLEAN_MODES}")


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

    def save_pretrained(self, directory: str | Path) -> list[str]:
        """Write a transformers tokenizer's files into ``directory``; return their names (none for the BPE tokenizer)."""
        if self.cfg.type != "hf":
            return []
        return [Path(name).name for name in self._impl.save_pretrained(str(directory))]

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
