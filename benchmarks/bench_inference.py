"""Benchmark: forward time per backend and input size, and the facade's overhead over its backend.

Part 1 runs the same network with ONNX Runtime and PyTorch at several input sizes, side by side,
and prints the median forward time of each and their ratio. Part 2 times the whole
``DepthEstimator.predict`` (preprocess + forward + postprocess) against the bare
``backend.infer`` of an already normalised batch at the model's input size, interleaved in one
loop so both see the same machine load. Goal: the facade adds at most 10 % (ratio <= 1.10) when
the image already has the model's size; the overhead of resizing a larger camera image is shown
beside it.

The network is the bundled default model when present (its architecture with random weights at
the other sizes: timing does not depend on the weights), else the registry's real-time network
(``mobile_unet``, width 0.5, 384x192 like the default model) with random weights. The last line
gives the frames/s of the whole facade at the model's input size (issue goal for the default
model on ONNX Runtime: at least 15).

PyTorch's OpenMP threads degrade badly when other processes compete for the 2 cores (5x slower
with 2 threads than with 1 under load): compare ``--threads 1`` when the machine is busy.

    python benchmarks/bench_inference.py [--repeats 30] [--threads 2] [--sizes 256x128 512x256]
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.backends import create_backend
from cloudypoints_core.inference.facade import DepthEstimator
from cloudypoints_core.inference.package import (
    ModelPackage,
    default_model_path,
    load_model_package,
)
from cloudypoints_core.inference.spec import ModelSpec

GOAL_OVERHEAD = 1.10
FALLBACK_ARCH = "mobile_unet"


def interleaved_median_ms(
    fns: list[Callable[[], object]], repeats: int, warmup: int = 3
) -> list[float]:
    """Median ms of each function, timed in turn within each repeat (same machine load)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    return [statistics.median(bucket) * 1e3 for bucket in times]


def base_spec() -> tuple[ModelSpec, bool]:
    """(spec to benchmark, is it the trained default model?)."""
    if (default_model_path() / "spec.yaml").is_file():
        return load_model_package(None).spec, True
    # The configuration the default model is trained with (see cloudypoints_core.models).
    spec = ModelSpec(
        name=f"{FALLBACK_ARCH}_random",
        architecture=FALLBACK_ARCH,
        arch_config={"width_mult": 0.5},
        input_width=384,
        input_height=192,
        train_fx_px=0.56 * 384,
    )
    return spec, False


def package_at(spec: ModelSpec, width: int, height: int, root: Path) -> ModelPackage:
    """A package of ``spec``'s network at another input size (random weights)."""
    import torch

    from cloudypoints_core.inference.export import export_package
    from cloudypoints_core.models import create_model

    sized = replace(
        spec, name=f"{spec.name}_{width}x{height}", input_width=width, input_height=height
    )
    torch.manual_seed(0)
    network = create_model(spec.architecture, **dict(spec.arch_config)).eval()
    out = root / f"{width}x{height}"
    export_package(network, sized, out)
    return load_model_package(out)


def bench_backends(
    packages: list[ModelPackage], repeats: int, threads: int
) -> list[dict[str, float]]:
    rows = []
    for package in tqdm(packages, desc="backends x sizes", unit="size"):
        width, height = package.spec.input_width, package.spec.input_height
        batch = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
        ort = create_backend("onnxruntime", package, "cpu", {"num_threads": threads})
        tch = create_backend("torch", package, "cpu", {"num_threads": threads})
        ort_ms, torch_ms = interleaved_median_ms(
            [functools.partial(ort.infer, batch), functools.partial(tch.infer, batch)], repeats
        )
        max_diff = float(np.max(np.abs(ort.infer(batch) - tch.infer(batch))))
        rows.append(
            {
                "width": width,
                "height": height,
                "onnxruntime": ort_ms,
                "torch": torch_ms,
                "max_diff": max_diff,
            }
        )
        ort.close()
        tch.close()
    return rows


def bench_facade(
    package_path: Path | None, repeats: int, threads: int, backend: str
) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    with DepthEstimator.from_package(package_path, backend=backend, num_threads=threads) as est:
        w, h = est.input_size
        rng = np.random.default_rng(1)
        cases = [
            (f"image {w}x{h} (model size)", w, h, "input"),
            (f"camera {2 * w}x{2 * h}, depth at model size", 2 * w, 2 * h, "model"),
            (f"camera {2 * w}x{2 * h}, depth at input size", 2 * w, 2 * h, "input"),
        ]
        for label, iw, ih, resolution in tqdm(cases, desc="facade vs bare", unit="case"):
            intr = Intrinsics(0.6 * iw, 0.6 * iw, iw / 2 - 0.5, ih / 2 - 0.5, iw, ih)
            rgb = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
            batch = est._preprocess(rgb, intr)[0].copy()  # noqa: SLF001 - the bare backend's input
            for _ in range(3):
                est.backend.infer(batch)
                est.predict(rgb, intr, output_resolution=resolution)
            bare, full, pre, post = [], [], [], []
            # Interleaved: both measurements share the same moments of machine load.
            for _ in range(repeats):
                t0 = time.perf_counter()
                est.backend.infer(batch)
                t1 = time.perf_counter()
                result = est.predict(rgb, intr, output_resolution=resolution)
                t2 = time.perf_counter()
                bare.append(t1 - t0)
                full.append(t2 - t1)
                pre.append(result.timings["preprocess"])
                post.append(result.timings["postprocess"])
            rows.append(
                {
                    "case": label,
                    "bare": statistics.median(bare) * 1e3,
                    "facade": statistics.median(full) * 1e3,
                    "pre": statistics.median(pre),
                    "post": statistics.median(post),
                    "backend": est.backend_name,
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, both backends")
    parser.add_argument("--sizes", nargs="+", default=["256x128", "384x192", "512x256"])
    parser.add_argument("--facade-backend", default="onnxruntime")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    spec, trained = base_spec()
    origin = "bundled default model" if trained else "random weights: no default model yet"
    print(
        f"network: {spec.architecture} {dict(spec.arch_config)} ({origin}); "
        f"threads {args.threads}, median of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        default_size = (spec.input_width, spec.input_height)
        packages = [
            load_model_package(None)
            if trained and size == default_size
            else package_at(spec, size[0], size[1], root)
            for size in sizes
        ]
        rows = bench_backends(packages, args.repeats, args.threads)
        facade_path = None if trained else package_at(spec, *default_size, root).root
        facade_rows = bench_facade(facade_path, args.repeats, args.threads, args.facade_backend)
    print("\nforward time per backend (ms, median; same batch, timed in turn)")
    print(
        f"{'input':>9} | {'onnxruntime':>11} | {'torch':>8} | {'torch/ort':>9} | {'max|diff|':>9}"
    )
    for r in rows:
        size = f"{int(r['width'])}x{int(r['height'])}"
        print(
            f"{size:>9} | {r['onnxruntime']:>11.2f} | {r['torch']:>8.2f} | "
            f"{r['torch'] / r['onnxruntime']:>9.2f} | {r['max_diff']:>9.1e}"
        )
    backend = facade_rows[0]["backend"]
    print(f"\nDepthEstimator.predict vs bare backend.infer on {backend} (ms, median, interleaved)")
    print(f"{'case':<40} | {'bare':>7} | {'facade':>7} | {'pre':>5} | {'post':>5} | {'ratio':>6}")
    for fr in facade_rows:
        ratio = float(fr["facade"]) / float(fr["bare"])
        print(
            f"{fr['case']:<40} | {fr['bare']:>7.2f} | {fr['facade']:>7.2f} | {fr['pre']:>5.2f} | "
            f"{fr['post']:>5.2f} | {ratio:>6.3f}"
        )
    first = facade_rows[0]
    goal = float(first["facade"]) / float(first["bare"])
    verdict = "meets" if goal <= GOAL_OVERHEAD else "MISSES"
    print(
        f"\nfacade overhead at the model's input size: x{goal:.3f} "
        f"({verdict} the goal <= x{GOAL_OVERHEAD}); "
        f"{1000.0 / float(first['facade']):.1f} frames/s end to end on {backend}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
