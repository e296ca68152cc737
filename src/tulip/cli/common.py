"""Helpers shared by the stage commands: logging setup, JSON config arguments, stats files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any


def setup_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None else ""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s: {prefix}%(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("urllib3", "httpx", "alembic", "mlflow.store", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Credentials in the environment (a hub token, tracking or cloud passwords) never reach a log.
    from tulip.tracking import redact

    redact.install()


def json_object(text: str) -> dict[str, Any]:
    """argparse type for a JSON object given inline."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"invalid JSON ({error}): {text[:200]}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def add_config_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--config-json", type=json_object, default={}, metavar="JSON",
        help=f"the {what} section of the workflow config, as a JSON object",
    )


def add_stage_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--stage-name", default=default, help="name of the MLflow stage run (default: %(default)s)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that place a stage's MLflow run: its experiment, display name and extra tags."""
    parser.add_argument("--experiment", default=None,
                        help="MLflow experiment of the run (default: the workflow's, as a child of the workflow run)")
    parser.add_argument("--run-name", default=None, help="display name of the run (default: the stage name)")
    parser.add_argument("--stage-tags", type=json_object, default={}, metavar="JSON",
                        help="extra tags of the run, as a JSON object")
