"""Live replay evaluation end to end over real DDS: player -> depth node -> evaluator processes.

The node runs as in production (``python -m cloudypoints_ros.depth_node``) on a bag written from
SynthCity; the live report must agree, frame by frame, with the offline evaluation of the same
bag (same stamps, same metrics), which proves both paths share the inference and scoring code.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

from cloudypoints_core.bags.evaluate import evaluate_bag  # noqa: E402
from cloudypoints_core.bags.replay import ReplayOptions, run_replay_eval  # noqa: E402
from cloudypoints_core.bags.writer import write_synthcity_bag  # noqa: E402
from cloudypoints_core.evaluation.metrics import METRIC_NAMES  # noqa: E402

N_FRAMES = 8


def _env() -> dict[str, str]:
    # A domain of this test alone (not the one the in-process ROS tests use), localhost only.
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(120 + (os.getpid() + 45) % 90)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def _rows(report: Path) -> dict[int, dict[str, str]]:
    with (report / "per_image.csv").open() as handle:
        return {int(r["stamp_ns"]): r for r in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def far_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose valid range ends at the protocol's far edge (80 m) and that predicts
    beyond it on part of every frame: the node publishes NaN there, offline sees the value."""
    from dataclasses import replace

    from ros_fixtures import make_model_package, test_spec

    spec = replace(
        test_spec("far_net"), input_width=128, input_height=64, min_depth_m=0.5, max_depth_m=80.0
    )
    return make_model_package(tmp_path_factory.mktemp("far_model"), spec=spec, scale=40.0)


@pytest.mark.parametrize(("storage", "fmt"), [("mcap", "raw"), ("sqlite3", "png")])
def test_live_replay_agrees_with_offline(
    far_model_dir: Path, tmp_path: Path, storage: str, fmt: str
) -> None:
    # At the model's own input size (no resize on either path), offline clamps the unmasked
    # depth beyond 80 m to 80 m, live scores the published NaN at the far edge (80 m): the
    # same number for every pixel (see cloudypoints_ros.replay_evaluator).
    model_dir = far_model_dir
    bag = write_synthcity_bag(
        tmp_path / "bag",
        seed=11,
        n_frames=N_FRAMES,
        width=128,
        height=64,
        storage=storage,
        image_format=fmt,
        progress=False,
    )
    offline = evaluate_bag(
        bag, model_dir, tmp_path / "offline", backend="onnxruntime", progress=False, plots=False
    )
    assert offline["frames"]["ok"] == N_FRAMES
    live = run_replay_eval(
        ReplayOptions(
            bag=bag,
            out_dir=tmp_path / "live",
            model=str(model_dir),
            backend="onnxruntime",
            env=_env(),
            startup_timeout_s=60.0,
            plots=False,
        )
    )
    assert live["kind"] == "live"
    assert live["frames_published"] == N_FRAMES  # every input image seen by the evaluator
    assert live["replay"]["player_completed"] is True
    assert live["replay"]["exit_codes"]["node"] == 0, live["replay"]["logs"]["node"]
    scored = live["frames"]["ok"]
    # The node may drop a frame under load (newest wins); most must come through.
    assert scored >= N_FRAMES // 2, json.dumps(live, indent=1)
    assert live["dropped_frames"] == N_FRAMES - scored
    assert live["partial"] is False, live["partial_reasons"]
    assert live["latency"]["end_to_end"]["n"] == scored
    assert 0 < live["latency"]["end_to_end"]["p50_ms"] < 5000
    off_rows, live_rows = _rows(tmp_path / "offline"), _rows(tmp_path / "live")
    assert set(live_rows) <= set(off_rows)
    for stamp, row in live_rows.items():
        assert row["status"] == "ok"
        assert row["n_evaluated"] == off_rows[stamp]["n_evaluated"]
        assert row["coverage"] == off_rows[stamp]["coverage"]
    # The case is the one that matters: predictions beyond the range on every frame.
    assert all(float(r["coverage"]) < 1.0 for r in off_rows.values())
    # Full precision: the node's published depth is the facade's, scored by the same code.
    off_full = {f["stamp_ns"]: f for f in offline["per_frame"]}
    for frame in live["per_frame"]:
        for name in METRIC_NAMES:
            assert frame[name] == pytest.approx(off_full[frame["stamp_ns"]][name], rel=1e-9)
    saved = json.loads((tmp_path / "live" / "results.json").read_text())
    assert saved["replay"]["images_in_bag"] == N_FRAMES


def test_replay_with_a_broken_model_still_reports(tmp_path: Path) -> None:
    bag = write_synthcity_bag(
        tmp_path / "bag", seed=1, n_frames=2, width=64, height=32, progress=False
    )
    bad_model = tmp_path / "no_such_model"
    summary = run_replay_eval(
        ReplayOptions(
            bag=bag,
            out_dir=tmp_path / "live",
            model=str(bad_model),
            env=_env(),
            startup_timeout_s=60.0,
            plots=False,
        )
    )
    assert summary["partial"] is True
    assert any("depth node exited during start-up" in r for r in summary["partial_reasons"])
    assert summary["frames"]["ok"] == 0
    assert (tmp_path / "live" / "results.json").is_file()
    assert (tmp_path / "live" / "logs" / "node.log").read_text().strip()
