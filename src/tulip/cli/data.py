"""Data stages: export the embedded Fashion-MNIST pairs, download a pairs table, write shards."""

from __future__ import annotations

import argparse
import json
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

    p = subparsers.add_parser("download", help="fetch the images of a pairs table into a folder of JPEGs")
    p.add_argument("--table", required=True, help="CSV, TSV or Parquet table with URL and caption columns")
    p.add_argument("--out", required=True, help="output folder (images/, samples.tsv, stats.json)")
    add_config_argument(p, "data.download")
    add_stage_argument(p, "download")
    p.set_defaults(func=download)

    p = subparsers.add_parser("shard", help="write samples and their GeCo views as webdataset shards")
    p.add_argument("--samples", required=True, help="samples.tsv from the download stage")
    p.add_argument("--text-views", help="text_views.jsonl from augment-text")
    p.add_argument("--image-views", help="image_views.jsonl from augment-images")
    p.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    add_config_argument(p, "shard")
    add_stage_argument(p, "shard")
    p.set_defaults(func=shard)


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
    from tulip.data.download import DownloadOptions, download_table
    from tulip.data.table import read_pairs_table
    from tulip.tracking.mlflow_runs import stage_run

    cfg = dict(args.config_json)
    url_column = cfg.pop("url_column", "url")
    caption_column = cfg.pop("caption_column", "caption")
    if "background" in cfg:
        cfg["background"] = tuple(cfg["background"])
    options = DownloadOptions(**cfg)
    with stage_run(args.stage_name) as run:
        run.log_params({"table": args.table, **args.config_json})
        stats = download_table(read_pairs_table(args.table, url_column, caption_column), args.out, options)
        run.log_metrics({"rows": stats["rows"], "stored": stats["stored"],
                         **{f"skipped.{k}": v for k, v in stats["skipped"].items()}})
        run.log_artifact(Path(args.out) / "stats.json")
        run.log_artifact(Path(args.out) / "skipped.json")
        if stats["stored"] == 0:
            raise SystemExit(f"download stored no samples out of {stats['rows']} rows; see {args.out}/skipped.json")


def _read_jsonl(path: str | None) -> dict[str, dict]:
    if not path:
        return {}
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def shard(args: argparse.Namespace) -> None:
    from tulip.data.download import read_samples
    from tulip.data.shards import write_shards
    from tulip.tracking.mlflow_runs import stage_run

    text_views, image_views = _read_jsonl(args.text_views), _read_jsonl(args.image_views)
    samples = []
    for row in read_samples(args.samples):
        meta = {k: v for k, v in row.items() if k not in ("key", "image", "caption")}
        sample = {"key": row["key"], "image": row["image"], "caption": row["caption"], "meta": meta}
        if row["key"] in text_views:
            sample["text_views"] = text_views[row["key"]]
        if row["key"] in image_views:
            base = Path(args.image_views).parent
            view = image_views[row["key"]]
            sample["image_views"] = {k: str(base / view[k]) for k in ("positive", "negative")}
        samples.append(sample)
    cfg = args.config_json
    with stage_run(args.stage_name) as run:
        run.log_params(cfg)
        manifest = write_shards(samples, args.out, cfg.get("samples_per_shard", 1000), cfg.get("seed", 0))
        run.log_metrics({k: manifest[k] for k in ("num_samples", "num_text_views", "num_image_views")}
                        | {"num_shards": len(manifest["shards"])})
        run.log_artifact(Path(args.out) / "manifest.json")
