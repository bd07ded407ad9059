"""Scale AND shift of affine inverse depth from the ground, on SynthCity frames with exact depth;
the road geometry, camera mounting from a transform, and the ways the fit must fail."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from cloudypoints_core.data.synthcity import SynthFrame, render_frame
from cloudypoints_core.data.synthcity_scene import SynthLabel
from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.scale import (
    AffineFitConfig,
    affine_to_depth,
    fit_affine_ground,
    fit_scale_ground,
    ground_inverse_depth,
    mounting_from_transform,
    up_vector,
)


@functools.lru_cache(maxsize=16)
def _frame(seed: int, width: int, height: int) -> SynthFrame:
    return render_frame(seed, width, height)


def _affine_output(
    depth_m: np.ndarray, a: float, shift_fraction: float
) -> tuple[np.ndarray, float]:
    """``a / z + b`` with ``b`` = ``shift_fraction`` of the output's range (sky: z = inf)."""
    inverse = np.where(np.isfinite(depth_m), 1.0 / depth_m.astype(np.float64), 0.0)
    b = shift_fraction * a * float(inverse.max() - inverse.min())
    return (a * inverse + b).astype(np.float32), b


def _abs_rel(pred: np.ndarray, truth: np.ndarray, max_m: float = 80.0) -> float:
    """AbsRel over every pixel with valid truth, the prediction clamped (NaN counts as far)."""
    ok = np.isfinite(truth) & (truth > 0) & (truth < max_m)
    p = np.clip(np.nan_to_num(pred[ok], nan=max_m), 1e-3, max_m)
    return float(np.mean(np.abs(p - truth[ok]) / truth[ok]))


def _quaternion(rot: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix (Shepperd's method, the branch of largest pivot)."""
    trace = float(np.trace(rot))
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        return (
            (rot[2, 1] - rot[1, 2]) / s,
            (rot[0, 2] - rot[2, 0]) / s,
            (rot[1, 0] - rot[0, 1]) / s,
            0.25 * s,
        )
    i = int(np.argmax(np.diag(rot)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = math.sqrt(1.0 + rot[i, i] - rot[j, j] - rot[k, k]) * 2
    q = [0.0, 0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (rot[j, i] + rot[i, j]) / s
    q[k] = (rot[k, i] + rot[i, k]) / s
    q[3] = (rot[k, j] - rot[j, k]) / s
    return (q[0], q[1], q[2], q[3])


# ------------------------------------------------------------------------ road geometry
@pytest.mark.parametrize(("seed", "size"), [(1, (320, 160)), (6, (320, 180)), (7, (414, 125))])
def test_ground_inverse_depth_is_the_road_of_synthcity(seed: int, size: tuple[int, int]) -> None:
    frame = _frame(seed, *size)
    ground = ground_inverse_depth(
        frame.intrinsics, frame.camera_height_m, frame.pitch_rad, frame.roll_rad
    )
    road = frame.labels == SynthLabel.ROAD
    assert road.sum() > 500
    truth = 1.0 / frame.depth_m[road]
    np.testing.assert_allclose(ground[road], truth, rtol=2e-3)
    # Above the horizon the ray never meets the ground.
    assert np.all(ground[0] == 0.0) or frame.pitch_rad > 0.3


def test_mounting_from_the_synthcity_pose() -> None:
    for seed in (1, 6, 7):
        frame = _frame(seed, 320, 160)
        mount = mounting_from_transform(frame.pose[:3, 3], _quaternion(frame.pose[:3, :3]))
        assert mount.height_m == pytest.approx(frame.camera_height_m, abs=1e-9)
        assert mount.pitch_rad == pytest.approx(frame.pitch_rad, abs=1e-9)
        assert mount.roll_rad == pytest.approx(frame.roll_rad, abs=1e-9)


def test_mounting_of_a_hand_built_transform() -> None:
    # A camera 1.6 m above base_footprint looking forward and 0.1 rad down: optical z is
    # (cos 0.1, 0, -sin 0.1) in the ground frame, optical x is -y (right), optical y = z x x.
    p = 0.1
    z_axis = np.array([math.cos(p), 0.0, -math.sin(p)])
    x_axis = np.array([0.0, -1.0, 0.0])
    rot = np.stack([x_axis, np.cross(z_axis, x_axis), z_axis], axis=1)
    mount = mounting_from_transform((0.3, 0.0, 1.6), _quaternion(rot))
    assert (mount.height_m, mount.pitch_rad, mount.roll_rad) == pytest.approx((1.6, p, 0.0))
    np.testing.assert_allclose(rot[2], up_vector(p), atol=1e-12)


@pytest.mark.parametrize(
    ("translation", "rotation", "match"),
    [
        ((0.0, 0.0, -1.0), (0.0, 0.0, 0.0, 1.0), "above the ground"),
        ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0), "zero length"),
        ((0.0, math.nan, 1.0), (0.0, 0.0, 0.0, 1.0), "finite"),
        ((0.0, 1.0), (0.0, 0.0, 0.0, 1.0), "finite"),
    ],
)
def test_bad_transforms(
    translation: tuple[float, ...], rotation: tuple[float, ...], match: str
) -> None:
    with pytest.raises(InputError, match=match):
        mounting_from_transform(translation, rotation)


# ------------------------------------------------------------------- scale and shift
@pytest.mark.parametrize("shift_fraction", [0.1, 0.25, 0.4])
@pytest.mark.parametrize(
    ("seed", "size"), [(1, (320, 160)), (2, (320, 180)), (3, (414, 125)), (4, (256, 128))]
)
def test_scale_and_shift_recovered_on_synthcity(
    seed: int, size: tuple[int, int], shift_fraction: float
) -> None:
    frame = _frame(seed, *size)
    a = 2.7
    x, b = _affine_output(frame.depth_m, a, shift_fraction)
    fit = fit_affine_ground(
        x, frame.intrinsics, frame.camera_height_m, frame.pitch_rad, frame.roll_rad
    )
    assert fit.ok, fit.reason
    assert fit.method == "affine_ransac"
    # depth = scale / (x + shift) with x = a / z + b: scale = a, shift = -b.
    assert fit.scale == pytest.approx(a, rel=0.01)
    assert fit.shift == pytest.approx(-b, rel=0.01)
    assert 0.3 < fit.inlier_ratio <= 1.0
    depth = affine_to_depth(x, fit.scale, fit.shift)
    assert _abs_rel(depth, frame.depth_m) < 0.01


@pytest.mark.parametrize("seed", [2, 5, 6, 7])
def test_unknown_roll_and_noisy_output_still_give_metres(seed: int) -> None:
    # Real use: roll unknown (0), the network's output off by 3 % per pixel. The fit is judged
    # by the depth it gives the noise-free output (the noise itself is not the fit's error).
    frame = _frame(seed, 320, 160)
    x, b = _affine_output(frame.depth_m, 0.9, 0.3)
    noisy = x * np.random.default_rng(seed).normal(1.0, 0.03, x.shape).astype(np.float32)
    fit = fit_affine_ground(noisy, frame.intrinsics, frame.camera_height_m, frame.pitch_rad)
    assert fit.ok, fit.reason
    assert fit.scale == pytest.approx(0.9, rel=0.03)
    assert fit.shift == pytest.approx(-b, rel=0.05)
    depth = affine_to_depth(x, fit.scale or 0.0, fit.shift)
    ok = np.isfinite(frame.depth_m) & (frame.depth_m < 80.0) & np.isfinite(depth)
    rel = np.abs(depth[ok] - frame.depth_m[ok]) / frame.depth_m[ok]
    assert float(np.median(rel)) < 0.03  # the bar for the whole chain
    assert _abs_rel(depth, frame.depth_m) < 0.06


def test_scale_only_fit_is_fooled_by_a_shift_and_the_affine_fit_is_not() -> None:
    # Why affine_inverse_depth exists: the plane fit "succeeds" on shifted output but is wrong.
    frame = _frame(3, 320, 160)
    x, _ = _affine_output(frame.depth_m, 1.0, 0.25)
    plane = fit_scale_ground(x, frame.intrinsics, frame.camera_height_m, frame.pitch_rad)
    affine = fit_affine_ground(x, frame.intrinsics, frame.camera_height_m, frame.pitch_rad)
    assert affine.ok and plane.ok
    plane_err = _abs_rel(affine_to_depth(x, plane.scale or 0.0, plane.shift), frame.depth_m)
    affine_err = _abs_rel(affine_to_depth(x, affine.scale or 0.0, affine.shift), frame.depth_m)
    assert plane_err > 0.15
    assert affine_err < 0.03


def test_scale_only_output_gets_shift_zero() -> None:
    frame = _frame(4, 320, 160)
    x, b = _affine_output(frame.depth_m, 5.0, 0.0)
    assert b == 0.0
    fit = fit_affine_ground(
        x, frame.intrinsics, frame.camera_height_m, frame.pitch_rad, frame.roll_rad
    )
    assert fit.scale == pytest.approx(5.0, rel=0.01)
    assert abs(fit.shift) < 0.01 * float(x.max())


def test_distortion_comes_from_the_ray_grid() -> None:
    # A level camera with barrel distortion over flat ground; truth from cv2.undistortPoints.
    import cv2

    cam = Intrinsics(180.0, 180.0, 160.0, 96.0, 320, 192, dist=(-0.2, 0.05, 0.0, 0.0, 0.0))
    uu, vv = np.meshgrid(np.arange(320.0), np.arange(192.0))
    pts = np.stack([uu, vv], -1).reshape(-1, 1, 2)
    ry = cv2.undistortPoints(pts, cam.k_matrix(), np.array(cam.dist)).reshape(192, 320, 2)[..., 1]
    inverse = np.maximum(ry, 0.0) / 1.3  # ground 1.3 m below
    x = (0.5 * inverse + 0.2).astype(np.float32)
    fit = fit_affine_ground(x, cam, 1.3, 0.0)
    assert fit.scale == pytest.approx(0.5, rel=1e-3)
    assert fit.shift == pytest.approx(-0.2, rel=1e-3)
    # The same output read as if the camera had no distortion: the road is no longer a line.
    undistorted = Intrinsics(180.0, 180.0, 160.0, 96.0, 320, 192)
    wrong = fit_affine_ground(x, undistorted, 1.3, 0.0)
    assert not wrong.ok or abs(wrong.scale - 0.5) > 0.01  # type: ignore[operator]


# ---------------------------------------------------------------------------- failures
CAMERA = Intrinsics(fx_px=180.0, fy_px=180.0, cx_px=161.3, cy_px=92.4, width=320, height=192)


def _road(cam: Intrinsics = CAMERA, height: float = 1.5) -> np.ndarray:
    return (0.8 * ground_inverse_depth(cam, height, 0.02) + 0.1).astype(np.float32)


def test_no_valid_output_fails_with_the_count() -> None:
    fit = fit_affine_ground(np.full(CAMERA.shape, np.nan, np.float32), CAMERA, 1.5, 0.02)
    assert not fit.ok and fit.scale is None
    assert "only 0 pixels" in fit.reason


def test_constant_output_is_degenerate() -> None:
    fit = fit_affine_ground(np.full(CAMERA.shape, 0.4, np.float32), CAMERA, 1.5, 0.02)
    assert not fit.ok and "degenerate" in fit.reason


def test_output_growing_with_distance_is_not_inverse_depth() -> None:
    ground = ground_inverse_depth(CAMERA, 1.5, 0.02)
    depth_like = np.where(ground > 0, 1.0 / np.maximum(ground, 1e-6), 0.0).astype(np.float32)
    fit = fit_affine_ground(-ground + 1.0, CAMERA, 1.5, 0.02)  # decreasing with nearness
    assert not fit.ok and "positive slope" in fit.reason
    assert not fit_affine_ground(depth_like, CAMERA, 1.5, 0.02).ok


def test_a_wall_in_front_leaves_too_few_inliers() -> None:
    x = _road()
    x[int(0.35 * CAMERA.height) :, : int(0.8 * CAMERA.width)] = 0.9  # a wall over most road
    fit = fit_affine_ground(x, CAMERA, 1.5, 0.02)
    assert not fit.ok and "agree with one scale and shift" in fit.reason
    assert 0.0 < fit.inlier_ratio < 0.25


def test_a_thin_band_of_road_cannot_separate_scale_from_shift() -> None:
    config = AffineFitConfig(roi=(0.1, 0.9, 0.90, 0.92), min_inliers=10)
    fit = fit_affine_ground(_road(), CAMERA, 1.5, 0.02, config=config)
    assert not fit.ok and "separate scale from shift" in fit.reason


def test_cars_on_the_road_are_outliers() -> None:
    x = _road()
    x[120:192, 60:140] = 0.8 / 6.0 + 0.1  # a box 6 m ahead covering part of the window
    fit = fit_affine_ground(x, CAMERA, 1.5, 0.02)
    assert fit.ok, fit.reason
    assert (fit.scale, fit.shift) == pytest.approx((0.8, -0.1), rel=1e-4)
    assert fit.inlier_ratio < 0.9


def test_input_checks() -> None:
    with pytest.raises(InputError, match="does not match"):
        fit_affine_ground(np.ones((10, 10), np.float32), CAMERA, 1.5)
    with pytest.raises(InputError, match="camera_height_m"):
        fit_affine_ground(_road(), CAMERA, 0.0)
    with pytest.raises(InputError, match="camera_pitch_rad"):
        ground_inverse_depth(CAMERA, 1.5, 2.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"roi": (0.5, 0.4, 0.5, 1.0)},
        {"max_ground_depth_m": 0.0},
        {"max_points": 1},
        {"inlier_tolerance": 1.0},
        {"min_inlier_fraction": 0.0},
        {"min_spread": -1.0},
    ],
)
def test_bad_affine_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AffineFitConfig(**kwargs)  # type: ignore[arg-type]


def test_affine_to_depth_marks_beyond_the_horizon_invalid() -> None:
    x = np.array([[0.5, 0.1, -0.3, np.nan]], np.float32)
    depth = affine_to_depth(x, 2.0, -0.1)
    np.testing.assert_allclose(depth[0, 0], 2.0 / 0.4, rtol=1e-6)
    assert np.all(np.isnan(depth[0, 1:]))
