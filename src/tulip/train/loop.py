"""Pretraining loop: one process per device, started by torchrun (or directly for one process).

Each step hands the batch to ``tulip.train.task.TulipTask``, which embeds it, forms the named loss
terms and combines them with the configured weights in ``tulip.losses.objective``. One AdamW step
follows, and then the EMA teacher, if an enabled term reads one, moves towards the student. Rank 0 writes ``metrics.jsonl`` and
forwards every logged record to the callbacks (the command-line layer attaches MLflow there).
Checkpoints are resumed only when their training-config hash matches the current one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models.vision_transformer import Block as VisionBlock
from torch.nn.parallel import DistributedDataParallel

from tulip import distributed
from tulip.data.captions import RecaptionMixer
from tulip.data.crops import MultiCropTransform
from tulip.data.io import atomic_write_json, stable_hash
from tulip.data.loader import LoaderOptions, build_train_loader
from tulip.data.preflight import ShardCheckError, preflight
from tulip.data.shards import shard_paths
from tulip.data.stats import SkipCounter
from tulip.models import create_model, get_tokenizer
from tulip.models.text import ResidualAttentionBlock
from tulip.models.transforms import INTERPOLATION_MODES, image_transform
from tulip.train.accumulation import accumulate_gradients
from tulip.train import checkpoint as ckpt
from tulip.train.config import TrainConfig
from tulip.train.ema import teacher_momentum
from tulip.train.preemption import StopRequest, TrainingInterrupted
from tulip.train.schedule import learning_rate
from tulip.train.task import TulipTask
from tulip.train.throughput import count_step_flops, device_peak_flops, mfu

logger = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    samples_seen: int
    seconds: float
    resumed_from: int | None


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, embeddings of positions, and the logit scale and bias."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "positional_embedding" in name or "pos_embed" in name or name.startswith("logit_"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(device: torch.device, precision: str):
    # bf16 matmuls are hundreds of times slower than fp32 on CPUs without AVX512-BF16 or AMX,
    # so autocast is applied on CUDA only and CPU runs stay in fp32.
    enabled = precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class Trainer:
    """Owns the model, optimizer, loader and step counter of one training process."""

    def __init__(
        self,
        cfg: TrainConfig,
        manifest_path: str | Path,
        out_dir: str | Path,
        callbacks: list[MetricsCallback] | None = None,
        code_version: str = "",
    ):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.callbacks = callbacks or []
        # A checkpoint is resumed only by the run that wrote it: same config, same shards, same code.
        manifest_text = Path(manifest_path).read_text(encoding="utf-8")
        self.config_hash = stable_hash({"train": cfg.to_dict(), "manifest": manifest_text, "code": code_version})
        self.history: list[dict] = []
        self.info = distributed.init_distributed()
        if cfg.batch_size % self.info.world_size:
            raise ValueError(
                f"train.batch_size {cfg.batch_size} is not divisible by the {self.info.world_size} training processes"
            )
        self.local_batch = cfg.batch_size // self.info.world_size
        torch.manual_seed(cfg.seed + self.info.rank)

        self.model = create_model(
            cfg.model, pretrained=cfg.init_from, device=self.info.device, skip_keys=cfg.init_skip_keys
        )
        self.model.set_grad_checkpointing(cfg.grad_checkpointing)
        self.module = self.model
        self.tokenizer = get_tokenizer(self.module.cfg)
        # The task owns the model, heads and decoders; the EMA teacher stays outside DDP because it is not trained.
        self.task = TulipTask(self.module, cfg, pad_id=self.tokenizer.pad_id).to(self.info.device)
        self.train_module = self.task
        self.sharded = cfg.parallel == "fsdp" and self.info.world_size > 1
        if self.sharded and cfg.grad_accum_steps > 1:
            raise ValueError("train.grad_accum_steps above 1 needs train.parallel 'ddp': the cached-embedding "
                             "passes call the towers outside the sharded module's forward")
        if self.info.world_size > 1:
            # Every rank starts from rank 0's initial weights (the teacher is built from them below).
            distributed.broadcast_module(self.task)
        self.teacher = self.task.build_teacher()
        self.replicated_params: list[torch.nn.Parameter] = []  # kept whole under FSDP2; gradients reduced here
        if self.sharded:
            self.replicated_params = distributed.shard_module(self.task, (VisionBlock, ResidualAttentionBlock))
        elif self.info.world_size > 1:
            device_ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            self.train_module = DistributedDataParallel(self.task, device_ids=device_ids)
        # Fused AdamW takes plain tensors only; sharded parameters (DTensors) use the foreach form.
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.task, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
            fused=not self.sharded and self.info.device.type in ("cpu", "cuda"),
        )
        self.step = 0
        self.samples_seen = 0
        self.flops_per_step: int | None = None  # one process's FLOPs of one step, counted on the first step
        self.peak_flops = device_peak_flops(self.info.device, cfg.precision, cfg.peak_flops)
        self.resumed_from = self._maybe_resume()

        self.skips = SkipCounter("train-loader")
        train_transform = image_transform(self.module.cfg, train=True, crop_scale=cfg.crop_scale)
        self.loader = build_train_loader(
            shard_paths(manifest_path),
            self._usable_counts(manifest_path),
            train_transform,
            self.tokenizer,
            LoaderOptions(
                batch_size=self.local_batch,
                num_workers=cfg.workers,
                shuffle_buffer=cfg.shuffle_buffer,
                seed=cfg.seed,
                use_views=cfg.use_views,
                text_pairs=self.task.reads_text_pairs,
                resample=cfg.resample,
                samples_per_epoch=cfg.samples_per_epoch,
                rank=self.info.rank,
                world_size=self.info.world_size,
                timeout_s=cfg.loader_timeout_s,
            ),
            RecaptionMixer(seed=cfg.seed, **cfg.recaption),
            crop_transform=self._crop_transform(train_transform),
        )
        self.batches_per_epoch = self.loader.steps_per_epoch

    def _crop_transform(self, first_crop) -> MultiCropTransform | None:
        """Multi-crop views when the image-image term reads more than the one image-text crop."""
        crops = self.cfg.objective.crops
        if self.task.image_image_loss is None or (crops.global_crops == 1 and crops.local_crops == 0):
            return None
        model_cfg = self.module.cfg
        return MultiCropTransform(
            crops, first_crop, self.module.image_size, self.module.visual.patch_size,
            model_cfg.image_mean, model_cfg.image_std, INTERPOLATION_MODES[model_cfg.interpolation],
        )

    def _usable_counts(self, manifest_path: str | Path) -> list[int]:
        """Check the shard set on rank 0 and share its usable sample counts, or its error, with every rank."""
        outcome = None
        if self.info.is_primary:
            try:
                outcome = ("ok", preflight(manifest_path, self.cfg.preflight, self.cfg.bad_shards))
            except (ShardCheckError, FileNotFoundError) as error:
                outcome = ("error", str(error))
        outcome = distributed.broadcast_object(outcome)
        if outcome[0] == "error":
            raise ShardCheckError(outcome[1])
        return outcome[1]

    # ------------------------------------------------------------------ checkpoints
    def _maybe_resume(self) -> int | None:
        path = None
        if self.info.is_primary:
            latest = ckpt.latest_checkpoint(self.ckpt_dir)
            if latest is not None:
                state = ckpt.load_checkpoint(latest)
                if state.get("config_hash") == self.config_hash:
                    path = str(latest)
                else:
                    logger.warning(
                        "not resuming from %s: it was written with a different config, shard set or code version",
                        latest,
                    )
        path = distributed.broadcast_object(path)
        if path is None:
            return None
        state = ckpt.load_checkpoint(path)
        if self.sharded:
            task_state = {**{f"model.{k}": v for k, v in state["model"].items()}, **state.get("objective", {})}
            distributed.load_full_state_dicts(self.task, task_state, self.optimizer, state["optimizer"])
        else:
            self.module.load_state_dict(state["model"])
            self.task.load_objective_state_dict(state.get("objective", {}))
            self.optimizer.load_state_dict(state["optimizer"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.step = state["step"]
        self.samples_seen = state["samples_seen"]
        self.history = list(state.get("metrics_history", []))
        saved_world = state.get("world_size", 1)
        rng_states = state.get("rng_per_rank") or [state["rng"]]
        if saved_world == self.info.world_size and len(rng_states) == self.info.world_size:
            ckpt.set_rng_state(rng_states[self.info.rank])
        elif self.info.is_primary:
            logger.warning(
                "resuming a run of %d processes with %d: each process reads another share of the data and "
                "starts from fresh random states, so the run is no longer bitwise reproducible; the learning "
                "rate follows the %d samples seen (step %d of %d)",
                saved_world, self.info.world_size, self.samples_seen, self._schedule_step(), self.cfg.steps,
            )
        logger.info("resumed from %s at step %d", path, self.step)
        return self.step

    def _schedule_step(self) -> int:
        """Position in the learning-rate and momentum schedules, counted in samples seen over the global batch."""
        return self.samples_seen // self.cfg.batch_size

    def save_checkpoint(self) -> None:
        # Every rank's RNG states, so a resumed run of the same size continues each process's streams.
        rng_per_rank = distributed.all_gather_object(ckpt.rng_state())
        model_state, objective_state, optimizer_state = self._full_states()
        if self.info.is_primary:
            state = {
                "model": model_state,
                "model_config": self.module.cfg.to_dict(),
                "objective": objective_state,
                "teacher": self.teacher.state_dict() if self.teacher is not None else None,
                "optimizer": optimizer_state,
                "step": self.step,
                "samples_seen": self.samples_seen,
                "config_hash": self.config_hash,
                "train_config": self.cfg.to_dict(),
                "rng": rng_per_rank[0],
                "rng_per_rank": rng_per_rank,
                "world_size": self.info.world_size,
                "metrics_history": self.history,
            }
            ckpt.atomic_torch_save(state, self.ckpt_dir / ckpt.checkpoint_name(self.step))
            ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        distributed.barrier()

    def _full_states(self) -> tuple[dict, dict, dict]:
        """Whole (model, objective, optimizer) state dicts; under FSDP2 gathered to rank 0 (a collective)."""
        if not self.sharded:
            return self.module.state_dict(), self.task.objective_state_dict(), self.optimizer.state_dict()
        task_state, optimizer_state = distributed.full_state_dicts(self.task, self.optimizer)
        model_state = {k[len("model."):]: v for k, v in task_state.items() if k.startswith("model.")}
        objective_state = {k: v for k, v in task_state.items() if not k.startswith("model.")}
        return model_state, objective_state, optimizer_state

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        cfg, device = self.cfg, self.info.device
        schedule_step = self._schedule_step()
        lr = learning_rate(schedule_step, cfg.lr, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        if self.flops_per_step is None:
            out, self.flops_per_step = count_step_flops(lambda: self._forward_backward(batch))
        else:
            out = self._forward_backward(batch)
        max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), max_norm)
        self.optimizer.step()
        momentum = teacher_momentum(
            schedule_step, cfg.steps, cfg.objective.teacher.momentum, cfg.objective.teacher.final_momentum,
            cfg.objective.teacher.schedule,
        )
        self.task.update_teacher(self.teacher, momentum)
        self.step += 1
        self.samples_seen += cfg.batch_size
        values = {k: v.detach() for k, v in out.items()}
        if self.teacher is not None:
            values["teacher_momentum"] = torch.tensor(momentum)
        return {**values, "grad_norm": grad_norm, "lr": torch.tensor(lr)}

    def _forward_backward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Gradients of the weighted total on this process's batch; returns the loss terms and logged scalars."""
        if self.cfg.grad_accum_steps > 1:
            return accumulate_gradients(self.task, batch, self.teacher, self.cfg.grad_accum_steps,
                                        lambda: _autocast(self.info.device, self.cfg.precision))
        with _autocast(self.info.device, self.cfg.precision):
            out = self.train_module(batch, self.teacher)  # "loss" is the weighted total of the "*_loss" terms
        out["loss"].backward()
        distributed.all_reduce_gradients(self.replicated_params)
        return out

    # ------------------------------------------------------------------ loop
    def _log(self, values: dict[str, torch.Tensor], seconds: float, steps_timed: int) -> dict[str, float]:
        values = {k: distributed.full_tensor(v) for k, v in values.items()}
        record = {k: float(distributed.all_reduce_mean(v.float())) for k, v in values.items()}
        record["logit_scale"] = float(distributed.full_tensor(self.module.logit_scale.detach()).exp())
        record["logit_bias"] = float(distributed.full_tensor(self.module.logit_bias.detach()))
        record["samples_per_s"] = steps_timed * self.cfg.batch_size / max(seconds, 1e-9)
        record["samples_per_s_per_device"] = record["samples_per_s"] / self.info.world_size
        seconds_per_step = seconds / max(steps_timed, 1)
        record["step_seconds"] = seconds_per_step
        record["flops_per_step_per_device"] = float(self.flops_per_step or 0)
        record["mfu"] = mfu(self.flops_per_step or 0, seconds_per_step, self.peak_flops)
        record["samples_seen"] = float(self.samples_seen)
        # Each rank counts what its own loader skipped; the mean times the world size is the job's total.
        skipped = distributed.all_reduce_mean(torch.tensor(float(self.skips.total)))
        record["skipped_samples"] = float(skipped) * self.info.world_size
        self.history.append({"step": self.step, **record})
        if self.info.is_primary:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(self.history[-1]) + "\n")
            for callback in self.callbacks:
                callback(record, self.step)
        return record

    def fit(self) -> TrainResult:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.info.is_primary:
            # Rewrite the curve up to the resumed step, so it matches an uninterrupted run's.
            lines = "".join(json.dumps(record) + "\n" for record in self.history)
            (self.out_dir / "metrics.jsonl").write_text(lines, encoding="utf-8")
        start = time.monotonic()
        self.module.train()

        # The loader's stream depends only on (seed, epoch, rank, worker), so a resumed run passes
        # over the batches of its epoch that were already trained on and continues exactly.
        epoch, skip = divmod(self.step, self.batches_per_epoch)
        try:
            with StopRequest() as stop:
                self._train_epochs(epoch, skip, stop)
        finally:
            self.loader.close()
        self.save_checkpoint()
        result = TrainResult(
            steps=self.step,
            final_loss=self.history[-1]["loss"] if self.history else float("nan"),
            samples_seen=self.samples_seen,
            seconds=time.monotonic() - start,
            resumed_from=self.resumed_from,
        )
        return result

    def _train_epochs(self, epoch: int, skip: int, stop: StopRequest) -> None:
        cfg = self.cfg
        window_start, window_steps = time.monotonic(), 0
        while self.step < cfg.steps:
            self.loader.set_epoch(epoch, skip)
            epoch, skip = epoch + 1, 0
            for batch in self.loader:
                self.skips.merge(batch.pop("skipped", {}))
                values = self.train_step(batch)
                window_steps += 1
                if not math.isfinite(float(values["loss"])):
                    raise FloatingPointError(f"loss is {float(values['loss'])} at step {self.step}; stopping")
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    record = self._log(values, time.monotonic() - window_start, window_steps)
                    logger.info(
                        "step %d/%d loss %.4f lr %.2e %.1f samples/s MFU %.2g",
                        self.step, cfg.steps, record["loss"], record["lr"], record["samples_per_s"], record["mfu"],
                    )
                    window_start, window_steps = time.monotonic(), 0
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                if self.step >= cfg.steps:
                    break  # a signal now is left to the end of fit(), which writes the final checkpoint
                # Every rank stops at the same step when any of them got the signal.
                if distributed.any_rank(stop.requested):
                    if self.step % cfg.checkpoint_every != 0:  # else the checkpoint of this step is written
                        self.save_checkpoint()
                    raise TrainingInterrupted(stop.received.name if stop.received else "a signal on another rank",
                                              self.step)

    def export_weights(self, path: str | Path) -> None:
        """Write the final model weights with their model config (what evaluation loads)."""
        model_state, _, _ = self._full_states()
        if self.info.is_primary:
            state = {"model": model_state, "model_config": self.module.cfg.to_dict(), "step": self.step}
            ckpt.atomic_torch_save(state, path)
        distributed.barrier()


def run_training(
    cfg: TrainConfig,
    manifest_path: str | Path,
    out_dir: str | Path,
    weights_path: str | Path,
    callbacks: list[MetricsCallback] | None = None,
    code_version: str = "",
) -> TrainResult:
    """Train, write the final weights to ``weights_path`` and a ``summary.json`` beside the metrics."""
    trainer = Trainer(cfg, manifest_path, out_dir, callbacks, code_version)
    try:
        result = trainer.fit()
        trainer.export_weights(weights_path)
        if trainer.info.is_primary:
            atomic_write_json(
                Path(out_dir) / "summary.json",
                {**result.__dict__, "config_hash": trainer.config_hash, "world_size": trainer.info.world_size,
                 "skipped_samples": dict(trainer.skips.counts)},
            )
        return result
    finally:
        distributed.cleanup()
