"""Turn an RGB image and its intrinsics into the network's input batch, keeping intrinsics exact.

The spec's ``resize_policy`` decides how an image of any size is fitted to the fixed input
(:func:`fit_input`, one :class:`InputFit` per image size, cached): ``stretch`` resizes to the
input size; ``keep_aspect_pad`` resizes by the smaller factor and pads centred with
``pad_value`` (letterbox); ``keep_aspect_crop`` resizes by the larger factor and crops centred;
``lower_bound`` is Depth Anything's rule (resize by the larger factor, each side rounded to the
``input_multiple``, at least the input size), then crops centred whatever exceeds the fixed input.
The intrinsics follow with :meth:`Intrinsics.resized`, :meth:`Intrinsics.cropped` and
:meth:`Intrinsics.padded` only, so the network-input camera is exact.

One ``cv2.resize`` with the spec's ``interpolation`` (``auto``: ``INTER_AREA`` when shrinking
both axes, which averages instead of aliasing; ``INTER_LINEAR`` otherwise), one ``cv2.split``
into uint8 planes,
then per plane one table lookup (``cv2.LUT``, 256 precomputed values of
``(pixel / 255 - mean) / std``, so no float arithmetic per pixel) written straight into its
plane of a preallocated, C-contiguous NCHW float32 buffer: the float data is written once and
never transposed (half the time of a lookup into HWC followed by a transposing copy). A crop is
a view taken before the lookup; a padded border is filled with the normalised ``pad_value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.spec import ModelSpec

__all__ = [
    "InputFit",
    "Preprocessor",
    "fit_input",
    "normalisation_lut",
    "resize_rgb",
    "validate_rgb",
]


@dataclass(frozen=True)
class InputFit:
    """Where an image of ``image_size`` lands in the network input of ``input_size``.

    The image is resized to ``resized_size`` and its top-left pixel placed at ``offset`` (x, y)
    of the input: a negative offset crops, a positive one pads. ``window`` (x0, y0, w, h) is the
    part of the network input that shows the image; ``source_window`` is the same part in the
    resized image's pixels.
    """

    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def window(self) -> tuple[int, int, int, int]:
        (ox, oy), (rw, rh), (iw, ih) = self.offset, self.resized_size, self.input_size
        x0, y0 = max(0, ox), max(0, oy)
        return x0, y0, min(iw, ox + rw) - x0, min(ih, oy + rh) - y0

    @property
    def source_window(self) -> tuple[int, int, int, int]:
        x0, y0, w, h = self.window
        return x0 - self.offset[0], y0 - self.offset[1], w, h

    @property
    def is_stretch(self) -> bool:
        """The resized image is exactly the network input (no crop, no pad)."""
        return self.resized_size == self.input_size and self.offset == (0, 0)

    @property
    def crops(self) -> bool:
        """Part of the resized image lies outside the network input."""
        return self.source_window[2:] != self.resized_size

    @property
    def pads(self) -> bool:
        """Part of the network input lies outside the image."""
        return self.window[2:] != self.input_size

    def at_input(self, intrinsics: Intrinsics) -> Intrinsics:
        """The camera seen by the network: resize, then crop, then pad (exact arithmetic)."""
        intr = intrinsics
        if intr.size != self.resized_size:
            intr = intr.resized(*self.resized_size)
        if self.crops:
            intr = intr.cropped(*self.source_window)
        if self.pads:
            x0, y0, _, _ = self.window
            intr = intr.padded(x0, y0, *self.input_size)
        return intr


def _multiple_at_least(value: float, multiple: int, minimum: int) -> int:
    """``value`` rounded to a multiple of ``multiple``, rounded up instead when that is below
    ``minimum`` (Depth Anything's ``constrain_to_multiple_of`` with ``min_val``)."""
    out = int(round(value / multiple)) * multiple
    if out < minimum:
        out = int(math.ceil(value / multiple)) * multiple
    return max(out, minimum)


def fit_input(spec: ModelSpec, width: int, height: int) -> InputFit:
    """How ``spec`` fits an image of ``width`` x ``height`` to its input (module docstring)."""
    iw, ih = spec.input_width, spec.input_height
    policy = spec.fit_policy
    if policy == "stretch":
        return InputFit((width, height), (iw, ih), (0, 0), (iw, ih))
    if policy == "keep_aspect_pad":
        scale = min(iw / width, ih / height)
        # Truncation as Metric3D's reference code does; the epsilon keeps an exact fit exact.
        rw = min(iw, max(1, int(width * scale + 1e-6)))
        rh = min(ih, max(1, int(height * scale + 1e-6)))
        return InputFit((width, height), (rw, rh), ((iw - rw) // 2, (ih - rh) // 2), (iw, ih))
    scale = max(iw / width, ih / height)
    if policy == "keep_aspect_crop":
        rw = max(iw, int(round(width * scale)))
        rh = max(ih, int(round(height * scale)))
    else:  # lower_bound
        rw = _multiple_at_least(width * scale, spec.input_multiple, iw)
        rh = _multiple_at_least(height * scale, spec.input_multiple, ih)
    return InputFit((width, height), (rw, rh), (-((rw - iw) // 2), -((rh - ih) // 2)), (iw, ih))


def validate_rgb(rgb: object, intrinsics: Intrinsics) -> npt.NDArray[np.uint8]:
    """``rgb`` as an (H, W, 3) uint8 array matching ``intrinsics``; InputError otherwise."""
    if not isinstance(rgb, np.ndarray):
        raise InputError(
            f"image must be a numpy array (H, W, 3) uint8 RGB, got {type(rgb).__name__}"
        )
    if rgb.dtype != np.uint8:
        raise InputError(f"image must be uint8 RGB, got dtype {rgb.dtype}")
    if rgb.ndim != 3:
        raise InputError(f"image must have shape (H, W, 3), got {rgb.shape}")
    if rgb.shape[2] != 3:
        raise InputError(
            f"image must have 3 channels (RGB), got {rgb.shape[2]}; convert gray or RGBA first"
        )
    if not isinstance(intrinsics, Intrinsics):
        raise InputError(f"intrinsics must be an Intrinsics, got {type(intrinsics).__name__}")
    if rgb.shape[:2] != intrinsics.shape:
        raise InputError(
            f"image is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but the intrinsics describe a "
            f"{intrinsics.width}x{intrinsics.height} image; resize the intrinsics with the image"
        )
    return rgb


def resize_rgb(
    rgb: npt.NDArray[np.uint8], width: int, height: int, interpolation: str = "auto"
) -> npt.NDArray[np.uint8]:
    """``rgb`` resized to ``width`` x ``height`` with a spec ``interpolation`` (``auto``: area
    when shrinking both axes, else linear)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    cv2 = require("cv2", "image resizing")
    shrinking = width <= rgb.shape[1] and height <= rgb.shape[0]
    if interpolation == "auto":
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    elif interpolation == "area_or_cubic":
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    elif interpolation in ("linear", "cubic", "area"):
        flag = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}[
            interpolation
        ]
    else:
        raise InputError(f"unknown input interpolation {interpolation!r}")
    if not rgb.flags.c_contiguous:
        rgb = np.ascontiguousarray(rgb)  # cv2 rejects negative strides (e.g. a BGR view)
    return cv2.resize(rgb, (width, height), interpolation=flag)


def normalisation_lut(spec: ModelSpec) -> npt.NDArray[np.float32]:
    """(1, 256, 3) float32 table: entry [0, v, c] is the network value of RGB channel c at v.

    For a BGR network, RGB channel c feeds network channel 2 - c, so it takes that channel's
    mean and std (the spec's mean/std are in the network's channel order).
    """
    mean = np.asarray(spec.mean, dtype=np.float64)
    std = np.asarray(spec.std, dtype=np.float64)
    if spec.channel_order == "bgr":
        mean, std = mean[::-1], std[::-1]
    values = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return ((values - mean) / std).astype(np.float32).reshape(1, 256, 3)


def normalised_pad_value(spec: ModelSpec) -> npt.NDArray[np.float32]:
    """The network value of each RGB channel of ``pad_value`` (exact, not rounded to a level)."""
    mean = np.asarray(spec.mean, dtype=np.float64)
    std = np.asarray(spec.std, dtype=np.float64)
    if spec.channel_order == "bgr":
        mean, std = mean[::-1], std[::-1]
    pad = np.asarray(spec.pad_value, dtype=np.float64) / 255.0
    return ((pad - mean) / std).astype(np.float32)


class Preprocessor:
    """Callable turning (rgb, intrinsics) into (batch, intrinsics at the model input).

    The batch is a buffer reused by the next call: consume it (run the backend) before calling
    again. Not thread-safe; the facade serialises calls.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.width = spec.input_width
        self.height = spec.input_height
        lut = normalisation_lut(spec)
        # One (1, 256) table per RGB channel, and the network plane each channel goes to.
        self._plane_luts = [np.ascontiguousarray(lut[:, :, c]) for c in range(3)]
        self._targets = (2, 1, 0) if spec.channel_order == "bgr" else (0, 1, 2)
        self._batch = np.empty((1, 3, self.height, self.width), dtype=np.float32)
        self._pad = normalised_pad_value(spec)
        self._fits: dict[tuple[int, int], InputFit] = {}
        self._window_planes: npt.NDArray[np.float32] | None = None

    def fit_for(self, width: int, height: int) -> InputFit:
        """The (cached) :class:`InputFit` of an image of ``width`` x ``height``."""
        fit = self._fits.get((width, height))
        if fit is None:
            if len(self._fits) > 16:  # a camera rarely changes size; bound the cache anyway
                self._fits.clear()
            fit = self._fits[(width, height)] = fit_input(self.spec, width, height)
        return fit

    def __call__(
        self, rgb: npt.NDArray[np.uint8], intrinsics: Intrinsics
    ) -> tuple[npt.NDArray[np.float32], Intrinsics]:
        cv2 = require("cv2", "preprocessing")
        rgb = validate_rgb(rgb, intrinsics)
        fit = self.fit_for(intrinsics.width, intrinsics.height)
        resized = resize_rgb(rgb, *fit.resized_size, interpolation=self.spec.interpolation)
        if fit.crops:
            x0, y0, w, h = fit.source_window
            resized = resized[y0 : y0 + h, x0 : x0 + w]
        if not resized.flags.c_contiguous:
            resized = np.ascontiguousarray(resized)
        if fit.pads:
            # Border planes hold the exact normalised pad value; the image goes to its window.
            x0, y0, w, h = fit.window
            for target, value in zip(self._targets, self._pad, strict=True):
                self._batch[0, target].fill(value)
            planes = self._window_buffer(h, w)
        else:
            planes = self._batch[0]
        for channel, plane in enumerate(cv2.split(resized)):
            target = planes[self._targets[channel]]
            out = cv2.LUT(plane, self._plane_luts[channel], dst=target)
            if out is not target and not np.shares_memory(out, target):
                np.copyto(target, out)  # an OpenCV that ignores dst: still correct
        if fit.pads:
            self._batch[0, :, y0 : y0 + h, x0 : x0 + w] = planes
        if fit.is_stretch and intrinsics.size == (self.width, self.height):
            at_input = intrinsics
        else:
            at_input = fit.at_input(intrinsics)
        return self._batch, at_input

    def _window_buffer(self, height: int, width: int) -> npt.NDArray[np.float32]:
        buf = self._window_planes
        if buf is None or buf.shape != (3, height, width):
            buf = self._window_planes = np.empty((3, height, width), dtype=np.float32)
        return buf
