"""Training configuration: the ``train`` section of the workflow config as typed objects.

``TrainConfig.objective`` contains every choice the TULIP paper leaves open (which image embedding
feeds the image-text term, the teacher's momentum schedule, crops, decoder sizes, the distributed
form of the sigmoid loss); each field's comment names its unit or allowed values.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from tulip.data.crops import MultiCropConfig
from tulip.losses.objective import LOSS_TERMS


@dataclass
class ContrastiveConfig:
    """Exchange and memory form of the sigmoid losses across processes."""

    exchange: str = "gather"  # "gather" (all-gather the columns) or "ring" (pass column blocks around the ranks)
    chunk_size: int | None = None  # None: dense logits; an integer: tiles of that side, memory O(chunk_size^2)


@dataclass
class ImageTextConfig:
    # "student": the student's first global crop feeds the image-text term, so the image tower learns
    # language alignment. "teacher": the EMA teacher's embedding does (the literal wording of the
    # TULIP paper), and the image tower then gets no image-text gradient.
    image_source: str = "student"
    generated_negatives: bool = True  # append GeCo negative images and captions as hard negatives


@dataclass
class HeadConfig:
    """Projection head and sigmoid (t, b) of the image-image or text-text term."""

    dim: int | None = None  # head output size; None keeps the model's embed_dim
    hidden_dim: int | None = None  # None: one linear layer; an integer: Linear-GELU-Linear
    init_logit_scale: float = math.log(10.0)  # log temperature, SigLIP's log 10
    init_logit_bias: float = -10.0  # SigLIP's -10
    generated_views: bool = True  # use GeCo's generated positive and negative views


@dataclass
class TextTextConfig(HeadConfig):
    """Head of the text-text term, and which texts count as a caption's positives."""

    # Also pair each caption with the sample's other caption (its recaption, or the original when
    # the recaption was drawn), a positive that needs no generated views. Off gives TULIP's Eq. 4
    # (arXiv 2503.15485), which names only paraphrases.
    recaption_positives: bool = False


@dataclass
class TeacherConfig:
    """EMA teacher of the image tower and image-image head: teacher = m * teacher + (1 - m) * student."""

    momentum: float = 0.996  # m at the first step
    final_momentum: float = 1.0  # m at the last step
    schedule: str = "cosine"  # "cosine" from momentum to final_momentum, or "constant" at momentum


@dataclass
class ImageReconstructionConfig:
    mask_ratio: float = 0.75  # share of patches removed before the masked encoder pass
    visible_tokens: bool = True  # the decoder also reads the visible patches (MAE); False: embedding only
    width: int = 256  # decoder width; a multiple of 4 (2-D sine-cosine positions)
    depth: int = 2
    heads: int = 8
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = True  # standardise each target patch by its own mean and variance


@dataclass
class TextReconstructionConfig:
    condition: str = "text"  # decode the caption from its "text" embedding or from the "image" embedding
    width: int | None = None  # T5 d_model; None: the text tower's token-embedding width
    layers: int = 2
    heads: int = 4
    ff_dim: int = 1024
    prefix_tokens: int = 1  # decoder tokens the embedding is mapped to
    dropout: float = 0.0
    max_captions: int | None = None  # captions reconstructed per process and step; None: all
    # Share the text tower's token embedding as the decoder's input and output embedding (width
    # must then equal the tower's); False gives the decoder its own.
    share_token_embedding: bool = True


@dataclass
class ObjectiveConfig:
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    image_text: ImageTextConfig = field(default_factory=ImageTextConfig)
    image_image: HeadConfig = field(default_factory=HeadConfig)
    text_text: TextTextConfig = field(default_factory=TextTextConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    image_reconstruction: ImageReconstructionConfig = field(default_factory=ImageReconstructionConfig)
    text_reconstruction: TextReconstructionConfig = field(default_factory=TextReconstructionConfig)

    def validate(self) -> None:
        """Raise ValueError naming the key of any value outside its allowed set."""
        choices = {
            "contrastive.exchange": (self.contrastive.exchange, ("gather", "ring")),
            "image_text.image_source": (self.image_text.image_source, ("student", "teacher")),
            "teacher.schedule": (self.teacher.schedule, ("cosine", "constant")),
            "text_reconstruction.condition": (self.text_reconstruction.condition, ("text", "image")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"train.objective.{key} is {value!r}; use one of {allowed}")
        if not 0.0 <= self.image_reconstruction.mask_ratio < 1.0:
            raise ValueError(f"train.objective.image_reconstruction.mask_ratio must be in [0, 1), "
                             f"got {self.image_reconstruction.mask_ratio}")
        if self.image_reconstruction.width % 4:
            raise ValueError(f"train.objective.image_reconstruction.width must be a multiple of 4, "
                             f"got {self.image_reconstruction.width}")
        for key, value in (("momentum", self.teacher.momentum), ("final_momentum", self.teacher.final_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"train.objective.teacher.{key} must be in [0, 1], got {value}")


@dataclass
class TrainConfig:
    model: str = "tulip-tiny"  # preset name or path to a preset JSON file
    # Weights to start from: a tulip checkpoint, an open_clip or timm state dict (for example a
    # SigLIP checkpoint), or a hub id "hf-hub:<org>/<repo>".
    init_from: str | None = None
    init_skip_keys: list[str] = field(default_factory=list)  # fnmatch patterns of parameters not taken from init_from
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
    # Micro-batches per optimizer step on each process. Above 1, the contrastive terms still see
    # the whole batch: embeddings are cached, the loss is formed once, and each micro-batch is
    # recomputed with the cached embedding gradients.
    grad_accum_steps: int = 1
    parallel: str = "ddp"  # "ddp" (replicated weights) or "fsdp" (FSDP2 fully_shard: sharded weights and optimizer)
    peak_flops: float | None = None  # peak FLOP/s of one device for MFU; None: known GPU table, or measured on CPU
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
    # Weight of each term in the total; a term with weight 0 (or no entry) is not computed.
    loss_weights: dict[str, float] = field(default_factory=lambda: {"image_text_loss": 1.0})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if isinstance(data, dict) and data.get("preflight") is False:
            data = {**data, "preflight": "off"}  # YAML 1.1 reads a bare `off` as false
        cfg = _build(cls, data, "train")
        unknown = sorted(set(cfg.loss_weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown} in train.loss_weights; valid terms are {list(LOSS_TERMS)}")
        cfg.objective.validate()
        if cfg.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"train.parallel is {cfg.parallel!r}; use 'ddp' or 'fsdp'")
        if cfg.grad_accum_steps < 1:
            raise ValueError(f"train.grad_accum_steps must be at least 1, got {cfg.grad_accum_steps}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def enabled_terms(self) -> dict[str, float]:
        """Return the loss terms with a positive weight and their weights, in the canonical order."""
        return {name: self.loss_weights[name] for name in LOSS_TERMS if self.loss_weights.get(name, 0.0) > 0.0}


def _build(cls, data: dict[str, Any], where: str):
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses and rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys are {sorted(known)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{name}")
        elif _is_tuple(hint) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _is_tuple(hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_tuple(arg) for arg in typing.get_args(hint))
    return typing.get_origin(hint) is tuple
