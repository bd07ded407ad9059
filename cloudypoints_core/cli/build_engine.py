"""``cloudypoints build-engine``: build and cache a TensorRT engine ahead of time, like trtexec."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from cloudypoints_core.inference.backends.engine_cache import (
    EngineBuildOptions,
    default_cache_dir,
)

log = logging.getLogger(__name__)


def build_engine(
    model: str | Path | None = None,
    *,
    fp32: bool = False,
    workspace_mb: int = 1024,
    cache_dir: str | Path | None = None,
    device: str = "cuda:0",
    rebuild: bool = False,
) -> int:
    """Build (or find in the cache) the engine the tensorrt backend would use; exit code 0.

    The engine is built with ``device`` current (TensorRT builds for the current GPU) and keyed by
    that GPU. Raises DependencyError when TensorRT or cuda-bindings is not installed and
    BackendError when ``device`` is absent (the command exits with code 2).
    """
    from cloudypoints_core.inference.backends.tensorrt_backend import (
        build_cached_engine,
        require_tensorrt,
        resolve_precision,
    )
    from cloudypoints_core.inference.package import load_model_package

    # TensorRT first: without it nothing else here can succeed, and that is the message to give.
    trt = require_tensorrt()
    # The backend's default precision, resolved the same way, so the node finds this engine.
    precision = resolve_precision(trt, "fp32" if fp32 else None)
    options = EngineBuildOptions(precision=precision, workspace_mb=workspace_mb)
    package = load_model_package(model)
    data, path, hit = build_cached_engine(package, device, options, cache_dir, rebuild)
    log.info(
        "engine for %s (%s, %d MiB workspace): %s, %.1f MiB, %s",
        package.spec.name,
        options.precision,
        options.workspace_mb,
        "cache hit" if hit else "built",
        len(data) / 2**20,
        path if path is not None else "kept in memory only (cache not writable)",
    )
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build-engine",
        help="build and cache a TensorRT engine for a model package",
        description=(
            "Build the TensorRT engine the tensorrt backend uses and store it in the engine cache "
            f"(default {default_cache_dir()}), so the first node start is fast. Needs TensorRT 10 "
            "(or 11 with --fp32), cuda-bindings and a CUDA GPU."
        ),
    )
    parser.add_argument("--model", default=None, help="model package folder (default: bundled)")
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="build FP32 (default: FP16 on TensorRT 10, the ONNX's types on 11)",
    )
    parser.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace (MiB)")
    parser.add_argument("--cache-dir", default=None, help="engine cache folder")
    parser.add_argument("--device", default="cuda:0", help="CUDA device to build for")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return build_engine(
        args.model,
        fp32=args.fp32,
        workspace_mb=args.workspace_mb,
        cache_dir=args.cache_dir,
        device=args.device,
        rebuild=args.rebuild,
    )
