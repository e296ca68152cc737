"""The evaluation stage: feature extraction, one job per (model, dataset, task), and the summary run.

``eval-features`` and ``eval-task`` write files only; ``evaluate`` gathers every result into one
MLflow stage run with all metrics, a summary table and plots.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tulip.cli.common import add_config_argument, add_stage_argument, json_object


def _add_model_and_dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-json", type=json_object, required=True,
                   help="model spec: name, type (tulip or open_clip), weights and optionally architecture")
    p.add_argument("--dataset", required=True, help="dataset name, used in result files")
    p.add_argument("--dataset-json", type=json_object, required=True,
                   help="the dataset's entry of eval.datasets: reader, root and reader options")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval-features", help="encode one split of a classification dataset into a feature file")
    _add_model_and_dataset(p)
    p.add_argument("--role", choices=["test", "train"], required=True,
                   help="which split: the test split, or the training pool of the linear probes")
    p.add_argument("--out", required=True, help="feature file to write (.pt)")
    add_config_argument(p, "feature settings (batch_size, workers, precision, and per_class and seed for train)")
    p.set_defaults(func=eval_features)

    p = subparsers.add_parser("eval-task", help="run one evaluation task and write its result JSON")
    _add_model_and_dataset(p)
    p.add_argument("--task", required=True, help="zeroshot_classification, linear_probe_<k>shot, linear_probe_full, "
                                                 "zeroshot_retrieval, image_caption_selection or mmvp_vlm")
    p.add_argument("--features", nargs="+", help="feature files from eval-features (classification tasks)")
    p.add_argument("--out", required=True, help="result JSON to write")
    add_config_argument(p, "task settings (batch_size, workers, precision and the task's own section)")
    p.set_defaults(func=eval_task)

    p = subparsers.add_parser("evaluate", help="log every evaluation result, a summary table and plots to MLflow")
    p.add_argument("--results", nargs="+", required=True, help="result JSON files from eval-task")
    p.add_argument("--out-dir", required=True, help="folder for summary.csv, summary.md and the plots")
    add_config_argument(p, "eval")
    add_stage_argument(p, "evaluate")
    p.set_defaults(func=evaluate)

    p = subparsers.add_parser("build-vision-probe", help="compose the offline MMVP-style probe from Fashion-MNIST")
    p.add_argument("--root", required=True, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", required=True, help="output folder (Questions.csv, 'MLLM_VLM Images/', probe.json)")
    add_config_argument(p, "eval.vision_probe")
    p.set_defaults(func=build_vision_probe)


def _settings(cfg: dict, threads: int | None):
    import torch

    from tulip.eval.features import EvalSettings, default_device

    if threads:
        torch.set_num_threads(threads)
    return EvalSettings(batch_size=cfg.get("batch_size", 256), workers=cfg.get("workers", 0),
                        precision=cfg.get("precision", "fp32"), device=default_device())


def eval_features(args: argparse.Namespace) -> None:
    from tulip.eval.features import extract_features, save_features
    from tulip.eval.models import load_eval_model

    cfg = args.config_json
    settings = _settings(cfg, args.threads)
    model = load_eval_model(args.model_json, settings.device)
    payload = extract_features(model, args.dataset, args.dataset_json, args.role, cfg.get("per_class"),
                               cfg.get("seed", 0), settings)
    save_features(args.out, payload)


def eval_task(args: argparse.Namespace) -> None:
    from tulip.data.io import atomic_write_json
    from tulip.eval import registry, tasks
    from tulip.eval.features import load_split_features
    from tulip.eval.linear_probe import ProbeConfig
    from tulip.eval.models import load_eval_model

    cfg = dict(args.config_json)
    settings = _settings(cfg, args.threads)
    task, shots = registry.parse_task_name(args.task)
    if task in registry.FEATURE_TASKS and not args.features:
        raise SystemExit(f"task {args.task} scores cached features; pass --features")

    features = load_split_features(args.features) if task in registry.FEATURE_TASKS else None

    if task == registry.LINEAR_PROBE:
        section = {k: v for k, v in cfg.get("linear_probe", {}).items() if k != "shots"}
        probe_cfg = ProbeConfig(shots=[shots], seed=cfg.get("seed", 0), **section)
        result = tasks.linear_probe(features, shots, probe_cfg, settings.device)
    else:
        model = load_eval_model(args.model_json, settings.device)
        if task == registry.ZEROSHOT_CLASSIFICATION:
            result = tasks.zeroshot_classification(model, features, args.dataset_json, settings)
        elif task == registry.ZEROSHOT_RETRIEVAL:
            recall_k = cfg.get("zeroshot_retrieval", {}).get("recall_k", [1, 5, 10])
            result = tasks.zeroshot_retrieval(model, args.dataset, args.dataset_json, recall_k, settings)
        elif task == registry.IMAGE_CAPTION_SELECTION:
            result = tasks.image_caption_selection(model, args.dataset, args.dataset_json, settings)
        else:
            prefix = cfg.get("mmvp_vlm", {}).get("prompt_prefix", "a photo of ")
            result = tasks.mmvp_vlm(model, args.dataset, args.dataset_json, prefix, settings)
    result["model"] = args.model_json.get("name", result["model"])
    atomic_write_json(args.out, result)


def evaluate(args: argparse.Namespace) -> None:
    from tulip.eval.plots import write_plots
    from tulip.eval.summary import load_results, mlflow_metrics, write_summary
    from tulip.tracking.mlflow_runs import stage_run

    records = load_results(args.results)
    out_dir = Path(args.out_dir)
    with stage_run(args.stage_name) as run:
        run.log_params(args.config_json)
        run.log_metrics(mlflow_metrics(records))
        paths = write_summary(records, out_dir)
        plots = write_plots(records, out_dir)
        for path in [*paths.values(), *plots]:
            run.log_artifact(path, "summary")
        for path in args.results:
            record = json.loads(Path(path).read_text())
            run.log_artifact(path, f"evaluation/{record['model']}/{record['dataset']}")


def build_vision_probe(args: argparse.Namespace) -> None:
    from tulip.eval.vision_probe import ProbeSettings, build_fashion_mnist_probe

    build_fashion_mnist_probe(args.root, args.out, ProbeSettings(**args.config_json))
