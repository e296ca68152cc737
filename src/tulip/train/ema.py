"""EMA teacher for the image-image term: a frozen copy of the image tower and its head, updated by momentum.

As in DINO and DINOv2 (Caron et al., arXiv 2104.14294; Oquab et al., arXiv 2304.07193), the
teacher's weights follow the student's: teacher = m * teacher + (1 - m) * student after every
optimizer step, with m rising from ``momentum`` to ``final_momentum`` on a cosine schedule.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from tulip import distributed


def teacher_momentum(step: int, total_steps: int, start: float, end: float, schedule: str) -> float:
    """Return the momentum m for optimizer step ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant":
        return start
    if schedule != "cosine":
        raise ValueError(f"unknown teacher momentum schedule {schedule!r}; use 'cosine' or 'constant'")
    progress = min(step / max(total_steps - 1, 1), 1.0)
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EmaTeacher(nn.Module):
    """Frozen copies of the student's image tower (``visual``) and image-image head (``head``)."""

    def __init__(self, visual: nn.Module, head: nn.Module | None):
        super().__init__()
        self.visual = copy.deepcopy(visual)
        self.head = copy.deepcopy(head) if head is not None else None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "EmaTeacher":
        # The teacher never trains, so it stays in eval mode (no drop-path or dropout) whatever its owner does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (normalised tower embeddings [B, D], normalised head embeddings [B, D_head] or None)."""
        features = self.visual(images)
        head = self.head(features) if self.head is not None else None
        return F.normalize(features, dim=-1), head

    @torch.no_grad()
    def update(self, visual: nn.Module, head: nn.Module | None, momentum: float) -> None:
        """Move every teacher parameter and floating buffer towards the student's: t <- m * t + (1 - m) * s."""
        pairs = [(self.visual, visual)] + ([(self.head, head)] if self.head is not None else [])
        teacher_tensors, student_tensors = [], []
        for teacher_module, student_module in pairs:
            student_state = student_module.state_dict()
            for name, tensor in teacher_module.state_dict().items():
                if tensor.is_floating_point():
                    teacher_tensors.append(tensor)
                    # Under FSDP2 the student's tensors are shards; the teacher keeps whole copies.
                    student_tensors.append(distributed.full_tensor(student_state[name].detach()))
        torch._foreach_lerp_(teacher_tensors, student_tensors, 1.0 - momentum)
