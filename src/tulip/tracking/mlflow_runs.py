"""MLflow tracking: a parent run per workflow invocation and a child run per stage.

The workflow creates the parent run when it starts and exports its id as
``TULIP_MLFLOW_PARENT_RUN_ID``; every stage then opens a child run under it. MLflow nests runs only
within one experiment, so a stage that logs to another experiment (the ablation ladder's) nests
under that experiment's own workflow run, whose id ``TULIP_MLFLOW_EXPERIMENT_PARENTS`` maps from
the experiment name. Tracking never stops the work it records: a failed MLflow call is retried,
then logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PARENT_ENV = "TULIP_MLFLOW_PARENT_RUN_ID"
EXPERIMENT_PARENTS_ENV = "TULIP_MLFLOW_EXPERIMENT_PARENTS"  # JSON: experiment name -> workflow run id there
EXPERIMENT_ENV = "TULIP_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "tulip"
MAX_PARAM_CHARS = 6000


def default_tracking_uri(results_dir: str | Path) -> str:
    """Return the sqlite store under ``results_dir`` as an absolute URI, so every job resolves the same file."""
    path = (Path(results_dir) / "mlflow" / "mlflow.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested config dicts to dotted keys with string values, truncated to MLflow's parameter limit."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_CHARS]
    return flat


def git_commit(path: str | Path | None = None) -> str | None:
    """Return ``<sha>`` or ``<sha>-dirty`` for the repository containing ``path``, or None outside git."""
    cwd = Path(path or Path(__file__).parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def _retry(action: Callable[[], Any], what: str, attempts: int = 3, delay_s: float = 1.0) -> Any:
    """Run an MLflow call, retrying on any error; after the last failure log it and return None."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - tracking must never stop the stage it records
            if attempt == attempts:
                logger.warning("MLflow %s failed after %d attempts, continuing without it: %s", what, attempts, error)
                return None
            time.sleep(delay_s * attempt)
    return None


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """Return the id of experiment ``name``, creating it (with a local artifact folder if given) when missing."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_root).resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"})


def start_parent_run(tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str], artifact_root=None) -> str:
    """Create the workflow-level run (left RUNNING for the stages) and return its id."""
    client = _client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_root)
    run = client.create_run(experiment_id, run_name=run_name, tags={"tulip.level": "workflow", **tags})
    return run.info.run_id


def experiment_parents() -> dict[str, str]:
    """Return the ids of the workflow runs in experiments other than the main one, keyed by experiment name."""
    value = os.environ.get(EXPERIMENT_PARENTS_ENV)
    if not value:
        return {}
    try:
        parents = json.loads(value)
    except json.JSONDecodeError:
        logger.warning("invalid JSON in %s, so runs in other experiments are not nested: %r",
                       EXPERIMENT_PARENTS_ENV, value[:200])
        return {}
    return parents if isinstance(parents, dict) else {}


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED", delete_if_empty: bool = False) -> None:
    """Close a run; with ``delete_if_empty`` a workflow run that received no stage runs is deleted instead."""
    client = _client(tracking_uri)

    def close():
        if delete_if_empty:
            run = client.get_run(run_id)
            children = client.search_runs(
                [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1
            )
            if not children:
                client.delete_run(run_id)
                return
        client.set_terminated(run_id, status=status)

    _retry(close, f"closing run {run_id}")


class StageRun:
    """A child run of the workflow run for one stage; every method is safe to call when tracking failed."""

    def __init__(self, client, run_id: str | None):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.run_id:
            return
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            _retry(lambda chunk=items[start : start + 100]: self.client.log_batch(self.run_id, params=chunk), "log params")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.run_id:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=items), "log metrics", attempts=2, delay_s=0.5)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.run_id:
            return
        for key, value in tags.items():
            if value is not None:
                _retry(lambda k=key, v=value: self.client.set_tag(self.run_id, k, str(v)), f"set tag {key}")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not self.run_id or not Path(path).exists():
            return
        if Path(path).is_dir():
            _retry(lambda: self.client.log_artifacts(self.run_id, str(path), artifact_path), f"log artifacts {path}")
        else:
            _retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), f"log artifact {path}")


@contextmanager
def stage_run(
    stage: str, tracking_uri: str | None = None, tags: Mapping[str, Any] | None = None,
    experiment: str | None = None, run_name: str | None = None,
) -> Iterator[StageRun]:
    """Open a child run named after ``stage`` under the workflow run from the environment.

    Without ``TULIP_MLFLOW_PARENT_RUN_ID`` (a stage started by hand) the run stands alone. The run ends
    FINISHED when the block completes and FAILED when it raises (or the ``run_status`` the exception
    names); the exception is re-raised. With ``experiment`` the run goes to that experiment instead
    of the workflow run's. MLflow nests runs only within one experiment, so there the run nests under
    that experiment's workflow run from ``TULIP_MLFLOW_EXPERIMENT_PARENTS``, when the workflow made
    one, and the main workflow run's id is the tag ``tulip.workflow_run_id``.
    """
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        logger.info("no MLflow tracking URI configured; stage %s is not tracked", stage)
        yield StageRun(None, None)
        return
    client = _client(tracking_uri)
    parent = os.environ.get(PARENT_ENV)
    own_experiment = experiment is not None
    experiment = experiment or os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    run_tags = {
        "tulip.level": "stage",
        "tulip.stage": stage,
        "git_commit": git_commit(),
        "slurm.job_id": os.environ.get("SLURM_JOB_ID"),
        **(tags or {}),
    }
    if parent:
        run_tags["tulip.workflow_run_id" if own_experiment else "mlflow.parentRunId"] = parent
    if parent and own_experiment:
        run_tags["mlflow.parentRunId"] = experiment_parents().get(experiment)

    def create():
        experiment_id = ensure_experiment(tracking_uri, experiment)
        if parent and not own_experiment:
            experiment_id = client.get_run(parent).info.experiment_id
        return client.create_run(experiment_id, run_name=run_name or stage,
                                 tags={k: str(v) for k, v in run_tags.items() if v is not None})

    run = _retry(create, f"creating the run of stage {stage}")
    tracker = StageRun(client, run.info.run_id if run else None)
    try:
        yield tracker
    except BaseException as error:
        # An exception may name its own end state: a run stopped by the scheduler ends KILLED.
        status = getattr(error, "run_status", "FAILED")
        if tracker.run_id:
            _retry(lambda: client.set_terminated(tracker.run_id, status=status), f"closing a run as {status}")
        raise
    if tracker.run_id:
        _retry(lambda: client.set_terminated(tracker.run_id, status="FINISHED"), "closing the run")
