"""``cloudypoints train``: train a depth network from a YAML config (single process or torchrun).

    cloudypoints train --config cloudypoints_core/configs/synthcity_default.yaml --out runs/x \
        train.epochs=3 optim.lr=0.001
    cloudypoints train --resume runs/x/checkpoints/last.pt
    torchrun --nproc_per_node 2 -m cloudypoints_core.cli train --config ...
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("cloudypoints.train")


def run_train(
    config: Path | str | None,
    *,
    out: Path | None = None,
    resume: Path | None = None,
    overrides: Sequence[str] = (),
    command: str | None = None,
) -> int:
    """Train; returns 0 when the model package has been written."""
    from cloudypoints_core.errors import ConfigError
    from cloudypoints_core.training.config import TrainingConfig, apply_overrides, load_config

    if config is None and resume is None:
        raise ConfigError("give --config (a YAML file or a shipped name) or --resume CHECKPOINT")
    if config is None and resume is not None:
        # Resuming without --config: the checkpoint's own configuration (plus any overrides).
        import yaml

        from cloudypoints_core.training.trainer import load_checkpoint

        saved = yaml.safe_load(load_checkpoint(resume)["config_yaml"])
        cfg = TrainingConfig.from_dict(apply_overrides(saved, overrides), source=str(resume))
    else:
        cfg = load_config(config, overrides)
    from cloudypoints_core.training.trainer import train

    run_dir = train(cfg, out_dir=out, resume=resume, command=command)
    log.info("done: %s", run_dir / "package")
    return 0


def _cmd(args: argparse.Namespace) -> int:
    command = shlex.join(["cloudypoints", *sys.argv[1:]]) if sys.argv else None
    return run_train(
        args.config, out=args.out, resume=args.resume, overrides=args.overrides, command=command
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a depth network from a YAML config",
        description=(
            "Train a depth network. Writes a run folder with checkpoints, metrics.jsonl/csv, "
            "loss curves and a model package (package/) with a MODEL_CARD.md. Overrides such "
            "as train.epochs=3 or data.train.seed_count=100 change single config values."
        ),
    )
    parser.add_argument("--config", help="YAML config file, or a shipped name (synthcity_default)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<time>-<model name>)")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue from (last.pt)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(func=_cmd)
