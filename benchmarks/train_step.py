"""Train-step throughput: tulip against open_clip 3.3 on one SigLIP model, and the full TULIP step's cost.

Four steps are timed side by side in one process, in interleaved rounds, so that load from other
processes slows them alike:

- ``siglip_tulip``: tulip's image-text step as ``tulip.train.loop.Trainer`` runs it (``TulipTask``
  with the image-text term only, AdamW with fused updates, gradient clipping at norm 2);
- ``siglip_open_clip``: the same initial weights in open_clip's ``CustomTextCLIP``, loaded from
  tulip's open_clip export, with open_clip's ``SigLipLoss``. AdamW is built as ``open_clip_train``
  builds it (no weight decay for gains and biases, PyTorch's default implementation), with
  clipping at norm 2 and ``open_clip_train``'s logit-scale clamp;
- ``siglip_open_clip_fused``: the open_clip step with fused AdamW, which separates the towers' speed
  from the optimizer's;
- ``tulip_full``: every TULIP term, with the objective section of ``--config`` and a share of
  samples carrying generated views.

Batch, image size, captions and hyperparameters are identical for all steps. Run from the
repository root: ``python benchmarks/train_step.py``. Figures are printed last, one
``name: value`` per line; samples/s count the batch's samples, not its crops or views.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch
import yaml

import tulip
from tulip.losses import LOSS_TERMS
from tulip.models.open_clip_format import export_open_clip
from tulip.train.config import TrainConfig
from tulip.train.ema import teacher_momentum
from tulip.train.loop import _param_groups
from tulip.train.task import TulipTask

CAPTIONS = [
    "a photo of a sneaker", "a catalogue picture of a black handbag", "an ankle boot on white",
    "a product shot of a pullover", "a grey coat", "a pair of trousers", "a summer dress with straps",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tulip-tiny", help="tulip preset (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per step (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default: %(default)s)")
    parser.add_argument("--steps-per-round", type=int, default=2, help="timed steps per round and variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--config", default="config/config.yaml", help="workflow config whose train.objective is used")
    parser.add_argument("--view-fraction", type=float, default=0.1,
                        help="share of samples with generated image and caption views (default: %(default)s)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time a step with each TULIP term alone, to show where the full step's time goes")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_batch(cfg: TrainConfig, model, batch_size: int, view_fraction: float, generator) -> dict:
    """Build a synthetic batch with every field the full objective reads; image content does not change cost."""
    size = model.image_size
    crops = cfg.objective.crops
    local_size = crops.validate(size, model.visual.patch_size)
    tokenizer = tulip.get_tokenizer(model.cfg)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch_size)]
    num_views = max(1, int(round(batch_size * view_fraction)))
    owners = torch.randperm(batch_size, generator=generator)[:num_views].sort().values
    global_crops = torch.randn(batch_size, crops.global_crops, 3, size, size, generator=generator)
    batch = {
        "global_crops": global_crops,
        "image": global_crops[:, 0],
        "text": tokenizer(captions),
        "text_views": tokenizer([c for i in owners.tolist() for c in ("a picture of " + captions[i], "no " + captions[i])])
        .view(num_views, 2, -1),
        "text_views_index": owners,
        "image_views": torch.randn(num_views, 2, 3, size, size, generator=generator),
        "image_views_index": owners,
    }
    if crops.local_crops:
        batch["local_crops"] = torch.randn(batch_size, crops.local_crops, 3, local_size, local_size,
                                           generator=generator)
    return batch


class TulipStep:
    """One optimizer step of ``TulipTask``, as ``Trainer.train_step`` takes it (fixed learning rate)."""

    def __init__(self, model, cfg: TrainConfig, batch: dict):
        self.cfg = cfg
        self.task = TulipTask(model, cfg, pad_id=0)
        self.teacher = self.task.build_teacher()
        self.optimizer = torch.optim.AdamW(_param_groups(self.task, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                                           eps=cfg.eps, fused=True)
        self.batch = batch
        self.step = 0

    def __call__(self) -> float:
        out = self.task(self.batch, self.teacher)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.cfg.grad_clip_norm)
        self.optimizer.step()
        momentum = teacher_momentum(self.step, self.cfg.steps, 0.996, 1.0, "cosine")
        self.task.update_teacher(self.teacher, momentum)
        self.step += 1
        return out["loss"].item()


class OpenClipStep:
    """One optimizer step of open_clip's SigLIP training (``open_clip_train.train.train_one_epoch``)."""

    def __init__(self, folder: str, cfg: TrainConfig, batch: dict, fused: bool):
        import open_clip
        from open_clip.loss import SigLipLoss

        self.model = open_clip.create_model(f"local-dir:{folder}", output_dict=True)
        self.model.train()
        self.loss = SigLipLoss()
        # open_clip_train/main.py: no weight decay for gains, biases and the logit scale.
        exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
        named = list(self.model.named_parameters())
        groups = [
            {"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": cfg.weight_decay},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
        self.cfg = cfg
        self.images, self.texts = batch["image"], batch["text"]

    def __call__(self) -> float:
        out = self.model(self.images, self.texts)
        loss = self.loss(out["image_features"], out["text_features"], out["logit_scale"], out["logit_bias"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip_norm)
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return loss.item()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train_section = yaml.safe_load(open(args.config, encoding="utf-8"))["train"]
    siglip_cfg = TrainConfig.from_dict({**train_section, "loss_weights": {"image_text_loss": 1.0}})
    full_cfg = TrainConfig.from_dict({**train_section, "loss_weights": {name: 1.0 for name in LOSS_TERMS}})

    base = tulip.create_model(args.model)
    initial = {k: v.clone() for k, v in base.state_dict().items()}
    batch = make_batch(full_cfg, base, args.batch_size, args.view_fraction, generator)
    plain_batch = {"image": batch["image"].contiguous(), "text": batch["text"]}

    with tempfile.TemporaryDirectory() as folder:
        export_open_clip(base, folder)
        steps = {
            "siglip_tulip": TulipStep(base, siglip_cfg, plain_batch),
            "siglip_open_clip": OpenClipStep(folder, siglip_cfg, plain_batch, fused=False),
            "siglip_open_clip_fused": OpenClipStep(folder, siglip_cfg, plain_batch, fused=True),
        }
    variants = {"tulip_full": full_cfg}
    if args.breakdown:
        for name in LOSS_TERMS:
            variants[f"only_{name}"] = TrainConfig.from_dict({**train_section, "loss_weights": {name: 1.0}})
    for name, cfg in variants.items():
        model = tulip.create_model(args.model)
        model.load_state_dict(initial)
        steps[name] = TulipStep(model, cfg, batch)

    first_losses = {name: step() for name, step in steps.items()}
    for _ in range(args.warmup - 1):
        for step in steps.values():
            step()
    seconds = {name: [] for name in steps}
    for round_index in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                step()
            seconds[name].append((time.perf_counter() - start) / args.steps_per_round)
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.3f} s" for n, s in seconds.items()),
              flush=True)

    # The fastest round is the least disturbed by other processes; the median shows the spread.
    best = {name: min(values) for name, values in seconds.items()}
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"model: {args.model}, batch {args.batch_size}, {args.threads} threads, "
          f"{args.rounds} rounds of {args.steps_per_round} steps; figures from the fastest round")
    print(f"first_step_loss_tulip: {first_losses['siglip_tulip']:.6f}")
    print(f"first_step_loss_open_clip: {first_losses['siglip_open_clip']:.6f}")
    for name in steps:
        print(f"{name}_step_s: {best[name]:.4f}")
        print(f"{name}_step_s_median: {median[name]:.4f}")
    for name in ("siglip_tulip", "siglip_open_clip", "siglip_open_clip_fused", "tulip_full"):
        print(f"{name}_samples_per_s: {args.batch_size / best[name]:.1f}")
    print(f"speedup_tulip_over_open_clip: {best['siglip_open_clip'] / best['siglip_tulip']:.3f}")
    print(f"speedup_tulip_over_open_clip_fused: {best['siglip_open_clip_fused'] / best['siglip_tulip']:.3f}")
    print(f"full_step_time_over_siglip_step_time: {best['tulip_full'] / best['siglip_tulip']:.3f}")


if __name__ == "__main__":
    main()
