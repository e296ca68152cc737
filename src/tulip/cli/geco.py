"""GeCo stages: build the smoke-scale generators, then generate text and image views."""

from __future__ import annotations

import argparse
import json
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

    p = subparsers.add_parser("augment-text", help="paraphrase and hard-negative captions with a causal LM")
    p.add_argument("--manifest", required=True, help="manifest.json of the downloaded shards")
    p.add_argument("--out", required=True, help="output JSONL, one line per sample with views")
    add_config_argument(p, "geco.text")
    add_stage_argument(p, "augment_text")
    p.set_defaults(func=augment_text)

    p = subparsers.add_parser("augment-images", help="positive and negative image edits with InstructPix2Pix")
    p.add_argument("--manifest", required=True, help="manifest.json of the downloaded shards")
    p.add_argument("--out", required=True, help="output JSONL; edited images go beside it in views/")
    add_config_argument(p, "geco.image")
    add_stage_argument(p, "augment_images")
    p.set_defaults(func=augment_images)


def build_tiny_lm(args: argparse.Namespace) -> None:
    from tulip.data.reader import caption_of, iter_samples
    from tulip.geco.tiny_models import build_tiny_lm as build

    build(args.out, [caption_of(sample) for sample in iter_samples(args.manifest)], seed=args.seed)


def build_tiny_editor(args: argparse.Namespace) -> None:
    from tulip.geco.tiny_models import build_tiny_instruct_pix2pix

    build_tiny_instruct_pix2pix(args.out, seed=args.seed)


def _selected(manifest: str, fraction: float, seed: int) -> list[dict]:
    """Return the raw samples of the downloaded shards that receive generated views."""
    from tulip.data.reader import iter_samples
    from tulip.geco.seeding import is_selected

    return [sample for sample in iter_samples(manifest) if is_selected(seed, sample["__key__"], fraction)]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def augment_text(args: argparse.Namespace) -> None:
    from tulip.data.io import atomic_write_json, atomic_write_text
    from tulip.data.reader import caption_of
    from tulip.geco.text_views import ParaphraseGenerator, TextGenerationSettings
    from tulip.tracking.mlflow_runs import stage_run

    cfg = dict(args.config_json)
    model, fraction = cfg.pop("model"), cfg.pop("fraction")
    settings = TextGenerationSettings(**cfg)
    chosen = _selected(args.manifest, fraction, settings.seed)
    with stage_run(args.stage_name) as run:
        run.log_params(args.config_json)
        generator = ParaphraseGenerator(model, settings, device=_device())
        captions = {sample["__key__"]: caption_of(sample) for sample in chosen}
        views, rejections = generator.generate(list(captions.items()))
        lines = [json.dumps({"key": k, "caption": captions[k], **v}, ensure_ascii=False) for k, v in sorted(views.items())]
        stats = {"selected": len(chosen), "kept": len(views), "rejections": dict(sorted(rejections.items()))}
        out = Path(args.out)
        atomic_write_json(out.with_name(out.stem + "_stats.json"), stats)
        atomic_write_text(out, "\n".join(lines) + ("\n" if lines else ""))
        run.log_metrics({"selected": len(chosen), "kept": len(views),
                         **{f"rejected.{k}": v for k, v in rejections.items()}})
        run.log_artifact(out)


def augment_images(args: argparse.Namespace) -> None:
    import io

    from PIL import Image

    from tulip.data.io import atomic_write_json, atomic_write_text
    from tulip.geco.image_views import ImageEditor, ImageEditSettings
    from tulip.tracking.mlflow_runs import stage_run

    cfg = dict(args.config_json)
    model, fraction = cfg.pop("model"), cfg.pop("fraction")
    soft_prompts = cfg.pop("soft_prompts", None)
    settings = ImageEditSettings(**cfg)
    chosen = _selected(args.manifest, fraction, settings.seed)
    out = Path(args.out)
    view_dir = out.parent / "views"
    view_dir.mkdir(parents=True, exist_ok=True)
    with stage_run(args.stage_name) as run:
        run.log_params(args.config_json)
        editor = ImageEditor(model, settings, device=_device(), soft_prompts=soft_prompts)
        images = []
        for sample in chosen:
            with Image.open(io.BytesIO(sample["jpg"])) as image:
                images.append((sample["__key__"], image.convert("RGB")))
        views, counts = editor.generate(images)
        lines = []
        for key, pair in sorted(views.items()):
            paths = {}
            for view, image in pair.items():
                name = f"{key}_{'pos' if view == 'positive' else 'neg'}.jpg"
                image.save(view_dir / name, format="JPEG", quality=95)
                paths[view] = f"views/{name}"
            lines.append(json.dumps({"key": key, **paths}))
        stats = {"selected": len(chosen), **dict(sorted(counts.items()))}
        atomic_write_json(out.with_name(out.stem + "_stats.json"), stats)
        atomic_write_text(out, "\n".join(lines) + ("\n" if lines else ""))
        run.log_metrics({k: v for k, v in stats.items()})
        run.log_artifact(out)
