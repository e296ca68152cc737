"""The ablation ladder's stages: logging each run's evaluation to MLflow, and the ladder report."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tulip.cli.common import add_run_arguments, add_stage_argument, json_object


def register(subparsers) -> None:
    p = subparsers.add_parser("ablation-track", help="log one ladder run's evaluation to its MLflow run")
    p.add_argument("--run-id-file", required=True, help="file with the MLflow run id the training job wrote")
    p.add_argument("--eval", nargs="+", required=True, help="the run's evaluation result JSON files")
    p.add_argument("--out", required=True, help="JSON file to write: the run id and the logged metrics")
    p.set_defaults(func=ablation_track)

    p = subparsers.add_parser("ablation-report", help="write the ablation report and log it to MLflow")
    p.add_argument("--plan-json", type=json_object, required=True,
                   help='{"variants": [...]} with each variant\'s name, slug, overrides, seeds and resolved train section')
    p.add_argument("--runs-json", type=json_object, required=True,
                   help='{"runs": [...]} with each run\'s variant, seed, metrics, summary and eval files')
    p.add_argument("--context-json", type=json_object, default={},
                   help="GeCo generators and fractions, stated in the report")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the intervals of each rung's change")
    p.add_argument("--out-dir", required=True, help="folder for ablation.html, ablation.md, figures and tables")
    add_stage_argument(p, "ablation_report")
    add_run_arguments(p)
    p.set_defaults(func=ablation_report)


def ablation_track(args: argparse.Namespace) -> None:
    from tulip.data.io import atomic_write_json
    from tulip.tracking.ablation import record_evaluation

    run_id = Path(args.run_id_file).read_text(encoding="utf-8").strip() or None
    metrics = record_evaluation(os.environ.get("MLFLOW_TRACKING_URI"), run_id, args.eval)
    atomic_write_json(args.out, {"run_id": run_id, "metrics": metrics})


def ablation_report(args: argparse.Namespace) -> None:
    from tulip.report.ablation_render import build_ablation_report
    from tulip.tracking.mlflow_runs import stage_run

    plan = args.plan_json["variants"]
    runs = args.runs_json["runs"]
    tags = {"tulip.level": "ablation_report", **args.stage_tags}
    with stage_run(args.stage_name, tags=tags, experiment=args.experiment, run_name=args.run_name) as run:
        run.log_params({"variants": json.dumps([v["name"] for v in plan]), "seeds": json.dumps(plan[0]["seeds"]),
                        "confidence": args.confidence})
        paths = build_ablation_report(plan, runs, args.out_dir, args.context_json, args.confidence)
        for path in paths.values():
            run.log_artifact(path, "report")
