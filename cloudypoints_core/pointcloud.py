"""The sensor_msgs/PointCloud2 byte layout built from numpy arrays, and a binary PLY writer/reader.

Layout (shared/DESIGN.md): fields ``x``, ``y``, ``z`` FLOAT32 at offsets 0, 4, 8 and, with colour,
``rgb`` FLOAT32 at offset 12 whose four bytes are the uint32 0x00RRGGBB (RViz's convention; on a
little-endian machine the bytes are B, G, R, 0). ``point_step`` is 16 with or without colour:
without colour bytes 12-15 are zero padding, as PCL's PointXYZ has, so every cloud has one
16-byte-aligned layout and adding colour never changes the stride. ``row_step = point_step *
width``; organised clouds have height = image rows and width = image columns (NaN points where
depth was invalid, ``is_dense`` false); unorganised clouds have height 1 and only valid points.

Packing is vectorised: the output buffer is allocated once and filled plane by plane in blocks of
rows that stay in the CPU cache, which costs about two plain copies of the output.
"""

from __future__ import annotations

import array
import functools
import importlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core import _fused
from cloudypoints_core.errors import InputError
from cloudypoints_core.geometry import (
    Intrinsics,
    _describe,
    _nan_where_invalid,
    _sample_views,
    _Views,
    ray_grid,
)
from cloudypoints_core.io import atomic_path

__all__ = [
    "FLOAT32",
    "Allocator",
    "POINT_STEP",
    "XYZRGB_FIELDS",
    "XYZ_FIELDS",
    "PackedCloud",
    "PointFieldSpec",
    "backproject_packed",
    "pack_points",
    "read_ply",
    "unpack_points",
    "write_ply",
]

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_FIELD_DTYPES = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
}

#: Bytes per point, with or without colour (see the module docstring).
POINT_STEP = 16
#: Rows per block when filling the output: 32 rows of 1024 points x 16 B = 512 KiB, within L2.
_BLOCK_BYTES = 512 * 1024

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True)
class PointFieldSpec:
    """One sensor_msgs/PointField: a named value of ``datatype`` at ``offset`` in each point."""

    name: str
    offset: int
    datatype: int
    count: int = 1


XYZ_FIELDS = (
    PointFieldSpec("x", 0, FLOAT32),
    PointFieldSpec("y", 4, FLOAT32),
    PointFieldSpec("z", 8, FLOAT32),
)
XYZRGB_FIELDS = (*XYZ_FIELDS, PointFieldSpec("rgb", 12, FLOAT32))

#: Where a cloud's bytes go: called once with the exact byte count when it is known (after the
#: valid points are counted), it returns a writeable C-contiguous array of at least that many
#: bytes. A ROS node hands out the buffer its message will carry, so the points are written
#: once, straight into what the middleware serialises.
Allocator = Callable[[int], npt.NDArray[Any]]


@dataclass(frozen=True, eq=False)  # eq=False: identity equality; array fields do not compare
class PackedCloud:
    """The fields of a sensor_msgs/PointCloud2 (without header), ``data`` as a 1-D uint8 array."""

    fields: tuple[PointFieldSpec, ...]
    data: npt.NDArray[np.uint8]
    height: int
    width: int
    point_step: int
    row_step: int
    is_dense: bool
    is_bigendian: bool = False

    def __post_init__(self) -> None:
        if (
            not isinstance(self.data, np.ndarray)
            or self.data.dtype != np.uint8
            or self.data.ndim != 1
        ):
            raise InputError(f"data must be a 1-D uint8 array, got {_describe(self.data)}")
        if self.height < 0 or self.width < 0 or self.point_step <= 0:
            raise InputError(
                f"bad cloud size height={self.height} width={self.width} "
                f"point_step={self.point_step}"
            )
        if self.row_step < self.width * self.point_step:
            raise InputError(
                f"row_step {self.row_step} is smaller than width * point_step = "
                f"{self.width * self.point_step}"
            )
        if self.data.size < self.row_step * self.height:
            raise InputError(
                f"data has {self.data.size} bytes but row_step * height = "
                f"{self.row_step * self.height}"
            )
        for f in self.fields:
            size = np.dtype(_FIELD_DTYPES.get(f.datatype, "u1")).itemsize * max(f.count, 1)
            if (
                f.datatype not in _FIELD_DTYPES
                or f.offset < 0
                or f.offset + size > self.point_step
            ):
                raise InputError(f"field {f} does not fit a point of {self.point_step} bytes")

    @property
    def n_points(self) -> int:
        return self.height * self.width

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def data_as_array(self) -> array.array[int]:
        """The bytes as ``array.array('B')`` (one copy): what an rclpy message's ``data`` takes
        fastest (its setter copies an array.array or bytes in one go but iterates over numpy
        arrays and memoryviews element by element)."""
        out: array.array[int] = array.array("B")
        out.frombytes(self.data[: self.row_step * self.height].data)
        return out


# ------------------------------------------------------------------------------ packing
def _rows_per_block(width: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, width * POINT_STEP))


def _rgb_word_source(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """A (N - 1,) big-endian uint32 view reading bytes R, G, B, next-R of each pixel.

    Shifted right by 8 it is 0x00RRGGBB, so colour packing is one strided pass instead of three
    byte copies. The last pixel has no fourth byte and is handled separately.
    """
    flat = rgb.reshape(-1)
    n = flat.size // 3
    return np.ndarray(shape=(max(n - 1, 0),), dtype=">u4", buffer=flat, strides=(3,))


@functools.lru_cache(maxsize=1)
def _cv2_or_none() -> ModuleType | None:
    # cv2 is optional here: it only makes colour packing faster.
    try:
        return importlib.import_module("cv2")
    except ImportError:
        return None


def _fill_colour(
    words: npt.NDArray[np.uint32], rgb: npt.NDArray[np.uint8], lo: int, hi: int
) -> None:
    """Write 0x00RRGGBB of the flat pixels [lo, hi) of ``rgb`` into ``words`` ((hi - lo,) view)."""
    cv2 = _cv2_or_none()
    if cv2 is not None and hi > lo:
        # The bytes B, G, R, A read as a little-endian uint32 are 0xAARRGGBB; masking the alpha
        # leaves 0x00RRGGBB. cvtColor is SIMD code, about 1.5x faster than the numpy route.
        bgra = cv2.cvtColor(rgb.reshape(1, -1, 3)[:, lo:hi], cv2.COLOR_RGB2BGRA)
        np.bitwise_and(bgra.reshape(-1).view("<u4"), np.uint32(0x00FFFFFF), out=words)
        return
    src = _rgb_word_source(rgb)
    stop = min(hi, src.size)
    if stop > lo:
        np.right_shift(src[lo:stop], 8, out=words[: stop - lo])
    if hi > stop:  # the last pixel of the image
        r, g, b = (int(c) for c in rgb.reshape(-1, 3)[-1])
        words[hi - lo - 1] = (r << 16) | (g << 8) | b


def _check_xyz_rgb(
    xyz: npt.NDArray[Any], rgb: npt.NDArray[np.uint8] | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.uint8] | None]:
    if not isinstance(xyz, np.ndarray) or xyz.ndim not in (2, 3) or xyz.shape[-1] != 3:
        raise InputError(f"xyz must be an (N, 3) or (H, W, 3) array, got {_describe(xyz)}")
    if not np.issubdtype(xyz.dtype, np.floating):
        raise InputError(f"xyz must be floating point metres, got dtype {xyz.dtype}")
    if xyz.ndim == 3 and xyz.shape[0] * xyz.shape[1] == 0:
        raise InputError(f"an organised cloud needs at least one row and column, got {xyz.shape}")
    if rgb is not None:
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape != xyz.shape:
            raise InputError(
                f"rgb must be a uint8 array of the same shape as xyz {xyz.shape}, got "
                f"{_describe(rgb)}"
            )
        rgb = np.ascontiguousarray(rgb)
    return xyz, rgb


def _new_cloud(
    buf: npt.NDArray[np.float32], height: int, width: int, coloured: bool, dense: bool
) -> PackedCloud:
    return PackedCloud(
        fields=XYZRGB_FIELDS if coloured else XYZ_FIELDS,
        data=buf.reshape(-1).view(np.uint8),
        height=height,
        width=width,
        point_step=POINT_STEP,
        row_step=POINT_STEP * width,
        is_dense=dense,
        is_bigendian=_NATIVE_BIG_ENDIAN,
    )


def _output_buffer(
    out: npt.NDArray[Any] | Allocator | None, n_points: int
) -> npt.NDArray[np.float32]:
    """An (n_points, 4) float32 view of ``out`` (of what it allocates, or of a new buffer)."""
    nbytes = n_points * POINT_STEP
    if out is None:
        return np.empty((n_points, 4), dtype=np.float32)
    if callable(out):
        out = out(nbytes)
    if not isinstance(out, np.ndarray) or not out.flags.c_contiguous or not out.flags.writeable:
        raise InputError(f"out must be a writeable C-contiguous numpy array, got {_describe(out)}")
    if out.nbytes < nbytes:
        raise InputError(f"out has {out.nbytes} bytes but the cloud needs {nbytes}")
    return out.reshape(-1).view(np.uint8)[:nbytes].view(np.float32).reshape(n_points, 4)


def pack_points(
    xyz: npt.NDArray[np.floating[Any]],
    rgb: npt.NDArray[np.uint8] | None = None,
    *,
    out: npt.NDArray[Any] | Allocator | None = None,
) -> PackedCloud:
    """Pack points into the PointCloud2 layout: (H, W, 3) -> organised H x W, (N, 3) -> 1 x N.

    ``rgb`` (same shape, uint8) adds the ``rgb`` field. ``is_dense`` is false when any coordinate
    is NaN or infinite. Vectorised, no per-point Python work. ``out``, a C-contiguous array of at
    least 16 bytes per point (or an :data:`Allocator`), is written instead of a new buffer (the
    cloud's ``data`` is a view of it), which saves the page faults of a fresh allocation on large
    clouds.
    """
    xyz, rgb = _check_xyz_rgb(xyz, rgb)
    height, width = (xyz.shape[0], xyz.shape[1]) if xyz.ndim == 3 else (1, xyz.shape[0])
    pts = xyz.reshape(height, width, 3)
    buf = _output_buffer(out, height * width).reshape(height, width, 4)
    words = buf.view(np.uint32)
    dense = True
    rows = _rows_per_block(width)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        block = pts[r0:r1]
        # Plane by plane: a (.., 3) -> (.., 4) copy in one call has an inner loop of three
        # elements and is several times slower than three long strided loops.
        for k in range(3):
            np.copyto(buf[r0:r1, :, k], block[..., k], casting="same_kind")
        if rgb is None:
            words[r0:r1, :, 3] = 0
        else:
            _fill_colour(words[r0:r1, :, 3].reshape(-1), rgb, r0 * width, r1 * width)
        if dense and not np.isfinite(block).all():
            dense = False
    return _new_cloud(buf, height, width, rgb is not None, dense)


@functools.lru_cache(maxsize=8)
def _complex_ray_grid(intr: Intrinsics) -> npt.NDArray[np.complex64]:
    # x/z + i y/z: with the output buffer viewed as complex64, one multiplication by the (real)
    # depth writes x and y together, exactly the float32 products depth * x/z and depth * y/z.
    grid = ray_grid(intr)
    out = np.empty(intr.shape, dtype=np.complex64)
    out.real = grid[..., 0]
    out.imag = grid[..., 1]
    out.flags.writeable = False
    return out


def _fill_points(
    buf: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32],
    gxy: npt.NDArray[np.complex64],
    colours: npt.NDArray[np.uint8] | None,
    views: _Views | None,
) -> bool:
    """Write depth * rays (and colour) into ``buf`` (h, w, 4); return whether all were valid.

    With ``views`` given, invalid depth (per its range) becomes NaN points. Works in blocks of
    rows that stay in cache, so the depth and the output are each touched once in memory.
    """
    height, width = depth.shape
    pairs = buf.view(np.complex64)  # (h, w, 2): x + i y, then z + i (rgb or padding)
    words = buf.view(np.uint32)
    dense = True
    rows = _rows_per_block(width)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        d = depth[r0:r1]
        if views is not None:
            ok = views.valid(d, slice(r0, r1))
            if not ok.all():
                dense = False
                d = _nan_where_invalid(d, ok)
        np.multiply(d, gxy[r0:r1], out=pairs[r0:r1, :, 0])
        if colours is None:
            pairs[r0:r1, :, 1] = d  # z, and an imaginary part of 0.0: the zero padding
        else:
            buf[r0:r1, :, 2] = d
            _fill_colour(words[r0:r1, :, 3].reshape(-1), colours, r0 * width, r1 * width)
    return dense


def backproject_packed(
    depth_m: npt.NDArray[np.floating[Any]],
    intr: Intrinsics,
    rgb: npt.NDArray[np.uint8] | None = None,
    *,
    stride: int = 1,
    roi: tuple[int, int, int, int] | None = None,
    min_range_m: float = 0.0,
    max_range_m: float = math.inf,
    organised: bool = True,
    out: npt.NDArray[Any] | Allocator | None = None,
) -> PackedCloud:
    """Back-project a depth image straight into the PointCloud2 layout, in one pass.

    Same arguments and the same bytes as :func:`cloudypoints_core.geometry.backproject` followed
    by :func:`pack_points`, without the intermediate (H, W, 3) array: depth times the cached ray
    grid is written directly into the packed buffer. ``out``: an array that must hold 16 bytes
    per image pixel of the strided ROI (whatever the number of valid points), or an
    :data:`Allocator`, asked once for exactly the bytes of the cloud (an unorganised cloud's
    size is known only after counting its valid points).
    """
    v = _sample_views(depth_m, intr, rgb, stride, roi, min_range_m, max_range_m)
    gxy = _complex_ray_grid(intr)[v.rows, v.cols]
    height, width = v.depth.shape
    if not organised and _fused.available():
        # One compiled pass counts, one writes the kept points (same bytes, ~2.5x faster); it
        # reads strided views as they are.
        if isinstance(out, np.ndarray):
            out = _output_buffer(out, height * width)  # validated for the worst case
        n_valid = _fused.count_valid(v.depth, v.ray_ok, v.min_range_m, v.max_range_m)
        buf = _output_buffer(out, n_valid)
        written = _fused.fill_valid(
            v.depth, gxy.real, gxy.imag, v.ray_ok, v.rgb, v.min_range_m, v.max_range_m, buf
        )
        if written != n_valid:
            raise InputError(
                f"depth changed while it was back-projected ({n_valid} valid pixels counted, "
                f"{written} found): do not modify it from another thread"
            )
        return _new_cloud(buf.reshape(1, n_valid, 4), 1, n_valid, v.rgb is not None, True)
    colours = None if v.rgb is None else np.ascontiguousarray(v.rgb)
    if organised:
        buf = _output_buffer(out, height * width).reshape(height, width, 4)
        dense = _fill_points(buf, v.depth, gxy, colours, v)
        return _new_cloud(buf, height, width, colours is not None, dense)
    if isinstance(out, np.ndarray):
        out = _output_buffer(out, height * width)  # validated for the worst case: all valid
    valid = v.valid(v.depth)
    per_row = np.count_nonzero(valid, axis=1)
    n_valid = int(per_row.sum())
    buf = _output_buffer(out, n_valid)
    if n_valid == valid.size:
        _fill_points(buf.reshape(height, width, 4), v.depth, gxy, colours, None)
        return _new_cloud(buf.reshape(1, n_valid, 4), 1, n_valid, colours is not None, True)
    # Assemble a block of rows as the organised path does (the values of invalid pixels do not
    # matter: they are dropped next) in a scratch block that stays in the CPU cache, then keep
    # its valid points with one boolean-mask copy of 16-byte items ("V16": numpy's fastest
    # masked copy, 2-3x faster than complex128 items or np.compress) into the output.
    # Compacting the inputs instead (depth, rays, 3-byte colours) costs several times as much;
    # a whole-image scratch buffer would cost a fresh allocation (page faults) and one more
    # pass through memory per frame.
    rows = _rows_per_block(width)
    scratch = np.empty((min(rows, height), width, 4), dtype=np.float32)
    items = buf.reshape(-1).view(np.uint8).view("V16")
    pos = 0
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        count = int(per_row[r0:r1].sum())
        if count == 0:
            continue
        block = scratch[: r1 - r0]
        with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 and the like, all dropped
            _fill_points(
                block,
                v.depth[r0:r1],
                gxy[r0:r1],
                None if colours is None else colours[r0:r1],
                None,
            )
        kept = block.reshape(-1).view(np.uint8).view("V16")[valid[r0:r1].reshape(-1)]
        items[pos : pos + count] = kept
        pos += count
    return _new_cloud(buf.reshape(1, n_valid, 4), 1, n_valid, colours is not None, True)


# ------------------------------------------------------------------------------ unpacking
def _structured_view(packed: PackedCloud, names: tuple[str, ...]) -> npt.NDArray[np.void]:
    by_name = {f.name: f for f in packed.fields}
    order = ">" if packed.is_bigendian else "<"
    dtype = np.dtype(
        {
            "names": list(names),
            "formats": [order + _FIELD_DTYPES[by_name[n].datatype] for n in names],
            "offsets": [by_name[n].offset for n in names],
            "itemsize": packed.point_step,
        }
    )
    return np.ndarray(
        shape=(packed.height, packed.width),
        dtype=dtype,
        buffer=packed.data,
        strides=(packed.row_step, packed.point_step),
    )


def unpack_points(
    packed: PackedCloud,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8] | None]:
    """Points (and colours) from any PackedCloud with x, y, z fields, honouring its offsets,
    ``point_step``, ``row_step`` and endianness.

    Returns xyz (H, W, 3) float32 for height > 1, else (W, 3); rgb of the same shape (uint8) if the
    cloud has an ``rgb`` or ``rgba`` field (0x00RRGGBB in a FLOAT32 or UINT32), else None.
    """
    names = packed.field_names
    missing = [n for n in ("x", "y", "z") if n not in names]
    if missing:
        raise InputError(f"cloud lacks the fields {missing}; it has {list(names)}")
    colour = next((n for n in ("rgb", "rgba") if n in names), None)
    view = _structured_view(packed, ("x", "y", "z") + ((colour,) if colour else ()))
    xyz = np.empty((packed.height, packed.width, 3), dtype=np.float32)
    for k, n in enumerate(("x", "y", "z")):
        xyz[..., k] = view[n]
    rgb = None
    if colour is not None:
        spec = next(f for f in packed.fields if f.name == colour)
        if np.dtype(_FIELD_DTYPES[spec.datatype]).itemsize != 4:
            raise InputError(f"field {colour!r} must be 4 bytes (FLOAT32 or UINT32), got {spec}")
        # Reinterpret the float's bytes as the uint32 they carry (no numeric conversion).
        order = ">" if packed.is_bigendian else "<"
        word = np.ascontiguousarray(view[colour]).view(order + "u4").astype(np.uint32)
        rgb = np.empty((packed.height, packed.width, 3), dtype=np.uint8)
        rgb[..., 0] = (word >> 16) & 0xFF
        rgb[..., 1] = (word >> 8) & 0xFF
        rgb[..., 2] = word & 0xFF
    if packed.height == 1:
        return xyz[0], None if rgb is None else rgb[0]
    return xyz, rgb


# ------------------------------------------------------------------------------ PLY
_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


def write_ply(
    path: str | os.PathLike[str],
    xyz: npt.NDArray[np.floating[Any]],
    rgb: npt.NDArray[np.uint8] | None = None,
) -> Path:
    """Write points (any (..., 3) shape) as a binary little-endian PLY, atomically.

    Properties ``x y z`` (float) and, with ``rgb``, ``red green blue`` (uchar), the layout Open3D,
    MeshLab and CloudCompare read. Points with a NaN or infinite coordinate are dropped.
    """
    pts = np.asarray(xyz)
    if pts.ndim < 1 or pts.shape[-1] != 3 or not np.issubdtype(pts.dtype, np.number):
        raise InputError(f"xyz must be a numeric (..., 3) array, got {_describe(pts)}")
    pts = pts.reshape(-1, 3)
    colours = None
    if rgb is not None:
        colours = np.asarray(rgb)
        if colours.dtype != np.uint8 or colours.shape != np.shape(xyz):
            raise InputError(
                f"rgb must be uint8 with the shape of xyz {np.shape(xyz)}, got "
                f"{_describe(colours)}"
            )
        colours = colours.reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    n = int(keep.sum())
    rows = np.empty(n, dtype=np.dtype(fields))
    for k, name in enumerate(("x", "y", "z")):
        rows[name] = pts[keep, k]
    if colours is not None:
        for k, name in enumerate(("red", "green", "blue")):
            rows[name] = colours[keep, k]
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by CloudyPoints",
        f"element vertex {n}",
        "property float x",
        "property float y",
        "property float z",
    ]
    if colours is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(rows.tobytes())
    return target


def _parse_ply_header(
    blob: bytes, path: Path
) -> tuple[str, list[tuple[str, int, list[tuple[str, str | None, str]]]], int]:
    """(format, [(element, count, [(property, list count type or None, type)])], data offset)."""
    end = blob.find(b"end_header")
    if not blob.startswith(b"ply") or end < 0:
        raise InputError(f"{path} is not a PLY file (no 'ply' magic or 'end_header')")
    newline = blob.find(b"\n", end)
    if newline < 0:
        raise InputError(f"{path}: PLY header is not terminated by a newline")
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str | None, str]]]] = []
    for raw in blob[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1][2].append((words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
            elif words[0] == "property":
                elements[-1][2].append((words[2], None, _PLY_TYPES[words[1]]))
        except (IndexError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: malformed PLY header line {raw!r}") from exc
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, newline + 1


def read_ply(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8] | None]:
    """Read the vertices of a PLY file: xyz (N, 3) float32 and rgb (N, 3) uint8 or None.

    Reads ascii and binary PLY; elements before ``vertex`` must have fixed-size (non-list)
    properties in binary files.
    """
    p = Path(path)
    blob = p.read_bytes()
    fmt, elements, offset = _parse_ply_header(blob, p)
    order = ">" if fmt == "binary_big_endian" else "<"
    vertex: npt.NDArray[np.void] | None = None
    skip_lines = 0
    for name, count, props in elements:
        has_list = any(lst is not None for _, lst, _ in props)
        dtype = np.dtype([(pn, order + t) for pn, lst, t in props if lst is None])
        if name != "vertex":
            if fmt == "ascii":
                skip_lines += count
            elif has_list:
                # Binary list elements have no fixed size: the vertices cannot be located.
                raise InputError(f"{p}: list element {name!r} before 'vertex' is not supported")
            else:
                offset += count * dtype.itemsize
            continue
        if has_list:
            raise InputError(f"{p}: list properties in 'vertex' are not supported")
        if fmt == "ascii":
            lines = blob[offset:].decode("ascii").splitlines()[skip_lines : skip_lines + count]
            if len(lines) < count:
                raise InputError(f"{p}: expected {count} vertex lines, found {len(lines)}")
            values = np.array([ln.split() for ln in lines], dtype=np.float64).reshape(count, -1)
            vertex = np.empty(count, dtype=dtype)
            for k, (pn, _, _) in enumerate(props):
                vertex[pn] = values[:, k]
        else:
            if len(blob) < offset + count * dtype.itemsize:
                raise InputError(
                    f"{p}: truncated, {count} vertices need {count * dtype.itemsize} bytes"
                )
            vertex = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
        break
    if vertex is None:
        raise InputError(f"{p}: no 'vertex' element")
    names = vertex.dtype.names or ()
    if not all(n in names for n in ("x", "y", "z")):
        raise InputError(f"{p}: vertices lack x, y, z (have {list(names)})")
    xyz = np.stack([vertex[n] for n in ("x", "y", "z")], axis=-1).astype(np.float32)
    rgb = None
    if all(n in names for n in ("red", "green", "blue")):
        cols = [vertex[n] for n in ("red", "green", "blue")]
        if np.issubdtype(cols[0].dtype, np.floating):  # some writers store colour in [0, 1]
            cols = [np.clip(np.round(c * 255.0), 0, 255) for c in cols]
        rgb = np.stack(cols, axis=-1).astype(np.uint8)
    return xyz, rgb
