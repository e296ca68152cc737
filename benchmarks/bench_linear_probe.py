"""Time tulip's k-shot linear probe against scikit-learn's LogisticRegression doing the same search.

Both sides get the same features, the same validation split and k-shot draw, and the same weight-decay
grid. Each fits one multinomial logistic regression per grid value, keeps the one with the best
validation top-1 (ties go to the stronger penalty) and reports its test top-1. scikit-learn fits
every value from scratch with ``C = 1 / (n * weight_decay)``, the same objective as ours.

scikit-learn runs with ``tol=1e-6`` by default here. Its own default, 1e-4, bounds the absolute
gradient, and on unit-norm features the gradient at zero is already about 1e-3, so it stops after a
few iterations short of the optimum (``--sklearn-tol 1e-4`` shows the effect on accuracy). Ours
runs once untimed first, because the first L-BFGS step of a process imports parts of torch (about
1.5 s) that later probes reuse.

Features are synthetic unit-norm "embeddings": class centres drawn at random, examples scattered
around them with per-dimension scales that decay like the spectrum of real image embeddings.

    python benchmarks/bench_linear_probe.py                      # 1000 classes, 512-d, 4 shots
    python benchmarks/bench_linear_probe.py --classes 100 --shots 10 --threads 2

The figures are printed last, one ``name: value`` per line.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from tulip.eval.linear_probe import ProbeConfig, few_shot_probe, split_pool


def make_features(classes: int, dim: int, per_class: int, separation: float, seed: int):
    """Return unit-norm features [classes * per_class, dim] and labels, with a decaying per-dimension scale."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))
    scale = torch.arange(1, dim + 1, dtype=torch.float32).pow(-0.5)  # variance ~ 1 / rank, as in embedding spectra
    labels = torch.arange(classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    features = (separation * centres[labels] + noise) * scale
    return torch.nn.functional.normalize(features, dim=-1), labels


def sklearn_probe(pool, pool_labels, test, test_labels, shots: int, cfg: ProbeConfig, tol: float, max_iter: int):
    """Run the protocol of ``few_shot_probe`` (one trial) with scikit-learn fitting every penalty."""
    validation, rest = split_pool(pool_labels, cfg, shots)
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # the draw of trial 0
    fit = torch.cat([m[torch.randperm(len(m), generator=generator)][:shots] for m in rest.values()]).sort().values
    x, y = pool.numpy(), pool_labels.numpy()
    best = None
    for weight_decay in sorted(cfg.weight_decays, reverse=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning when max_iter is reached
            model = LogisticRegression(C=1 / (len(fit) * weight_decay), tol=tol, max_iter=max_iter).fit(x[fit], y[fit])
        accuracy = (model.predict(x[validation]) == y[validation]).mean()
        if best is None or accuracy > best[0]:
            best = (accuracy, weight_decay, model)
    return float((best[2].predict(test.numpy()) == test_labels.numpy()).mean()), best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512, help="feature dimension")
    parser.add_argument("--shots", type=int, default=4, help="training examples per class")
    parser.add_argument("--val-per-class", type=int, default=2)
    parser.add_argument("--test-per-class", type=int, default=5)
    parser.add_argument("--separation", type=float, default=0.35, help="scale of the class centres against the noise")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both torch and scikit-learn's BLAS")
    parser.add_argument("--sklearn-tol", type=float, default=1e-6, help="LogisticRegression tol (its own default is 1e-4)")
    parser.add_argument("--sklearn-max-iter", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each side; the fastest counts")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    pool, pool_labels = make_features(args.classes, args.dim, args.val_per_class + args.shots, args.separation, 1)
    test, test_labels = make_features(args.classes, args.dim, args.test_per_class, args.separation, 2)
    cfg = ProbeConfig(shots=[args.shots], val_per_class=args.val_per_class)

    warm_up, warm_up_labels = make_features(4, 8, 4, args.separation, 3)
    few_shot_probe(warm_up, warm_up_labels, warm_up, warm_up_labels, 1, ProbeConfig(shots=[1], val_per_class=2))

    ours_times, sklearn_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = few_shot_probe(pool, pool_labels, test, test_labels, args.shots, cfg)
        ours_times.append(time.perf_counter() - start)
        with threadpool_limits(args.threads):
            start = time.perf_counter()
            sklearn_acc1, sklearn_penalty = sklearn_probe(pool, pool_labels, test, test_labels, args.shots, cfg,
                                                          args.sklearn_tol, args.sklearn_max_iter)
            sklearn_times.append(time.perf_counter() - start)

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    print(f"# {args.classes} classes, {args.dim}-d features, {args.shots} shots, grid {cfg.weight_decays}")
    print(f"ours_seconds: {min(ours_times):.3f}")
    print(f"sklearn_seconds: {min(sklearn_times):.3f}")
    print(f"speedup: {min(sklearn_times) / min(ours_times):.2f}")
    print(f"ours_acc1: {100 * ours.metrics['lp_acc1']:.2f}")
    print(f"sklearn_acc1: {100 * sklearn_acc1:.2f}")
    print(f"acc1_difference_points: {100 * abs(ours.metrics['lp_acc1'] - sklearn_acc1):.2f}")
    print(f"ours_weight_decay: {ours.penalty[0]:g}")
    print(f"sklearn_weight_decay: {sklearn_penalty:g}")


if __name__ == "__main__":
    main()
