"""Captions: cleaning when a table row is downloaded, and recaption mixing when a sample is loaded.

TULIP trains on DataComp captions of which a fixed share is replaced by the longer Recap-DataComp
captions: 20 % for the contrastive terms and 50 % for text reconstruction (arXiv 2503.15485,
section 4.1). Shards store the original caption as ``txt`` and the recaption, when the table has
one, as ``recap.txt``. :class:`RecaptionMixer` picks per sample which of the two each term reads.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass

from tulip.data.stats import SkipSample

# Control characters and lone surrogates. Format characters (Cf) stay: zero-width joiners are part
# of Persian, Indic and emoji text.
_DROPPED_CATEGORIES = {"Cc", "Cs"}


def clean_caption(caption: object, max_chars: int) -> tuple[str, bool]:
    """Return the caption with control characters removed and whitespace collapsed, and whether it was cut.

    Raises:
        SkipSample: ``missing_caption`` for None or NaN, ``empty_caption`` when nothing is left.
    """
    if caption is None or (isinstance(caption, float) and math.isnan(caption)):
        raise SkipSample("missing_caption")
    kept = []
    for ch in str(caption):
        if ch.isspace():
            kept.append(" ")  # tabs and line breaks still separate words
        elif unicodedata.category(ch) not in _DROPPED_CATEGORIES:
            kept.append(ch)
    text = " ".join("".join(kept).split())
    if not text:
        raise SkipSample("empty_caption")
    if len(text) > max_chars:
        return text[:max_chars].rstrip(), True
    return text, False


def _unit_draw(seed: int, key: str, purpose: str) -> float:
    """Return a number in [0, 1) that depends only on (seed, key, purpose)."""
    digest = hashlib.sha256(f"{seed}|{key}|recaption|{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


@dataclass(frozen=True)
class RecaptionMixer:
    """Choose, per sample, the caption of the contrastive terms and the caption of text reconstruction.

    Each choice takes the recaption with its own probability, drawn independently and
    deterministically from (seed, sample key). A sample keeps the same choices in every epoch and
    on every rank. Samples without a recaption always use their caption.
    """

    contrastive: float = 0.2
    reconstruction: float = 0.5
    seed: int = 0

    def __post_init__(self):
        for name in ("contrastive", "reconstruction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"recaption.{name} must be a probability in [0, 1], got {value}")

    def __call__(self, key: str, caption: str, recaption: str | None) -> tuple[str, str]:
        """Return (contrastive caption, reconstruction caption) for the sample ``key``."""
        if not recaption:
            return caption, caption
        text = recaption if _unit_draw(self.seed, key, "contrastive") < self.contrastive else caption
        recon_text = recaption if _unit_draw(self.seed, key, "reconstruction") < self.reconstruction else caption
        return text, recon_text
