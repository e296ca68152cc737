"""MLflow runs of the ablation ladder: one run per (variant, seed) in a comparison experiment.

The ladder's training job opens the run (parameters, per-step loss terms, weights). After the
evaluation jobs, ``record_evaluation`` adds the evaluation metrics and result files to that same
run and marks it as the current run of its (variant, seed): a retrained run replaces the earlier
one, whose tag ``tulip.current`` becomes ``false``. Filtering on ``tags.tulip.current = 'true'``
therefore lines up exactly one run per (variant, seed) in the MLflow UI's compare view.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from tulip.eval.summary import load_results, mlflow_metric_name, result_name
from tulip.tracking.mlflow_runs import StageRun, _client, _retry

logger = logging.getLogger(__name__)

VARIANT_TAG = "tulip.ablation.variant"
SEED_TAG = "tulip.ablation.seed"
CURRENT_TAG = "tulip.current"


def ladder_tags(variant: str, slug: str, seed: int, config_hash: str, rule: str, wildcards: dict) -> dict[str, str]:
    """Return the tags that identify a ladder run; ``git_commit`` and ``slurm.job_id`` are added by ``stage_run``."""
    return {
        VARIANT_TAG: variant,
        "tulip.ablation.slug": slug,
        SEED_TAG: str(seed),
        "variant": variant,
        "seed": str(seed),
        "config_hash": config_hash,
        "snakemake.rule": rule,
        "snakemake.wildcards": json.dumps(wildcards, sort_keys=True),
    }


def evaluation_metrics(records: Sequence[dict]) -> dict[str, float]:
    """Return every numeric metric of the result records as ``eval/<dataset>/<task>/<metric>``."""
    metrics = {}
    for record in records:
        for name, value in record["metrics"].items():
            if isinstance(value, (int, float)):
                metrics[mlflow_metric_name("eval", record["dataset"], result_name(record), name)] = float(value)
    return metrics


def record_evaluation(tracking_uri: str | None, run_id: str, eval_files: Sequence[str | Path]) -> dict[str, float]:
    """Log the evaluation of one ladder run to its MLflow run, mark it current, and return the metrics.

    Without a tracking URI or a run id (training was not tracked) nothing is logged.
    """
    records = load_results(list(eval_files))
    metrics = evaluation_metrics(records)
    if not tracking_uri or not run_id:
        logger.info("ladder run not tracked (no MLflow URI or run id); %d metrics not logged", len(metrics))
        return metrics
    client = _client(tracking_uri)
    run = StageRun(client, run_id)
    run.log_metrics(metrics)
    for path in eval_files:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        run.log_artifact(path, f"evaluation/{record['dataset']}")
    _mark_current(client, run_id)
    return metrics


def _mark_current(client, run_id: str) -> None:
    """Tag ``run_id`` current and every other run of its (variant, seed) in its experiment not current."""

    def mark():
        info = client.get_run(run_id)
        variant, seed = info.data.tags.get(VARIANT_TAG), info.data.tags.get(SEED_TAG)
        if variant is None or seed is None:
            raise ValueError(f"run {run_id} has no {VARIANT_TAG} or {SEED_TAG} tag; it is not a ladder run")
        others = client.search_runs(
            [info.info.experiment_id],
            filter_string=f"tags.`{VARIANT_TAG}` = '{variant}' and tags.`{SEED_TAG}` = '{seed}'",
            max_results=1000,
        )
        for other in others:
            if other.info.run_id != run_id and other.data.tags.get(CURRENT_TAG) != "false":
                client.set_tag(other.info.run_id, CURRENT_TAG, "false")
        client.set_tag(run_id, CURRENT_TAG, "true")

    _retry(mark, f"marking run {run_id} current")
