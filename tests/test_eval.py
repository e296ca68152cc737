"""Evaluation metrics against hand-computed answers and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tulip.eval.linear_probe import few_shot_probe, fit_logistic_regression, sample_few_shot
from tulip.eval.zeroshot import classification_metrics, zeroshot_classify


def test_zeroshot_oracle_embeddings_score_perfectly():
    """Image embeddings equal to their class prototype are all classified correctly."""
    prototypes = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 4, 4, 2])
    metrics = zeroshot_classify(prototypes[labels], labels, prototypes)
    assert metrics == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}


def test_classification_metrics_break_ties_by_class_index():
    logits = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 1, 2])
    metrics = classification_metrics(logits, labels, num_classes=3)
    # Row 0 ties 0/1 -> 0 (wrong); row 1 ties 1/2 -> 1 (right); row 2 ties all -> 0 (wrong).
    assert metrics["acc1"] == pytest.approx(1 / 3)
    assert metrics["acc5"] == pytest.approx(1.0)
    # Class 1 recall 1/2, class 2 recall 0/1.
    assert metrics["mean_per_class_recall"] == pytest.approx(0.25)


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 6))
    labels = (features @ rng.normal(size=(6, 3))).argmax(axis=1)
    weight_decay = 0.05
    weight, bias = fit_logistic_regression(torch.tensor(features), torch.tensor(labels), 3, weight_decay)
    # scikit-learn minimises C * sum(CE) + ||W||^2 / 2; ours mean(CE) + wd * ||W||^2 / 2, so C = 1 / (n * wd).
    reference = LogisticRegression(C=1 / (len(labels) * weight_decay), tol=1e-10, max_iter=5000).fit(features, labels)
    ours = (torch.tensor(features) @ weight + bias).argmax(1).numpy()
    assert (ours == reference.predict(features)).mean() >= 0.99
    centred = weight.numpy() - weight.numpy().mean(axis=1, keepdims=True)
    np.testing.assert_allclose(centred, reference.coef_.T - reference.coef_.T.mean(axis=1, keepdims=True), atol=2e-3)


def test_few_shot_probe_uses_k_per_class_and_never_the_test_split():
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 16, generator=generator) * 3
    pool_labels = torch.arange(4).repeat_interleave(30)
    pool = centres[pool_labels] + torch.randn(120, 16, generator=generator)
    test_labels = torch.arange(4).repeat_interleave(50)
    test = centres[test_labels] + torch.randn(200, 16, generator=generator)
    result = few_shot_probe(pool, pool_labels, test, test_labels, 4, shots=5, weight_decays=[1e-3, 1e-1], val_per_class=5)
    assert result.fitted_per_class == {0: 5, 1: 5, 2: 5, 3: 5}
    assert result.metrics["lp_acc1"] > 0.9
    assert set(result.validation_acc1) == {"0.001", "0.1"}


def test_sample_few_shot_is_seeded():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    first = sample_few_shot(labels, 2, seed=3)
    assert torch.equal(first, sample_few_shot(labels, 2, seed=3))
    assert torch.bincount(labels[first]).tolist() == [2, 2]
