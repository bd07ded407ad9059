"""Message-like images to numpy and back (encodings, row padding, endianness) without ROS imports.

Messages are read by duck typing (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
``data``), so rclpy messages (``data`` an ``array.array('B')``) and rosbags messages (``data`` a
uint8 numpy array) share one code path. Decoding honours ``step``: rows may be padded beyond
``width * pixel size`` (rosbags-image ignores this and mis-decodes such images).
"""

from __future__ import annotations

import array
import functools
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import EncodingError, InputError
from cloudypoints_core.types import CompressedImageLike, ImageLike

__all__ = [
    "ENCODINGS",
    "colorize_depth",
    "compressed_to_rgb",
    "depth_colormap_lut",
    "image_msg_to_numpy",
    "image_msg_to_rgb",
    "numpy_to_image_fields",
]


@dataclass(frozen=True)
class EncodingInfo:
    """How one sensor_msgs/Image encoding lays out a pixel."""

    dtype: str  # numpy type code without byte order
    channels: int

    @property
    def pixel_bytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.channels


#: Supported encodings (names as in sensor_msgs/image_encodings.hpp). ``8UCn`` follow cv_bridge:
#: 8UC3 is read as bgr8 and 8UC4 as bgra8 by :func:`image_msg_to_rgb`.
ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo("u1", 3),
    "bgr8": EncodingInfo("u1", 3),
    "rgba8": EncodingInfo("u1", 4),
    "bgra8": EncodingInfo("u1", 4),
    "mono8": EncodingInfo("u1", 1),
    "8UC1": EncodingInfo("u1", 1),
    "8UC3": EncodingInfo("u1", 3),
    "8UC4": EncodingInfo("u1", 4),
    "mono16": EncodingInfo("u2", 1),
    "16UC1": EncodingInfo("u2", 1),
    "32FC1": EncodingInfo("f4", 1),
}

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def _encoding_info(encoding: object) -> tuple[str, EncodingInfo]:
    if isinstance(encoding, str):
        if encoding in ENCODINGS:
            return encoding, ENCODINGS[encoding]
        # Tolerate case slips such as "16uc1" or "RGB8"; names differ only by case otherwise.
        for name, info in ENCODINGS.items():
            if name.lower() == encoding.lower():
                return name, info
    raise EncodingError(
        f"image encoding {encoding!r} is not supported; expected one of {sorted(ENCODINGS)}"
    )


def _as_byte_array(data: Any, what: str = "data") -> npt.NDArray[np.uint8]:
    """A 1-D uint8 view of a message's ``data`` (zero-copy for every buffer type ROS uses)."""
    if isinstance(data, np.ndarray):
        arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        return arr.reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        try:
            return np.frombuffer(data, dtype=np.uint8)
        except (ValueError, TypeError, BufferError):
            # A non-contiguous memoryview or an array.array of another item size: copy once.
            return np.frombuffer(bytes(data), dtype=np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            return np.asarray(data, dtype=np.uint8)
        except (ValueError, OverflowError, TypeError) as exc:
            raise InputError(f"{what} must hold bytes 0..255: {exc}") from exc
    raise InputError(
        f"{what} must be bytes, bytearray, memoryview, array.array or a uint8 numpy array, "
        f"got {type(data).__name__}"
    )


def _field(msg: Any, name: str) -> Any:
    try:
        return getattr(msg, name)
    except AttributeError:
        raise InputError(
            f"{type(msg).__name__} has no field {name!r}; expected a sensor_msgs/Image-like object"
        ) from None


def image_msg_to_numpy(msg: ImageLike) -> npt.NDArray[Any]:
    """The pixels of an Image-like message: (H, W) for one channel, else (H, W, C).

    Returns a view of ``msg.data`` when possible (zero copy; read-only if the data is ``bytes``,
    and sharing memory with the message otherwise). Multi-byte pixels in the other byte order
    (``is_bigendian``) are converted to native order, which copies. Channel order is that of the
    encoding (bgr8 stays BGR); see :func:`image_msg_to_rgb`.

    Raises EncodingError for an unknown encoding or a ``step`` smaller than a row, and
    InputError for zero size or data shorter than ``step * height``.
    """
    height, width, step = (_field(msg, n) for n in ("height", "width", "step"))
    name, info = _encoding_info(_field(msg, "encoding"))
    for label, value in (("height", height), ("width", width), ("step", step)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise InputError(f"image {label} must be a positive integer, got {value!r}")
    height, width, step = int(height), int(width), int(step)
    row_bytes = width * info.pixel_bytes
    if step < row_bytes:
        raise EncodingError(
            f"step {step} is smaller than width * pixel size = {width} * {info.pixel_bytes} = "
            f"{row_bytes} for {name}"
        )
    buf = _as_byte_array(_field(msg, "data"))
    if buf.size < step * height:
        raise InputError(
            f"image data has {buf.size} bytes but step * height = {step} * {height} = "
            f"{step * height} ({name})"
        )
    itemsize = np.dtype(info.dtype).itemsize
    big = bool(_field(msg, "is_bigendian")) if itemsize > 1 else False
    dtype = np.dtype(info.dtype).newbyteorder(">" if big else "<")
    out: npt.NDArray[Any] = np.ndarray(
        shape=(height, width, info.channels),
        dtype=dtype,
        buffer=buf,
        offset=0,
        strides=(step, info.pixel_bytes, itemsize),
    )
    if itemsize > 1 and big != _NATIVE_BIG_ENDIAN:
        out = out.astype(dtype.newbyteorder("="))
    return out[..., 0] if info.channels == 1 else out


def image_msg_to_rgb(msg: ImageLike) -> npt.NDArray[np.uint8]:
    """The pixels of an Image-like message as a C-contiguous (H, W, 3) uint8 RGB array.

    Converts bgr8/bgra8/rgba8/mono8/mono16 (mono16 keeps its high byte). Returns the zero-copy
    view for unpadded rgb8 (possibly read-only). Depth encodings (16UC1, 32FC1) raise
    EncodingError: colourise them with :func:`colorize_depth`.
    """
    arr = image_msg_to_numpy(msg)
    name, _ = _encoding_info(msg.encoding)
    if name == "rgb8":
        rgb = arr
    elif name in ("bgr8", "8UC3"):
        rgb = arr[..., ::-1]
    elif name == "rgba8":
        rgb = arr[..., :3]
    elif name in ("bgra8", "8UC4"):
        rgb = arr[..., 2::-1]
    elif name in ("mono8", "8UC1"):
        rgb = np.repeat(arr[..., None], 3, axis=2)
    elif name == "mono16":
        rgb = np.repeat((arr >> 8).astype(np.uint8)[..., None], 3, axis=2)
    else:
        raise EncodingError(
            f"{name} images are depth or data, not colour; use colorize_depth for a picture"
        )
    return np.ascontiguousarray(rgb)


def compressed_to_rgb(msg: CompressedImageLike) -> npt.NDArray[np.uint8]:
    """Decode a CompressedImage-like message (JPEG or PNG) to (H, W, 3) uint8 RGB.

    image_transport's compressed encoder stores colour images as BGR-ordered JPEG/PNG, which
    cv2.imdecode returns as BGR; grey images come back replicated to three channels.
    compressedDepth messages are refused (they carry a depth header, not a picture).
    """
    fmt = str(getattr(msg, "format", "") or "")
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise EncodingError(f"format {fmt!r} is compressedDepth, which is not a colour image")
    buf = _as_byte_array(_field(msg, "data"))
    if buf.size == 0:
        raise InputError(f"compressed image ({fmt!r}) has no data")
    cv2 = require("cv2", "decoding compressed images")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise EncodingError(
            f"could not decode {buf.size} bytes of compressed image data (format {fmt!r}); "
            "expected JPEG or PNG"
        )
    return np.ascontiguousarray(bgr[..., ::-1])


def numpy_to_image_fields(
    array_: npt.NDArray[Any], encoding: str, *, copy: bool = True
) -> dict[str, Any]:
    """The fields of a sensor_msgs/Image for ``array_`` (header excluded).

    Returns ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step`` (unpadded rows) and
    ``data`` as an ``array.array('B')``: an rclpy message's ``data`` setter copies that with one
    memcpy (it iterates element by element over numpy arrays and memoryviews), and
    ``np.frombuffer`` views it without copying for rosbags messages. With ``copy=False`` ``data``
    is a 1-D uint8 numpy view of the (contiguous, native-order) pixels instead, for a caller
    that copies them into a buffer of its own.
    """
    name, info = _encoding_info(encoding)
    if not isinstance(array_, np.ndarray):
        raise InputError(f"expected a numpy array for {name}, got {type(array_).__name__}")
    arr = array_
    if info.channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if arr.ndim != expected_ndim or (expected_ndim == 3 and arr.shape[2] != info.channels):
        want = "(H, W)" if info.channels == 1 else f"(H, W, {info.channels})"
        raise InputError(f"{name} needs an array of shape {want}, got {arr.shape}")
    if (
        arr.dtype.kind != np.dtype(info.dtype).kind
        or arr.dtype.itemsize != np.dtype(info.dtype).itemsize
    ):
        raise InputError(f"{name} needs dtype {np.dtype(info.dtype)}, got {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image must not be empty, got shape {arr.shape}")
    native = arr.dtype.newbyteorder("=")
    if arr.dtype != native:
        arr = arr.astype(native)
    arr = np.ascontiguousarray(arr)
    data: array.array[int] | npt.NDArray[np.uint8] = arr.reshape(-1).view(np.uint8)
    if copy:
        data = array.array("B")
        # .data is the array's buffer as a memoryview (numpy's stubs give ndarray no buffer
        # protocol before Python 3.12).
        data.frombytes(arr.reshape(-1).view(np.uint8).data)
    return {
        "height": int(arr.shape[0]),
        "width": int(arr.shape[1]),
        "encoding": name,
        "is_bigendian": int(_NATIVE_BIG_ENDIAN and arr.dtype.itemsize > 1),
        "step": int(arr.shape[1] * info.pixel_bytes),
        "data": data,
    }


# ------------------------------------------------------------------------------ depth colouring
def _oklab_to_srgb(lab: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """OKLab (Ottosson 2020) to gamma-encoded sRGB in [0, 1] (values may leave the gamut)."""
    lms_ = lab @ np.array(
        [
            [1.0, 1.0, 1.0],
            [0.3963377774, -0.1055613458, -0.0894841775],
            [0.2158037573, -0.0638541728, -1.2914855480],
        ]
    )
    lms = lms_**3
    lin = lms @ np.array(
        [
            [4.0767416621, -1.2684380046, -0.0041960863],
            [-3.3077115913, 2.6097574011, -0.7034186147],
            [0.2309699292, -0.3413193965, 1.7076147010],
        ]
    )
    lin_c = np.clip(lin, 0.0, None)
    srgb = np.where(lin_c <= 0.0031308, 12.92 * lin_c, 1.055 * lin_c ** (1 / 2.4) - 0.055)
    return np.where((lin < -1e-6) | (lin > 1 + 1e-6), np.nan, srgb)


@functools.lru_cache(maxsize=1)
def depth_colormap_lut() -> npt.NDArray[np.uint8]:
    """The 256-entry depth colormap (index 0 = near), read-only (256, 3) uint8 RGB.

    Built in the OKLab perceptual space: lightness falls linearly from 0.92 (near, pale yellow)
    to 0.30 (far, dark violet) while the hue turns through orange and red, so equal depth steps
    look like equal steps and the map stays readable in grey. Chroma is reduced where a colour
    would leave the sRGB gamut.
    """
    t = np.linspace(0.0, 1.0, 256)
    lightness = 0.92 - 0.62 * t
    hue = np.deg2rad(95.0 - 155.0 * t)
    chroma = np.full_like(t, 0.17)
    rgb = np.full((256, 3), np.nan)
    # Shrink chroma per entry until the colour is inside sRGB (a few dozen vectorised rounds).
    for _ in range(60):
        todo = np.isnan(rgb).any(axis=1)
        if not todo.any():
            break
        lab = np.stack(
            [lightness[todo], chroma[todo] * np.cos(hue[todo]), chroma[todo] * np.sin(hue[todo])],
            axis=-1,
        )
        rgb[todo] = _oklab_to_srgb(lab)
        chroma[todo] *= 0.95
    lut = np.round(np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def colorize_depth(
    depth_m: npt.NDArray[np.floating[Any]],
    min_m: float | None = None,
    max_m: float | None = None,
) -> npt.NDArray[np.uint8]:
    """An (H, W, 3) uint8 RGB picture of a depth image: near is warm and bright, far dark violet.

    Depth is mapped linearly from ``min_m`` (index 0) to ``max_m`` (index 255) and clipped; by
    default these are the smallest and largest valid depths of the image. NaN, inf, zero and
    negative depths are black. Uses :func:`depth_colormap_lut`.
    """
    if not isinstance(depth_m, np.ndarray) or depth_m.ndim != 2:
        raise InputError(
            f"depth_m must be an (H, W) numpy array, got {type(depth_m).__name__}"
            f"{getattr(depth_m, 'shape', '')}"
        )
    if not np.issubdtype(depth_m.dtype, np.floating):
        raise InputError(f"depth_m must be floating point metres, got dtype {depth_m.dtype}")
    d = depth_m.astype(np.float32, copy=False)
    valid = np.isfinite(d) & (d > 0)
    if min_m is None or max_m is None:
        if valid.any():
            vals = d[valid]
            lo = float(vals.min()) if min_m is None else float(min_m)
            hi = float(vals.max()) if max_m is None else float(max_m)
        else:
            lo = 0.0 if min_m is None else float(min_m)
            hi = lo + 1.0 if max_m is None else float(max_m)
    else:
        lo, hi = float(min_m), float(max_m)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"colour range must be finite, got min_m={lo!r} max_m={hi!r}")
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    with np.errstate(invalid="ignore"):
        idx = np.clip((d - lo) * scale + 0.5, 0.0, 255.0)
    # Entry 256 is the extra black one for invalid pixels (also keeps NaN out of the cast).
    index = np.where(valid, idx, np.float32(256.0)).astype(np.uint16)
    lut = np.concatenate([depth_colormap_lut(), np.zeros((1, 3), dtype=np.uint8)])
    return lut[index]
