"""Summaries of evaluation results: headline rows with chance levels, a long metric table, MLflow names.

Every result record is one (model, dataset, task) file in CLIP_benchmark's shape, and
``result_name`` distinguishes linear probes of different shot counts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from tulip.data.io import atomic_write_text
from tulip.eval import registry


def load_results(paths: list[str | Path]) -> list[dict]:
    records = []
    for path in sorted(Path(p) for p in paths):
        record = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("dataset", "model", "task", "metrics") if k not in record]
        if missing:
            raise ValueError(f"{path} is not an evaluation result: it lacks {missing}")
        records.append(record)
    return records


def result_name(record: dict) -> str:
    """Return the task with its shot count for linear probes, e.g. ``linear_probe_10shot``."""
    if record["task"] == registry.LINEAR_PROBE:
        return f"{registry.LINEAR_PROBE}_{registry.shots_label(record['shots'])}"
    return record["task"]


def _num_classes(record: dict) -> int | None:
    if record["task"] == registry.LINEAR_PROBE:
        return len(record.get("fitted_per_class", {})) or None
    mapping = record.get("class_mapping", {})
    return mapping.get("num_classes") or len(record.get("classnames", [])) or None


def headline_rows(record: dict) -> list[dict]:
    """Return the metrics a results table shows for one record, each with its chance level (None if unknown)."""
    task, metrics = record["task"], record["metrics"]
    if task in (registry.ZEROSHOT_CLASSIFICATION, registry.LINEAR_PROBE):
        classes = _num_classes(record)
        key = "acc1" if task == registry.ZEROSHOT_CLASSIFICATION else "lp_acc1"
        chosen = [(key, 1.0 / classes if classes else None)]
    elif task == registry.ZEROSHOT_RETRIEVAL:
        images = record.get("num_images")
        recall = sorted(int(k.rsplit("@", 1)[1]) for k in metrics if k.startswith("image_retrieval_recall@"))
        k = recall[0] if recall else 1
        chance = min(1.0, k / images) if images else None  # a random ranking puts a match in the top k this often
        chosen = [(f"image_retrieval_recall@{k}", chance), (f"text_retrieval_recall@{k}", chance)]
    elif task == registry.IMAGE_CAPTION_SELECTION:
        chosen = [("text_score", 0.25), ("image_score", 0.25), ("group_score", 1 / 6)]
    elif task == registry.MMVP_VLM:
        chosen = [("pair_acc", 0.25), ("question_acc", 0.5)]
    else:
        chosen = [(name, None) for name in sorted(metrics)]
    return [
        {"model": record["model"], "dataset": record["dataset"], "task": result_name(record), "metric": name,
         "value": metrics.get(name), "chance": chance}
        for name, chance in chosen
    ]


def metric_rows(records: list[dict]) -> list[dict]:
    """Return every metric of every record as (model, dataset, task, metric, value) rows."""
    rows = []
    for record in records:
        for name, value in sorted(record["metrics"].items()):
            rows.append({"model": record["model"], "dataset": record["dataset"], "task": result_name(record),
                         "metric": name, "value": value})
    return rows


def mlflow_metric_name(model: str, dataset: str, task: str, metric: str) -> str:
    """Return ``<model>/<dataset>/<task>/<metric>`` in the characters MLflow accepts ("@" becomes "_at_")."""
    name = f"{model}/{dataset}/{task}/{metric}".replace("@", "_at_")
    return re.sub(r"[^/\w.\- ]", "_", name)


def mlflow_metrics(records: list[dict]) -> dict[str, float]:
    metrics = {}
    for row in metric_rows(records):
        if isinstance(row["value"], (int, float)):
            metrics[mlflow_metric_name(row["model"], row["dataset"], row["task"], row["metric"])] = float(row["value"])
    for record in records:
        counts = list(record.get("fitted_per_class", {}).values())
        if counts:
            prefix = mlflow_metric_name(record["model"], record["dataset"], result_name(record), "fitted_per_class")
            metrics[f"{prefix}.min"], metrics[f"{prefix}.max"] = float(min(counts)), float(max(counts))
    return metrics


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def headline_markdown(records: list[dict]) -> str:
    """Return the headline rows as a Markdown table, values and chance levels in percent."""
    lines = ["| model | dataset | task | metric | value % | chance % |", "|---|---|---|---|---|---|"]
    for record in records:
        for row in headline_rows(record):
            lines.append(f"| {row['model']} | {row['dataset']} | {row['task']} | {row['metric']} | "
                         f"{_percent(row['value'])} | {_percent(row['chance'])} |")
    return "\n".join(lines) + "\n"


def write_summary(records: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.csv`` (every metric) and ``summary.md`` (headline table); return their paths."""
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "dataset", "task", "metric", "value"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(metric_rows(records))
    atomic_write_text(out_dir / "summary.csv", buffer.getvalue())
    markdown = "# Evaluation summary\n\n" + headline_markdown(records) + (
        "\nChance: 1 / classes for top-1 accuracy; k / images for Recall@k; 25 %, 25 % and 16.67 % for "
        "Winoground's text, image and group scores; 25 % per pair and 50 % per statement for MMVP-VLM.\n"
    )
    atomic_write_text(out_dir / "summary.md", markdown)
    return {"csv": out_dir / "summary.csv", "markdown": out_dir / "summary.md"}
