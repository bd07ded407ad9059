"""Evaluation of a relative model whose ground fit fails on an image: that image has no metres,
so it is scored as a failure at the protocol's far edge, like a NaN prediction (never left out,
never unscaled depth taken as metres), stated in the notes; the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudypoints_core.errors import ScaleError
from cloudypoints_core.evaluation.evaluate import EvalSource, run_evaluation
from cloudypoints_core.evaluation.protocols import SYNTHCITY_PROTOCOL
from cloudypoints_core.geometry import Intrinsics


class _Result:
    def __init__(self, depth_m: np.ndarray) -> None:
        self.depth_m = depth_m
        self.scale_method = "ground_plane"


def test_an_image_without_metric_scale_is_scored_as_a_failure(tmp_path: Path) -> None:
    gt = np.full((8, 16), 10.0, dtype=np.float32)
    intr = Intrinsics(10.0, 10.0, 8.0, 4.0, 16, 8)

    def get(index: int) -> dict[str, Any]:
        rgb = np.full((8, 16, 3), index, np.uint8)
        return {"rgb": rgb, "depth_m": gt, "intrinsics": intr, "key": f"f{index}"}

    class Relative:
        def predict(self, rgb: np.ndarray, intrinsics: Intrinsics, **_: Any) -> _Result:
            if rgb[0, 0, 0] == 1:
                raise ScaleError("ground-plane fit failed (a wall in front)")
            return _Result(np.full(rgb.shape[:2], 12.0, dtype=np.float32))

    results = run_evaluation(
        Relative(),
        EvalSource("toy", 3, get),
        SYNTHCITY_PROTOCOL,
        tmp_path,
        progress=False,
        model={"name": "relative"},
    )
    # Two images at 12 m against 10 m (AbsRel 0.2) and one scored at the far edge, 80 m (7.0).
    far = SYNTHCITY_PROTOCOL.max_depth_m
    assert results["metrics"]["abs_rel"] == pytest.approx((0.2 + 0.2 + (far - 10.0) / 10.0) / 3)
    assert results["n_images"] == 3
    assert results["coverage_mean"] == pytest.approx(2 / 3)
    assert results["scale_methods"] == {"ground_plane": 2, "no_metric_scale": 1}
    assert any("f1: no metric scale" in n and "a wall" in n for n in results["notes"])
