"""Metric scale for depth networks that know depth only up to scale (and shift), from the ground.

Two fits, both from the camera's mounting (height above the road, pitch; positive pitch looks
down, as in Cityscapes' camera.json) and both reporting a :class:`ScaleFit`:

**Affine inverse depth** (:func:`fit_affine_ground`, output kind ``affine_inverse_depth``:
MiDaS, Depth Anything relative). The network gives ``x = a / z + b`` with unknown ``a > 0`` and
``b``. CloudyPoints writes the result as

    depth_m = scale / (x + shift)        (scale = a, shift = -b)

so that ``scale`` keeps the meaning it has for scale-only models (metres per unit of relative
depth, ``fixed_scale``) and ``shift`` is in the network's own output units (comparable with its
output range). With the mounting known the road's inverse depth is known per pixel: a pixel's
ray ``r`` (from :func:`cloudypoints_core.geometry.ray_grid`, distortion included) meets the
ground at ``1 / z = -(up . r) / h`` (``up`` the world's up direction in camera coordinates,
``h`` the height). On road pixels therefore ``x = scale * y - shift`` with ``y = 1/z`` known:
a straight line in (y, x). The fit:

1. Candidates: pixels of a lower-image window (``AffineFitConfig.roi``) whose ray meets the
   ground nearer than ``max_ground_depth_m`` and whose output is finite; at most
   ``max_points`` of them in a random order (fixed seed, so results are reproducible).
2. RANSAC over lines through 2 candidates (all hypotheses scored at once, on the first 512
   candidates). A candidate is an inlier when the depth the line gives it is within ``tol``
   (relative) of the road's: ``|(x + shift) / scale - y| < tol * y``, whatever the unknown
   scale. RANSAC rather than IRLS because in a street the window holds 30-60 % cars, kerbs,
   people and walls, and an IRLS start (least squares on everything) is pulled by them towards
   a wrong basin; a 2-point minimal sample makes RANSAC cheap (with a quarter of the window on
   the road, 256 hypotheses all miss with probability (15/16)^256 ~ 7e-8) and its breakdown
   point is what the scene needs.
3. The best line is refined three times by least squares on its inliers, on the relative
   residual ``(x - scale * y + shift) / y``, with the output regressed on the exact road
   inverse depth (not the other way round: the noise is in the output, and regressing on a
   noisy variable biases the slope low).
4. Failure (``ScaleFit.ok`` False, with the reason) when there are too few candidates or
   inliers, when the inliers' ground inverse depth spans too little to separate scale from
   shift (``min_spread``), when the output does not vary over the road, or when the slope is
   not positive (the output does not grow with nearness: not an inverse depth).

**Inverse depth up to scale only** (:func:`ground_plane_scale`, ``relative_inverse_depth`` and
``disparity``). A relative model gives depth ``z / s`` for an unknown factor ``s``.
Back-projecting pixels with that depth gives the scene shrunk by ``s``; the ground in front of
the car is then a plane at distance ``h / s`` from the camera. So ``s = h / d`` where ``d`` is
the plane's distance in the unit-scale cloud. This plane fit stays the method for scale-only
models: it needs no pitch and finds the road's tilt (pitch and roll) itself, so on exact
scale-only output of 10 SynthCity frames it gave AbsRel 0.0001 where the line fit, which takes
the pitch as given and the roll as 0, gave 0.010 (equal, 0.07, with 8 % noise). On output with a
shift it is wrong (AbsRel 0.27-0.55 for shifts of 10-40 % of the output range), hence the
affine kind and fit above:

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
down, positive roll that it is turned clockwise about its optical axis as seen from behind (its
right side down): world "up" is then (-sin(roll) cos(pitch), -cos(roll) cos(pitch), -sin(pitch))
in camera coordinates (:func:`up_vector`). :func:`mounting_from_transform` turns a transform of
the camera in a ground frame (TF's ``base_footprint``: z up, origin on the road) into height,
pitch and roll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.geometry import Intrinsics, pixel_rays, ray_grid

__all__ = [
    "AffineFitConfig",
    "GroundPlaneConfig",
    "Mounting",
    "PlaneFit",
    "ScaleEstimate",
    "ScaleFit",
    "affine_to_depth",
    "fit_affine_ground",
    "fit_scale_ground",
    "fit_ground_plane",
    "ground_inverse_depth",
    "ground_plane_scale",
    "mounting_from_transform",
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


def up_vector(
    camera_pitch_rad: float | None, camera_roll_rad: float | None = None
) -> npt.NDArray[np.float64]:
    """World "up" in camera coordinates for a camera pitched down by ``camera_pitch_rad`` and
    rolled right side down by ``camera_roll_rad`` (see the module docstring)."""
    pitch = 0.0 if camera_pitch_rad is None else float(camera_pitch_rad)
    roll = 0.0 if camera_roll_rad is None else float(camera_roll_rad)
    return np.array(
        [
            -math.sin(roll) * math.cos(pitch),
            -math.cos(roll) * math.cos(pitch),
            -math.sin(pitch),
        ]
    )


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


def _check_mounting(
    camera_height_m: object, camera_pitch_rad: object, camera_roll_rad: object = None
) -> None:
    if not (
        isinstance(camera_height_m, (int, float))
        and not isinstance(camera_height_m, bool)
        and math.isfinite(camera_height_m)
        and camera_height_m > 0
    ):
        raise InputError(
            f"camera_height_m must be a finite positive number of metres, got {camera_height_m!r}"
        )
    for name, value in (
        ("camera_pitch_rad", camera_pitch_rad),
        ("camera_roll_rad", camera_roll_rad),
    ):
        if value is not None and not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and abs(value) < math.pi / 2
        ):
            raise InputError(f"{name} must be a number in (-pi/2, pi/2), got {value!r}")


def ground_plane_scale(
    depth_rel: npt.NDArray[np.floating],
    intrinsics: Intrinsics,
    camera_height_m: float,
    camera_pitch_rad: float | None = None,
    config: GroundPlaneConfig | None = None,
) -> ScaleEstimate:
    """Scale turning ``depth_rel`` into metres, given the camera's height above the ground."""
    _check_mounting(camera_height_m, camera_pitch_rad)
    plane, reason = fit_ground_plane(depth_rel, intrinsics, camera_pitch_rad, config)
    if plane is None:
        return ScaleEstimate(scale=None, plane=None, reason=reason)
    return ScaleEstimate(scale=float(camera_height_m) / plane.distance, plane=plane, reason="")


# ------------------------------------------------------------------------ scale and shift
@dataclass(frozen=True)
class ScaleFit:
    """One frame's metric scale: ``depth_m = scale / (x + shift)`` (``x`` the model's output
    after the spec's output_scale/output_shift).

    ``scale`` is None when the fit failed, and ``reason`` says why. ``method`` names the fit
    (``"affine_ransac"`` or ``"plane_ransac"``); ``inlier_ratio`` is the fraction of the
    candidate ground pixels the result agrees with; ``x_range`` the 10th and 90th percentile of
    the output on those inliers (where the fit is supported by data; :class:`ScaleTracker
    <cloudypoints_core.inference.scale_tracker.ScaleTracker>` compares fits there).
    """

    method: str
    scale: float | None
    shift: float = 0.0
    inlier_ratio: float = 0.0
    n_points: int = 0
    reason: str = ""
    x_range: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return self.scale is not None


@dataclass(frozen=True)
class AffineFitConfig:
    """Tuning of the scale-and-shift fit (see the module docstring for what each value does).

    ``roi`` is (x0, x1, y0, y1) as fractions of the image width and height.
    """

    roi: tuple[float, float, float, float] = (0.1, 0.9, 0.5, 0.98)
    max_ground_depth_m: float = 40.0
    max_points: int = 4096
    iterations: int = 256
    inlier_tolerance: float = 0.05
    min_inlier_fraction: float = 0.25
    min_inliers: int = 50
    min_spread: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        x0, x1, y0, y1 = (float(v) for v in self.roi)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ConfigError(
                f"affine-fit roi must be fractions x0 < x1, y0 < y1 in [0, 1], got {self.roi}"
            )
        if not (math.isfinite(self.max_ground_depth_m) and self.max_ground_depth_m > 0):
            raise ConfigError(
                f"max_ground_depth_m must be finite and positive, got {self.max_ground_depth_m}"
            )
        if self.max_points < 2 or self.iterations < 1 or self.min_inliers < 2:
            raise ConfigError(
                "need max_points >= 2, iterations >= 1 and min_inliers >= 2, got "
                f"{self.max_points}, {self.iterations}, {self.min_inliers}"
            )
        if not 0 < self.inlier_tolerance < 1:
            raise ConfigError(f"inlier_tolerance must be in (0, 1), got {self.inlier_tolerance}")
        if not 0 < self.min_inlier_fraction <= 1:
            raise ConfigError(
                f"min_inlier_fraction must be in (0, 1], got {self.min_inlier_fraction}"
            )
        if not (math.isfinite(self.min_spread) and self.min_spread > 0):
            raise ConfigError(f"min_spread must be finite and positive, got {self.min_spread}")


#: Candidates each RANSAC hypothesis of the affine fit is scored on.
_SCORE_POINTS = 512


def ground_inverse_depth(
    intrinsics: Intrinsics,
    camera_height_m: float,
    camera_pitch_rad: float | None = None,
    camera_roll_rad: float | None = None,
) -> npt.NDArray[np.float32]:
    """(H, W) float32 inverse z-depth (1/m) of the ground plane seen through every pixel.

    0 where the ray does not meet the ground (at and above the horizon), NaN where the pixel
    has no ray (distortion not invertible there). Rays come from :func:`ray_grid`, the one ray
    computation of the package (undistorted when the intrinsics have distortion).
    """
    return _ground_inverse(
        ray_grid(intrinsics), camera_height_m, camera_pitch_rad, camera_roll_rad
    )


def _ground_inverse(
    rays: npt.NDArray[np.float32],
    camera_height_m: float,
    camera_pitch_rad: float | None,
    camera_roll_rad: float | None,
) -> npt.NDArray[np.float32]:
    _check_mounting(camera_height_m, camera_pitch_rad, camera_roll_rad)
    up = up_vector(camera_pitch_rad, camera_roll_rad).astype(np.float32)
    # A ray r (z = 1) meets the plane up . X = -h at X = z r, so 1/z = -(up . r) / h.
    inverse = (rays @ -up) / np.float32(camera_height_m)
    np.maximum(inverse, np.float32(0.0), out=inverse)  # NaN stays NaN
    return inverse.astype(np.float32, copy=False)


def _window(shape: tuple[int, int], roi: tuple[float, float, float, float]) -> tuple[slice, slice]:
    h, w = shape
    x0, x1, y0, y1 = roi
    c0, r0 = int(math.floor(x0 * w)), int(math.floor(y0 * h))
    c1 = max(int(math.ceil(x1 * w)), c0 + 1)
    r1 = max(int(math.ceil(y1 * h)), r0 + 1)
    return slice(r0, r1), slice(c0, c1)


def _weighted_line(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[float, float] | None:
    """(p, q) minimising sum(((x - p * y - q) / y) ** 2); None if singular."""
    design = np.stack([np.ones_like(y), 1.0 / y], axis=1)
    solution, _, rank, _ = np.linalg.lstsq(design, x / y, rcond=None)
    if rank < 2 or not np.all(np.isfinite(solution)):
        return None
    return float(solution[0]), float(solution[1])


def fit_affine_ground(
    output: npt.NDArray[np.floating],
    intrinsics: Intrinsics,
    camera_height_m: float,
    camera_pitch_rad: float | None = None,
    camera_roll_rad: float | None = None,
    config: AffineFitConfig | None = None,
) -> ScaleFit:
    """Scale and shift turning affine inverse depth ``output`` into metres (module docstring).

    ``output`` is (H, W) on the grid ``intrinsics`` describe (the network's output after the
    spec's output mapping). Never raises for a scene the fit cannot use: the returned fit then
    has ``scale`` None and the reason.
    """
    config = config or AffineFitConfig()
    x_all = np.asarray(output)
    if x_all.ndim != 2 or x_all.shape != intrinsics.shape:
        raise InputError(
            f"output of shape {x_all.shape} does not match intrinsics {intrinsics.shape}"
        )
    rows, cols = _window(intrinsics.shape, config.roi)
    # Large outputs: a regular grid of about 4 x max_points pixels of the window is plenty
    # for the random sample below and costs a fraction of reading every pixel.
    pixels = (rows.stop - rows.start) * (cols.stop - cols.start)
    step = max(1, int(math.sqrt(pixels / (4.0 * config.max_points))))
    rows, cols = slice(rows.start, rows.stop, step), slice(cols.start, cols.stop, step)
    # The road's inverse depth only where it is used: the window's rays of the cached grid.
    xw = x_all[rows, cols]
    yw = _ground_inverse(
        ray_grid(intrinsics)[rows, cols], camera_height_m, camera_pitch_rad, camera_roll_rad
    )
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(xw) & (yw >= np.float32(1.0 / config.max_ground_depth_m))
    x = xw[usable].astype(np.float64)
    y = yw[usable].astype(np.float64)
    n = int(x.size)

    def failed(reason: str, ratio: float = 0.0) -> ScaleFit:
        return ScaleFit("affine_ransac", None, 0.0, ratio, n, reason)

    if n < config.min_inliers:
        return failed(
            f"only {n} pixels of the window {config.roi} see the ground within "
            f"{config.max_ground_depth_m} m (need {config.min_inliers})"
        )
    rng = np.random.default_rng(config.seed)
    # A random order (also when all candidates are kept): hypotheses are scored on a prefix.
    keep = rng.choice(n, size=min(n, config.max_points), replace=False)
    x, y = x[keep], y[keep]
    m = int(x.size)
    x_span = float(np.percentile(x, 95) - np.percentile(x, 5))
    if not x_span > 0:
        return failed("the output does not vary over the ground window (degenerate)")
    # The line is fitted as x = p * y + q (output against the road's exact inverse depth), not
    # the other way round: the noise is in the network's output, and regressing on a noisy
    # variable would shrink the slope (regression dilution; measured: scale 2 % low with 3 %
    # output noise). Then depth = p / (x - q): scale = p, shift = -q.
    pairs = rng.integers(0, m, size=(config.iterations, 2))
    dx = x[pairs[:, 0]] - x[pairs[:, 1]]
    dy = y[pairs[:, 0]] - y[pairs[:, 1]]
    y_span = float(np.percentile(y, 95) - np.percentile(y, 5))
    good = np.abs(dy) > 1e-3 * y_span
    slope = np.divide(dx, dy, out=np.zeros_like(dx), where=good)
    good &= slope > 0
    if not np.any(good):
        return failed("no pair of ground pixels gives a positive slope (degenerate output)")
    slope = slope[good]
    offset = x[pairs[good, 0]] - slope * y[pairs[good, 0]]
    tol = config.inlier_tolerance
    # An inlier's depth error is below tol: |(x - q) / p - y| < tol * y. Hypotheses are ranked
    # on the first _SCORE_POINTS of the (already random) sample: enough to tell a line through
    # the road from one through a car, at a fraction of the cost; the refinement below uses
    # every sampled point.
    xs, ys = x[:_SCORE_POINTS, None], y[:_SCORE_POINTS, None]
    residual = np.abs(xs - slope * ys - offset)  # (points, hypotheses)
    counts = np.count_nonzero(residual < tol * slope * ys, axis=0)
    best = int(np.argmax(counts))
    p, q = float(slope[best]), float(offset[best])
    for _ in range(3):
        inliers = np.abs(x - p * y - q) < tol * p * y
        if np.count_nonzero(inliers) < 2:
            break
        line = _weighted_line(x[inliers], y[inliers])
        if line is None:
            return failed("the inliers do not determine a line (degenerate)")
        p, q = line
        if not p > 0:
            return failed(f"the fitted slope {p:.3g} is not positive: not an inverse depth")
    inliers = np.abs(x - p * y - q) < tol * p * y
    count = int(np.count_nonzero(inliers))
    ratio = count / m
    if count < config.min_inliers or ratio < config.min_inlier_fraction:
        return failed(
            f"only {count} of {m} ground-window pixels ({ratio:.0%}) agree with one scale and "
            f"shift (need {config.min_inliers} and {config.min_inlier_fraction:.0%})",
            ratio,
        )
    y_in = y[inliers]
    p10, p50, p90 = np.percentile(y_in, [10, 50, 90])
    spread = float((p90 - p10) / p50)
    if spread < config.min_spread:
        return failed(
            f"the road pixels span too little depth to separate scale from shift (inverse "
            f"depth spread {spread:.2f} < {config.min_spread})",
            ratio,
        )
    x10, x90 = np.percentile(x[inliers], [10, 90])
    return ScaleFit(
        method="affine_ransac",
        scale=p,
        shift=-q,
        inlier_ratio=ratio,
        n_points=m,
        reason="",
        x_range=(float(x10), float(x90)),
    )


def fit_scale_ground(
    output: npt.NDArray[np.floating],
    intrinsics: Intrinsics,
    camera_height_m: float,
    camera_pitch_rad: float | None = None,
    config: GroundPlaneConfig | None = None,
) -> ScaleFit:
    """:func:`ground_plane_scale` for inverse depth ``output`` known up to scale only, as a
    :class:`ScaleFit` (shift 0): ``depth_m = scale / output``."""
    x = np.asarray(output, dtype=np.float32)
    depth = np.full(x.shape, np.nan, dtype=np.float32)
    np.divide(np.float32(1.0), x, out=depth, where=x > 0)
    estimate = ground_plane_scale(depth, intrinsics, camera_height_m, camera_pitch_rad, config)
    if estimate.scale is None or estimate.plane is None:
        return ScaleFit("plane_ransac", None, 0.0, 0.0, 0, estimate.reason)
    valid = x[np.isfinite(x) & (x > 0)]
    x_range = None
    if valid.size:
        lo, hi = np.percentile(valid, [10, 90])
        x_range = (float(lo), float(hi))
    return ScaleFit(
        method="plane_ransac",
        scale=estimate.scale,
        shift=0.0,
        inlier_ratio=estimate.plane.inlier_fraction,
        n_points=estimate.plane.n_points,
        reason="",
        x_range=x_range,
    )


def affine_to_depth(
    output: npt.NDArray[np.floating], scale: float, shift: float = 0.0
) -> npt.NDArray[np.float32]:
    """``scale / (output + shift)`` as float32, NaN where ``output + shift`` is not positive
    (beyond the horizon of the fitted model, or invalid output)."""
    inverse = np.asarray(output, dtype=np.float32) + np.float32(shift)
    depth = np.full(inverse.shape, np.nan, dtype=np.float32)
    np.divide(np.float32(scale), inverse, out=depth, where=inverse > 0)
    return depth


# ------------------------------------------------------------------------------ mounting
@dataclass(frozen=True)
class Mounting:
    """Where a camera sits above the road: height (m), pitch (rad, positive looks down) and roll
    (rad, positive turns it right side down)."""

    height_m: float
    pitch_rad: float
    roll_rad: float


def mounting_from_transform(
    translation: tuple[float, float, float] | npt.ArrayLike,
    rotation: tuple[float, float, float, float] | npt.ArrayLike,
) -> Mounting:
    """Height, pitch and roll of a camera optical frame from its pose in a ground frame.

    ``translation`` (x, y, z) and ``rotation`` (quaternion x, y, z, w, as in
    geometry_msgs/Transform) place the camera optical frame in a frame whose z axis points up
    and whose origin lies on the road (``base_footprint``): what
    ``tf_buffer.lookup_transform(ground_frame, camera_frame, time)`` returns. Raises InputError
    for a non-finite transform, a zero quaternion or a camera not above the ground.
    """
    t = np.asarray(translation, dtype=np.float64).reshape(-1)
    q = np.asarray(rotation, dtype=np.float64).reshape(-1)
    if (
        t.shape != (3,)
        or q.shape != (4,)
        or not (np.all(np.isfinite(t)) and np.all(np.isfinite(q)))
    ):
        raise InputError(
            f"need a finite translation (x, y, z) and quaternion (x, y, z, w), got {t} and {q}"
        )
    norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise InputError(f"the rotation quaternion {q} has zero length")
    qx, qy, qz, qw = q / norm
    # Third row of the rotation matrix (camera -> ground): the ground's z axis ("up") in
    # camera coordinates.
    up = np.array(
        [
            2.0 * (qx * qz - qw * qy),
            2.0 * (qy * qz + qw * qx),
            1.0 - 2.0 * (qx * qx + qy * qy),
        ]
    )
    height = float(t[2])
    if not height > 0:
        raise InputError(
            f"the camera is {height:.3f} m above the ground frame's origin; the ground frame "
            "must lie on the road under the camera (e.g. base_footprint)"
        )
    pitch = math.asin(float(np.clip(-up[2], -1.0, 1.0)))
    roll = math.atan2(-float(up[0]), -float(up[1]))
    return Mounting(height_m=height, pitch_rad=pitch, roll_rad=roll)
