"""Data stages: export the embedded Fashion-MNIST pairs, download a pairs table, write shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from tulip.cli.common import add_config_argument, add_stage_argument


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare-fashion-mnist-pairs", help="turn Fashion-MNIST training images into a pairs table")
    p.add_argument("--root", required=True, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", required=True, help="output folder for images/ and pairs.tsv")
    p.add_argument("--num-samples", type=int, required=True, help="training pairs to export")
    p.add_argument("--seed", type=int, default=0)
    add_stage_argument(p, "prepare_fashion_mnist_pairs")
    p.set_defaults(func=prepare_fashion_mnist_pairs)

    p = subparsers.add_parser("prepare-fashion-mnist-eval", help="write the Fashion-MNIST evaluation class folders")
    p.add_argument("--root", required=True, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", required=True, help="output folder (train/, test/, classnames.txt)")
    p.add_argument("--probe-pool-per-class", type=int, required=True, help="labelled training images per class for probes")
    p.add_argument("--seed", type=int, default=0)
    add_stage_argument(p, "prepare_fashion_mnist_eval")
    p.set_defaults(func=prepare_fashion_mnist_eval)

    p = subparsers.add_parser("download", help="download pairs tables into webdataset shards (resumable)")
    p.add_argument("--table", required=True, nargs="+", help="CSV, TSV or Parquet table(s) with URL and caption columns")
    p.add_argument("--out", required=True, help="output folder for shards, per-shard records, manifest.json and stats.json")
    add_config_argument(p, "data.download")
    add_stage_argument(p, "download")
    p.set_defaults(func=download)

    p = subparsers.add_parser("shard", help="write the training shards: downloaded samples with their GeCo views")
    p.add_argument("--manifest", required=True, help="manifest.json of the downloaded shards")
    p.add_argument("--text-views", nargs="*", default=[], help="JSONL file(s) from augment-text, one per shard")
    p.add_argument("--image-views", nargs="*", default=[], help="JSONL file(s) from augment-images, one per shard")
    p.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    add_stage_argument(p, "shard")
    p.set_defaults(func=shard)

    p = subparsers.add_parser("check-shards", help="check a shard set as training does before it starts")
    p.add_argument("--manifest", required=True, help="manifest.json of the shards")
    p.add_argument("--mode", choices=("full", "quick"), default="full",
                   help="full reads every sample; quick checks files and sizes only (default: %(default)s)")
    p.set_defaults(func=check_shards)


def prepare_fashion_mnist_pairs(args: argparse.Namespace) -> None:
    from tulip.data.fashion_mnist import export_pairs
    from tulip.tracking.mlflow_runs import stage_run

    with stage_run(args.stage_name) as run:
        run.log_params({"root": args.root, "num_samples": args.num_samples, "seed": args.seed})
        table = export_pairs(Path(args.root), Path(args.out), args.num_samples, args.seed)
        run.log_artifact(table)


def prepare_fashion_mnist_eval(args: argparse.Namespace) -> None:
    from tulip.data.fashion_mnist import export_eval_folders
    from tulip.tracking.mlflow_runs import stage_run

    with stage_run(args.stage_name) as run:
        run.log_params({"root": args.root, "probe_pool_per_class": args.probe_pool_per_class, "seed": args.seed})
        export_eval_folders(Path(args.root), Path(args.out), args.probe_pool_per_class, args.seed)


def download(args: argparse.Namespace) -> None:
    from tulip.data.download import download_config, download_tables
    from tulip.data.table import read_pairs_tables
    from tulip.tracking.mlflow_runs import stage_run

    columns, options = download_config(args.config_json)
    with stage_run(args.stage_name) as run:
        run.log_params({"table": " ".join(args.table), **args.config_json})
        tables = read_pairs_tables(args.table, columns)
        stats = download_tables(tables, args.out, options, base_dirs=[Path(t).resolve().parent for t in args.table])
        run.log_metrics({"rows": stats["rows"], "stored": stats["stored"], "recaptions": stats["recaptions"],
                         "shards_resumed": stats["shards_resumed"],
                         **{f"skipped.{k}": v for k, v in stats["skipped"].items()}})
        run.log_artifact(Path(args.out) / "stats.json")
        run.log_artifact(Path(args.out) / "manifest.json")
        if stats["stored"] == 0:
            raise SystemExit(f"download stored no samples out of {stats['rows']} rows; "
                             f"see the skipped_rows of the shard records in {args.out}")


def shard(args: argparse.Namespace) -> None:
    from tulip.data.views import read_views, write_training_shards
    from tulip.tracking.mlflow_runs import stage_run

    text_views, image_views = read_views(args.text_views, args.image_views)
    with stage_run(args.stage_name) as run:
        manifest = write_training_shards(args.manifest, args.out, text_views, image_views)
        run.log_metrics({k: manifest[k] for k in ("num_samples", "num_text_views", "num_image_views", "num_recaptions",
                                                  "num_shards")})
        run.log_artifact(Path(args.out) / "manifest.json")


def check_shards(args: argparse.Namespace) -> None:
    from tulip.data.preflight import check_shard_set

    report = check_shard_set(args.manifest, args.mode)
    print(report.format())
    if not report.ok:
        raise SystemExit(1)
