"""``cloudypoints eda``: analyse Cityscapes or SynthCity and write a Markdown report with plots."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cloudypoints_core.data.cityscapes import ROOT_ENV
from cloudypoints_core.errors import ConfigError

log = logging.getLogger(__name__)

DATASETS = ("cityscapes", "synthcity")
DEFAULT_EDA_SEEDS = "0-19"


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-9"``, ``"1,5,9"`` or ``"0-4,100-104"`` (ranges inclusive)."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ConfigError(
                f"bad seed list {text!r}: expected integers and inclusive ranges like '0-9,20'"
            )
        lo = int(match[1])
        hi = int(match[2]) if match[2] is not None else lo
        if hi < lo:
            raise ConfigError(f"bad seed range {part!r}: the end is below the start")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ConfigError(f"no seeds in {text!r}")
    return list(dict.fromkeys(seeds))


def parse_size(text: str) -> tuple[int, int]:
    """``"512x256"`` -> (512, 256)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise ConfigError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 512x256")
    return int(match[1]), int(match[2])


def eda(
    dataset: str,
    out: Path,
    *,
    root: Path | None = None,
    splits: Sequence[str] | None = None,
    sequence: bool = False,
    seeds: Sequence[int] = (),
    size: tuple[int, int] = (512, 256),
    frames_per_seed: int = 1,
    limit: int | None = None,
    examples: int = 4,
    cap_m: float = 80.0,
    progress: bool = True,
) -> int:
    """Run the analysis; returns the exit code (0)."""
    from cloudypoints_core.evaluation.eda import cityscapes_sources, run_eda, synthcity_sources

    if dataset == "cityscapes":
        if root is None and os.environ.get(ROOT_ENV):
            root = Path(os.environ[ROOT_ENV])
        if root is None:
            raise ConfigError(
                f"--dataset cityscapes needs --root (the folder with leftImg8bit/) or ${ROOT_ENV}"
            )
        sources = cityscapes_sources(root, splits, sequence=sequence, progress=progress)
        title = f"Cityscapes at {root}"
    elif dataset == "synthcity":
        seeds = list(seeds) or parse_seeds(DEFAULT_EDA_SEEDS)
        sources = synthcity_sources(seeds, size[0], size[1], frames_per_seed)
        title = f"SynthCity, {len(seeds)} seeds at {size[0]}x{size[1]}"
    else:
        raise ConfigError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    summary = run_eda(
        sources, out, title=title, limit=limit, n_examples=examples, cap_m=cap_m, progress=progress
    )
    for name, entry in summary["splits"].items():
        depth = entry["depth"]
        log.info(
            "%s: %d frames, valid %.3f, median depth %s m",
            name,
            entry["frames"],
            depth["valid_ratio"],
            f"{depth['percentiles_m']['p50']:.2f}",
        )
    log.info("report: %s", Path(out) / "report.md")
    return 0


def _run(args: argparse.Namespace) -> int:
    return eda(
        args.dataset,
        Path(args.out),
        root=Path(args.root) if args.root else None,
        splits=args.splits,
        sequence=args.sequence,
        seeds=parse_seeds(args.seeds) if args.seeds else (),
        size=parse_size(args.size),
        frames_per_seed=args.frames_per_seed,
        limit=args.limit,
        examples=args.examples,
        cap_m=args.cap,
        progress=not args.no_progress,
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eda",
        help="analyse a data set (counts, validity, depth statistics, calibration, examples)",
        description=(
            "Exploratory analysis of Cityscapes or SynthCity: frames per split and city,\n"
            "valid-pixel ratio, depth histograms and percentiles per split, mean depth per\n"
            "image row, intrinsics and mounting spread (fx, baseline, height, pitch), example\n"
            "RGB/depth pairs. Writes report.md, summary.json and PNG plots into --out. Frames\n"
            "the scan finds broken are listed in the report and skipped."
        ),
        epilog=(
            "examples:\n"
            "  cloudypoints eda --dataset cityscapes --root ~/data/cityscapes --out eda/cs\n"
            "  cloudypoints eda --dataset cityscapes --root R --splits val --limit 100 --out eda\n"
            "  cloudypoints eda --dataset synthcity --seeds 0-19 --size 512x256 --out eda/synth"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument(
        "--root",
        help=f"Cityscapes root (holds leftImg8bit/, disparity/, camera/); default ${ROOT_ENV}",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=("train", "val", "test"),
        help="Cityscapes splits (default: every split present)",
    )
    parser.add_argument(
        "--sequence",
        action="store_true",
        help="analyse leftImg8bit_sequence/disparity_sequence instead",
    )
    parser.add_argument(
        "--seeds", help=f"SynthCity seeds, e.g. 0-19 or 1,5,9 (default {DEFAULT_EDA_SEEDS})"
    )
    parser.add_argument("--size", default="512x256", help="SynthCity frame size WxH (512x256)")
    parser.add_argument("--frames-per-seed", type=int, default=1, help="SynthCity frames per seed")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="read at most N frames per split for the depth statistics",
    )
    parser.add_argument("--examples", type=int, default=4, help="example pairs to draw (4)")
    parser.add_argument(
        "--cap", type=float, default=80.0, help="evaluation depth cap (m) marked in the plots (80)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run)
