"""Few-shot linear probes on frozen features: multinomial logistic regression fitted with L-BFGS in torch.

The L2 penalty is chosen on a validation split cut from the training pool (never from the test
split), then the probe is refitted on the k-shot training set with that penalty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tulip.eval.zeroshot import classification_metrics

logger = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    metrics: dict[str, float]
    weight_decay: float
    fitted_per_class: dict[int, int]
    validation_acc1: dict[str, float]


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + weight_decay * ||W||^2 / 2 over W [D, C] and b [C] with L-BFGS."""
    features = features.double()
    weight = torch.zeros(features.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def sample_few_shot(labels: torch.Tensor, shots: int | None, seed: int) -> torch.Tensor:
    """Return indices of up to ``shots`` examples per class (all of them when ``shots`` is None), chosen with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique(sorted=True).tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members if shots is None else members[:shots])
    return torch.cat(chosen).sort().values


def few_shot_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    shots: int | None,
    weight_decays: list[float],
    val_per_class: int = 10,
    seed: int = 0,
) -> ProbeResult:
    """Fit a k-shot probe on the training pool, choosing the penalty on held-out pool examples, and test it."""
    order = sample_few_shot(train_labels, None, seed)  # every pool index, shuffled per class then sorted
    generator = torch.Generator().manual_seed(seed)
    val_idx, fit_pool = [], []
    for c in range(num_classes):
        members = order[train_labels[order] == c]
        members = members[torch.randperm(len(members), generator=generator)]
        val_idx.append(members[:val_per_class])
        fit_pool.append(members[val_per_class:])
    val_idx_t, fit_pool_t = torch.cat(val_idx), torch.cat(fit_pool)
    fit_idx = fit_pool_t[sample_few_shot(train_labels[fit_pool_t], shots, seed)]

    scores = {}
    for wd in weight_decays:
        weight, bias = fit_logistic_regression(train_feats[fit_idx], train_labels[fit_idx], num_classes, wd)
        logits = train_feats[val_idx_t].double() @ weight + bias
        scores[wd] = classification_metrics(logits, train_labels[val_idx_t], num_classes)["acc1"]
    # Highest validation accuracy wins; among equals the strongest penalty, the simplest probe.
    best = max(weight_decays, key=lambda wd: (scores[wd], wd))
    weight, bias = fit_logistic_regression(train_feats[fit_idx], train_labels[fit_idx], num_classes, best)
    metrics = classification_metrics(test_feats.double() @ weight + bias, test_labels, num_classes)
    counts = torch.bincount(train_labels[fit_idx], minlength=num_classes)
    return ProbeResult(
        metrics={f"lp_{k}": v for k, v in metrics.items()},
        weight_decay=best,
        fitted_per_class={c: int(n) for c, n in enumerate(counts.tolist())},
        validation_acc1={str(k): v for k, v in scores.items()},
    )
