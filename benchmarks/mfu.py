"""Model FLOPs utilisation of one training step, as the trainer logs it, beside an analytic FLOP count.

The trainer counts a step's FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` and divides by
the device peak (``tulip.train.throughput``). This script times the image-text step of a preset
(``TulipTask`` forward and backward, gradient clipping at norm 2, fused AdamW) on a synthetic batch
and prints:

- ``flops_counted``: the FLOP counter's figure for one step;
- ``flops_analytic``: the reference, 6 x matmul weights x tokens of each tower (2 for the forward
  pass, 4 for the backward), ignoring attention's sequence-squared term and the loss;
- ``mfu``: counted FLOPs per second over ``peak_flops`` (the datasheet table on GPUs, measured on
  CPUs, or ``--peak-flops``).

CPU (default, about a minute):   python benchmarks/mfu.py
GPU, the B/16 preset in bf16:    python benchmarks/mfu.py --model TULIP-B-16-224 --batch-size 256 \
                                     --precision bf16 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import tulip
from tulip.train.config import TrainConfig
from tulip.train.loop import _autocast, _param_groups
from tulip.train.task import TulipTask
from tulip.train.throughput import count_step_flops, device_peak_flops, mfu


def _batch(model, batch_size: int, device: torch.device) -> dict:
    tokenizer = tulip.get_tokenizer(model.cfg)
    size = model.image_size
    captions = [f"a photo of item {i}" for i in range(batch_size)]
    return {"image": torch.randn(batch_size, 3, size, size, device=device), "text": tokenizer(captions).to(device)}


def _tower_tokens(model, batch: dict) -> tuple[int, int]:
    patches = (model.image_size // model.visual.patch_size) ** 2
    return batch["image"].shape[0] * patches, batch["text"].numel()


def _matmul_params(module: torch.nn.Module) -> int:
    """Count the matrix weights (linear, convolution, attention projections): 2 FLOPs per token each, forward.

    Embedding tables and position embeddings are looked up, not multiplied, so they are left out.
    """
    looked_up = {id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(
        p.numel() for name, p in module.named_parameters()
        if p.dim() >= 2 and id(p) not in looked_up and not any(k in name for k in ("pos", "embedding", "token"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tulip-tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after two warm-up steps")
    parser.add_argument("--peak-flops", type=float, default=None)
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = TrainConfig(model=args.model, precision=args.precision)
    model = tulip.create_model(args.model, device=device)
    model.set_grad_checkpointing(args.grad_checkpointing)
    task = TulipTask(model, cfg).to(device)
    optimizer = torch.optim.AdamW(_param_groups(task, 1e-4), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    batch = _batch(model, args.batch_size, device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, args.precision):
            out = task(batch)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 2.0)
        optimizer.step()
        return out

    _, counted = count_step_flops(step)
    step()
    seconds = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    step_seconds = statistics.median(seconds)

    image_tokens, text_tokens = _tower_tokens(model, batch)
    image_params, text_params = _matmul_params(model.visual), _matmul_params(model.text)
    analytic = 6 * (image_params * image_tokens + text_params * text_tokens)
    peak = device_peak_flops(device, args.precision, args.peak_flops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x {torch.get_num_threads()} threads"
    print(f"model: {args.model}")
    print(f"device: {name}")
    print(f"precision: {args.precision if device.type == 'cuda' else 'fp32'}")
    print(f"batch_size: {args.batch_size}")
    print(f"flops_counted: {counted:.4g}")
    print(f"flops_analytic: {analytic:.4g}")
    print(f"counted_over_analytic: {counted / analytic:.3f}")
    print(f"step_seconds: {step_seconds:.4f}")
    print(f"samples_per_s: {args.batch_size / step_seconds:.1f}")
    print(f"peak_flops: {peak:.4g}" if peak else "peak_flops: unknown")
    print(f"mfu: {mfu(counted, step_seconds, peak):.4f}")


if __name__ == "__main__":
    main()
