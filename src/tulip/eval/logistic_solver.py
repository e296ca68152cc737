"""L2-regularised multinomial logistic regression over a grid of penalties, fitted with L-BFGS in torch.

The objective for features X [N, D], labels y and penalty ``wd`` is

    mean_i CE(x_i W + b, y_i) + wd / 2 * ||W||_F^2        (bias b unpenalised),

which equals scikit-learn's ``LogisticRegression(C=1 / (N * wd))`` objective divided by ``C * N``.
Three exact reformulations make a penalty sweep cheap, none of which changes the optimum:

- the features are centred (the bias absorbs the mean);
- with fewer examples than dimensions, W is searched in the row space of the centred features,
  where every optimum lies, so the problem shrinks from D to N dimensions;
- penalties are solved from the strongest to the weakest, each starting from the previous optimum.

Gradients are computed in closed form (no autograd graph), in the features' dtype.
"""

from __future__ import annotations

import torch


def _objective(x: torch.Tensor, labels: torch.Tensor, weight_decay: float):
    """Return a closure for ``torch.optim.LBFGS`` that writes the gradients of (weight [r, C], bias [C])."""
    rows = torch.arange(x.shape[0])

    def closure(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        logits = torch.addmm(bias, x, weight)  # [N, C]
        log_norm = torch.logsumexp(logits, dim=1)  # [N]
        loss = (log_norm - logits[rows, labels]).mean() + 0.5 * weight_decay * weight.pow(2).sum()
        residual = torch.softmax(logits, dim=1)  # [N, C]; becomes (p - onehot(y)) / N
        residual[rows, labels] -= 1.0
        residual /= x.shape[0]
        weight.grad = torch.addmm(weight, x.T, residual, beta=weight_decay)  # X^T R + wd W
        bias.grad = residual.sum(dim=0)
        return loss

    return closure


def _minimise(x, labels, weight_decay, weight, bias, max_iter, tolerance_grad) -> tuple[torch.Tensor, torch.Tensor]:
    weight, bias = weight.clone(), bias.clone()
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance_grad, tolerance_change=1e-12,
        history_size=10, line_search_fn="strong_wolfe",
    )
    objective = _objective(x, labels, weight_decay)
    optimizer.step(lambda: objective(weight, bias))
    return weight, bias


def fit_logistic_path(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decays: list[float],
    max_iter: int = 1000,
    tolerance: float = 1e-4,
    warm_start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fit one probe per weight decay, in the given order, each warm-started from the previous one.

    Args:
        features: [N, D], float32 or float64 (the solve runs in this dtype).
        labels: long [N] in [0, num_classes).
        weight_decays: penalties; pass them strongest first for the best warm starts.
        max_iter: L-BFGS iterations per penalty.
        tolerance: stop when the largest gradient entry is below ``tolerance`` times its value at
            W = 0, b = 0 (a scale-free form of scikit-learn's ``tol``).
        warm_start: (W [D, C], b [C]) to start the first fit from, for example a solution on a subset.

    Returns:
        [(W [D, C], b [C])] in the order of ``weight_decays``, for logits ``features @ W + b``.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features [N, D] and labels [N], got {tuple(features.shape)} and {tuple(labels.shape)}")
    dtype = features.dtype
    mean = features.mean(dim=0)  # [D]
    centred = features - mean
    n, d = centred.shape
    basis = None
    if n < d:
        # Optimal W lie in the row space of the centred features: W = Q Z with Q [D, N] orthonormal.
        basis, _ = torch.linalg.qr(centred.T.double())
        basis = basis.to(dtype)
        centred = centred @ basis  # [N, N]

    # Gradient scale at the origin, which sets the stopping threshold for every penalty.
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(dtype)
    origin_grad = centred.T @ (1.0 / num_classes - onehot) / n  # [r, C]
    tolerance_grad = tolerance * max(origin_grad.abs().max().item(), torch.finfo(dtype).eps)

    if warm_start is not None:
        weight = warm_start[0].to(dtype)
        bias = warm_start[1].to(dtype) + mean @ weight  # bias in centred coordinates
        weight = basis.T @ weight if basis is not None else weight
    else:
        weight = torch.zeros(centred.shape[1], num_classes, dtype=dtype)
        bias = torch.zeros(num_classes, dtype=dtype)

    solutions = []
    for weight_decay in weight_decays:
        weight, bias = _minimise(centred, labels, weight_decay, weight, bias, max_iter, tolerance_grad)
        full = basis @ weight if basis is not None else weight  # [D, C]
        solutions.append((full, bias - mean @ full))
    return solutions


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int = 1000,
    tolerance: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a single probe; return (W [D, C], b [C])."""
    return fit_logistic_path(features, labels, num_classes, [weight_decay], max_iter, tolerance)[0]
