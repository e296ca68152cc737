"""The report stage: loss curve, evaluation table and stage statistics as Markdown and HTML."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tulip.cli.common import add_stage_argument


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write report.md and report.html for a run")
    p.add_argument("--metrics", required=True, help="metrics.jsonl of the pretraining stage")
    p.add_argument("--eval", nargs="+", required=True, help="evaluation result JSON files")
    p.add_argument("--eval-plot", help="headline figure of the evaluation summary, embedded in the report")
    p.add_argument("--stats", nargs="*", default=[], metavar="NAME=FILE", help="stage statistics JSON files to include")
    p.add_argument("--out-dir", required=True)
    add_stage_argument(p, "report")
    p.set_defaults(func=report)


def report(args: argparse.Namespace) -> None:
    from tulip.report.render import build_report
    from tulip.tracking.mlflow_runs import stage_run

    stats = {}
    for item in args.stats:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--stats expects NAME=FILE, got {item!r}")
        stats[name] = json.loads(Path(path).read_text())
    with stage_run(args.stage_name) as run:
        paths = build_report(args.metrics, args.eval, stats, args.out_dir, args.eval_plot)
        for path in paths.values():
            run.log_artifact(path, "report")
