"""Turn an RGB image and its intrinsics into the network's input batch, keeping intrinsics exact.

One ``cv2.resize`` to the spec's input size (``INTER_AREA`` when shrinking both axes, which
averages instead of aliasing; ``INTER_LINEAR`` otherwise), one ``cv2.split`` into uint8 planes,
then per plane one table lookup (``cv2.LUT``, 256 precomputed values of
``(pixel / 255 - mean) / std``, so no float arithmetic per pixel) written straight into its
plane of a preallocated, C-contiguous NCHW float32 buffer: the float data is written once and
never transposed (half the time of a lookup into HWC followed by a transposing copy). The
intrinsics follow the resize with :meth:`Intrinsics.resized` (pixel-centre convention, the one
``cv2.resize`` samples with).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.inference.spec import ModelSpec

__all__ = ["Preprocessor", "normalisation_lut", "resize_rgb", "validate_rgb"]


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


def resize_rgb(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """``rgb`` resized to ``width`` x ``height`` (area when shrinking both axes, else linear)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    cv2 = require("cv2", "image resizing")
    shrinking = width <= rgb.shape[1] and height <= rgb.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if not rgb.flags.c_contiguous:
        rgb = np.ascontiguousarray(rgb)  # cv2 rejects negative strides (e.g. a BGR view)
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


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

    def __call__(
        self, rgb: npt.NDArray[np.uint8], intrinsics: Intrinsics
    ) -> tuple[npt.NDArray[np.float32], Intrinsics]:
        cv2 = require("cv2", "preprocessing")
        rgb = validate_rgb(rgb, intrinsics)
        resized = resize_rgb(rgb, self.width, self.height)
        if not resized.flags.c_contiguous:
            resized = np.ascontiguousarray(resized)
        for channel, plane in enumerate(cv2.split(resized)):
            target = self._batch[0, self._targets[channel]]
            out = cv2.LUT(plane, self._plane_luts[channel], dst=target)
            if out is not target and not np.shares_memory(out, target):
                np.copyto(target, out)  # an OpenCV that ignores dst: still correct
        if intrinsics.size == (self.width, self.height):
            at_input = intrinsics
        else:
            at_input = intrinsics.resized(self.width, self.height)
        return self._batch, at_input
