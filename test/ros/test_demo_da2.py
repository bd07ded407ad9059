"""Depth Anything V2 end to end: official-format .pth -> import-model -> the node on the demo bag.

The checkpoint holds deterministic (meaningless) weights under the official key names; the test
checks that the imported metric package runs in the node over DDS and that what it publishes
has the camera's shape and the metric head's range, not that the depth is good.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloudypoints_core.cli.demo import DemoConfig, run_demo
from cloudypoints_core.pointcloud import read_ply

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_imported_da2_package_runs_in_the_node_on_the_demo_bag(
    tmp_path: Path, ros_domain: int
) -> None:
    from cloudypoints_core.cli.import_model import run_import
    from cloudypoints_core.models import create_model
    from cloudypoints_core.models.weights import deterministic_state_dict

    model = create_model("depth_anything_v2", encoder="vits", head="metric", max_depth=80.0)
    checkpoint = tmp_path / "depth_anything_v2_metric_vkitti_vits.pth"
    torch.save(deterministic_state_dict(model), checkpoint)
    package = tmp_path / "da2_small_metric"
    assert (
        run_import(
            "depth-anything-v2-metric-outdoor-small", checkpoint, package, input_size=(140, 70)
        )
        == 0
    )

    out = tmp_path / "demo"
    config = DemoConfig(
        out=out,
        model=str(package),
        frames=4,
        width=128,
        height=64,
        domain_id=ros_domain,
        timeout_s=120.0,
        drain_s=1.0,
    )
    assert run_demo(config) == 0
    summary = json.loads((out / "summary.json").read_text())
    frames = summary["frames"]
    assert frames["node_in"] == 4 and 1 <= frames["out"] <= 4
    assert frames["node_errors"] == 0
    assert summary["model"]["backend"] == "onnxruntime"
    plys = sorted((out / "clouds").glob("cloud_frame_*.ply"))
    assert plys
    xyz, _ = read_ply(plys[0])
    # Metres straight from the metric head (focal rule none), inside the spec's valid range.
    assert xyz.shape[0] > 0 and np.isfinite(xyz).all()
    assert 0.1 - 1e-4 <= xyz[:, 2].min() and xyz[:, 2].max() <= 80.0 + 1e-4
