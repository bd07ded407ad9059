"""Benchmark: the facade's overhead per preset (resize policy) over the bare network at its size.

For every preset a stand-in network with the real export's signature and input size, with
deterministic or random weights (timing does not depend on them), is imported with
``import_model`` like a downloaded file:

- ``midas-v21-small``: the real network, :class:`cloudypoints_core.models.midas_small.
  MidasNetSmall` (EfficientNet-Lite3 + RefineNet decoder, 21.3 M parameters, the official layer
  structure; 4.6 GMACs at 256x256) with deterministic weights, ImageNet normalisation inside the
  graph as in the release, exported with ``torch.onnx.export(..., dynamo=False)`` (its last bias
  raised so that the output is positive, as a real model's is away from the sky). Faithful in
  cost: its share is the real one.
- the ViT families: the encoder of the smallest real model (DINOv2 ViT-S/14: 384 wide, 12
  blocks) with a 1x1 head upsampled to the input (plus a ``sky`` head where the preset has one),
  random weights. Cheaper than the real networks (no DPT decoder; Depth Anything 3 metric is a
  ViT-L), so their shares are upper bounds.
- ``keep_aspect_crop``: no preset uses it, so the Depth Anything V2 relative stand-in is also
  imported under a bench-only copy of its preset with ``resize_policy: keep_aspect_crop``
  (row ``depth-anything-v2-relative`` with policy ``keep_aspect_crop``).
- ``MiDaS small+sky``: the same MiDaS network whose output is 0 on the top third of the image
  (infinitely far, as MiDaS says of the sky): the depth has invalid pixels, so the resize back to
  the camera takes its NaN-aware path (a second, validity channel), as with a real street image.

Then ``DepthEstimator.predict`` (fitting by the preset's policy: stretch, letterbox, crop, lower
bound; normalisation; network; un-padding; focal rule or fixed scale; range; resize back to the
camera) and the bare ``backend.infer`` (``infer_all`` for presets with mask outputs) of an already
prepared batch run interleaved in one loop, on camera images of 1920x1080, 1242x375 and
1024x512. Goal: the facade adds at most 10 % to the network time, per policy (pad, crop,
lower_bound; stretch too). Besides the interleaved ratio (noisy when other processes share the
cores) each call's own timings give what the facade added over the network it ran, (preprocess +
postprocess) / infer, whose median is the figure judged; the worst per policy is printed last.

ONNX Runtime runs as in the node (``allow_spinning`` off; ``--spinning`` turns it on).

    python benchmarks/bench_presets.py [--repeats 7] [--warmup 3] [--threads 2] [--spinning]
        [--presets ...]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.facade import DepthEstimator
from cloudypoints_core.inference.presets import (
    PRESETS,
    ImportOptions,
    import_model,
    register_preset,
)

GOAL_OVERHEAD = 1.10
CAMERAS = [(1920, 1080), (1242, 375), (1024, 512)]
#: I/O names of the real exports (MiDaS exports unnamed: any single input and output).
SIGNATURES = {
    "depth-anything-v2-relative": ("image", "depth", None),
    "depth-anything-v2-metric": ("image", "depth", None),
    "depth-anything-3-metric": ("image", "depth", "sky"),
    "metric3d-v2": ("image", "pred_depth", None),
    "midas-v21-small": ("x", "y", None),
}
#: Bench-only preset: Depth Anything V2 relative fitted by cropping (no real preset crops).
CROP_PRESET = "depth-anything-v2-relative@crop"
_CROP_BASE = "depth-anything-v2-relative"


#: Bench-only preset: MiDaS small whose output is 0 (infinitely far: sky) on the top third.
SKY_PRESET = "midas-v21-small@sky"
SKY_SHARE = 1.0 / 3.0


def _register_bench_presets() -> None:
    base = PRESETS[_CROP_BASE]
    fields = {**base.spec_fields, "resize_policy": "keep_aspect_crop"}
    register_preset(replace(base, name=CROP_PRESET, spec_fields=fields))
    register_preset(replace(PRESETS["midas-v21-small"], name=SKY_PRESET))


def midas_small_onnx(
    path: Path, width: int, height: int, names: tuple[str, str], sky_share: float = 0.0
) -> Path:
    """The real MiDaS v2.1 small network (deterministic weights) as the release exports it:
    RGB / 255 in, ImageNet normalisation inside the graph, (1, H, W) relative inverse depth out;
    with ``sky_share`` the top rows output 0 (infinitely far: invalid depth, as sky is)."""
    import torch

    from cloudypoints_core.models.midas_small import MidasNetSmall
    from cloudypoints_core.models.weights import deterministic_state_dict, load_strict

    net = MidasNetSmall()
    load_strict(net, deterministic_state_dict(net), "deterministic weights")
    # With these weights 90 % of the output is 0 (infinitely far after the ReLU), which would
    # time the post-processing of a mostly invalid image; a real model's output is positive
    # away from the sky. The last layer's bias makes it so (no change in cost).
    last = net.scratch.output_conv[4]
    if not (isinstance(last, torch.nn.Conv2d) and last.bias is not None):
        raise TypeError(f"expected MiDaS small's last 1x1 convolution, found {last}")
    with torch.no_grad():
        last.bias.fill_(1.0)

    class Released(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            # Plain tensors, traced as constants of the graph.
            self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            self.keep = torch.ones(1, height, width)
            self.keep[:, : int(round(sky_share * height))] = 0.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.net((x - self.mean) / self.std)
            return out.squeeze(1) * self.keep if sky_share else out.squeeze(1)

    with torch.no_grad():
        torch.onnx.export(
            Released().eval(),
            (torch.zeros(1, 3, height, width),),
            str(path),
            input_names=[names[0]],
            output_names=[names[1]],
            opset_version=17,
            dynamo=False,
        )
    return path


def stand_in_onnx(path: Path, preset_name: str) -> tuple[Path, str]:
    """Export the stand-in network for ``preset_name`` at its default input size; returns the
    file and a description of the stand-in (module docstring)."""
    import torch
    from torch import nn

    width, height = PRESETS[preset_name].default_input_size
    input_name, output_name, sky = SIGNATURES[preset_name.split("@")[0]]
    if preset_name in ("midas-v21-small", SKY_PRESET):
        share = SKY_SHARE if preset_name == SKY_PRESET else 0.0
        label = "MiDaS small+sky" if share else "MiDaS small"
        return midas_small_onnx(path, width, height, (input_name, output_name), share), label

    class Block(nn.Module):
        """Pre-norm transformer block (attention + MLP x4), written out so it exports."""

        def __init__(self, dim: int = 384, heads: int = 6) -> None:
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)
            x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
            return x + self.mlp(self.norm2(x))

    class StandIn(nn.Module):
        """ViT-S/14 encoder (DINOv2-S sizes: 384 wide, 12 blocks, 6 heads) and a 1x1 head
        upsampled to the input."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 384, 14, stride=14)
            self.body = nn.Sequential(*[Block() for _ in range(12)])
            self.head = nn.Conv2d(384, 2 if sky else 1, 1)

        def forward(self, x: torch.Tensor) -> Any:
            y = self.stem(x)
            b, c, gh, gw = y.shape
            tokens = self.body(y.flatten(2).transpose(1, 2))
            y = tokens.transpose(1, 2).reshape(b, c, gh, gw)
            y = nn.functional.interpolate(self.head(y), size=(height, width), mode="bilinear")
            depth = nn.functional.softplus(y[:, :1]) + 1.0
            if sky:
                return depth, torch.sigmoid(y[:, 1:2])
            return depth

    model = StandIn().eval()
    outputs = [output_name] + ([sky] if sky else [])
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, height, width),),
            str(path),
            input_names=[input_name],
            output_names=outputs,
            opset_version=17,
            dynamo=False,
        )
    return path, "ViT-S/14 encoder"


def bench_preset(
    preset_name: str,
    root: Path,
    repeats: int,
    threads: int,
    warmup: int = 3,
    spinning: bool = False,
) -> list[dict[str, Any]]:
    preset = PRESETS[preset_name]
    weights, stand_in = stand_in_onnx(root / f"{preset_name}.onnx", preset_name)
    package = import_model(
        preset_name,
        weights,
        root / preset_name,
        ImportOptions(max_depth_m=80.0 if preset.required_options else None),
    )
    relative = preset.spec_fields["output_kind"] != "metric_depth"
    # The node's setting (depth_node): with spinning, ONNX Runtime's idle threads keep the
    # cores busy right after each run and slow down the post-processing that follows.
    options: dict[str, Any] = {"num_threads": threads, "allow_spinning": spinning}
    if relative:
        options.update(scale_method="fixed", fixed_scale=1.0)
    rows = []
    rng = np.random.default_rng(0)
    with DepthEstimator.from_package(package, backend="onnxruntime", **options) as est:
        masked = bool(est.spec.mask_outputs)
        for w, h in CAMERAS:
            intr = Intrinsics(0.9 * w, 0.9 * w, w / 2 - 0.5, h / 2 - 0.5, w, h)
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            batch = est._preprocess(rgb, intr)[0].copy()  # noqa: SLF001 - the bare input
            bare_fn = est.backend.infer_all if masked else est.backend.infer
            for _ in range(warmup):
                bare_fn(batch)
                est.predict(rgb, intr)
            bare, full, pre, post, share = [], [], [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                bare_fn(batch)
                t1 = time.perf_counter()
                result = est.predict(rgb, intr)
                t2 = time.perf_counter()
                bare.append(t1 - t0)
                full.append(t2 - t1)
                times = result.timings
                pre.append(times["preprocess"])
                post.append(times["postprocess"])
                # Within one call: everything the facade adds over the network it ran.
                share.append((times["preprocess"] + times["postprocess"]) / times["infer"])
            rows.append(
                {
                    "preset": preset_name.split("@")[0],
                    "stand_in": stand_in,
                    "policy": est.spec.fit_policy,
                    "net": f"{est.spec.input_width}x{est.spec.input_height}",
                    "camera": f"{w}x{h}",
                    "bare": statistics.median(bare) * 1e3,
                    "facade": statistics.median(full) * 1e3,
                    "pre": statistics.median(pre),
                    "post": statistics.median(post),
                    "share": statistics.median(share),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="let ONNX Runtime threads spin between runs (default off, as in the node)",
    )
    parser.add_argument(
        "--presets", nargs="*", default=[*sorted(SIGNATURES), CROP_PRESET, SKY_PRESET]
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    _register_bench_presets()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tqdm(args.presets, desc="presets", unit="preset"):
            rows += bench_preset(
                name, Path(tmp), args.repeats, args.threads, args.warmup, args.spinning
            )
    print(  # noqa: T201 - a benchmark's output
        f"{'preset':27s} {'stand-in':16s} {'policy':16s} {'network':8s} {'camera':9s} "
        f"{'bare ms':>8s} {'facade':>8s} {'pre':>5s} {'post':>5s} {'ratio':>6s} {'added':>6s}"
    )
    worst: dict[str, float] = {}
    for r in rows:
        worst[r["policy"]] = max(worst.get(r["policy"], 0.0), r["share"])
        print(  # noqa: T201
            f"{r['preset']:27s} {r['stand_in']:16s} {r['policy']:16s} {r['net']:8s} "
            f"{r['camera']:9s} {r['bare']:8.1f} {r['facade']:8.1f} {r['pre']:5.1f} "
            f"{r['post']:5.1f} {r['facade'] / r['bare']:6.3f} {r['share']:6.1%}"
        )
    goal = GOAL_OVERHEAD - 1.0
    print(  # noqa: T201
        "\nratio: median facade time / median bare network time, interleaved (noisy on a loaded "
        "machine); added: median of (preprocess + postprocess) / network time within each call."
        "\nstand-ins: MiDaS small is the real network (faithful in cost); the ViT-S/14 encoders "
        "are cheaper than the real networks (their shares are upper bounds)."
    )
    for policy in sorted(worst):
        verdict = "meets" if worst[policy] <= goal else "misses"
        print(  # noqa: T201
            f"{policy:16s} worst added {worst[policy]:6.1%}: {verdict} the goal of {goal:.0%}"
        )
    overall = "met" if all(v <= goal for v in worst.values()) else "NOT met"
    print(f"goal (added <= {goal:.0%} for every policy): {overall}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
