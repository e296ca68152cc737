"""Export trained weights as an open_clip checkpoint folder (``tulip export-open-clip``)."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-open-clip",
        help="write trained weights as a folder that open_clip.create_model_and_transforms('local-dir:<folder>') loads",
    )
    p.add_argument("--weights", required=True, help="tulip weights with their model config (results/pretrain/model.pt)")
    p.add_argument("--out-dir", required=True, help="folder for open_clip_config.json and open_clip_model.safetensors")
    p.set_defaults(func=export_open_clip)


def export_open_clip(args: argparse.Namespace) -> None:
    from tulip.models import create_model_from_checkpoint
    from tulip.models.open_clip_format import export_open_clip as export

    model = create_model_from_checkpoint(args.weights)
    folder = export(model, args.out_dir)
    logger.info("wrote %s; load it with open_clip.create_model_and_transforms('local-dir:%s')", folder, folder)
