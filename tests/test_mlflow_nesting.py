"""Workflow runs in two experiments: stage runs nest under the workflow run of their own experiment."""

from __future__ import annotations

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tulip.cli.workflow import finish_workflow_run, start_workflow_run
from tulip.tracking.mlflow_runs import EXPERIMENT_PARENTS_ENV, PARENT_ENV, stage_run


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A sqlite tracking store in a scratch working folder; the workflow's variables are restored afterwards."""
    monkeypatch.chdir(tmp_path)
    for name in (PARENT_ENV, EXPERIMENT_PARENTS_ENV):
        monkeypatch.setenv(name, "")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(tracking_uri=uri)


def _runs(client, experiment):
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], run_view_type=ViewType.ALL) if found else []


def test_ladder_run_nests_in_own_experiment(store):
    uri, client = store
    main_id = start_workflow_run(uri, "main", {"a": 1}, ".", local_store=True, other_experiments=["main-ablation"])
    with stage_run("ablation_pretrain", uri, experiment="main-ablation", run_name="siglip seed 0") as run:
        run.log_metrics({"loss": 1.0})
    with stage_run("pretrain", uri) as run:
        run.log_metrics({"loss": 2.0})
    finish_workflow_run(uri, "FINISHED")

    ladder_parent = next(r for r in _runs(client, "main-ablation") if r.data.tags["tulip.level"] == "workflow")
    ladder_child = next(r for r in _runs(client, "main-ablation") if r.info.run_name == "siglip seed 0")
    main_child = next(r for r in _runs(client, "main") if r.info.run_name == "pretrain")
    assert ladder_parent.data.tags["tulip.workflow_run_id"] == main_id
    assert ladder_child.data.tags["mlflow.parentRunId"] == ladder_parent.info.run_id
    assert ladder_child.data.tags["tulip.workflow_run_id"] == main_id
    assert main_child.data.tags["mlflow.parentRunId"] == main_id
    assert client.get_run(main_id).info.status == "FINISHED"
    assert client.get_run(ladder_parent.info.run_id).info.status == "FINISHED"


def test_empty_ladder_parent_is_deleted(store):
    uri, client = store
    start_workflow_run(uri, "main", {"a": 1}, ".", local_store=True, other_experiments=["main-ablation"])
    with stage_run("pretrain", uri) as run:
        run.log_metrics({"loss": 2.0})
    finish_workflow_run(uri, "FINISHED")

    (ladder_parent,) = _runs(client, "main-ablation")
    assert ladder_parent.info.lifecycle_stage == "deleted"
    (main_parent,) = [r for r in _runs(client, "main") if r.data.tags["tulip.level"] == "workflow"]
    assert main_parent.info.lifecycle_stage == "active"


def test_stage_without_ladder_parent_stands_alone(store, monkeypatch):
    """A stage started by hand with an experiment but no workflow run has no parent."""
    uri, client = store
    monkeypatch.delenv(PARENT_ENV)
    with stage_run("ablation_pretrain", uri, experiment="main-ablation", run_name="by hand"):
        pass
    (run,) = _runs(client, "main-ablation")
    assert "mlflow.parentRunId" not in run.data.tags
