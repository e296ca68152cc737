"""Peak memory and time of the tiled sigmoid loss against the dense one, forward plus backward.

Each measurement runs in a fresh subprocess, which runs the loss forward and backward once to
warm up and then once measured, on new embeddings:

- time: the measured step's wall-clock time, with the default allocator;
- memory: the child records its resident set size, resets the kernel's peak-RSS mark
  (``/proc/self/clear_refs``), runs the step and reads the new peak (``VmHWM``). The peak over the
  level before the step covers the logits, every autograd buffer and the embedding gradients.
  The ``MALLOC_MMAP_THRESHOLD_`` setting makes glibc serve every allocation above 64 KiB with mmap
  and return it on free, so freed warm-up memory cannot hide the step's growth. That
  setting slows small allocations, so these runs are not timed.

Both forms use the same labels (SigLIP's diagonal, built from view indices) and produce the same
gradients. Forms alternate across repeats, and the smallest figure of each is reported, which is
the one least disturbed by other processes.

Run from the repository root: ``python benchmarks/chunked_loss.py``. Figures are printed last, one
``name: value`` per line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4096, help="rows and columns of the logit matrix")
    parser.add_argument("--dim", type=int, default=768, help="embedding size (SigLIP B/16: 768)")
    parser.add_argument("--chunk-size", type=int, default=512, help="tile side of the tiled form")
    parser.add_argument("--repeats", type=int, default=3, help="subprocesses per form (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--child", choices=["dense", "tiled"], help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=["time", "memory"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _status_kib(field: str) -> int:
    """Read a memory figure of this process (VmRSS, VmHWM) from /proc/self/status, in KiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def run_child(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from tulip.losses import SigmoidContrastiveLoss
    from tulip.losses.labels import image_text_indices

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    rows_index, cols_index = image_text_indices(args.batch_size, 0)
    loss_fn = SigmoidContrastiveLoss(chunk_size=args.chunk_size if args.child == "tiled" else None)

    def embeddings():
        x = F.normalize(torch.randn(args.batch_size, args.dim, generator=generator), dim=-1).requires_grad_()
        y = F.normalize(torch.randn(args.batch_size, args.dim, generator=generator), dim=-1).requires_grad_()
        return x, y, torch.tensor(2.3, requires_grad=True), torch.tensor(-10.0, requires_grad=True)

    def step(x, y, log_scale, bias) -> float:
        start = time.perf_counter()
        loss = loss_fn(x, rows_index, y, cols_index, log_scale.exp(), bias, False)
        loss.backward()
        return time.perf_counter() - start

    step(*embeddings())  # warm-up: first-call allocations and kernel selection
    inputs = embeddings()
    if args.measure == "time":
        print(json.dumps({"seconds": step(*inputs)}))
        return
    before = _status_kib("VmRSS")
    _reset_peak_rss()
    step(*inputs)
    print(json.dumps({"peak_over_rss_mib": (_status_kib("VmHWM") - before) / 1024}))


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(args)
        return
    results = {"dense": [], "tiled": []}
    for repeat in range(args.repeats):
        for form in ("dense", "tiled"):
            record = {}
            for measure in ("time", "memory"):
                command = [sys.executable, __file__, "--child", form, "--measure", measure,
                           "--batch-size", str(args.batch_size), "--dim", str(args.dim),
                           "--chunk-size", str(args.chunk_size), "--threads", str(args.threads)]
                env = dict(os.environ)
                if measure == "memory":
                    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
                output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                record.update(json.loads(output.strip().splitlines()[-1]))
            results[form].append(record)
            print(f"repeat {repeat + 1}/{args.repeats} {form}: {record['seconds']:.3f} s, "
                  f"peak {record['peak_over_rss_mib']:.1f} MiB", flush=True)
    best = {form: {key: min(r[key] for r in records) for key in records[0]} for form, records in results.items()}
    print(f"batch {args.batch_size}, dim {args.dim}, tiles of {args.chunk_size}, {args.threads} threads, "
          f"forward + backward, smallest of {args.repeats} subprocesses per form")
    print(f"dense_peak_mib: {best['dense']['peak_over_rss_mib']:.1f}")
    print(f"tiled_peak_mib: {best['tiled']['peak_over_rss_mib']:.1f}")
    print(f"dense_seconds: {best['dense']['seconds']:.3f}")
    print(f"tiled_seconds: {best['tiled']['seconds']:.3f}")
    print(f"peak_memory_ratio_tiled_over_dense: {best['tiled']['peak_over_rss_mib'] / best['dense']['peak_over_rss_mib']:.4f}")
    print(f"time_ratio_tiled_over_dense: {best['tiled']['seconds'] / best['dense']['seconds']:.3f}")


if __name__ == "__main__":
    main()
