"""The one inference path (node, evaluation, CLI): RGB + intrinsics in, metric depth out.

``DepthEstimator.predict`` runs preprocess (:mod:`.preprocess`: the image fitted to the network
input by the spec's resize policy) -> backend -> postprocess:

0. The network output is cut to the window that shows the image (un-padding; a cropped fit
   has nothing to cut), with the intrinsics of that window.
1. ``raw * output_scale + output_shift`` gives the spec's ``output_kind``.
2. Metric scale:
   - ``metric_depth``: the canonical-camera rule, depth *= focal_at_network_input / reference
     (the spec's ``focal_rule``: fx, or the mean of fx and fy, measured after fitting;
     reference ``reference_focal_px`` or ``train_fx_px``): a camera with twice the focal
     length sees everything twice as large, so at the same image size it is twice as far.
     ``scale_method="canonical_focal"``; a model with ``focal_rule: none`` is metric for any
     camera (``"metric"``, scale 1).
   - ``relative_inverse_depth``, ``disparity`` (inverse depth up to a scale) and
     ``affine_inverse_depth`` (up to a scale and a shift): depth = scale / (x + shift)
     (:mod:`.scale`; shift 0 for the first two). Where scale and shift come from is the
     ``scale_method`` option:
     ``"ground_plane"``: fitted per frame on the road from the camera height and pitch
     (``camera_height_m``, ``camera_pitch_rad``; options or ``predict`` arguments; pitch 0 when
     not given): the plane fit for scale-only kinds, the scale-and-shift fit for
     ``affine_inverse_depth``. With a ``scale_tracker`` the fits are smoothed over frames and a
     failed fit reuses the last good one (``"ground_plane_held"``); without one a failed fit
     raises :class:`ScaleError`.
     ``"fixed"``: ``fixed_scale`` (and ``fixed_shift``, default 0) (``"fixed_scale"``).
     ``"auto"`` (default): the ground plane when a height is known, else the tracker's last
     good fit, else ``fixed_scale`` if set (also when a fit fails); else ConfigError.
     ``"none"``: unscaled relative depth (scale 1, shift 0), an explicit opt-in: it is not in
     metres. A relative model never silently comes back unscaled: without a source,
     ``predict`` raises ConfigError naming the parameter to set.
3. Depth outside [min_depth_m, max_depth_m] (and non-finite or non-positive) becomes NaN: never
   clamped, so an invalid region never turns into a wall of points at the range limit.
4. Resize to the requested resolution (parts of the image a cropping fit left out are NaN).
   ``interpolation="linear"`` (default) interpolates *inverse* depth bilinearly: for a planar
   surface 1/z is affine in (u, v), so planes stay exactly planar (linear interpolation of z
   would bend them). NaN never leaks into valid values: an output pixel is valid only when
   every source pixel it draws from is valid (NaN regions grow by under one model pixel).
   ``"nearest"`` copies the nearest model pixel (no new depth values at all, so no flying
   pixels across object edges, at the cost of blockiness).

The returned intrinsics describe ``depth_m``'s grid exactly: the caller's intrinsics for
``output_resolution="input"``; for ``"model"`` those of the network-input window that shows the
image (the whole input for stretch and cropping fits, the un-padded part for letterboxing).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar

import numpy as np
import numpy.typing as npt

from cloudypoints_core import _fused
from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, InputError, ModelError, ScaleError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.backends import Backend, backend_option_names, create_backend
from cloudypoints_core.inference.package import ModelPackage, load_model_package
from cloudypoints_core.inference.preprocess import InputFit, Preprocessor
from cloudypoints_core.inference.scale import (
    AffineFitConfig,
    GroundPlaneConfig,
    ScaleFit,
    affine_to_depth,
    fit_affine_ground,
    fit_scale_ground,
)
from cloudypoints_core.inference.scale_tracker import ScaleTracker
from cloudypoints_core.inference.spec import ModelSpec

__all__ = [
    "FACADE_OPTIONS",
    "INTERPOLATIONS",
    "OUTPUT_RESOLUTIONS",
    "SCALE_METHODS",
    "SCALE_METHOD_OPTIONS",
    "DepthEstimator",
    "DepthResult",
    "apply_valid_range",
    "resize_depth",
]

log = logging.getLogger(__name__)

#: What ``DepthResult.scale_method`` reports.
SCALE_METHODS = (
    "canonical_focal",
    "metric",
    "ground_plane",
    "ground_plane_held",
    "fixed_scale",
    "none",
)
#: Values of the ``scale_method`` option (where relative models get metres from).
SCALE_METHOD_OPTIONS = ("auto", "ground_plane", "fixed", "none")
OUTPUT_RESOLUTIONS = ("input", "model")
INTERPOLATIONS = ("linear", "nearest")
#: Options ``from_package`` keeps for the facade; the rest go to the backend.
FACADE_OPTIONS = frozenset(
    {
        "fixed_scale",
        "camera_height_m",
        "camera_pitch_rad",
        "interpolation",
        "ground_plane",
        "scale_method",
        "fixed_shift",
        "scale_tracker",
        "affine_fit",
    }
)
#: An output pixel counts as valid when this much of its interpolation weight lies on valid
#: source pixels (1 up to float rounding).
_FULL_WEIGHT = 0.999
#: A repeated scale-recovery warning is logged once every this many frames.
_WARN_EVERY = 300


@dataclass(frozen=True, eq=False)
class DepthResult:
    """Metric depth and how it was obtained.

    ``depth_m`` (H', W') float32 metres along the optical axis, NaN where invalid; ``intrinsics``
    describe exactly that grid. ``scale`` is the factor ``scale_method`` applied (relative
    models: depth = scale / (x + ``shift``)). ``timings`` are milliseconds for "preprocess",
    "infer", "postprocess" and "total". ``scale_fit`` is this frame's ground fit (scale, shift,
    inlier ratio, method or why it failed), None when no fit ran.
    """

    depth_m: npt.NDArray[np.float32]
    intrinsics: Intrinsics
    scale_method: str
    scale: float
    backend: str
    device: str
    timings: Mapping[str, float] = field(default_factory=dict)
    shift: float = 0.0
    scale_fit: ScaleFit | None = None
    #: The same depth before the valid-range mask (out-of-range values kept), on the same grid;
    #: only with ``predict(..., keep_unmasked=True)``: evaluation clamps it to its protocol's
    #: range instead of losing the pixels (publishing uses ``depth_m``).
    depth_unmasked_m: npt.NDArray[np.float32] | None = None


# --------------------------------------------------------------------------- postprocessing
def apply_valid_range(
    depth: npt.NDArray[np.float32], min_depth_m: float, max_depth_m: float
) -> npt.NDArray[np.float32]:
    """Set depth outside [min, max] (and NaN/inf) to NaN in place; returns ``depth``."""
    # NaN passes neither comparison and stays NaN; +-inf fail one of them. putmask is the
    # fastest masked store numpy has (about 4x copyto(where=) when few pixels are invalid).
    with np.errstate(invalid="ignore"):
        invalid = np.less(depth, min_depth_m)
        invalid |= np.greater(depth, max_depth_m)
    np.putmask(depth, invalid, np.float32(np.nan))
    return depth


def resize_depth(
    depth: npt.NDArray[np.float32], width: int, height: int, interpolation: str = "linear"
) -> npt.NDArray[np.float32]:
    """``depth`` (positive or NaN) resized to ``width`` x ``height`` (see the module docstring)."""
    if depth.shape == (height, width):
        return depth
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    cv2 = require("cv2", "depth resizing")
    if interpolation == "nearest":
        # INTER_NEAREST_EXACT samples at pixel centres like Intrinsics.resized; INTER_NEAREST
        # is shifted by half a source pixel.
        return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    # Bilinear also when shrinking: INTER_AREA averages a piecewise-constant image, which is not
    # exact for planes at non-integer factors and would shift depth by up to a few 1e-4.
    flag = cv2.INTER_LINEAR
    with np.errstate(divide="ignore"):
        inverse = np.reciprocal(depth)
    valid = np.isfinite(inverse)
    if valid.all():
        out = cv2.resize(inverse, (width, height), interpolation=flag)
        return np.reciprocal(out, out=out)
    # Interpolate inverse depth (0 where invalid) and the validity weight in one pass, then keep
    # only pixels whose weight lies entirely on valid sources.
    pair = np.empty(depth.shape + (2,), dtype=np.float32)
    np.copyto(pair[..., 0], np.where(valid, inverse, np.float32(0.0)))
    np.copyto(pair[..., 1], valid)
    # The interpolated pair is scratch: written into a per-thread buffer that is reused while
    # the size stays (a fresh 2-channel camera-sized array per frame costs its page faults).
    resized = cv2.resize(
        pair, (width, height), dst=_pair_buffer(height, width), interpolation=flag
    )
    out = np.empty((height, width), dtype=np.float32)
    if _fused.available():  # one compiled pass, the same bits
        _fused.depth_from_pair(resized, _FULL_WEIGHT, out)
        return out
    good = resized[..., 1] >= _FULL_WEIGHT
    out.fill(np.nan)
    np.divide(np.float32(1.0), resized[..., 0], out=out, where=good)
    return out


_SCRATCH = threading.local()


def _pair_buffer(height: int, width: int) -> npt.NDArray[np.float32]:
    """This thread's (height, width, 2) float32 scratch buffer (reallocated on a new size)."""
    buf: npt.NDArray[np.float32] | None = getattr(_SCRATCH, "pair", None)
    if buf is None or buf.shape != (height, width, 2):
        buf = _SCRATCH.pair = np.empty((height, width, 2), dtype=np.float32)
    return buf


def _is_number(value: object) -> TypeGuard[int | float | np.integer[Any] | np.floating[Any]]:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class DepthEstimator:
    """Monocular depth from one model package through one backend (see the module docstring).

    Options (also accepted by :meth:`from_package`): ``scale_method`` (one of
    :data:`SCALE_METHOD_OPTIONS`, see the module docstring), ``fixed_scale`` (metres per unit of
    relative depth) and ``fixed_shift`` (output units; depth = fixed_scale / (x + fixed_shift)),
    ``camera_height_m`` and ``camera_pitch_rad`` (defaults for the ground fit; ``predict``
    arguments override them), ``scale_tracker`` (a :class:`ScaleTracker` smoothing scale and
    shift over a stream; share one between the estimators of one camera), ``interpolation``
    ("linear" on inverse depth, or "nearest"), ``ground_plane`` (:class:`GroundPlaneConfig` or a
    dict of its fields), ``affine_fit`` (:class:`AffineFitConfig` or a dict of its fields).

    ``predict`` is thread-safe (calls are serialised); the estimator holds reusable buffers.
    """

    def __init__(
        self,
        spec: ModelSpec,
        backend: Backend,
        *,
        package: ModelPackage | None = None,
        fixed_scale: float | None = None,
        camera_height_m: float | None = None,
        camera_pitch_rad: float | None = None,
        interpolation: str = "linear",
        ground_plane: GroundPlaneConfig | Mapping[str, Any] | None = None,
        scale_method: str = "auto",
        fixed_shift: float = 0.0,
        scale_tracker: ScaleTracker | None = None,
        affine_fit: AffineFitConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if fixed_scale is not None and not (
            _is_number(fixed_scale) and math.isfinite(fixed_scale) and fixed_scale > 0
        ):
            raise ConfigError(f"fixed_scale must be a finite positive number, got {fixed_scale!r}")
        if not (_is_number(fixed_shift) and math.isfinite(fixed_shift)):
            raise ConfigError(f"fixed_shift must be a finite number, got {fixed_shift!r}")
        if scale_method not in SCALE_METHOD_OPTIONS:
            raise ConfigError(
                f"scale_method must be one of {SCALE_METHOD_OPTIONS}, got {scale_method!r}"
            )
        if scale_method == "fixed" and fixed_scale is None:
            raise ConfigError(
                "scale_method='fixed' needs fixed_scale (metres per unit of relative depth)"
            )
        if scale_tracker is not None and not isinstance(scale_tracker, ScaleTracker):
            raise ConfigError(
                f"scale_tracker must be a ScaleTracker, got {type(scale_tracker).__name__}"
            )
        if camera_height_m is not None:
            self._check_height(camera_height_m)
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        if isinstance(ground_plane, Mapping):
            ground_plane = _options(GroundPlaneConfig, ground_plane, "ground_plane")
        if isinstance(affine_fit, Mapping):
            affine_fit = _options(AffineFitConfig, affine_fit, "affine_fit")
        self.spec = spec
        self.package = package
        self.backend = backend
        self.fixed_scale = None if fixed_scale is None else float(fixed_scale)
        self.camera_height_m = camera_height_m
        self.camera_pitch_rad = camera_pitch_rad
        self.interpolation = interpolation
        self.ground_plane = ground_plane or GroundPlaneConfig()
        self.scale_method = scale_method
        self.fixed_shift = float(fixed_shift)
        self.scale_tracker = scale_tracker
        self.affine_fit = affine_fit or AffineFitConfig()
        self._preprocess = Preprocessor(spec)
        self._lock = threading.Lock()
        self._fallbacks = 0

    @classmethod
    def from_package(
        cls,
        path: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        device: str = "cpu",
        **options: Any,
    ) -> DepthEstimator:
        """Load the package at ``path`` (None: the bundled default) on ``backend``/``device``.

        ``options`` mixes facade options (class docstring) and backend options (e.g.
        ``num_threads``; see each backend). With ``backend="auto"`` options meant for other
        backends are ignored, so one configuration works on every machine.
        """
        package = load_model_package(path)
        facade = {k: v for k, v in options.items() if k in FACADE_OPTIONS}
        rest = {k: v for k, v in options.items() if k not in FACADE_OPTIONS}
        known = set(FACADE_OPTIONS).union(*backend_option_names().values())
        unknown = sorted(set(rest) - known)
        if unknown:
            raise ConfigError(
                f"unknown options {unknown}; facade options: {sorted(FACADE_OPTIONS)}; backend "
                "options: "
                + ", ".join(f"{k}: {sorted(v)}" for k, v in backend_option_names().items())
            )
        # Facade options are validated before paying for a backend, which then replaces the stub.
        estimator = cls(package.spec, _NullBackend(), package=package, **facade)
        estimator.backend = create_backend(backend, package, device, rest)
        if package.spec.mask_outputs:
            # A backend without infer_all (output_names) cannot deliver the extra outputs.
            names = tuple(getattr(estimator.backend, "output_names", ()))
            missing = [m.name for m in package.spec.mask_outputs if m.name not in names]
            if missing:
                estimator.backend.close()
                raise ModelError(
                    f"model {package.spec.name!r}: the spec's mask outputs {missing} are not "
                    f"outputs the {estimator.backend_name} backend returns (it gives "
                    f"{list(names)}); use a backend with every output, e.g. onnxruntime"
                )
        return estimator

    # ------------------------------------------------------------------------------- info
    @property
    def backend_name(self) -> str:
        return str(self.backend.name)

    @property
    def device(self) -> str:
        return str(self.backend.device)

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the network runs at."""
        return (self.spec.input_width, self.spec.input_height)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> DepthEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- predict
    @staticmethod
    def _check_height(value: object) -> float:
        if not (_is_number(value) and math.isfinite(value) and value > 0):
            raise InputError(f"camera_height_m must be a finite positive number, got {value!r}")
        return float(value)

    def predict(
        self,
        rgb: npt.NDArray[np.uint8],
        intrinsics: Intrinsics,
        output_resolution: str = "input",
        camera_height_m: float | None = None,
        camera_pitch_rad: float | None = None,
        keep_unmasked: bool = False,
    ) -> DepthResult:
        """Metric depth for an (H, W, 3) uint8 RGB image whose camera is ``intrinsics``.

        ``output_resolution``: "input" (H, W) or "model" (the network's size). The camera
        height/pitch matter only for relative models (ground-plane scale recovery).
        ``keep_unmasked`` also returns the depth before the valid-range mask
        (``DepthResult.depth_unmasked_m``, one more resize) for evaluation.
        """
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise InputError(
                f"output_resolution must be one of {OUTPUT_RESOLUTIONS}, got {output_resolution!r}"
            )
        height_m = self.camera_height_m if camera_height_m is None else camera_height_m
        if height_m is not None:
            height_m = self._check_height(height_m)
        pitch = self.camera_pitch_rad if camera_pitch_rad is None else camera_pitch_rad
        with self._lock:
            t0 = time.perf_counter()
            batch, at_input = self._preprocess(rgb, intrinsics)
            t1 = time.perf_counter()
            outputs: dict[str, npt.NDArray[Any]] | None = None
            if self.spec.mask_outputs:
                outputs = self.backend.infer_all(batch)
            else:
                raw = self.backend.infer(batch)
            t2 = time.perf_counter()
            if outputs is not None:
                raw = self._apply_masks(outputs)
            placement = self._preprocess.fit_for(intrinsics.width, intrinsics.height)
            if placement.pads:  # un-pad: keep the window that shows the image
                x0, y0, w, h = placement.window
                raw = raw[y0 : y0 + h, x0 : x0 + w]
                at_input = at_input.cropped(x0, y0, w, h)
            depth, method, scale, shift, fit = self._to_metric(raw, at_input, height_m, pitch)
            unmasked = depth.copy() if keep_unmasked else None
            apply_valid_range(depth, self.spec.min_depth_m, self.spec.max_depth_m)
            if output_resolution == "input":
                depth = self._to_camera(depth, placement, intrinsics)
                if unmasked is not None:
                    unmasked = self._to_camera(unmasked, placement, intrinsics)
                out_intrinsics = intrinsics
            else:
                out_intrinsics = at_input
            t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "infer": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return DepthResult(
            depth_m=depth,
            intrinsics=out_intrinsics,
            scale_method=method,
            scale=scale,
            backend=self.backend_name,
            device=self.device,
            timings=timings,
            shift=shift,
            scale_fit=fit,
            depth_unmasked_m=unmasked,
        )

    def _to_camera(
        self, depth: npt.NDArray[np.float32], placement: InputFit, intrinsics: Intrinsics
    ) -> npt.NDArray[np.float32]:
        """Depth on the network's (un-padded) grid brought back to the camera image: what the
        fit cropped away is unknown (NaN), then resized to the camera's size."""
        if placement.crops:
            depth = _uncrop(depth, placement)
        return resize_depth(depth, intrinsics.width, intrinsics.height, self.interpolation)

    def _apply_masks(self, outputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """The primary output (a new array) with NaN where a mask output (e.g. sky) says the
        pixel is invalid: masked before the scale fit, so sky never takes part in it."""
        spec = self.spec
        shape = (spec.input_height, spec.input_width)
        raw = np.array(outputs[spec.output_name], dtype=np.float32).reshape(shape)
        for mask in spec.mask_outputs:
            values = np.asarray(outputs[mask.name]).reshape(shape)
            with np.errstate(invalid="ignore"):
                if mask.invalid_when == "above":
                    invalid = values >= mask.threshold
                else:
                    invalid = values < mask.threshold
            np.putmask(raw, invalid, np.float32(np.nan))
        return raw

    def _to_metric(
        self,
        raw: npt.NDArray[np.float32],
        at_input: Intrinsics,
        camera_height_m: float | None,
        camera_pitch_rad: float | None,
    ) -> tuple[npt.NDArray[np.float32], str, float, float, ScaleFit | None]:
        """(depth in metres before range checks (a new array), scale_method, scale, shift,
        this frame's ground fit or None)."""
        spec = self.spec
        if spec.output_kind == "metric_depth":
            reference = spec.reference_focal
            if reference is None:
                factor, method = 1.0, "metric"
            else:
                # Focal lengths at the network input, after fitting: cropping and padding keep
                # them, resizing scales them, so the canonical camera is compared like for like.
                focal = (
                    at_input.fx_px
                    if spec.focal_rule == "fx"
                    else 0.5 * (at_input.fx_px + at_input.fy_px)
                )
                factor, method = focal / reference, "canonical_focal"
            # One fused pass: (raw * s + t) * factor.
            depth = raw * np.float32(spec.output_scale * factor)
            if spec.output_shift:
                depth += np.float32(spec.output_shift * factor)
            return depth.astype(np.float32, copy=False), method, factor, 0.0, None
        x = raw * np.float32(spec.output_scale)
        if spec.output_shift:
            x += np.float32(spec.output_shift)
        method = self.scale_method
        if method == "none":
            return affine_to_depth(x, 1.0), "none", 1.0, 0.0, None
        if method == "fixed":
            return self._fixed(x, None)
        tracker = self.scale_tracker
        if camera_height_m is None:
            held = tracker.state if tracker is not None else None
            if held is not None and held.scale is not None:
                depth = affine_to_depth(x, held.scale, held.shift)
                return depth, "ground_plane_held", held.scale, held.shift, None
            if method == "auto" and self.fixed_scale is not None:
                return self._fixed(x, "no camera height given")
            unknown = "scale and shift" if spec.output_kind == "affine_inverse_depth" else "scale"
            raise ConfigError(
                f"{spec.output_kind} model {spec.name!r} gives depth only up to an unknown "
                f"{unknown} and has no metric scale source: pass camera_height_m (and "
                "camera_pitch_rad) for the ground-plane fit, or fixed_scale (scale_method "
                "'fixed' or 'auto'), or scale_method='none' for unscaled relative depth (not "
                "metres)"
            )
        if spec.output_kind == "affine_inverse_depth":
            fit = fit_affine_ground(
                x, at_input, camera_height_m, camera_pitch_rad, config=self.affine_fit
            )
        else:
            fit = fit_scale_ground(
                x, at_input, camera_height_m, camera_pitch_rad, self.ground_plane
            )
        if tracker is not None:
            state = tracker.update(fit)
            if state.scale is not None:
                used = "ground_plane_held" if state.held else "ground_plane"
                return (
                    affine_to_depth(x, state.scale, state.shift),
                    used,
                    state.scale,
                    state.shift,
                    fit,
                )
        elif fit.scale is not None:
            return (
                affine_to_depth(x, fit.scale, fit.shift),
                "ground_plane",
                fit.scale,
                fit.shift,
                fit,
            )
        if method == "auto" and self.fixed_scale is not None:
            depth, used, scale, shift, _ = self._fixed(x, f"ground-plane fit failed: {fit.reason}")
            return depth, used, scale, shift, fit
        raise ScaleError(
            f"{spec.output_kind} model {spec.name!r}: ground-plane fit failed ({fit.reason}) "
            "and there is no earlier good fit or fixed_scale to fall back to"
        )

    def _fixed(
        self, x: npt.NDArray[np.float32], reason: str | None
    ) -> tuple[npt.NDArray[np.float32], str, float, float, ScaleFit | None]:
        """``fixed_scale / (x + fixed_shift)``; ``reason`` (why it is a fallback) is logged."""
        if self.fixed_scale is None:  # the constructor refuses scale_method='fixed' without it
            raise ConfigError("scale_method='fixed' needs fixed_scale")
        scale, shift = self.fixed_scale, self.fixed_shift
        if reason is not None:
            if self._fallbacks % _WARN_EVERY == 0:
                log.warning(
                    "%s model %s: %s; using fixed_scale (scale %.4g, shift %.4g)%s",
                    self.spec.output_kind,
                    self.spec.name,
                    reason,
                    scale,
                    shift,
                    "" if self._fallbacks == 0 else f" [{self._fallbacks} times so far]",
                )
            self._fallbacks += 1
        return affine_to_depth(x, scale, shift), "fixed_scale", scale, shift, None


C = TypeVar("C")


def _options(config: Callable[..., C], values: Mapping[str, Any], what: str) -> C:
    """``config(**values)``; ConfigError naming ``what`` for unknown or missing options."""
    fields = dict(values)
    try:
        return config(**fields)
    except TypeError as exc:
        raise ConfigError(f"bad {what} options {fields}: {exc}") from exc


def _uncrop(depth: npt.NDArray[np.float32], fit: InputFit) -> npt.NDArray[np.float32]:
    """``depth`` of the network input placed in the resized image's grid, NaN outside."""
    rw, rh = fit.resized_size
    x0, y0, w, h = fit.source_window
    canvas = np.full((rh, rw), np.nan, dtype=np.float32)
    canvas[y0 : y0 + h, x0 : x0 + w] = depth
    return canvas


class _NullBackend:
    """Stand-in used to validate facade options before a real backend is loaded."""

    name = "none"
    device = "cpu"
    output_names: tuple[str, ...] = ()

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def infer_all(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass
