"""Metric scale from the ground plane and the camera height, on analytic and SynthCity scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from inference_fixtures import plane_scene

from cloudypoints_core.data.synthcity import render_frame
from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.scale import (
    GroundPlaneConfig,
    fit_ground_plane,
    ground_plane_scale,
    up_vector,
)

CAMERA = Intrinsics(fx_px=180.0, fy_px=180.0, cx_px=161.3, cy_px=92.4, width=320, height=192)


def _relative(depth_m: np.ndarray, unknown_scale: float) -> np.ndarray:
    """What a relative model would give: inverse depth times an unknown factor, inverted."""
    with np.errstate(divide="ignore"):
        inverse = unknown_scale / depth_m  # sky (inf) -> 0
        return np.where(inverse > 0, 1.0 / inverse, np.nan).astype(np.float32)


@pytest.mark.parametrize("unknown_scale", [0.05, 0.8, 13.0])
@pytest.mark.parametrize(("height_m", "pitch_rad"), [(1.22, 0.038), (1.6, 0.0), (2.5, 0.12)])
def test_scale_recovered_on_a_plane_scene(
    unknown_scale: float, height_m: float, pitch_rad: float
) -> None:
    depth = plane_scene(CAMERA, camera_height_m=height_m, pitch_rad=pitch_rad)
    rel = _relative(depth, unknown_scale)
    estimate = ground_plane_scale(rel, CAMERA, height_m, pitch_rad)
    assert estimate.scale is not None, estimate.reason
    # depth_m = rel * scale, so the scale must equal the unknown factor.
    assert estimate.scale == pytest.approx(unknown_scale, rel=0.01)
    assert estimate.plane is not None and estimate.plane.tilt_deg < 1.0


def test_scale_with_unknown_pitch_and_noise(rng: np.random.Generator) -> None:
    depth = plane_scene(CAMERA, camera_height_m=1.4, pitch_rad=0.06, box=(6.0, -1.5, 0.5))
    noisy = depth * rng.normal(1.0, 0.02, depth.shape).astype(np.float32)
    estimate = ground_plane_scale(_relative(noisy, 0.3), CAMERA, 1.4, camera_pitch_rad=None)
    assert estimate.scale is not None, estimate.reason
    assert estimate.scale == pytest.approx(0.3, rel=0.05)
    # The fitted normal is the true "up", within a degree.
    assert estimate.plane is not None
    cosine = float(np.clip(np.dot(estimate.plane.normal, up_vector(0.06)), -1.0, 1.0))
    angle = math.degrees(math.acos(cosine))
    assert angle < 1.0


def test_box_filling_part_of_the_window_does_not_bias_the_scale() -> None:
    # The box covers about a third of the ground window: RANSAC must treat it as outliers.
    depth = plane_scene(CAMERA, camera_height_m=1.5, pitch_rad=0.03, box=(5.0, -1.2, 1.2))
    estimate = ground_plane_scale(_relative(depth, 2.0), CAMERA, 1.5, 0.03)
    assert estimate.scale == pytest.approx(2.0, rel=0.01)
    assert estimate.plane is not None and estimate.plane.inlier_fraction < 0.95


def _undistorted_rays(intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Normalised rays of every pixel by inverting the plumb-bob model with a long fixed-point
    iteration, independently of geometry (and of OpenCV)."""
    k1, k2, p1, p2, k3 = intr.dist
    uu, vv = np.meshgrid(np.arange(intr.width, dtype=float), np.arange(intr.height, dtype=float))
    xd, yd = (uu - intr.cx_px) / intr.fx_px, (vv - intr.cy_px) / intr.fy_px
    x, y = xd.copy(), yd.copy()
    for _ in range(500):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2**3
        x = (xd - (2 * p1 * x * y + p2 * (r2 + 2 * x * x))) / radial
        y = (yd - (p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)) / radial
    return x, y


@pytest.mark.parametrize(
    "dist", [(-0.2, 0.05, 0.0, 0.0, 0.0), (-0.35, 0.12, 0.001, -0.001, -0.02)]
)
def test_distorted_intrinsics_are_undistorted(dist: tuple[float, ...]) -> None:
    # A level camera 1.3 m above a plane, seen through a strong barrel lens. The fit must use
    # geometry's rays (converged undistortion): OpenCV's default 5 iterations are off by about
    # 5e-5 in the scale here.
    distorted = Intrinsics(180.0, 180.0, 160.0, 96.0, 320, 192, dist=dist)
    _, ry = _undistorted_rays(distorted)
    z = np.where(ry > 1e-6, 1.3 / np.maximum(ry, 1e-6), np.inf)
    estimate = ground_plane_scale(_relative(z, 0.5), distorted, 1.3, 0.0)
    assert estimate.scale == pytest.approx(0.5, rel=1e-6)


def test_no_ground_means_no_scale() -> None:
    wall = np.full(CAMERA.shape, 7.0, dtype=np.float32)  # a fronto-parallel wall everywhere
    estimate = ground_plane_scale(wall, CAMERA, 1.5)
    assert estimate.scale is None
    assert "no plane within 20.0 deg of level" in estimate.reason, estimate.reason


def test_empty_window_means_no_scale() -> None:
    nothing = np.full(CAMERA.shape, np.nan, dtype=np.float32)
    plane, reason = fit_ground_plane(nothing, CAMERA)
    assert plane is None and "valid depth pixels" in reason


def test_too_few_inliers_fails_the_sanity_check() -> None:
    depth = plane_scene(CAMERA, camera_height_m=1.5, pitch_rad=0.0, box=None)
    rel = _relative(depth, 1.0)
    rel[: int(0.8 * CAMERA.height)] = 4.0  # most of the window becomes a wall
    config = GroundPlaneConfig(min_inlier_fraction=0.9)
    estimate = ground_plane_scale(rel, CAMERA, 1.5, 0.0, config)
    assert estimate.scale is None and "lies on the plane" in estimate.reason


@pytest.mark.parametrize("height", [0.0, -1.0, math.nan, math.inf, "1.5"])
def test_bad_camera_height(height: object) -> None:
    with pytest.raises(InputError, match="camera_height_m"):
        depth = np.ones(CAMERA.shape, np.float32)
        ground_plane_scale(depth, CAMERA, height)  # type: ignore[arg-type]


def test_depth_must_match_intrinsics() -> None:
    with pytest.raises(InputError, match="does not match"):
        ground_plane_scale(np.ones((10, 10), np.float32), CAMERA, 1.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"roi": (0.5, 0.4, 0.5, 1.0)},
        {"max_points": 2},
        {"inlier_tolerance": 0.0},
        {"min_inlier_fraction": 1.5},
        {"max_tilt_deg": 95.0},
    ],
)
def test_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        GroundPlaneConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("pitch_known", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_scale_recovered_on_synthcity_frames(seed: int, pitch_known: bool) -> None:
    frame = render_frame(seed, 320, 160)
    unknown = 0.37
    rel = _relative(np.asarray(frame.depth_m, dtype=np.float32), unknown)
    pitch = float(frame.pitch_rad) if pitch_known else None
    estimate = ground_plane_scale(rel, frame.intrinsics, float(frame.camera_height_m), pitch)
    assert estimate.scale is not None, estimate.reason
    assert estimate.scale == pytest.approx(unknown, rel=0.05)
