"""Linear probes: the solvers against scikit-learn and closed forms, and the k-shot protocol."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tulip.eval.features import sample_per_class
from tulip.eval.linear_probe import ProbeConfig, few_shot_probe, fit_ridge_path, split_pool
from tulip.eval.logistic_solver import fit_logistic_path, fit_logistic_regression
from tulip.eval.zeroshot import classification_metrics


def _clusters(classes: int, dim: int, per_class: int, spread: float, seed: int):
    """Unit-norm features around random class centres, like L2-normalised embeddings."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1000))
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return torch.nn.functional.normalize(features, dim=-1), labels


def _sklearn_fit(features, labels, weight_decay):
    from sklearn.linear_model import LogisticRegression

    # scikit-learn minimises C * sum(CE) + ||W||^2 / 2; ours mean(CE) + wd * ||W||^2 / 2, so C = 1 / (n * wd).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=1 / (len(labels) * weight_decay), tol=1e-10, max_iter=10000).fit(features, labels)


def test_logistic_regression_matches_scikit_learn():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 6))
    labels = (features @ rng.normal(size=(6, 3))).argmax(axis=1)
    weight, bias = fit_logistic_regression(torch.tensor(features), torch.tensor(labels), 3, 0.05, tolerance=1e-8)
    reference = _sklearn_fit(features, labels, 0.05)
    # The multinomial model is unchanged by adding a constant to every class's weights, so compare centred.
    centred = weight.numpy() - weight.numpy().mean(axis=1, keepdims=True)
    np.testing.assert_allclose(centred, reference.coef_.T - reference.coef_.T.mean(axis=1, keepdims=True), atol=1e-4)
    ours = (torch.tensor(features) @ weight + bias).argmax(1).numpy()
    assert (ours == reference.predict(features)).all()


def test_logistic_fewer_examples_than_dimensions():
    """With N < D the solve runs in the row space of the features and still reaches scikit-learn's optimum."""
    features, labels = _clusters(classes=5, dim=64, per_class=4, spread=1.5, seed=1)
    test, test_labels = _clusters(classes=5, dim=64, per_class=40, spread=1.5, seed=2)
    weight, bias = fit_logistic_regression(features, labels, 5, 1e-3)
    reference = _sklearn_fit(features.numpy().astype(np.float64), labels.numpy(), 1e-3)
    ours = (test @ weight + bias).argmax(1).numpy()
    assert (ours == reference.predict(test.numpy().astype(np.float64))).mean() >= 0.99
    np.testing.assert_allclose(
        weight.numpy() - weight.numpy().mean(axis=1, keepdims=True),
        reference.coef_.T - reference.coef_.T.mean(axis=1, keepdims=True), atol=2e-3,
    )


def test_logistic_path_equals_separate_fits():
    """Warm-starting along the penalty path reaches the same optimum as fitting each penalty from zero."""
    features, labels = _clusters(classes=8, dim=32, per_class=30, spread=1.0, seed=3)
    penalties = [1e-1, 1e-2, 1e-3]
    path = fit_logistic_path(features.double(), labels, 8, penalties, tolerance=1e-8)
    for penalty, (weight, bias) in zip(penalties, path):
        alone, alone_bias = fit_logistic_regression(features.double(), labels, 8, penalty, tolerance=1e-8)
        logits, alone_logits = features.double() @ weight + bias, features.double() @ alone + alone_bias
        torch.testing.assert_close(logits - logits.mean(1, keepdim=True),
                                   alone_logits - alone_logits.mean(1, keepdim=True), atol=1e-4, rtol=0)


@pytest.mark.parametrize("examples_per_class", [3, 40], ids=["fewer-examples-than-dims", "more-examples-than-dims"])
def test_ridge_path_matches_scikit_learn_ridge(examples_per_class):
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    features, labels = _clusters(classes=4, dim=24, per_class=examples_per_class, spread=1.0, seed=4)
    penalties = [0.1, 10.0]
    path = fit_ridge_path(features, labels, 4, penalties)
    x = features.double().numpy()
    scaled = StandardScaler().fit_transform(x)
    targets = 2 * np.eye(4)[labels.numpy()] - 1
    for penalty, (weight, bias) in zip(penalties, path):
        reference = Ridge(alpha=penalty).fit(scaled, targets)
        np.testing.assert_allclose((features.double() @ weight.double() + bias.double()).numpy(),
                                   reference.predict(scaled), atol=1e-4)


def _probe_data(seed=5):
    pool, pool_labels = _clusters(classes=20, dim=48, per_class=40, spread=2.2, seed=seed)
    test, test_labels = _clusters(classes=20, dim=48, per_class=50, spread=2.2, seed=seed + 1)
    return pool, pool_labels, test, test_labels


def test_probe_matches_scikit_learn_search():
    """The k-shot probe's test accuracy is within 0.2 points of scikit-learn's with the same splits and grid."""
    pool, pool_labels, test, test_labels = _probe_data()
    cfg = ProbeConfig(shots=[10], val_per_class=10, weight_decays=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
    ours = few_shot_probe(pool, pool_labels, test, test_labels, 10, cfg)

    validation, rest = split_pool(pool_labels, cfg, 10)
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # trial 0 draws its shots with seed + 1
    fit = torch.cat([m[torch.randperm(len(m), generator=generator)][:10] for m in rest.values()]).sort().values
    x, y = pool.double().numpy(), pool_labels.numpy()
    best = None
    for penalty in sorted(cfg.weight_decays, reverse=True):
        model = _sklearn_fit(x[fit], y[fit], penalty)
        accuracy = (model.predict(x[validation]) == y[validation]).mean()
        if best is None or accuracy > best[0]:  # ties keep the stronger penalty, as ours does
            best = (accuracy, penalty, model)
    reference = (best[2].predict(test.double().numpy()) == test_labels.numpy()).mean()
    assert 0.3 < reference < 0.95
    assert ours.penalty == [best[1]]
    assert abs(ours.metrics["lp_acc1"] - reference) <= 0.002


def test_probe_fits_k_shots_per_class():
    pool, pool_labels, test, test_labels = _probe_data()
    result = few_shot_probe(pool, pool_labels, test, test_labels, 5, ProbeConfig(val_per_class=8))
    assert result.fitted_per_class == {c: 5 for c in range(20)}
    assert set(result.validation_acc1[0]) == {"0.1", "0.01", "0.001", "0.0001", "1e-05", "1e-06"}
    assert result.metrics["lp_acc1"] > 0.3


def test_probe_shots_are_nested():
    """Within a trial, the 1-shot training set is part of the 5-shot set."""
    labels = torch.arange(4).repeat_interleave(12)
    cfg = ProbeConfig(val_per_class=3)
    _, rest = split_pool(labels, cfg, 5)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    order = {c: m[torch.randperm(len(m), generator=generator)] for c, m in rest.items()}
    for members in order.values():
        assert set(members[:1].tolist()) <= set(members[:5].tolist())


def test_validation_split_is_disjoint_from_training_shots():
    labels = torch.arange(3).repeat_interleave(20)
    validation, rest = split_pool(labels, ProbeConfig(val_per_class=4), 10)
    training = torch.cat(list(rest.values()))
    assert len(validation) == 12
    assert set(validation.tolist()).isdisjoint(training.tolist())
    assert sorted(validation.tolist() + training.tolist()) == list(range(60))


def test_probe_rejects_classes_with_too_few_examples():
    pool, pool_labels, test, test_labels = _probe_data()
    keep = (pool_labels != 3) | (torch.arange(len(pool_labels)) % 40 < 12)  # class 3 keeps 12 examples
    with pytest.raises(ValueError, match="fewer than 20 training-pool examples"):
        few_shot_probe(pool[keep], pool_labels[keep], test, test_labels, 10, ProbeConfig(val_per_class=10))


def test_probe_rejects_test_classes_missing_from_pool():
    pool, pool_labels, test, test_labels = _probe_data()
    keep = pool_labels != 7
    with pytest.raises(ValueError, match=r"test label\(s\) \[7\]"):
        few_shot_probe(pool[keep], pool_labels[keep], test, test_labels, 1, ProbeConfig())


def test_full_probe_refits_on_pool_and_validation():
    pool, pool_labels, test, test_labels = _probe_data()
    result = few_shot_probe(pool, pool_labels, test, test_labels, "full", ProbeConfig(shots=["full"]))
    assert result.fitted_per_class == {c: 40 for c in range(20)}


def test_probe_trials_average_and_report_spread():
    pool, pool_labels, test, test_labels = _probe_data()
    result = few_shot_probe(pool, pool_labels, test, test_labels, 1, ProbeConfig(trials=3))
    accuracies = [m["acc1"] for m in result.trial_metrics]
    assert len(set(accuracies)) > 1
    assert result.metrics["lp_acc1"] == pytest.approx(float(np.mean(accuracies)))
    assert result.metrics["lp_acc1_std"] == pytest.approx(float(np.std(accuracies, ddof=1)))


def test_ridge_probe_runs_the_same_protocol():
    pool, pool_labels, test, test_labels = _probe_data()
    result = few_shot_probe(pool, pool_labels, test, test_labels, 10, ProbeConfig(solver="ridge"))
    assert result.fitted_per_class == {c: 10 for c in range(20)}
    assert result.penalty[0] in ProbeConfig().ridge_penalties
    assert result.metrics["lp_acc1"] > 0.3


def test_probe_renumbers_sparse_labels():
    """Classes absent from both splits (a partial copy of a dataset) do not enter the probe."""
    pool, pool_labels, test, test_labels = _probe_data()
    result = few_shot_probe(pool, pool_labels * 10, test, test_labels * 10, 2, ProbeConfig(val_per_class=5))
    assert sorted(result.fitted_per_class) == [10 * c for c in range(20)]
    dense = few_shot_probe(pool, pool_labels, test, test_labels, 2, ProbeConfig(val_per_class=5))
    assert result.metrics["lp_acc1"] == pytest.approx(dense.metrics["lp_acc1"])


def test_sample_per_class_is_seeded_and_bounded():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])
    first = sample_per_class(labels, 2, seed=3)
    assert torch.equal(first, sample_per_class(labels, 2, seed=3))
    assert torch.bincount(labels[first]).tolist() == [2, 2, 1]
    assert len(sample_per_class(labels, None, seed=3)) == 8


def test_classification_metrics_on_probe_logits():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert classification_metrics(logits, torch.tensor([0, 1, 1]), 2)["acc1"] == pytest.approx(2 / 3)
