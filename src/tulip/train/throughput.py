"""Model FLOPs utilisation: FLOPs of one training step over what the device could do in that time.

The FLOPs of a step (forward and backward, on one process) are counted once with PyTorch's
``FlopCounterMode``, which counts the matrix products and convolutions the step dispatches. The
peak is the device's dense throughput in the training precision: on CUDA from a table of
datasheet figures, on CPU measured once with a large fp32 matrix product and cached in a file.
``train.peak_flops`` overrides both.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

logger = logging.getLogger(__name__)

# Dense tensor-core peaks in FLOP/s from the vendors' datasheets (SXM parts; no sparsity).
# "fp32" is the TF32 tensor-core figure, which PyTorch uses for fp32 matmuls when allowed.
CUDA_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp32": 494e12},
    "H100": {"bf16": 989e12, "fp32": 494e12},
    "A100": {"bf16": 312e12, "fp32": 156e12},
    "L40S": {"bf16": 362e12, "fp32": 183e12},
    "A10": {"bf16": 125e12, "fp32": 62.5e12},
    "V100": {"bf16": 125e12, "fp32": 15.7e12},  # no bf16: its fp16 tensor-core figure
}
CACHE_ENV = "TULIP_CACHE_DIR"


def count_step_flops(step: Callable[[], object]) -> tuple[object, int]:
    """Run ``step`` (forward and backward) under a FLOP counter; return its result and the FLOPs counted."""
    counter = FlopCounterMode(display=False)
    with counter:
        result = step()
    return result, int(counter.get_total_flops())


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tulip")
    return Path(root) / "peak_flops.json"


def measure_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """Return the best fp32 matrix-product throughput of this process's CPU threads in FLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_peak_flops() -> float:
    """Return the CPU peak for this machine and thread count, read from the cache file or measured and cached."""
    key = f"{platform.node()}|{platform.processor() or platform.machine()}|threads={torch.get_num_threads()}"
    path = _cache_file()
    cached: dict[str, float] = {}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key])
    peak = measure_cpu_peak()
    cached[key] = peak
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        logger.warning("could not cache the measured CPU peak in %s: %s", path, error)
    logger.info("measured CPU peak: %.3g FLOP/s (%s)", peak, key)
    return peak


def device_peak_flops(device: torch.device, precision: str, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device for ``precision``; None for an unknown GPU without ``override``."""
    if override:
        return float(override)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for model, peaks in CUDA_PEAKS.items():
            if model in name:
                return peaks["bf16" if precision == "bf16" else "fp32"]
        logger.warning("no peak FLOP/s known for %r; set train.peak_flops to log MFU", name)
        return None
    return cpu_peak_flops()


def mfu(flops_per_step: int, seconds_per_step: float, peak: float | None) -> float:
    """Share of the device peak one process achieved; NaN when the peak or time is unknown."""
    if not peak or seconds_per_step <= 0:
        return float("nan")
    return flops_per_step / seconds_per_step / peak
