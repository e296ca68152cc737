"""Training configuration: the ``train`` section of the workflow config as a typed object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    model: str = "tulip-tiny"  # preset name or path to a preset JSON file
    init_from: str | None = None  # local weights to start from (a tulip checkpoint or state dict)
    steps: int = 1000  # optimizer steps in the whole run
    batch_size: int = 256  # global batch: summed over every process
    lr: float = 1e-3
    min_lr_ratio: float = 0.0  # final learning rate of the cosine schedule, as a fraction of lr
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 50
    schedule: str = "cosine"  # "cosine" or "constant" after warm-up
    grad_clip_norm: float | None = 2.0
    precision: str = "fp32"  # "fp32", or "bf16" for autocast on CUDA (CPU always runs fp32)
    grad_checkpointing: bool = False
    seed: int = 0
    workers: int = 1  # data-loader processes per training process
    shuffle_buffer: int = 2000
    resample: bool = False  # draw shards with replacement; False reads every sample once per epoch
    samples_per_epoch: int | None = None  # resampled epoch length over all processes; None: the shard set's size
    preflight: str = "full"  # shard-set check before training: "full", "quick" or "off"
    bad_shards: str = "raise"  # when the check finds problems: "raise", or "skip" to train on the usable samples
    loader_timeout_s: float = 600.0  # seconds to wait for a loader worker's batch before failing
    # Chance that a sample's recaption replaces its caption, per use; 20 % and 50 % as in TULIP.
    recaption: dict[str, float] = field(default_factory=lambda: {"contrastive": 0.2, "reconstruction": 0.5})
    crop_scale: tuple[float, float] = (0.8, 1.0)
    use_views: bool = True  # read GeCo views from the shards when present
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    loss_weights: dict[str, float] = field(default_factory=lambda: {"image_text_loss": 1.0})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training key(s) {unknown}; valid keys are {sorted(known)}")
        values = dict(data)
        for key in ("betas", "crop_scale"):
            if key in values:
                values[key] = tuple(values[key])
        if values.get("preflight") is False:
            values["preflight"] = "off"  # YAML 1.1 reads a bare `off` as false
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
