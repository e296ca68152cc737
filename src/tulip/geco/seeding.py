"""Per-sample seeds derived from (global seed, sample key, purpose), independent of batching and sharding."""

from __future__ import annotations

import hashlib

import torch


def sample_seed(global_seed: int, key: str, *purpose: object) -> int:
    """Return a 63-bit seed that depends only on the global seed, the sample key and the purpose labels."""
    text = "|".join([str(global_seed), key, *map(str, purpose)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def sample_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def is_selected(global_seed: int, key: str, fraction: float) -> bool:
    """Decide whether a sample receives generated views, stably across reruns and shard layouts."""
    if fraction >= 1.0:
        return True
    return sample_seed(global_seed, key, "select") / float(1 << 63) < fraction
