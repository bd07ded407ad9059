"""``cloudypoints evaluate``: a model package on Cityscapes or SynthCity, metrics and report."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloudypoints_core.cli.eda import parse_seeds, parse_size
from cloudypoints_core.data.cityscapes import ROOT_ENV
from cloudypoints_core.errors import ConfigError

log = logging.getLogger(__name__)

DATASETS = ("cityscapes", "synthcity")


def evaluate(
    dataset: str,
    out: Path,
    *,
    model: str | Path | None = None,
    backend: str = "auto",
    device: str = "cpu",
    root: Path | None = None,
    split: str = "test",
    split_file: str | None = "cityscapes_test_1525",
    sequence: bool = False,
    seeds: Sequence[int] | None = None,
    size: tuple[int, int] = (512, 256),
    frames_per_seed: int = 1,
    median_scaling: bool = False,
    model_input: str | None = None,
    limit: int | None = None,
    examples: int = 4,
    skip_bad: bool = False,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
    command: str | None = None,
) -> int:
    """Evaluate ``model`` (a package folder, .onnx, or None for the bundled default)."""
    from cloudypoints_core.evaluation.evaluate import (
        SYNTHCITY_EVAL_SEEDS,
        cityscapes_source,
        model_info,
        run_evaluation,
        synthcity_source,
    )
    from cloudypoints_core.evaluation.protocols import get_protocol
    from cloudypoints_core.inference.facade import DepthEstimator

    options: dict[str, Any] = {"median_scaling": median_scaling}
    if model_input is not None:
        options["model_input"] = model_input
    protocol = get_protocol(dataset, **options)
    if dataset == "cityscapes":
        if root is None and os.environ.get(ROOT_ENV):
            root = Path(os.environ[ROOT_ENV])
        if root is None:
            raise ConfigError(
                f"--dataset cityscapes needs --root (the folder with leftImg8bit/) or ${ROOT_ENV}"
            )
        source = cityscapes_source(
            root,
            split,
            split_file,
            sequence=sequence,
            bad_files="skip" if skip_bad else "raise",
            progress=progress,
        )
    elif dataset == "synthcity":
        source = synthcity_source(seeds or SYNTHCITY_EVAL_SEEDS, size[0], size[1], frames_per_seed)
    else:
        raise ConfigError(f"--dataset must be one of {DATASETS}, got {dataset!r}")
    estimator = DepthEstimator.from_package(
        model, backend=backend, device=device, **(backend_options or {})
    )
    try:
        results = run_evaluation(
            estimator,
            source,
            protocol,
            out,
            model=model_info(estimator, model),
            limit=limit,
            n_examples=examples,
            progress=progress,
            command=command,
        )
    finally:
        estimator.close()
    metrics = results["metrics"]
    print(  # the command's product on stdout, for scripts: one line of the headline metrics
        f"{results['dataset'].get('name')}: {results['n_images']} images, "
        f"median scaling {'on' if protocol.median_scaling else 'off'}: "
        + ", ".join(
            f"{k}={metrics[k]:.4f}"
            for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
        )
    )
    log.info("report: %s", Path(out) / "report.md")
    return 0


def _run(args: argparse.Namespace) -> int:
    split_file = None if str(args.split_file).lower() in ("none", "") else args.split_file
    return evaluate(
        args.dataset,
        Path(args.out),
        model=args.model,
        backend=args.backend,
        device=args.device,
        root=Path(args.root) if args.root else None,
        split=args.split,
        split_file=split_file,
        sequence=args.sequence,
        seeds=parse_seeds(args.seeds) if args.seeds else None,
        size=parse_size(args.size),
        frames_per_seed=args.frames_per_seed,
        median_scaling=args.median_scaling,
        model_input=args.model_input,
        limit=args.limit,
        examples=args.examples,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        backend_options={"num_threads": args.threads} if args.threads else None,
        command=shlex.join(["cloudypoints", *sys.argv[1:]]) if sys.argv else None,
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model package (AbsRel, RMSE, delta...) on Cityscapes or SynthCity",
        description=(
            "Evaluate a model package with any backend under a standard protocol and write\n"
            "results.json, per_image.csv, report.md and plots into --out.\n\n"
            "cityscapes: ManyDepth's protocol: the test split (1525 images), ground truth from\n"
            "  disparity with each frame's calibration, top 75% of the rows kept, rows 256-767\n"
            "  and columns 192-1855 of the 2048x1024 frame (same fractions at other sizes),\n"
            "  depth in (1e-3, 80) m, prediction clamped to that range, metrics per image then\n"
            "  averaged, errors by distance band (0-10, 10-20, 20-40, 40-80 m).\n"
            "synthcity: held-out seeds (>= 1000000), exact depth, sky excluded, 80 m cap,\n"
            "  whole frame.\n"
            "--median-scaling rescales each prediction by median(gt)/median(pred) first, for\n"
            "scale-ambiguous models; the report says so."
        ),
        epilog=(
            "examples:\n"
            "  cloudypoints evaluate --model models/cs --dataset cityscapes --root R --out ev/cs\n"
            "  cloudypoints evaluate --model m.onnx --dataset cityscapes --root R --median-scaling"
            " --out ev/ms\n"
            "  cloudypoints evaluate --dataset synthcity --seeds 1000000-1000019 --out ev/synth"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", default=None, help="model package folder or .onnx (default: the bundled model)"
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument(
        "--backend",
        default="auto",
        help="inference backend: auto, onnxruntime, torch, tensorrt (auto)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the backend")
    parser.add_argument(
        "--median-scaling",
        action="store_true",
        help="per-image median scaling (for scale-ambiguous models; stated in the report)",
    )
    parser.add_argument(
        "--model-input",
        choices=("auto", "full", "above_hood"),
        default=None,
        help="what the network sees on Cityscapes: the full frame or the rows "
        "above the hood (auto: the one matching the model's aspect ratio)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate at most N frames, evenly spread (quick checks)",
    )
    parser.add_argument("--examples", type=int, default=4, help="example rows in the plot (4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    cs = parser.add_argument_group("Cityscapes")
    cs.add_argument(
        "--root",
        help=f"Cityscapes root (holds leftImg8bit/, disparity/, camera/); default ${ROOT_ENV}",
    )
    cs.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="official split folder (test)",
    )
    cs.add_argument(
        "--split-file",
        default="cityscapes_test_1525",
        help="split file path or bundled name; 'none' for every frame of --split "
        "(cityscapes_test_1525)",
    )
    cs.add_argument(
        "--sequence", action="store_true", help="evaluate on the *_sequence folders instead"
    )
    cs.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip frames with missing/unreadable files (listed in the report) instead of failing",
    )
    sc = parser.add_argument_group("SynthCity")
    sc.add_argument("--seeds", help="held-out seeds, e.g. 1000000-1000019 (that is the default)")
    sc.add_argument("--size", default="512x256", help="frame size WxH (512x256)")
    sc.add_argument("--frames-per-seed", type=int, default=1, help="frames per seed (1)")
    parser.set_defaults(func=_run)
