"""The pretraining stage; the workflow starts it under torchrun (``torchrun ... -m tulip pretrain``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tulip.cli.common import add_config_argument, add_run_arguments, add_stage_argument

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="train a model on webdataset shards (run under torchrun)")
    p.add_argument("--manifest", required=True, help="manifest.json of the training shards")
    p.add_argument("--out-dir", required=True, help="folder for checkpoints/, metrics.jsonl and summary.json")
    p.add_argument("--weights", required=True, help="where the final weights are written")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the whole node, shared by its processes")
    p.add_argument("--code-version", default="", help="version of the training code; checkpoints of other versions are not resumed")
    add_config_argument(p, "train")
    add_stage_argument(p, "pretrain")
    add_run_arguments(p)
    p.add_argument("--run-id-out", default=None, help="file to write the MLflow run id to (empty when not tracked)")
    p.set_defaults(func=pretrain)


def pretrain(args: argparse.Namespace) -> None:
    import torch

    from tulip.train.config import TrainConfig
    from tulip.train.preemption import TrainingInterrupted

    if args.threads:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, args.threads // local_processes))
    cfg = TrainConfig.from_dict(args.config_json)
    try:
        _pretrain(args, cfg)
    except TrainingInterrupted as stop:
        logger.warning("%s; exiting with %d so the job is retried and resumes", stop, stop.exit_code)
        sys.exit(stop.exit_code)


def _pretrain(args: argparse.Namespace, cfg) -> None:
    from tulip.report.plots import plot_loss_curves, read_metrics
    from tulip.tracking.mlflow_runs import StageRun, stage_run
    from tulip.train.loop import run_training

    out_dir = Path(args.out_dir)
    primary = int(os.environ.get("RANK", "0")) == 0
    if not primary:
        # Only rank 0 talks to MLflow.
        run_training(cfg, args.manifest, out_dir, args.weights, code_version=args.code_version)
        return
    tags = {"world_size": os.environ.get("WORLD_SIZE", "1"), **args.stage_tags}
    with stage_run(args.stage_name, tags=tags, experiment=args.experiment, run_name=args.run_name) as run:
        if args.run_id_out:
            Path(args.run_id_out).write_text(run.run_id or "", encoding="utf-8")
        run.log_params(cfg.to_dict())
        tracker: StageRun = run
        result = run_training(cfg, args.manifest, out_dir, args.weights, callbacks=[tracker.log_metrics],
                              code_version=args.code_version)
        plot = plot_loss_curves(read_metrics(out_dir / "metrics.jsonl"), out_dir / "loss_curve.png")
        run.log_metrics({"final_loss": result.final_loss, "train_seconds": result.seconds,
                         "samples_seen": result.samples_seen}, step=result.steps)
        for path in (args.weights, out_dir / "metrics.jsonl", out_dir / "summary.json", plot):
            run.log_artifact(path)
