"""Pinhole camera intrinsics, their exact bookkeeping through resizes and crops, and 3D geometry.

Conventions (shared/DESIGN.md): pixel (u, v) has its centre at integer coordinates, so an image of
width W spans [-0.5, W - 0.5]. Resizing by factors (sx, sy) maps
``fx -> fx * sx`` and ``cx -> (cx + 0.5) * sx - 0.5`` (the sampling ``cv2.resize`` uses for
``INTER_LINEAR`` and ``INTER_AREA``, and ``INTER_NEAREST_EXACT`` up to the half-pixel choice that
nearest-neighbour sampling has to make); cropping at (x0, y0) maps ``cx -> cx - x0``. Camera
optical frame: x right, y down, z forward, metres.

Back-projection multiplies a depth image by a per-camera grid of rays (x/z, y/z, 1) that is
computed once and cached, so each frame costs about one multiplication.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import InputError, IntrinsicsError
from cloudypoints_core.types import CameraInfoLike

__all__ = [
    "DISTORTION_MODELS",
    "Interpolation",
    "Intrinsics",
    "PointSet",
    "backproject",
    "crop_image",
    "distort_normalised",
    "pixel_rays",
    "project",
    "ray_grid",
    "resize_image",
]

#: Distortion models as named in sensor_msgs/CameraInfo (and their coefficient counts).
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "none": 0, "": 0}

#: Coefficient counts accepted in ``Intrinsics.dist`` (OpenCV order k1, k2, p1, p2[, k3[, k4-k6]]).
_DIST_LENGTHS = {0, 4, 5, 8}

logger = logging.getLogger(__name__)

Interpolation = Literal["linear", "nearest", "area"]


def _is_real(value: object) -> bool:
    # bool is an int subclass; a focal length of True is a bug, not a number.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels, in pixels.

    ``dist`` holds OpenCV-ordered distortion coefficients (k1, k2, p1, p2, k3[, k4, k5, k6]);
    empty means a rectified image (all-zero coefficients are normalised to empty, so equal
    cameras compare and hash equal).
    """

    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    width: int
    height: int
    dist: tuple[float, ...] = field(default=())
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        for name in ("fx_px", "fy_px"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and value > 0):
                raise IntrinsicsError(
                    f"{name} must be a finite positive number of pixels, got {value!r}"
                )
        for name in ("cx_px", "cy_px"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value)):
                raise IntrinsicsError(f"{name} must be a finite number of pixels, got {value!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not (
                isinstance(value, numbers.Integral)
                and not isinstance(value, bool)
                and int(value) > 0
            ):
                raise IntrinsicsError(f"{name} must be a positive integer, got {value!r}")
        dist = tuple(self.dist)
        if not all(_is_real(c) and math.isfinite(c) for c in dist):
            raise IntrinsicsError(f"distortion coefficients must be finite numbers, got {dist!r}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise IntrinsicsError(
                f"distortion model {self.distortion_model!r} is not supported; expected one of "
                f"{sorted(m for m in DISTORTION_MODELS if m)}"
            )
        if any(c != 0 for c in dist) and len(dist) not in _DIST_LENGTHS:
            raise IntrinsicsError(
                f"dist must have 4, 5 or 8 coefficients (OpenCV order), got {len(dist)}"
            )
        # Normalise types so that equality and hashing behave (numpy scalars compare oddly), and
        # all-zero distortion to () so a rectified camera has one spelling (and one ray grid).
        object.__setattr__(self, "fx_px", float(self.fx_px))
        object.__setattr__(self, "fy_px", float(self.fy_px))
        object.__setattr__(self, "cx_px", float(self.cx_px))
        object.__setattr__(self, "cy_px", float(self.cy_px))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(
            self, "dist", tuple(float(c) for c in dist) if any(c != 0 for c in dist) else ()
        )

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_camera_info(cls, msg: CameraInfoLike) -> Intrinsics:
        """Intrinsics of the image a CameraInfo message (rclpy or rosbags) describes: P for
        rectified images, else K and D, then its binning and ROI applied (REP 104; messages
        without those fields are full-resolution cameras). IntrinsicsError for zero or
        non-finite focal lengths, a zero image size, or a ROI outside the calibrated image."""
        if msg.width == 0 or msg.height == 0:
            raise IntrinsicsError(
                f"CameraInfo has image size {msg.width}x{msg.height}; "
                "a calibrated size is required"
            )
        roi = getattr(msg, "roi", None)
        return cls.from_ros(
            k=np.asarray(msg.k, dtype=np.float64),
            width=int(msg.width),
            height=int(msg.height),
            d=np.asarray(msg.d, dtype=np.float64),
            distortion_model=str(msg.distortion_model),
            p=np.asarray(msg.p, dtype=np.float64),
            binning_x=int(getattr(msg, "binning_x", 0) or 0),
            binning_y=int(getattr(msg, "binning_y", 0) or 0),
            roi=None
            if roi is None
            else (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
        )

    @classmethod
    def from_ros(
        cls,
        k: Sequence[float] | npt.ArrayLike,
        width: int,
        height: int,
        d: Sequence[float] | npt.ArrayLike = (),
        distortion_model: str = "plumb_bob",
        p: Sequence[float] | npt.ArrayLike | None = None,
        *,
        rectified: bool = False,
        binning_x: int = 0,
        binning_y: int = 0,
        roi: tuple[int, int, int, int] | None = None,
    ) -> Intrinsics:
        """Intrinsics from CameraInfo fields: K (9 values, row-major 3x3), D, P (12 values).

        For a rectified image (all of D zero) with a non-zero P, the projection matrix P is the
        authoritative camera (as image_geometry uses it); otherwise K with D. Pass
        ``rectified=True`` for an ``image_rect`` topic whose CameraInfo still carries the raw
        camera's D: then P is used and D ignored, as ``depth_image_proc`` does. An unsupported
        distortion model is accepted when all of D is zero (it then describes nothing).

        ``width`` x ``height`` is the calibrated (full) resolution K, D and P describe. REP 104:
        the image actually sent is the region ``roi`` = (x_offset, y_offset, width, height) of
        that image (all zeros or None: the whole image), then binned by ``binning_x`` x
        ``binning_y`` (0 or 1: none); the result describes that image: the ROI shifts the
        principal point (:meth:`cropped`), binning b maps a b x b block to one pixel centred
        on the block, i.e. a resize by 1/b (:meth:`resized`: cx -> (cx + 0.5) / b - 0.5), with
        (roi width // b) x (roi height // b) pixels. Distortion lives in normalised coordinates
        and carries over unchanged.
        """
        k_arr = np.asarray(k, dtype=np.float64).reshape(-1)
        if k_arr.size != 9:
            raise IntrinsicsError(f"K must have 9 values (3x3 row-major), got {k_arr.size}")
        d_arr = np.asarray(d, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(d_arr)):
            raise IntrinsicsError(f"D must be finite, got {d_arr.tolist()}")
        model = distortion_model or "plumb_bob"
        if rectified or not np.any(d_arr):
            d_arr = np.zeros(0)
            if model not in DISTORTION_MODELS:
                model = "plumb_bob"
        if model not in DISTORTION_MODELS:
            raise IntrinsicsError(
                f"distortion model {model!r} is not supported; expected one of "
                f"{sorted(m for m in DISTORTION_MODELS if m)}"
            )
        expected = DISTORTION_MODELS[model]
        if d_arr.size not in (0, expected) and not (model == "plumb_bob" and d_arr.size in (4, 5)):
            raise IntrinsicsError(f"{model} takes {expected} coefficients in D, got {d_arr.size}")
        fx, fy, cx, cy = k_arr[0], k_arr[4], k_arr[2], k_arr[5]
        if p is not None and not np.any(d_arr):
            p_arr = np.asarray(p, dtype=np.float64).reshape(-1)
            if p_arr.size != 12:
                raise IntrinsicsError(f"P must have 12 values (3x4 row-major), got {p_arr.size}")
            if p_arr[0] > 0 and p_arr[5] > 0:
                fx, fy, cx, cy = p_arr[0], p_arr[5], p_arr[2], p_arr[6]
        dist = tuple(float(c) for c in d_arr)
        full = cls(
            float(fx), float(fy), float(cx), float(cy), int(width), int(height), dist, model
        )
        return full._binned_roi(binning_x, binning_y, roi)

    def _binned_roi(
        self, binning_x: int, binning_y: int, roi: tuple[int, int, int, int] | None
    ) -> Intrinsics:
        """This full-resolution camera's intrinsics for the ROI, then binning, of REP 104."""
        for name, value in (("binning_x", binning_x), ("binning_y", binning_y)):
            if not (isinstance(value, numbers.Integral) and value >= 0):
                raise IntrinsicsError(f"{name} must be a non-negative integer, got {value!r}")
        out = self
        if roi is not None and any(roi):
            x0, y0, w, h = (int(v) for v in roi)
            if w == 0 and h == 0:
                w, h = self.width - x0, self.height - y0  # an offset alone: the rest
            if w <= 0 or h <= 0 or x0 + w > self.width or y0 + h > self.height:
                raise IntrinsicsError(
                    f"CameraInfo ROI x_offset={x0} y_offset={y0} {w}x{h} does not fit the "
                    f"calibrated {self.width}x{self.height} image"
                )
            out = out.cropped(x0, y0, w, h)
        bx, by = max(int(binning_x), 1), max(int(binning_y), 1)
        if bx == 1 and by == 1:
            return out
        w, h = out.width // bx, out.height // by
        if w == 0 or h == 0:
            raise IntrinsicsError(
                f"binning {bx}x{by} leaves no pixel of a {out.width}x{out.height} image"
            )
        # Pixels that do not fill a whole bin at the right and bottom edges are not sent.
        return out.cropped(0, 0, w * bx, h * by).resized(w, h)

    # ------------------------------------------------------------------------------- accessors
    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, the order OpenCV takes."""
        return (self.width, self.height)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width): the shape of an image array with these intrinsics."""
        return (self.height, self.width)

    @property
    def has_distortion(self) -> bool:
        return any(c != 0.0 for c in self.dist)

    def k_matrix(self) -> npt.NDArray[np.float64]:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.fx_px, 0.0, self.cx_px], [0.0, self.fy_px, self.cy_px], [0.0, 0.0, 1.0]],
            dtype=np.float64,
        )

    def p_matrix(self) -> npt.NDArray[np.float64]:
        """The 3x4 projection matrix P of a monocular camera (no baseline)."""
        return np.hstack([self.k_matrix(), np.zeros((3, 1))])

    def d_vector(self) -> npt.NDArray[np.float64]:
        """Distortion coefficients as CameraInfo.D wants them (5 or 8 values, zeros if none)."""
        n = max(DISTORTION_MODELS.get(self.distortion_model, 5), 5, len(self.dist))
        out = np.zeros(n, dtype=np.float64)
        out[: len(self.dist)] = self.dist
        return out

    # ------------------------------------------------------------------------- transformations
    def resized(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of this image resized (as cv2.resize does) to ``width`` x ``height``."""
        if width <= 0 or height <= 0:
            raise IntrinsicsError(f"resize target must be positive, got {width}x{height}")
        sx = width / self.width
        sy = height / self.height
        return replace(
            self,
            fx_px=self.fx_px * sx,
            fy_px=self.fy_px * sy,
            cx_px=(self.cx_px + 0.5) * sx - 0.5,
            cy_px=(self.cy_px + 0.5) * sy - 0.5,
            width=int(width),
            height=int(height),
        )

    def scaled(self, factor: float) -> Intrinsics:
        """Intrinsics after resizing by ``factor`` (sizes rounded to whole pixels)."""
        return self.resized(round(self.width * factor), round(self.height * factor))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Intrinsics:
        """Intrinsics of the window [x0, x0 + width) x [y0, y0 + height) of this image."""
        if x0 < 0 or y0 < 0 or width <= 0 or height <= 0:
            raise IntrinsicsError(f"bad crop window x0={x0} y0={y0} {width}x{height}")
        if x0 + width > self.width or y0 + height > self.height:
            raise IntrinsicsError(
                f"crop window x0={x0} y0={y0} {width}x{height} exceeds the "
                f"{self.width}x{self.height} image"
            )
        return replace(
            self,
            cx_px=self.cx_px - x0,
            cy_px=self.cy_px - y0,
            width=int(width),
            height=int(height),
        )

    def padded(self, left: int, top: int, width: int, height: int) -> Intrinsics:
        """Intrinsics of this image placed at (``left``, ``top``) on a ``width`` x ``height``
        canvas (letterboxing): a crop with a negative offset, cx -> cx + left, cy -> cy + top."""
        if left < 0 or top < 0 or left + self.width > width or top + self.height > height:
            raise IntrinsicsError(
                f"cannot place the {self.width}x{self.height} image at ({left}, {top}) on a "
                f"{width}x{height} canvas"
            )
        return replace(
            self,
            cx_px=self.cx_px + left,
            cy_px=self.cy_px + top,
            width=int(width),
            height=int(height),
        )

    def flipped_horizontally(self) -> Intrinsics:
        """Intrinsics of the mirror image (u -> W - 1 - u): cx -> W - 1 - cx.

        Mirroring x negates the x-odd tangential term, so p2 changes sign; radial terms and p1
        are symmetric in x.
        """
        dist = list(self.dist)
        if len(dist) >= 4:
            dist[3] = -dist[3]
        return replace(self, cx_px=self.width - 1 - self.cx_px, dist=tuple(dist))

    def to_dict(self) -> dict[str, object]:
        return {
            "fx_px": self.fx_px,
            "fy_px": self.fy_px,
            "cx_px": self.cx_px,
            "cy_px": self.cy_px,
            "width": self.width,
            "height": self.height,
            "dist": list(self.dist),
            "distortion_model": self.distortion_model,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intrinsics:
        # Values come from YAML/JSON, so any type may turn up: conversion errors are caught below.
        try:
            return cls(
                fx_px=float(data["fx_px"]),
                fy_px=float(data["fy_px"]),
                cx_px=float(data["cx_px"]),
                cy_px=float(data["cy_px"]),
                width=int(data["width"]),
                height=int(data["height"]),
                dist=tuple(data.get("dist", ()) or ()),
                distortion_model=str(data.get("distortion_model", "plumb_bob")),
            )
        except KeyError as exc:
            raise IntrinsicsError(f"intrinsics dictionary lacks {exc}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, IntrinsicsError):
                raise
            raise IntrinsicsError(f"intrinsics dictionary has a malformed value: {exc}") from exc


# ------------------------------------------------------------------------------ images
_CV2_INTERPOLATION = {
    "linear": "INTER_LINEAR",
    "nearest": "INTER_NEAREST_EXACT",
    "area": "INTER_AREA",
}


def _check_image_matches(image: npt.NDArray[Any], intr: Intrinsics, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise InputError(
            f"{what} must be an (H, W) or (H, W, C) numpy array, got {_describe(image)}"
        )
    if image.shape[:2] != intr.shape:
        raise InputError(
            f"{what} is {image.shape[1]}x{image.shape[0]} (WxH) but the intrinsics describe "
            f"{intr.width}x{intr.height}"
        )


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def resize_image(
    image: npt.NDArray[Any],
    intr: Intrinsics,
    width: int,
    height: int,
    interpolation: Interpolation = "linear",
) -> tuple[npt.NDArray[Any], Intrinsics]:
    """Resize ``image`` to ``width`` x ``height`` with cv2.resize and return matching intrinsics.

    ``"linear"`` and ``"area"`` sample where :meth:`Intrinsics.resized` says (exactly, except that
    OpenCV's area tables drop box fractions under 0.1%: a few thousandths of a pixel for
    non-integer factors).
    ``"nearest"`` uses ``cv2.INTER_NEAREST_EXACT`` (plain ``INTER_NEAREST`` is shifted by half a
    source pixel); nearest sampling picks the source pixel nearest each destination centre, so
    features can sit up to half a source pixel from the prediction. Use ``"nearest"`` for depth
    images (no averaging across object edges; NaN stays local), ``"area"`` to shrink colour images.
    """
    _check_image_matches(image, intr, "image")
    if interpolation not in _CV2_INTERPOLATION:
        raise InputError(
            f"interpolation {interpolation!r} is not one of {sorted(_CV2_INTERPOLATION)}"
        )
    new_intr = intr.resized(width, height)
    cv2 = require("cv2", "resize_image")
    flag = getattr(cv2, _CV2_INTERPOLATION[interpolation])
    src = image if image.flags.c_contiguous else np.ascontiguousarray(image)
    out = cv2.resize(src, (int(width), int(height)), interpolation=flag)
    if image.ndim == 3 and out.ndim == 2:
        # cv2 drops a trailing channel axis of length 1.
        out = out[:, :, None]
    return out, new_intr


def crop_image(
    image: npt.NDArray[Any], intr: Intrinsics, x0: int, y0: int, width: int, height: int
) -> tuple[npt.NDArray[Any], Intrinsics]:
    """The window [x0, x0 + width) x [y0, y0 + height) of ``image`` (a view) and its intrinsics."""
    _check_image_matches(image, intr, "image")
    new_intr = intr.cropped(x0, y0, width, height)
    return image[y0 : y0 + height, x0 : x0 + width], new_intr


# ------------------------------------------------------------------------------ rays
def _undistort_normalised(
    pixels: npt.NDArray[np.float64], intr: Intrinsics
) -> npt.NDArray[np.float64]:
    """Undistorted normalised coordinates (x/z, y/z) of distorted pixel coordinates (N, 2)."""
    cv2 = require("cv2", "undistorting the ray grid of a camera with distortion")
    pts = pixels.reshape(-1, 1, 2)
    k = intr.k_matrix()
    d = np.asarray(intr.dist, dtype=np.float64)
    # More iterations than OpenCV's default 5 so strong lens distortion converges too; it runs
    # once per camera.
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x spells the criteria variant this way
        out = cv2.undistortPointsIter(pts, k, d, None, None, criteria)
    else:
        out = cv2.undistortPoints(pts, k, d, None, None, None, criteria)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


#: A ray whose re-distorted pixel misses its pixel by more than this is marked invalid (NaN).
_UNDISTORT_TOLERANCE_PX = 0.01


@functools.lru_cache(maxsize=8)
def _ray_grid_cached(intr: Intrinsics) -> npt.NDArray[np.float32]:
    h, w = intr.shape
    grid = np.empty((h, w, 3), dtype=np.float32)
    if intr.has_distortion:
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        pixels = np.stack([u, v], axis=-1).reshape(-1, 2)
        xy = _undistort_normalised(pixels, intr)
        # Where the distortion polynomial is not invertible (far corners of strong or badly
        # fitted models) the iteration lands on a wrong ray; check by distorting back and mark
        # such pixels NaN so they give no points rather than wrong ones.
        back = distort_normalised(xy, intr.dist)
        err_px = np.hypot(
            (back[:, 0] * intr.fx_px + intr.cx_px) - pixels[:, 0],
            (back[:, 1] * intr.fy_px + intr.cy_px) - pixels[:, 1],
        )
        bad = ~(err_px <= _UNDISTORT_TOLERANCE_PX)
        if bad.any():
            logger.warning(
                "ray grid: %d of %d pixels do not undistort within %.2f px (distortion %s); "
                "they are marked invalid",
                int(bad.sum()),
                bad.size,
                _UNDISTORT_TOLERANCE_PX,
                intr.dist,
            )
        grid[..., :2] = xy.reshape(h, w, 2)
        grid[..., 2] = 1.0
        grid[bad.reshape(h, w)] = np.nan
    else:
        grid[..., 0] = ((np.arange(w, dtype=np.float64) - intr.cx_px) / intr.fx_px)[None, :]
        grid[..., 1] = ((np.arange(h, dtype=np.float64) - intr.cy_px) / intr.fy_px)[:, None]
        grid[..., 2] = 1.0
    grid.flags.writeable = False
    return grid


@functools.lru_cache(maxsize=8)
def _ray_mask(intr: Intrinsics) -> npt.NDArray[np.bool_] | None:
    """Pixels with a usable ray, or None when all are (every camera without distortion)."""
    ok = ~np.isnan(ray_grid(intr)[..., 2])
    if ok.all():
        return None
    ok.flags.writeable = False
    return ok


def ray_grid(intr: Intrinsics) -> npt.NDArray[np.float32]:
    """Rays (x/z, y/z, 1) through every pixel centre, (H, W, 3) float32, read-only and cached.

    With distortion the rays come from undistorting each pixel (cv2.undistortPoints), so the
    grid describes the raw image; pixels whose distortion cannot be inverted (they do not map
    back onto themselves within 0.01 px) get NaN rays and never yield points. The cache holds the
    last few cameras (keyed by the intrinsics).
    """
    if not isinstance(intr, Intrinsics):
        raise InputError(f"ray_grid needs Intrinsics, got {type(intr).__name__}")
    return _ray_grid_cached(intr)


def pixel_rays(intr: Intrinsics, u: npt.ArrayLike, v: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Rays (x/z, y/z, 1), (N, 3), through integer pixels (u, v): rows of :func:`ray_grid`.

    The one ray computation for everything that undistorts (back-projection, the ground-plane
    fit): the same undistortion, iterations and validity check, NaN rays where the distortion
    cannot be inverted.
    """
    cols = np.asarray(u).reshape(-1)
    rows = np.asarray(v).reshape(-1)
    if cols.shape != rows.shape:
        raise InputError(f"u and v must have one length, got {cols.size} and {rows.size}")
    if not (np.issubdtype(cols.dtype, np.integer) and np.issubdtype(rows.dtype, np.integer)):
        raise InputError(f"u and v must be integer pixel indices, got {cols.dtype}/{rows.dtype}")
    if cols.size and (
        cols.min() < 0 or rows.min() < 0 or cols.max() >= intr.width or rows.max() >= intr.height
    ):
        raise InputError(f"pixels outside the {intr.width}x{intr.height} image")
    return ray_grid(intr)[rows, cols]


# ------------------------------------------------------------------------------ back-projection
@dataclass(frozen=True, eq=False)
class PointSet:
    """3D points in the camera optical frame (metres) with optional per-point colour.

    Organised: ``xyz`` (H, W, 3) float32 with NaN rows where depth was invalid, ``rgb`` (H, W, 3)
    uint8. Unorganised: ``xyz`` (N, 3) valid points only, ``rgb`` (N, 3).
    """

    xyz: npt.NDArray[np.float32]
    rgb: npt.NDArray[np.uint8] | None = None

    @property
    def organised(self) -> bool:
        return self.xyz.ndim == 3

    def __len__(self) -> int:
        return int(np.prod(self.xyz.shape[:-1]))


@dataclass(frozen=True, eq=False)
class _Views:
    """The strided/ROI views of the inputs that back-projection reads (validated, no copies)."""

    depth: npt.NDArray[np.float32]  # (h, w) raw depth (converted to float32 if it was not)
    grid: npt.NDArray[np.float32]  # (h, w, 3) view of the cached ray grid
    rgb: npt.NDArray[np.uint8] | None  # (h, w, 3) view of the colour image
    rows: slice  # the rows and columns of the full image that were sampled
    cols: slice
    min_range_m: float
    max_range_m: float
    ray_ok: npt.NDArray[np.bool_] | None  # (h, w) pixels with a usable ray; None: all of them

    def valid(
        self, depth: npt.NDArray[np.float32], rows: slice = slice(None)
    ) -> npt.NDArray[np.bool_]:
        """Validity of ``depth`` (the rows ``rows`` of the sampled depth): finite, positive,
        inside the range on z, and with a usable ray."""
        # Two comparisons decide validity; NaN fails both, inf fails the upper one, and zero or
        # negative depth fails the lower one.
        lower = depth >= self.min_range_m if self.min_range_m > 0 else depth > 0
        upper = depth <= self.max_range_m if math.isfinite(self.max_range_m) else depth < np.inf
        valid = np.logical_and(lower, upper, out=lower)
        if self.ray_ok is not None:
            np.logical_and(valid, self.ray_ok[rows], out=valid)
        return valid


def _sample_views(
    depth_m: npt.NDArray[np.floating[Any]],
    intr: Intrinsics,
    rgb: npt.NDArray[np.uint8] | None,
    stride: int,
    roi: tuple[int, int, int, int] | None,
    min_range_m: float,
    max_range_m: float,
) -> _Views:
    """Validate the inputs of back-projection and return the views it multiplies."""
    if not isinstance(intr, Intrinsics):
        raise InputError(f"intrinsics must be Intrinsics, got {type(intr).__name__}")
    if not isinstance(depth_m, np.ndarray) or depth_m.ndim != 2:
        raise InputError(f"depth_m must be an (H, W) numpy array, got {_describe(depth_m)}")
    if not np.issubdtype(depth_m.dtype, np.floating):
        raise InputError(
            f"depth_m must be floating point metres, got dtype {depth_m.dtype} "
            "(convert e.g. 16UC1 millimetres with depth.astype(np.float32) / 1000)"
        )
    if depth_m.size == 0:
        raise InputError(f"depth_m is empty (shape {depth_m.shape})")
    if depth_m.shape != intr.shape:
        raise InputError(
            f"depth_m is {depth_m.shape[1]}x{depth_m.shape[0]} (WxH) but the intrinsics describe "
            f"{intr.width}x{intr.height}; resize the intrinsics with Intrinsics.resized"
        )
    if rgb is not None:
        if (
            not isinstance(rgb, np.ndarray)
            or rgb.dtype != np.uint8
            or rgb.ndim != 3
            or rgb.shape[2] != 3
        ):
            raise InputError(f"rgb must be an (H, W, 3) uint8 array, got {_describe(rgb)}")
        if rgb.shape[:2] != depth_m.shape:
            raise InputError(
                f"rgb is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but depth_m is "
                f"{depth_m.shape[1]}x{depth_m.shape[0]}"
            )
    if not (isinstance(stride, numbers.Integral) and stride >= 1):
        raise InputError(f"stride must be an integer >= 1, got {stride!r}")
    if not (
        _is_real(min_range_m)
        and _is_real(max_range_m)
        and min_range_m >= 0
        and not math.isnan(max_range_m)
        and max_range_m >= min_range_m
    ):
        raise InputError(
            f"range must satisfy 0 <= min_range_m <= max_range_m, got "
            f"min_range_m={min_range_m!r} max_range_m={max_range_m!r}"
        )
    h, w = intr.shape
    if roi is None:
        x0, y0, rw, rh = 0, 0, w, h
    else:
        try:
            x0, y0, rw, rh = (int(c) for c in roi)
        except (TypeError, ValueError) as exc:
            raise InputError(f"roi must be (x0, y0, width, height) integers, got {roi!r}") from exc
        if x0 < 0 or y0 < 0 or rw <= 0 or rh <= 0 or x0 + rw > w or y0 + rh > h:
            raise InputError(
                f"roi {roi!r} (x0, y0, width, height) is not inside the {w}x{h} image"
            )
    rows = slice(y0, y0 + rh, stride)
    cols = slice(x0, x0 + rw, stride)
    d = depth_m[rows, cols]
    if d.dtype != np.float32:
        d = d.astype(np.float32)
    ray_ok = _ray_mask(intr)
    return _Views(
        depth=d,
        grid=ray_grid(intr)[rows, cols],
        rgb=None if rgb is None else rgb[rows, cols],
        rows=rows,
        cols=cols,
        min_range_m=float(min_range_m),
        max_range_m=float(max_range_m),
        ray_ok=None if ray_ok is None else ray_ok[rows, cols],
    )


#: Exponent all ones plus the quiet bit: OR-ed into any float32 it makes a (quiet) NaN.
_QUIET_NAN_BITS = np.uint32(0x7FC00000)


def _nan_where_invalid(
    depth: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """A copy of ``depth`` that is NaN wherever ``valid`` is false.

    Branch-free bit arithmetic: np.where (or masked assignment) over a scattered mask is about
    three times slower, as the CPU mispredicts every branch.
    """
    nan_bits = np.multiply(~valid, _QUIET_NAN_BITS, dtype=np.uint32)
    return np.bitwise_or(depth.view(np.uint32), nan_bits, out=nan_bits).view(np.float32)


@dataclass(frozen=True, eq=False)
class _Sampled:
    """The views back-projection reads, with invalid depth replaced by NaN."""

    views: _Views
    depth: npt.NDArray[np.float32]  # (h, w) depth with invalid pixels replaced by NaN
    valid: npt.NDArray[np.bool_]  # (h, w)
    all_valid: bool


def _sample_inputs(
    depth_m: npt.NDArray[np.floating[Any]],
    intr: Intrinsics,
    rgb: npt.NDArray[np.uint8] | None,
    stride: int,
    roi: tuple[int, int, int, int] | None,
    min_range_m: float,
    max_range_m: float,
) -> _Sampled:
    views = _sample_views(depth_m, intr, rgb, stride, roi, min_range_m, max_range_m)
    valid = views.valid(views.depth)
    all_valid = bool(valid.all())
    d = views.depth if all_valid else _nan_where_invalid(views.depth, valid)
    return _Sampled(views=views, depth=d, valid=valid, all_valid=all_valid)


def backproject(
    depth_m: npt.NDArray[np.floating[Any]],
    intr: Intrinsics,
    *,
    stride: int = 1,
    roi: tuple[int, int, int, int] | None = None,
    min_range_m: float = 0.0,
    max_range_m: float = math.inf,
    organised: bool = True,
    rgb: npt.NDArray[np.uint8] | None = None,
) -> PointSet:
    """3D points (camera optical frame, metres) from a depth image and its intrinsics.

    ``depth_m`` (H, W) holds depth along the optical axis (z), not the range along the ray.
    NaN, 0, +-inf and negative values are invalid. ``min_range_m``/``max_range_m`` keep points
    with ``min_range_m <= z <= max_range_m`` (z, like the depth image; not the Euclidean range).
    ``stride`` keeps every stride-th row and column; ``roi`` = (x0, y0, width, height) restricts
    to a window first. Organised output is (H', W', 3) on the strided grid with NaN for invalid
    pixels; unorganised output is (N, 3) valid points in row-major order. ``rgb`` (H, W, 3)
    uint8 is sampled at the same pixels.
    """
    s = _sample_inputs(depth_m, intr, rgb, stride, roi, min_range_m, max_range_m)
    grid, colours = s.views.grid, s.views.rgb
    if organised or s.all_valid:
        # Plane by plane: depth[..., None] * grid in one call has an inner loop of three
        # elements and is about twice as slow. The products are the same float32 numbers.
        xyz = np.empty((*s.depth.shape, 3), dtype=np.float32)
        np.multiply(s.depth, grid[..., 0], out=xyz[..., 0])
        np.multiply(s.depth, grid[..., 1], out=xyz[..., 1])
        xyz[..., 2] = s.depth
        rgb_out = None if colours is None else np.ascontiguousarray(colours)
        if organised:
            return PointSet(xyz=xyz, rgb=rgb_out)
        return PointSet(
            xyz=xyz.reshape(-1, 3), rgb=None if rgb_out is None else rgb_out.reshape(-1, 3)
        )
    # Gather per coordinate: fancy indexing of 12-byte (x, y, z) items is several times slower.
    d = s.depth[s.valid]
    xyz = np.empty((d.size, 3), dtype=np.float32)
    for k in range(2):
        np.multiply(d, grid[..., k][s.valid], out=xyz[:, k])
    xyz[:, 2] = d
    return PointSet(xyz=xyz, rgb=None if colours is None else colours[s.valid])


# ------------------------------------------------------------------------------ projection
def distort_normalised(
    xy: npt.NDArray[np.floating[Any]], dist: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Apply OpenCV's distortion model (k1, k2, p1, p2[, k3[, k4, k5, k6]]) to (..., 2) coords."""
    coeffs = np.zeros(8, dtype=np.float64)
    coeffs[: len(dist)] = dist
    k1, k2, p1, p2, k3, k4, k5, k6 = coeffs
    x = np.asarray(xy[..., 0], dtype=np.float64)
    y = np.asarray(xy[..., 1], dtype=np.float64)
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def project(
    xyz: npt.ArrayLike, intr: Intrinsics
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Pixel coordinates (..., 2) and depth z (...) of points (..., 3) in the optical frame.

    Applies the lens distortion when ``intr.dist`` is non-zero (OpenCV model, as
    cv2.projectPoints). Points with z <= 0 (behind the camera) or a non-finite coordinate get
    NaN pixel coordinates.
    """
    pts = np.asarray(xyz, dtype=np.float64)
    if pts.ndim < 1 or pts.shape[-1] != 3:
        raise InputError(f"xyz must have shape (..., 3), got {pts.shape}")
    z = pts[..., 2]
    ok = (z > 0) & np.isfinite(pts).all(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_z = np.where(ok, 1.0 / z, np.nan)
    xy = pts[..., :2] * inv_z[..., None]
    if intr.has_distortion:
        xy = distort_normalised(xy, intr.dist)
    uv = np.empty_like(xy)
    uv[..., 0] = xy[..., 0] * intr.fx_px + intr.cx_px
    uv[..., 1] = xy[..., 1] * intr.fy_px + intr.cy_px
    return uv, z.copy()
