"""Entry point of ``cloudypoints``: one subcommand per module listed in :data:`COMMAND_MODULES`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``. Command functions return exit codes; errors from the core
(:class:`CloudyPointsError`) become a one-line message and exit code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cloudypoints_core.errors import CloudyPointsError

#: Modules under cloudypoints_core.cli that provide subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "bag",
    "predict",
    "build_engine",
    "eda",
    "evaluate",
    "card",
    "train",
    "distill",
    "export",
    "import_model",
    "doctor",
)

log = logging.getLogger("cloudypoints")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudypoints",
        description="CloudyPoints: monocular metric depth and point clouds (see README.md).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cloudypoints_core.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except CloudyPointsError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
