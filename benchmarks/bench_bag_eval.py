"""Benchmark: offline bag evaluation (read + decode + inference + metrics) against inference alone.

Writes a SynthCity bag (raw rgb8 and JPEG variants), then, interleaved in each repeat so all see
the same machine load, times (a) inference alone over the bag's frames already decoded in memory
and (b) ``evaluate_bag`` over the same bag (reading, decoding, matching, inference, scoring; no
report files), each with two sets of models: ONNX Runtime's defaults (one model whose intra-op
threads busy-wait: the fastest a single caller of ``DepthEstimator.predict`` gets) and what
``evaluate_bag`` loads by itself (on a 2-core CPU two models on one thread each, without
busy-waiting, inferring consecutive frames at once). The goal (the evaluation adds at most 15 %)
is judged against the first, inference alone as a caller gets it; the second comparison, the
same models and parallelism with and without reading and scoring, shows what reading and
scoring themselves cost. Wall-clock time and CPU time of this process (all threads). The report
files (CSV, JSON, plots) are a one-off cost at the end, timed separately. Also times
``compute_errors`` against the textbook expressions it replaced, on one frame's pixels.

The network is the bundled default model when present, else the registry's real-time network
(``mobile_unet``, 512x256) with random weights (timing does not depend on the weights).

    python benchmarks/bench_bag_eval.py [--frames 30] [--width 640] [--height 320] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.bags.evaluate import evaluate_bag, score_frame
from cloudypoints_core.bags.reader import read_frames
from cloudypoints_core.bags.writer import write_synthcity_bag
from cloudypoints_core.evaluation.metrics import compute_errors
from cloudypoints_core.inference.facade import DepthEstimator
from cloudypoints_core.inference.package import default_model_path

GOAL_OVERHEAD = 0.15
FALLBACK_ARCH = "mobile_unet"


def model_package(root: Path) -> tuple[Path | None, str]:
    """(package path or None for the default, description)."""
    if (default_model_path() / "spec.yaml").is_file():
        return None, "bundled default model"
    import torch

    from cloudypoints_core.inference.export import export_package
    from cloudypoints_core.inference.spec import ModelSpec
    from cloudypoints_core.models import create_model

    spec = ModelSpec(
        name=f"{FALLBACK_ARCH}_random",
        architecture=FALLBACK_ARCH,
        arch_config={},
        input_width=512,
        input_height=256,
        train_fx_px=0.56 * 512,
    )
    torch.manual_seed(0)
    network = create_model(spec.architecture, **dict(spec.arch_config)).eval()
    out = root / "model"
    export_package(network, spec, out)
    return out, f"{FALLBACK_ARCH} 512x256, random weights (no default model yet)"


def textbook_errors(
    gt: npt.NDArray[np.float64], pred: npt.NDArray[np.float64]
) -> dict[str, float]:
    """monodepth2's expressions, one temporary per term (what compute_errors computed before)."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean(((gt - pred) ** 2) / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def bench_metrics(bag: Path, est: DepthEstimator, repeats: int = 30) -> None:
    """compute_errors and score_frame on one frame against the textbook expressions."""
    frame = next(iter(read_frames(bag)))
    gt = frame.depth_gt_m
    if gt is None:
        return
    pred = est.predict(frame.rgb, frame.intrinsics).depth_m
    valid = np.isfinite(gt) & (gt > 1e-3) & (gt < 80.0) & np.isfinite(pred) & (pred > 0)
    g = gt[valid].astype(np.float64)
    p = np.clip(pred[valid].astype(np.float64), 1e-3, 80.0)
    times = {}
    for name, fn in (
        ("textbook expressions", lambda: textbook_errors(g, p)),
        ("compute_errors", lambda: compute_errors(g, p)),
        ("score_frame (mask + metrics)", lambda: score_frame(gt, pred)),
    ):
        fn()
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        times[name] = statistics.median(runs) * 1e3
    ref, got = textbook_errors(g, p), compute_errors(g, p)
    worst = max(abs(got[k] - ref[k]) / abs(ref[k]) for k in ref if ref[k])
    print(
        f"metrics of one frame ({g.size} pixels, median ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        + f"; largest relative difference to the textbook values {worst:.1e}"
    )


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


Models = list[DepthEstimator]


def bench(bag: Path, configs: dict[str, Models], repeats: int) -> dict[str, float]:
    frames = list(read_frames(bag))
    n = len(frames)

    def alone(models: Models) -> None:
        """Inference only, over the frames in memory; several models infer frames in
        parallel threads (as evaluate_bag's workers do)."""
        if len(models) == 1:
            for frame in frames:
                models[0].predict(frame.rgb, frame.intrinsics, output_resolution="input")
            return
        from concurrent.futures import ThreadPoolExecutor

        def run(k: int) -> None:
            for frame in frames[k :: len(models)]:
                models[k].predict(frame.rgb, frame.intrinsics, output_resolution="input")

        with ThreadPoolExecutor(len(models)) as pool:
            list(pool.map(run, range(len(models))))

    summary: dict[str, Any] = {}

    def evaluate(models: Models) -> None:
        summary.update(evaluate_bag(bag, estimator=models, progress=False, plots=False))

    # Warm-up: first calls pay for allocations and lazy initialisation.
    for models in configs.values():
        alone(models)
        evaluate_bag(bag, estimator=models, progress=False, plots=False, max_frames=3)
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for _ in range(repeats):
        for label, models in configs.items():
            for kind, fn in (("alone", alone), ("eval", evaluate)):
                w, c = _time(lambda f=fn, m=models: f(m))  # type: ignore[misc]
                wall.setdefault(f"{kind} {label}", []).append(w)
                cpu.setdefault(f"{kind} {label}", []).append(c)
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    lat = summary["latency"]
    return {
        "frames": n,
        "alone_fps": n / med_wall["alone defaults"],
        "eval_fps": n / med_wall["eval own"],
        # Against inference alone as a caller gets it: one model, ONNX Runtime's defaults ...
        "overhead": med_wall["eval own"] / med_wall["alone defaults"] - 1.0,
        "cpu_overhead": med_cpu["eval own"] / med_cpu["alone defaults"] - 1.0,
        # ... and against inference alone with the evaluation's own models and parallelism.
        "overhead_same": med_wall["eval own"] / med_wall["alone own"] - 1.0,
        "cpu_overhead_same": med_cpu["eval own"] / med_cpu["alone own"] - 1.0,
        "alone_own_fps": n / med_wall["alone own"],
        "eval_default_overhead": med_wall["eval defaults"] / med_wall["alone defaults"] - 1.0,
        "read_ms": lat["read"]["mean_ms"],
        "infer_ms": lat["inference"]["mean_ms"],
        "metrics_ms": lat["metrics"]["mean_ms"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", nargs="+", default=["raw", "jpeg"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        package, what = model_package(root)
        cores = os.cpu_count() or 1
        workers = min(2, cores)
        configs: dict[str, Models] = {
            "defaults": [
                DepthEstimator.from_package(
                    package, backend="onnxruntime", num_threads=args.threads
                )
            ],
            # What evaluate_bag loads by itself on this machine (see _load_estimators).
            "own": [
                DepthEstimator.from_package(
                    package,
                    backend="onnxruntime",
                    num_threads=max(1, cores // workers),
                    allow_spinning=False,
                )
                for _ in range(workers)
            ],
        }
        print(
            f"model: {what}, backend onnxruntime; inference alone: one model, {args.threads} "
            f"threads (ONNX Runtime's defaults); evaluation: {workers} model(s) on "
            f"{max(1, cores // workers)} thread(s) each, as evaluate_bag loads them; bag: "
            f"SynthCity {args.frames} frames {args.width}x{args.height}, mcap; medians of "
            f"{args.repeats}"
        )
        print(
            f"{'images':7s} {'alone f/s':>9s} {'eval f/s':>9s} {'wall +':>7s} {'CPU +':>7s} "
            f"{'alone, eval models f/s':>23s} {'wall +':>7s} {'CPU +':>7s} "
            f"{'eval w/ defaults +':>19s} {'read ms':>8s} {'infer ms':>8s} {'metric ms':>9s}"
        )
        worst = worst_cpu = 0.0
        first_bag: Path | None = None
        for fmt in args.formats:
            bag = write_synthcity_bag(
                root / f"bag_{fmt}",
                seed=0,
                n_frames=args.frames,
                width=args.width,
                height=args.height,
                image_format=fmt,
                progress=False,
            )
            first_bag = first_bag or bag
            r = bench(bag, configs, args.repeats)
            worst = max(worst, r["overhead"])
            worst_cpu = max(worst_cpu, r["cpu_overhead"])
            print(
                f"{fmt:7s} {r['alone_fps']:9.2f} {r['eval_fps']:9.2f} {r['overhead']:7.1%} "
                f"{r['cpu_overhead']:7.1%} {r['alone_own_fps']:23.2f} {r['overhead_same']:7.1%} "
                f"{r['cpu_overhead_same']:7.1%} {r['eval_default_overhead']:19.1%} "
                f"{r['read_ms']:8.2f} {r['infer_ms']:8.2f} {r['metrics_ms']:9.2f}"
            )
        if first_bag is not None:
            bench_metrics(first_bag, configs["own"][0])
        t0 = time.perf_counter()
        evaluate_bag(
            root / f"bag_{args.formats[0]}",
            estimator=configs["own"],
            out_dir=root / "report",
            progress=False,
            plots=True,
        )
        report_s = time.perf_counter() - t0
        print(f"one full run with report files and plots ({args.formats[0]}): {report_s:.2f} s")
        for label, value in (("wall-clock", worst), ("CPU", worst_cpu)):
            verdict = "meets" if value <= GOAL_OVERHEAD else "MISSES"
            print(
                f"worst {label} overhead against inference alone {value:.1%}: "
                f"{verdict} the goal of {GOAL_OVERHEAD:.0%}"
            )
        for models in configs.values():
            for est in models:
                est.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
