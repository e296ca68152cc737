"""MLflow: the workflow run, its stage runs, and what each logged, read back through the client."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

STAGES = {
    "prepare_fashion_mnist_pairs",
    "prepare_fashion_mnist_eval",
    "download",
    "download_edit_pairs",
    "learn_soft_prompts",
    "augment_text",
    "augment_images",
    "shard",
    "pretrain",
    "evaluate",
    "report",
}


@pytest.fixture(scope="module")
def runs(workflow_run):
    client = MlflowClient(tracking_uri=f"sqlite:///{workflow_run / 'results/mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("tulip-test")
    assert experiment is not None
    all_runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return client, all_runs


def _artifact_paths(client, run_id, path=None):
    paths = []
    for item in client.list_artifacts(run_id, path):
        paths += _artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return paths


def test_one_workflow_run_with_a_child_per_stage(runs):
    client, all_runs = runs
    parents = [r for r in all_runs if r.data.tags.get("tulip.level") == "workflow"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["tulip.stage"] for r in children} == STAGES
    assert all(r.info.status == "FINISHED" for r in children)


def _stage(all_runs, stage):
    return next(r for r in all_runs if r.data.tags.get("tulip.stage") == stage)


def _head(repo):
    import subprocess

    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_pretrain_run_logs_params_metrics_and_checkpoint(runs, workflow_run):
    client, all_runs = runs
    run = _stage(all_runs, "pretrain")
    assert run.data.params["steps"] == "80"
    assert run.data.params["batch_size"] == "128"
    assert run.data.params["model"] == "tulip-tiny"
    history = client.get_metric_history(run.info.run_id, "image_text_loss")
    assert [m.step for m in history] == list(range(5, 81, 5))
    assert history[-1].value < history[0].value
    for term in ("image_image_loss", "text_text_loss", "image_reconstruction_loss", "text_reconstruction_loss"):
        assert len(client.get_metric_history(run.info.run_id, term)) == 16, term
    assert run.data.params["loss_weights.image_image_loss"] == "0.1"
    assert run.data.params["objective.contrastive.exchange"] == "ring"
    for name in ("lr", "grad_norm", "logit_scale", "logit_bias", "samples_per_s"):
        assert name in run.data.metrics
    artifacts = _artifact_paths(client, run.info.run_id)
    assert {"model.pt", "metrics.jsonl", "loss_curve.png", "summary.json"} <= set(artifacts)
    assert run.data.tags["git_commit"] == _head(workflow_run)


def test_evaluate_run_logs_metrics_and_json(runs):
    """One evaluate run contains every metric of every (model, dataset, task), the summary and the result files."""
    client, all_runs = runs
    run = _stage(all_runs, "evaluate")
    assert run.data.metrics["tulip/fashion_mnist/zeroshot_classification/acc1"] > 0.25
    assert "tiny-open-clip/fashion_mnist/linear_probe_5shot/lp_acc1" in run.data.metrics
    assert "tulip/vision_probe/mmvp_vlm/pair_acc.quantity_and_count" in run.data.metrics
    assert run.data.metrics["tulip/fashion_mnist/linear_probe_5shot/fitted_per_class.min"] == 5
    assert run.data.params["linear_probe.shots"] == "[1, 5]"
    artifacts = _artifact_paths(client, run.info.run_id)
    assert "evaluation/tulip/fashion_mnist/zeroshot_classification.json" in artifacts
    assert {"summary/summary.csv", "summary/summary.md", "summary/headline.png"} <= set(artifacts)


def test_report_and_data_runs_log_artifacts(runs):
    client, all_runs = runs
    assert "report/report.html" in _artifact_paths(client, _stage(all_runs, "report").info.run_id)
    download = _stage(all_runs, "download")
    assert download.data.metrics["stored"] == 3000
    assert "stats.json" in _artifact_paths(client, download.info.run_id)
