"""The shipped default model: a complete package that meets its quality bar on held-out seeds.

Quality bar (SynthCity frames of test seeds >= 1000000, never trained or validated on; ground
truth below 80 m; metric, no median scaling): AbsRel <= 0.12 and delta < 1.25 >= 0.85. Frames
are rendered at the model's input size and run through ONNX Runtime directly, with the
canonical-camera rule applied (depth * fx_at_input / train_fx_px).
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from cloudypoints_core.data.synthcity import render_frame  # noqa: E402
from cloudypoints_core.evaluation.metrics import compute_errors, mean_errors  # noqa: E402
from cloudypoints_core.inference.onnx_meta import read_spec_from_onnx  # noqa: E402
from cloudypoints_core.inference.package import (  # noqa: E402
    default_model_path,
    load_model_package,
)

#: (seed, frame index) pairs: four held-out streets, two points of each drive.
HELD_OUT = [
    (1_000_101, 0),
    (1_000_102, 25),
    (1_000_103, 0),
    (1_000_104, 25),
    (1_000_105, 10),
    (1_000_106, 40),
]


@pytest.fixture(scope="module")
def package():
    return load_model_package(default_model_path())


def test_package_is_complete_and_small(package) -> None:
    root = default_model_path()
    names = {p.name for p in root.iterdir()}
    assert {"spec.yaml", "model.onnx", "model.pt", "MODEL_CARD.md"} <= names
    total = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
    assert total <= 10 * 1024 * 1024
    spec = package.spec
    assert spec.output_kind == "metric_depth" and spec.train_fx_px
    assert read_spec_from_onnx(package.onnx_path) == spec
    card = (root / "MODEL_CARD.md").read_text()
    assert "cloudypoints train" in card and "AbsRel" in card


def test_meets_quality_bar_on_held_out_synthcity(package) -> None:
    spec = package.spec
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    rows = []
    for seed, index in HELD_OUT:
        frame = render_frame(seed, spec.input_width, spec.input_height, index=index)
        x = ((frame.rgb.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None]
        (raw,) = session.run([spec.output_name], {spec.input_name: np.ascontiguousarray(x)})
        depth = raw[0, 0] * spec.output_scale + spec.output_shift
        depth = depth * (frame.intrinsics.fx_px / spec.train_fx_px)
        gt = frame.depth_m
        valid = np.isfinite(gt) & (gt > 1e-3) & (gt < 80.0)
        rows.append(compute_errors(gt[valid], np.clip(depth[valid], 1e-3, 80.0)))
    metrics = mean_errors(rows)
    assert metrics["abs_rel"] <= 0.12, metrics
    assert metrics["a1"] >= 0.85, metrics
