"""Metric scale for depth known only up to scale, from the camera's height above the ground plane.

A relative model gives depth ``z / s`` for an unknown factor ``s``. Back-projecting pixels with
that depth gives the scene shrunk by ``s``; the ground in front of the car is then a plane at
distance ``h / s`` from the camera, ``h`` being the camera height. So ``s = h / d`` where ``d``
is the plane's distance in the unit-scale cloud.

Method (:func:`fit_ground_plane`):
1. Take the pixels of a lower-central window of the image (``GroundPlaneConfig.roi``, where a
   road usually is), with finite positive depth, and at most ``max_points`` of them (a fixed-seed
   random subset, so results are reproducible).
2. Back-project them at unit scale (undistorting the pixels when the intrinsics have distortion).
3. RANSAC over planes through 3 points, all hypotheses scored at once (vectorised): a point is an
   inlier when its distance to the plane is below ``inlier_tolerance * d``. A relative depth
   error ``e`` moves a ground point along its ray by ``e * z``, which changes its distance to the
   plane by ``e * d`` whatever the point's range, so this tolerance reads as "depth within e" and
   needs no knowledge of the unknown scale.
4. Hypotheses whose normal is more than ``max_tilt_deg`` away from the expected "up" direction
   (level camera, or tilted by the known pitch) are rejected, as are planes above the camera.
5. The best plane is refined twice by least squares (SVD) on its inliers and checked again: tilt,
   inlier fraction >= ``min_inlier_fraction``.

Camera frame: x right, y down, z forward (REP 103 optical). Positive pitch means the camera looks
down: world "up" is then (0, -cos(pitch), -sin(pitch)) in camera coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.geometry import Intrinsics, pixel_rays

__all__ = [
    "GroundPlaneConfig",
    "PlaneFit",
    "ScaleEstimate",
    "fit_ground_plane",
    "ground_plane_scale",
    "up_vector",
]


@dataclass(frozen=True)
class GroundPlaneConfig:
    """Tuning of the ground-plane fit (see the module docstring for what each value does).

    ``roi`` is (x0, x1, y0, y1) as fractions of the image width and height.
    """

    roi: tuple[float, float, float, float] = (0.2, 0.8, 0.55, 0.95)
    max_points: int = 2048
    iterations: int = 200
    inlier_tolerance: float = 0.04
    min_inlier_fraction: float = 0.3
    max_tilt_deg: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        x0, x1, y0, y1 = (float(v) for v in self.roi)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ConfigError(
                f"ground-plane roi must be fractions x0 < x1, y0 < y1 in [0, 1], got {self.roi}"
            )
        if self.max_points < 3 or self.iterations < 1:
            raise ConfigError(
                "need max_points >= 3 and iterations >= 1, got "
                f"{self.max_points}, {self.iterations}"
            )
        if not 0 < self.inlier_tolerance < 1:
            raise ConfigError(f"inlier_tolerance must be in (0, 1), got {self.inlier_tolerance}")
        if not 0 < self.min_inlier_fraction <= 1:
            raise ConfigError(
                f"min_inlier_fraction must be in (0, 1], got {self.min_inlier_fraction}"
            )
        if not 0 < self.max_tilt_deg < 90:
            raise ConfigError(f"max_tilt_deg must be in (0, 90), got {self.max_tilt_deg}")


@dataclass(frozen=True)
class PlaneFit:
    """A plane n . X + d = 0 with unit ``normal`` pointing up (towards the camera) and d > 0."""

    normal: tuple[float, float, float]
    distance: float
    inlier_fraction: float
    tilt_deg: float
    n_points: int


@dataclass(frozen=True)
class ScaleEstimate:
    """The recovered scale (None when the fit failed), the plane, and why it failed if it did."""

    scale: float | None
    plane: PlaneFit | None
    reason: str


def up_vector(camera_pitch_rad: float | None) -> npt.NDArray[np.float64]:
    """World "up" in camera coordinates for a camera pitched down by ``camera_pitch_rad``."""
    pitch = 0.0 if camera_pitch_rad is None else float(camera_pitch_rad)
    return np.array([0.0, -math.cos(pitch), -math.sin(pitch)])


def _sample_points(
    depth: npt.NDArray[np.floating],
    intrinsics: Intrinsics,
    config: GroundPlaneConfig,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    h, w = depth.shape
    x0, x1, y0, y1 = config.roi
    c0, c1 = int(math.floor(x0 * w)), max(int(math.ceil(x1 * w)), int(math.floor(x0 * w)) + 1)
    r0, r1 = int(math.floor(y0 * h)), max(int(math.ceil(y1 * h)), int(math.floor(y0 * h)) + 1)
    window = depth[r0:r1, c0:c1]
    rows, cols = np.nonzero(np.isfinite(window) & (window > 0))
    if rows.size > config.max_points:
        keep = rng.choice(rows.size, size=config.max_points, replace=False)
        rows, cols = rows[keep], cols[keep]
    z = window[rows, cols].astype(np.float64)
    # geometry's ray path (undistortion, its iterations and validity check): one answer for
    # the fit and the cloud; pixels whose distortion cannot be inverted are dropped.
    rays = pixel_rays(intrinsics, cols + c0, rows + r0).astype(np.float64)
    points = rays * z[:, None]
    return points[np.isfinite(rays[:, 0])]


def _refine(
    points: npt.NDArray[np.float64], up: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], float]:
    centroid = points.mean(axis=0)
    # The plane normal is the direction of least variance of the inliers.
    _, _, vt = np.linalg.svd(points - centroid, full_matrices=False)
    normal = vt[-1]
    if normal @ up < 0:
        normal = -normal
    return normal, float(-normal @ centroid)


def fit_ground_plane(
    depth: npt.NDArray[np.floating],
    intrinsics: Intrinsics,
    camera_pitch_rad: float | None = None,
    config: GroundPlaneConfig | None = None,
) -> tuple[PlaneFit | None, str]:
    """(plane, "") for the ground in ``depth`` (any consistent scale), or (None, why not)."""
    config = config or GroundPlaneConfig()
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.shape != intrinsics.shape:
        raise InputError(
            f"depth of shape {depth.shape} does not match intrinsics {intrinsics.shape}"
        )
    rng = np.random.default_rng(config.seed)
    points = _sample_points(depth, intrinsics, config, rng)
    n = points.shape[0]
    if n < 10:
        return None, f"only {n} valid depth pixels in the ground window {config.roi}"
    up = up_vector(camera_pitch_rad)
    cos_max_tilt = math.cos(math.radians(config.max_tilt_deg))
    idx = rng.integers(0, n, size=(config.iterations, 3))
    a, b, c = points[idx[:, 0]], points[idx[:, 1]], points[idx[:, 2]]
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    ok = lengths > 1e-12
    normals[ok] /= lengths[ok, None]
    normals *= np.where(normals @ up < 0, -1.0, 1.0)[:, None]
    dists = -np.einsum("ij,ij->i", normals, a)
    ok &= (normals @ up >= cos_max_tilt) & (dists > 0)
    if not np.any(ok):
        return None, f"no plane within {config.max_tilt_deg} deg of level below the camera"
    normals, dists = normals[ok], dists[ok]
    residuals = np.abs(points @ normals.T + dists)  # (points, hypotheses)
    counts = np.count_nonzero(residuals < config.inlier_tolerance * dists, axis=0)
    best = int(np.argmax(counts))
    normal, dist = normals[best], float(dists[best])
    for _ in range(2):
        inliers = np.abs(points @ normal + dist) < config.inlier_tolerance * dist
        if np.count_nonzero(inliers) < 3:
            return None, "the best plane has fewer than 3 inliers"
        normal, dist = _refine(points[inliers], up)
        if dist <= 0:
            return None, "the fitted plane passes above the camera"
    inliers = np.abs(points @ normal + dist) < config.inlier_tolerance * dist
    fraction = float(np.count_nonzero(inliers)) / n
    tilt = math.degrees(math.acos(min(1.0, float(normal @ up))))
    plane = PlaneFit(
        normal=(float(normal[0]), float(normal[1]), float(normal[2])),
        distance=dist,
        inlier_fraction=fraction,
        tilt_deg=tilt,
        n_points=n,
    )
    if tilt > config.max_tilt_deg:
        return None, f"the ground plane is tilted {tilt:.1f} deg (> {config.max_tilt_deg})"
    if fraction < config.min_inlier_fraction:
        return None, (
            f"only {fraction:.0%} of the ground window lies on the plane "
            f"(< {config.min_inlier_fraction:.0%})"
        )
    return plane, ""


def ground_plane_scale(
    depth_rel: npt.NDArray[np.floating],
    intrinsics: Intrinsics,
    camera_height_m: float,
    camera_pitch_rad: float | None = None,
    config: GroundPlaneConfig | None = None,
) -> ScaleEstimate:
    """Scale turning ``depth_rel`` into metres, given the camera's height above the ground."""
    if not (
        isinstance(camera_height_m, (int, float))
        and math.isfinite(camera_height_m)
        and camera_height_m > 0
    ):
        raise InputError(
            f"camera_height_m must be a finite positive number of metres, got {camera_height_m!r}"
        )
    if camera_pitch_rad is not None and not (
        isinstance(camera_pitch_rad, (int, float)) and abs(camera_pitch_rad) < math.pi / 2
    ):
        raise InputError(
            f"camera_pitch_rad must be a number in (-pi/2, pi/2), got {camera_pitch_rad!r}"
        )
    plane, reason = fit_ground_plane(depth_rel, intrinsics, camera_pitch_rad, config)
    if plane is None:
        return ScaleEstimate(scale=None, plane=None, reason=reason)
    return ScaleEstimate(scale=float(camera_height_m) / plane.distance, plane=plane, reason="")
