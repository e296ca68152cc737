"""GeCo stages: build the smoke-scale generators, learn the soft prompts, generate views shard by shard."""

from __future__ import annotations

import argparse
from pathlib import Path

from tulip.cli.common import add_config_argument, add_stage_argument


def register(subparsers) -> None:
    p = subparsers.add_parser("build-tiny-lm", help="build a random-weight chat LM and tokenizer offline")
    p.add_argument("--manifest", required=True, help="manifest.json of the downloaded shards; their captions train the tokenizer")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=build_tiny_lm)

    p = subparsers.add_parser("build-tiny-editor", help="build a random-weight InstructPix2Pix pipeline offline")
    p.add_argument("--out", required=True, help="output pipeline folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=build_tiny_editor)

    p = subparsers.add_parser("prepare-edit-pairs", help="write a soft-prompt pairs table from Fashion-MNIST")
    p.add_argument("--root", required=True, help="folder with the Fashion-MNIST IDX .gz files")
    p.add_argument("--out", required=True, help="output folder for images/ and edit_pairs.tsv")
    p.add_argument("--num-pairs", type=int, required=True, help="rows, half positive and half negative pairs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=prepare_edit_pairs)

    p = subparsers.add_parser("learn-soft-prompts", help="learn the editor's E_p and E_n with every network frozen")
    p.add_argument("--source-manifest", required=True, help="manifest.json of the pairs table downloaded by its source column")
    p.add_argument("--target-manifest", required=True, help="manifest.json of the same table downloaded by its target column")
    p.add_argument("--model", required=True, help="InstructPix2Pix pipeline: hub id or local folder")
    p.add_argument("--out", required=True, help="output .pt file with the two embeddings")
    add_config_argument(p, "geco.soft_prompts")
    add_stage_argument(p, "learn_soft_prompts")
    p.set_defaults(func=learn_soft_prompts)

    p = subparsers.add_parser("augment-text", help="paraphrase and hard-negative captions of one shard with a causal LM")
    p.add_argument("--shard", required=True, help="downloaded shard (.tar)")
    p.add_argument("--out", required=True, help="output JSONL, one line per sample with views; counts go beside it")
    add_config_argument(p, "geco.text")
    add_stage_argument(p, "augment_text")
    p.set_defaults(func=augment_text)

    p = subparsers.add_parser("augment-images", help="positive and negative edits of one shard's images")
    p.add_argument("--shard", required=True, help="downloaded shard (.tar)")
    p.add_argument("--out", required=True, help="output JSONL; edited images go in a folder of the same name")
    p.add_argument("--soft-prompts", help="learned E_p/E_n file; without it two instruction sentences are encoded")
    add_config_argument(p, "geco.image")
    add_stage_argument(p, "augment_images")
    p.set_defaults(func=augment_images)

    p = subparsers.add_parser("sum-view-stats", help="add up the per-shard counts of one kind of view")
    p.add_argument("--stats", nargs="+", required=True, help="per-shard .stats.json files")
    p.add_argument("--out", required=True, help="output JSON with the totals and the number of shards")
    p.set_defaults(func=sum_view_stats)


def build_tiny_lm(args: argparse.Namespace) -> None:
    from tulip.data.reader import caption_of, iter_samples
    from tulip.geco.tiny_models import build_tiny_lm as build

    build(args.out, [caption_of(sample) for sample in iter_samples(args.manifest)], seed=args.seed)


def build_tiny_editor(args: argparse.Namespace) -> None:
    from tulip.geco.tiny_models import build_tiny_instruct_pix2pix

    build_tiny_instruct_pix2pix(args.out, seed=args.seed)


def prepare_edit_pairs(args: argparse.Namespace) -> None:
    from tulip.data.fashion_mnist import export_edit_pairs

    export_edit_pairs(Path(args.root), Path(args.out), args.num_pairs, args.seed)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def learn_soft_prompts(args: argparse.Namespace) -> None:
    from tulip.geco.soft_prompts import SoftPromptSettings, SoftPromptTrainer, read_edit_pairs
    from tulip.tracking.mlflow_runs import stage_run

    cfg = {k: v for k, v in args.config_json.items() if k in SoftPromptSettings.__dataclass_fields__}
    settings = SoftPromptSettings(**cfg)
    with stage_run(args.stage_name) as run:
        run.log_params({"model": args.model, **args.config_json})
        pairs, counts = read_edit_pairs(args.source_manifest, args.target_manifest)
        trainer = SoftPromptTrainer(args.model, settings, device=_device())
        history = trainer.fit(pairs)
        for step, losses in enumerate(history["steps"]):
            run.log_metrics({f"{view}_loss": value for view, value in losses.items()}, step=step)
        run.log_metrics({**{f"pairs.{k}": v for k, v in counts.items()},
                         **{f"held_out_before.{k}": v for k, v in history["held_out_before"].items()},
                         **{f"held_out_after.{k}": v for k, v in history["held_out_after"].items()}})
        trainer.save(args.out, history)
        run.log_artifact(args.out)


def _settings(cls, cfg: dict):
    return cls(**{k: v for k, v in cfg.items() if k in cls.__dataclass_fields__})


def augment_text(args: argparse.Namespace) -> None:
    from tulip.geco.cache import model_fingerprint
    from tulip.geco.shard_jobs import run_text_shard
    from tulip.geco.text_views import ParaphraseGenerator, TextGenerationSettings
    from tulip.tracking.mlflow_runs import stage_run

    cfg = args.config_json
    settings = _settings(TextGenerationSettings, cfg)
    backend = cfg.get("backend", "transformers")

    def make_generator():
        if backend == "vllm":
            from tulip.geco.text_views_vllm import VllmParaphraseGenerator

            return VllmParaphraseGenerator(cfg["model"], settings, device=_device())
        return ParaphraseGenerator(cfg["model"], settings, device=_device())

    with stage_run(args.stage_name, tags={"tulip.shard": Path(args.shard).name}) as run:
        run.log_params(cfg)
        stats = run_text_shard(args.shard, args.out, make_generator, model_fingerprint(cfg["model"]), settings,
                               cfg["fraction"], cfg.get("cache"), backend)
        run.log_metrics(_flat(stats))


def augment_images(args: argparse.Namespace) -> None:
    from tulip.geco.cache import model_fingerprint
    from tulip.geco.image_views import ImageEditor, ImageEditSettings
    from tulip.geco.shard_jobs import run_image_shard
    from tulip.tracking.mlflow_runs import stage_run

    cfg = args.config_json
    settings = _settings(ImageEditSettings, cfg)
    with stage_run(args.stage_name, tags={"tulip.shard": Path(args.shard).name}) as run:
        run.log_params({**cfg, "soft_prompts_file": args.soft_prompts})
        stats = run_image_shard(
            args.shard, args.out,
            lambda: ImageEditor(cfg["model"], settings, device=_device(), soft_prompts=args.soft_prompts),
            model_fingerprint(cfg["model"]), settings, cfg["fraction"], args.soft_prompts,
        )
        run.log_metrics(_flat(stats))


def _flat(stats: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def sum_view_stats(args: argparse.Namespace) -> None:
    import json

    from tulip.data.io import atomic_write_json
    from tulip.geco.shard_jobs import sum_stats

    totals = sum_stats([json.loads(Path(path).read_text()) for path in args.stats])
    atomic_write_json(args.out, {**totals, "shards": len(args.stats)})
