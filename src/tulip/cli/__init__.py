"""Command-line layer: ``tulip <stage> ...``, one subcommand per workflow stage, plus ``export-open-clip``.

Each subcommand parses its arguments, opens an MLflow stage run and calls one library function.
The library never imports this package.
"""

from __future__ import annotations

import argparse
import sys

from tulip.cli import ablation, data, evaluate, export, geco, report, train
from tulip.cli.common import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tulip", description="TULIP pretraining workflow stages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, geco, train, evaluate, report, ablation, export):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
