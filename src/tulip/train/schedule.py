"""Learning-rate schedules counted in optimizer steps."""

from __future__ import annotations

import math


def learning_rate(step: int, base_lr: float, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Return the learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        floor = base_lr * min_lr_ratio
        return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use 'cosine' or 'constant'")
