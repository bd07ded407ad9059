"""``cloudypoints card``: a model card (Markdown) from evaluation results and a training run."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def card(
    eval_dirs: Sequence[Path],
    out: Path,
    *,
    train_run: Path | None = None,
    title: str | None = None,
) -> int:
    """Write the card; returns the exit code (0)."""
    from cloudypoints_core.evaluation.model_card import write_model_card

    path = write_model_card(eval_dirs, out, train_run=train_run, title=title)
    log.info("model card: %s", path)
    return 0


def _run(args: argparse.Namespace) -> int:
    return card(
        [Path(p) for p in args.eval],
        Path(args.out),
        train_run=Path(args.train_run) if args.train_run else None,
        title=args.title,
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "card",
        help="write a model card from evaluation results (and the training run)",
        description=(
            "Generate a model card (Markdown) from 'cloudypoints evaluate' folders: model\n"
            "details, intended use and limits, metrics per evaluation (protocol and median\n"
            "scaling stated), distance bands and plots (copied into <card>_assets/ beside the\n"
            "card); with --train-run also the training data, command, configuration, run\n"
            "summary and library versions."
        ),
        epilog=(
            "example:\n"
            "  cloudypoints card --eval ev/cs --eval ev/synth --train-run runs/cs_001 "
            "--out models/cs/MODEL_CARD.md"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--eval",
        required=True,
        action="append",
        help="folder written by 'cloudypoints evaluate' (repeat for several)",
    )
    parser.add_argument("--train-run", help="training run folder written by 'cloudypoints train'")
    parser.add_argument("--out", required=True, help="card file to write, e.g. MODEL_CARD.md")
    parser.add_argument("--title", help="card title (default: the model's name)")
    parser.set_defaults(func=_run)
