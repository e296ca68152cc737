"""The evaluation stage: zero-shot classification and few-shot linear probes of a trained checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from tulip.cli.common import add_config_argument, add_stage_argument


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="zero-shot and few-shot linear-probe evaluation")
    p.add_argument("--weights", required=True, help="trained weights with their model config")
    p.add_argument("--dataset-root", required=True, help="class-folder dataset with train/, test/ and classnames.txt")
    p.add_argument("--out-dir", required=True, help="folder for one JSON per task")
    add_config_argument(p, "eval")
    add_stage_argument(p, "evaluate")
    p.set_defaults(func=evaluate)


def evaluate(args: argparse.Namespace) -> None:
    from tulip.eval.runner import EvalConfig, evaluate_checkpoint
    from tulip.tracking.mlflow_runs import stage_run

    # The dataset location arrives as --dataset-root; the rest of the section configures the tasks.
    cfg = EvalConfig(**{k: v for k, v in args.config_json.items() if k != "dataset_root"})
    with stage_run(args.stage_name) as run:
        run.log_params(args.config_json)
        results = evaluate_checkpoint(args.weights, args.dataset_root, args.out_dir, cfg)
        for result in results:
            prefix = result["task"] + (f".{result['shots']}shot" if "shots" in result else "")
            run.log_metrics({f"{prefix}.{k}": v for k, v in result["metrics"].items()})
        run.log_artifact(Path(args.out_dir), "evaluation")
