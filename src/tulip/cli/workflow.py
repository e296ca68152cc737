"""Support for the Snakemake workflow: job environment, config params and code versions.

The workflow's ``rules/common.smk`` imports this module; the library never does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tulip.tracking.mlflow_runs import (
    EXPERIMENT_ENV,
    EXPERIMENT_PARENTS_ENV,
    PARENT_ENV,
    end_run,
    experiment_parents,
    git_commit,
    start_parent_run,
)


def canonical_json(value) -> str:
    """Sorted-key JSON, so reordering YAML keys does not look like a change."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_hash(value) -> str:
    """SHA-256 (16 hex digits) of a config section's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def code_version(src_dir: str | Path, entries: Iterable[str]) -> str:
    """SHA-256 (16 hex digits) over the contents of the listed files and folders under ``src_dir``."""
    src_dir = Path(src_dir)
    digest = hashlib.sha256()
    for entry in entries:
        root = src_dir / entry
        if not root.exists():
            raise FileNotFoundError(f"stage code entry {entry!r} not found under {src_dir}")
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            if file.suffix == ".pyc" or "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(src_dir)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def export_job_environment(src_dir: str | Path, tracking_uri: str, experiment: str) -> None:
    """Set the variables every job inherits: this checkout's ``src`` on PYTHONPATH and the MLflow target.

    Jobs run ``python -m tulip`` from the checkout in a virtual environment or a conda environment
    alike, so the code that runs is the code the workflow hashes.
    """
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(src_dir) not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(src_dir), *entries])
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ[EXPERIMENT_ENV] = experiment


def default_tracking_uri(results_dir: str | Path = "results") -> str:
    return "sqlite:///" + str((Path(results_dir) / "mlflow" / "mlflow.db").resolve())


def start_workflow_run(tracking_uri: str, experiment: str, config: dict, repo_dir: str | Path, local_store: bool,
                       other_experiments: Iterable[str] = ()) -> str:
    """Open the workflow-level MLflow run and export its id for the stage jobs.

    Each of ``other_experiments`` gets a workflow run of its own, tagged with the main run's id, for
    the stages that log there to nest under.
    """
    import snakemake

    Path("results/mlflow").mkdir(parents=True, exist_ok=True)
    tags = {
        "git_commit": git_commit(repo_dir) or "unknown",
        "config_hash": config_hash(config),
        "snakemake.version": snakemake.__version__,
        "slurm.job_id": os.environ.get("SLURM_JOB_ID", ""),
    }
    artifact_root = "results/mlflow/artifacts" if local_store else None
    run_id = start_parent_run(tracking_uri, experiment, run_name="workflow", tags=tags, artifact_root=artifact_root)
    os.environ[PARENT_ENV] = run_id
    others = {
        name: start_parent_run(tracking_uri, name, run_name="workflow", tags={**tags, "tulip.workflow_run_id": run_id},
                               artifact_root=artifact_root)
        for name in other_experiments
    }
    os.environ[EXPERIMENT_PARENTS_ENV] = json.dumps(others)
    return run_id


def finish_workflow_run(tracking_uri: str, status: str) -> None:
    """Close the workflow-level runs; one that never received a stage run is deleted."""
    run_ids = [os.environ.get(PARENT_ENV), *experiment_parents().values()]
    for run_id in filter(None, run_ids):
        end_run(tracking_uri, run_id, status=status, delete_if_empty=True)


def download_shard_names(tables: list[str] | None, num_rows: int | None, download_section: dict) -> list[str]:
    """Return the names (without ``.tar``) of the shards the download stage will write, before it runs.

    The download cuts each table into ranges of ``rows_per_shard`` rows, so the shard names follow
    from the tables' row counts. The count is ``num_rows`` when the workflow builds the table (which
    does not exist yet), else the rows of ``tables``, read here. Knowing them lets Snakemake plan one GeCo job
    per shard before the download has run.
    """
    from tulip.data.download import download_config, plan_shards
    from tulip.data.shards import shard_name
    from tulip.data.table import read_pairs_tables

    columns, options = download_config(download_section)
    counts = [num_rows] if num_rows is not None else [t.num_rows for t in read_pairs_tables(tables, columns)]
    return [shard_name(plan.index).removesuffix(".tar") for plan in plan_shards(counts, options.rows_per_shard)]

