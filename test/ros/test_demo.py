"""The demo end to end: SynthCity bag -> player -> depth node -> recorder -> report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloudypoints_core.cli.demo import DemoConfig, run_demo
from cloudypoints_core.errors import CloudyPointsError, ConfigError
from cloudypoints_core.pointcloud import read_ply

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_runs_the_node_and_writes_the_report(
    tmp_path: Path, model_dir: Path, ros_domain: int
) -> None:
    out = tmp_path / "demo"
    config = DemoConfig(
        out=out,
        model=str(model_dir),
        frames=8,
        width=128,
        height=64,
        domain_id=ros_domain,
        timeout_s=90.0,
        drain_s=1.0,
    )
    assert run_demo(config) == 0
    summary = json.loads((out / "summary.json").read_text())
    frames = summary["frames"]
    assert frames["published"] == 8
    # Reliable replay: every frame reaches the node; each is either served or dropped.
    assert frames["node_in"] == 8 and frames["lost_in_transport"] == 0
    assert 1 <= frames["out"] == frames["node_out"] <= 8
    assert frames["node_in"] == frames["node_out"] + frames["node_dropped"] + frames["node_errors"]
    assert summary["model"]["backend"] == "onnxruntime"
    assert summary["evaluation"]["frames_scored"] == frames["out"]
    err = summary["depth_error"]
    assert 0 < err["abs_rel"] and 0 <= err["a1"] <= err["a2"] <= err["a3"] <= 1
    node_latency = summary["latency_ms"]["node_stamp_to_publish"]
    assert 0 < node_latency["p50"] <= node_latency["p99"] < 10_000
    assert summary["latency_ms"]["end_to_end"]["n"] == frames["out"]

    assert len(list((out / "depth").glob("frame_*.png"))) == frames["out"]
    plys = sorted((out / "clouds").glob("cloud_frame_*.ply"))
    assert 1 <= len(plys) <= 3
    xyz, rgb = read_ply(plys[0])
    # The test model's valid range is 2..20 m: no point outside it, never a wall at the limit.
    assert xyz.shape[0] > 0 and rgb is not None
    assert 2.0 - 1e-4 <= xyz[:, 2].min() and xyz[:, 2].max() <= 20.0 + 1e-4
    assert np.isfinite(xyz).all()
    assert (out / "cloud_views.png").stat().st_size > 10_000
    assert "AbsRel" in (out / "summary.md").read_text()
    assert {p.name for p in (out / "logs").iterdir()} == {"node.log", "player.log", "recorder.log"}
    assert not list(out.rglob(".*tmp*"))


def test_demo_refuses_a_missing_model_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(CloudyPointsError, match="cannot use model"):
        run_demo(DemoConfig(out=tmp_path / "demo", model=str(tmp_path / "nothing")))
    assert not (tmp_path / "demo").exists()
    with pytest.raises(ConfigError, match="frames"):
        DemoConfig(frames=0)
