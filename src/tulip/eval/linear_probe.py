"""Few-shot linear probes on frozen features: the solvers and the k-shot protocol.

Protocol. A validation split of ``val_per_class`` images per class is cut from the training pool
(never from the test split). Each trial draws k shots per class from the rest of the pool and fits
one probe per penalty in the grid. It keeps the penalty with the best validation top-1 (ties go to
the stronger penalty) and reports that probe's test metrics. Shots are nested within a trial, so
the 1-shot set is part of the 10-shot set. With ``shots="full"`` the probe fits on the whole remaining pool, and
after the search it is refitted on that pool plus the validation split, as in the CLIP paper's
linear-probe protocol. Metrics are averaged over trials.

Solvers:

- ``logistic``: multinomial logistic regression minimising mean cross-entropy +
  ``weight_decay / 2 * ||W||^2`` (bias unpenalised), the objective of scikit-learn's
  ``LogisticRegression(C=1 / (n * weight_decay))``, solved with L-BFGS (``logistic_solver``).
- ``ridge``: least squares onto one-hot targets in {-1, 1} with an L2 penalty, in closed form for
  every penalty from one eigendecomposition; this is the few-shot linear regression that SigLIP's
  "ImageNet 10-shot" numbers use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from tulip.eval.logistic_solver import fit_logistic_path
from tulip.eval.registry import probe_pool_per_class
from tulip.eval.zeroshot import classification_metrics

logger = logging.getLogger(__name__)

SOLVERS = ("logistic", "ridge")


@dataclass
class ProbeConfig:
    """Settings of the few-shot protocol. Every field has a key of the same name in the workflow config."""

    shots: list[int | str] = field(default_factory=lambda: [1, 10])  # "full" fits on the whole training pool
    trials: int = 1  # independent k-shot draws, averaged
    val_per_class: int = 10  # training-pool images per class held out to choose the penalty
    solver: str = "logistic"  # "logistic" or "ridge"
    weight_decays: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    ridge_penalties: list[float] = field(default_factory=lambda: [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5])
    max_iter: int = 1000  # L-BFGS iterations per penalty
    tolerance: float = 1e-4  # L-BFGS stops when the largest gradient entry falls below this share of its value at 0
    seed: int = 0

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown probe solver {self.solver!r}; use one of {SOLVERS}")
        for shots in self.shots:
            if shots != "full" and not (isinstance(shots, int) and shots >= 1):
                raise ValueError(f"invalid shot count {shots!r}; use a positive integer or 'full'")
        if self.trials < 1 or self.val_per_class < 1:
            raise ValueError(f"trials and val_per_class must be at least 1, got {self.trials} and {self.val_per_class}")

    @property
    def penalties(self) -> list[float]:
        return self.weight_decays if self.solver == "logistic" else self.ridge_penalties


@dataclass
class ProbeResult:
    metrics: dict[str, float]  # lp_acc1, lp_acc5, lp_mean_per_class_recall (trial means), and their _std
    penalty: list[float]  # the chosen weight decay or ridge penalty, per trial
    fitted_per_class: dict[int, int]  # training examples per class in the final fit (equal in every trial)
    validation_acc1: list[dict[str, float]]  # validation top-1 per penalty, per trial
    trial_metrics: list[dict[str, float]]


def pool_per_class(cfg: ProbeConfig) -> int | None:
    """Return how many training images per class the probes can use, or None when they need all of them."""
    return probe_pool_per_class(cfg.shots, cfg.val_per_class, cfg.trials)


def _shuffled_members(labels: torch.Tensor, classes: list[int], generator: torch.Generator) -> dict[int, torch.Tensor]:
    members = {}
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        members[c] = idx[torch.randperm(len(idx), generator=generator)]
    return members


def split_pool(
    labels: torch.Tensor, cfg: ProbeConfig, max_shots: int | None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Cut the validation split from the pool and return (validation indices, shuffled remaining indices per class).

    Raises ``ValueError`` when a class has too few examples for ``val_per_class`` plus ``max_shots``
    (None means at least one training example), because the probe would silently see fewer shots.
    """
    classes = labels.unique(sorted=True).tolist()
    members = _shuffled_members(labels, classes, torch.Generator().manual_seed(cfg.seed))
    need = cfg.val_per_class + (max_shots or 1)
    short = {c: len(m) for c, m in members.items() if len(m) < need}
    if short:
        raise ValueError(
            f"{len(short)} class(es) have fewer than {need} training-pool examples (val_per_class "
            f"{cfg.val_per_class} + {max_shots or 1} shots), e.g. class: count {dict(list(short.items())[:5])}; "
            "lower the shots or val_per_class, or give the pool more examples"
        )
    validation = torch.cat([m[: cfg.val_per_class] for m in members.values()]).sort().values
    rest = {c: m[cfg.val_per_class :] for c, m in members.items()}
    return validation, rest


def fit_ridge_path(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, penalties: list[float]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fit L2-regularised least squares onto {-1, 1} one-hot targets for every penalty; return [(W [D, C], b [C])].

    Features are standardised per dimension and centred, so the bias is exactly unpenalised. One
    eigendecomposition of the smaller Gram matrix serves every penalty.
    """
    x = features.double()
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False) + 1e-6
    xs = (x - mean) / std  # [N, D]
    targets = 2.0 * torch.nn.functional.one_hot(labels, num_classes).double() - 1.0  # [N, C]
    target_mean = targets.mean(dim=0)
    yc = targets - target_mean
    n, d = xs.shape
    solutions = []
    if n >= d:
        eigenvalues, vectors = torch.linalg.eigh(xs.T @ xs)  # D x D
        projected = vectors.T @ (xs.T @ yc)  # [D, C]
        for penalty in penalties:
            weight = vectors @ (projected / (eigenvalues.clamp_min(0) + penalty)[:, None])
            solutions.append(weight)
    else:
        eigenvalues, vectors = torch.linalg.eigh(xs @ xs.T)  # N x N, the dual form for N < D
        projected = vectors.T @ yc  # [N, C]
        for penalty in penalties:
            solutions.append(xs.T @ (vectors @ (projected / (eigenvalues.clamp_min(0) + penalty)[:, None])))
    results = []
    for weight in solutions:
        weight_raw = weight / std[:, None]  # undo the standardisation: x_s W = (x - mean) W / std
        results.append((weight_raw.float(), (target_mean - mean @ weight_raw).float()))
    return results


def _fit_path(features, labels, num_classes, cfg: ProbeConfig, penalties, warm=None):
    if cfg.solver == "logistic":
        return fit_logistic_path(features, labels, num_classes, penalties, cfg.max_iter, cfg.tolerance, warm)
    return fit_ridge_path(features, labels, num_classes, penalties)


def _run_trial(pool_feats, pool_labels, test_feats, test_labels, num_classes, shots, cfg, validation, rest, trial):
    if shots == "full":
        fit_idx = torch.cat(list(rest.values()))
    else:
        generator = torch.Generator().manual_seed(cfg.seed + 1 + trial)
        fit_idx = torch.cat([m[torch.randperm(len(m), generator=generator)][:shots] for m in rest.values()])
    fit_idx = fit_idx.sort().values

    # Strongest penalty first: each fit starts from the previous solution, which is close to the next.
    penalties = sorted(cfg.penalties, reverse=True)
    path = _fit_path(pool_feats[fit_idx], pool_labels[fit_idx], num_classes, cfg, penalties)
    scores = {}
    for penalty, (weight, bias) in zip(penalties, path):
        logits = pool_feats[validation] @ weight + bias
        scores[penalty] = classification_metrics(logits, pool_labels[validation], num_classes)["acc1"]
    best = max(penalties, key=lambda p: (scores[p], p))
    weight, bias = path[penalties.index(best)]
    if shots == "full":
        fit_idx = torch.cat([fit_idx, validation]).sort().values
        weight, bias = _fit_path(pool_feats[fit_idx], pool_labels[fit_idx], num_classes, cfg, [best], (weight, bias))[0]
    metrics = classification_metrics(test_feats @ weight + bias, test_labels, num_classes)
    counts = torch.bincount(pool_labels[fit_idx], minlength=num_classes)
    return metrics, best, counts, {f"{p:g}": scores[p] for p in penalties}


def few_shot_probe(
    pool_feats: torch.Tensor,
    pool_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    shots: int | str,
    cfg: ProbeConfig,
) -> ProbeResult:
    """Run the k-shot protocol (module docstring) on features [N, D] with labels [N]; return test metrics.

    Classes are those of the training pool; a test label outside them raises ``ValueError``.
    Labels are renumbered to the pool's classes for fitting, so a class absent from both splits
    costs nothing and ``fitted_per_class`` is keyed by the original labels.
    """
    classes = pool_labels.unique(sorted=True)
    unknown = sorted(set(test_labels.unique().tolist()) - set(classes.tolist()))
    if unknown:
        raise ValueError(f"test label(s) {unknown[:10]} have no training-pool examples, so no probe can predict them")
    compact = torch.full((int(classes.max()) + 1,), -1, dtype=torch.long, device=pool_labels.device)
    compact[classes] = torch.arange(len(classes), device=pool_labels.device)
    pool_y, test_y = compact[pool_labels], compact[test_labels]
    pool_x, test_x = pool_feats.float(), test_feats.float()
    num_classes = len(classes)

    validation, rest = split_pool(pool_y, cfg, None if shots == "full" else shots)
    # The full pool has no draw to repeat, so it runs a single trial.
    count = 1 if shots == "full" else cfg.trials
    trials = [_run_trial(pool_x, pool_y, test_x, test_y, num_classes, shots, cfg, validation, rest, t) for t in range(count)]
    trial_metrics = [m for m, _, _, _ in trials]
    metrics = {}
    for key in trial_metrics[0]:
        values = torch.tensor([m[key] for m in trial_metrics], dtype=torch.float64)
        metrics[f"lp_{key}"] = values.mean().item()
        if count > 1:
            metrics[f"lp_{key}_std"] = values.std(unbiased=True).item()
    counts = trials[0][2]
    return ProbeResult(
        metrics=metrics,
        penalty=[best for _, best, _, _ in trials],
        fitted_per_class={int(c): int(n) for c, n in zip(classes.tolist(), counts.tolist())},
        validation_acc1=[scores for _, _, _, scores in trials],
        trial_metrics=trial_metrics,
    )
