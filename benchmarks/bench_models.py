"""Cost and ONNX Runtime speed of the registered depth networks, measured side by side in one run.

    python benchmarks/bench_models.py [--runs 30] [--threads 2] [--no-da2]

For each network configuration: parameters, GFLOPs (multiply-accumulates, attention products of
the ViTs included) and the median ONNX Runtime latency / frames per second on this CPU at batch
1, plus the same for the shipped default model package; Depth Anything V2 Small and Base (our
implementation, exported at a fixed size the way ``import-model`` does) at 518x266 and 364x182.
The last column is each network's latency relative to the default model's (a ratio measured in
the same run, so it is meaningful on a shared machine where absolute numbers drift). Rounds are
interleaved (every model once per round) so load changes hit all alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (0: auto)")
    parser.add_argument(
        "--no-da2", action="store_true", help="leave out Depth Anything V2 (slow on a CPU)"
    )
    args = parser.parse_args()

    import onnxruntime as ort

    from cloudypoints_core.inference.export import export_onnx
    from cloudypoints_core.inference.package import load_model_package
    from cloudypoints_core.inference.spec import ModelSpec
    from cloudypoints_core.models import count_flops, create_model, model_info

    cases = [
        ("mobile_unet w0.5", "mobile_unet", {"width_mult": 0.5}, 384, 192),
        ("mobile_unet w0.5", "mobile_unet", {"width_mult": 0.5}, 512, 256),
        ("mobile_unet w1.0", "mobile_unet", {}, 384, 192),
        ("mobile_unet w1.0", "mobile_unet", {}, 512, 256),
        ("resnet_unet", "resnet_unet", {}, 512, 256),
    ]
    if not args.no_da2:
        cases += [
            (f"depth_anything_v2 {enc} ({size})", "depth_anything_v2", {"encoder": enc}, w, h)
            for enc, size in (("vits", "Small"), ("vitb", "Base"))
            for w, h in ((518, 266), (364, 182))
        ]
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    sessions = []
    cost_of: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        default = load_model_package(None)
        spec = default.spec
        model = create_model(spec.architecture, **dict(spec.arch_config))
        cost = count_flops(model, spec.input_height, spec.input_width)
        sessions.append(
            (
                f"DEFAULT {spec.name}",
                spec.input_width,
                spec.input_height,
                cost,
                ort.InferenceSession(
                    str(default.onnx_path), options, providers=["CPUExecutionProvider"]
                ),
                spec,
            )
        )
        for label, arch, cfg, width, height in cases:
            net = create_model(arch, **cfg).eval()
            case_spec = ModelSpec(
                name=label.replace(" ", "-").replace("(", "").replace(")", ""),
                architecture=arch,
                arch_config=cfg,
                input_width=width,
                input_height=height,
                train_fx_px=1.0,
                input_multiple=model_info(arch).input_multiple,
            )
            cost_of[label, width] = count_flops(net, height, width)
            path = export_onnx(net, case_spec, Path(tmp) / f"{case_spec.name}-{width}.onnx")
            del net  # the session holds its own copy; keep memory down for the ViTs
            sessions.append(
                (
                    label,
                    width,
                    height,
                    cost_of[label, width],
                    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                    case_spec,
                )
            )
        rng = np.random.default_rng(0)
        inputs = [
            rng.standard_normal((1, 3, h, w)).astype(np.float32) for _, w, h, _, _, _ in sessions
        ]
        for (_, _, _, _, sess, sp), x in zip(sessions, inputs, strict=True):
            for _ in range(3):
                sess.run(None, {sp.input_name: x})
        times = [[] for _ in sessions]
        for _ in range(args.runs):
            for k, ((_, _, _, _, sess, sp), x) in enumerate(zip(sessions, inputs, strict=True)):
                t0 = time.perf_counter()
                sess.run(None, {sp.input_name: x})
                times[k].append(time.perf_counter() - t0)
    ref = float(np.median(times[0]))
    print(
        f"ONNX Runtime {ort.__version__}, CPU, {args.threads or 'auto'} threads, batch 1, median "
        f"of {args.runs} interleaved runs"
    )
    print(
        f"{'network':42s} {'input':>9s} {'params':>8s} {'GFLOPs':>7s} {'ms':>7s} {'fps':>7s}"
        f" {'x default':>9s}"
    )
    for (label, width, height, cost, _, _), t in zip(sessions, times, strict=True):
        med = float(np.median(t))
        print(
            f"{label:42s} {width:4d}x{height:<4d} {cost['params_m']:7.2f}M "
            f"{cost['gflops']:7.3f} {med * 1e3:7.1f} {1 / med:7.1f} {med / ref:9.2f}"
        )


if __name__ == "__main__":
    main()
