"""``cloudypoints export``: a training checkpoint -> a model package (ONNX + weights + spec).

    cloudypoints export --checkpoint runs/x/checkpoints/last.pt --out my_model [--which last]

The export is checked: ONNX Runtime and PyTorch must agree on held-out SynthCity frames to
within ``--tolerance`` metres, else the command fails (exit code 1).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("cloudypoints.export")


def run_export(
    checkpoint: Path,
    out: Path,
    *,
    which: str = "best",
    opset: int = 17,
    tolerance_m: float = 1e-3,
    check: bool = True,
) -> int:
    """Write the package of ``checkpoint``'s best (or last) weights to ``out``; 0 on success."""
    from cloudypoints_core.inference.export import export_package, onnx_parity
    from cloudypoints_core.training.trainer import model_from_checkpoint

    model, spec = model_from_checkpoint(checkpoint, which=which)
    folder = export_package(model, spec, out, opset=opset)
    if check:
        diff = onnx_parity(model, folder / str(spec.onnx_file), spec).max_abs
        log.info("ONNX Runtime vs PyTorch: max |difference| %.2e m", diff)
        if not diff <= tolerance_m:
            log.error("export parity check failed: %.3g m > tolerance %.3g m", diff, tolerance_m)
            return 1
    log.info("model package written to %s", folder)
    return 0


def _cmd(args: argparse.Namespace) -> int:
    return run_export(
        args.checkpoint,
        args.out,
        which=args.which,
        opset=args.opset,
        tolerance_m=args.tolerance,
        check=not args.no_check,
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a training checkpoint to a model package (ONNX with the spec embedded)",
        description="Export a checkpoint's network to spec.yaml + model.onnx + model.pt.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="package folder to write")
    parser.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="the best validated weights (default) or the last ones",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest ONNX-vs-PyTorch difference accepted, metres (default 1e-3)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the parity check")
    parser.set_defaults(func=_cmd)
