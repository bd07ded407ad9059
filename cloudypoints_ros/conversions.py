"""sensor_msgs messages <-> core types: the only module of CloudyPoints that touches sensor_msgs.

Decoding goes through the core's duck-typed readers (``cloudypoints_core.image``), so the node and
the bag tools share one code path. Encoding fills ``msg.data`` through rclpy's fast path: an
``array.array('B')`` made with one memcpy, stored as it is. The generated setters build the
array element by element from anything else (a list, a memoryview, a numpy array), which costs
seconds for a large cloud, and since Jazzy they copy even an ``array.array`` again unless the
message was made with ``check_fields=True`` (the setter then only checks its type code): that
second copy of a cloud costs milliseconds per frame. ``benchmarks/bench_node.py`` measures both.

A publisher that sends one message per frame keeps a :class:`MessageBuffer` per field: the node
back-projects a cloud straight into the ``array.array`` that becomes ``msg.data``, and reuses it
for the next frame. That is safe because rclpy copies the message into its C form and
serialises it inside ``publish`` (``Publisher::publish`` in rclpy's ``publisher.cpp``:
``rclpy_convert_from_py``, ``rcl_publish``, then the C copy is destroyed): once ``publish``
returns, nothing refers to the Python buffer any more.
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from cloudypoints_core.errors import EncodingError, InputError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.image import (
    ENCODINGS,
    compressed_to_rgb,
    image_msg_to_numpy,
    image_msg_to_rgb,
    numpy_to_image_fields,
)
from cloudypoints_core.pointcloud import PackedCloud, PointFieldSpec

__all__ = [
    "camera_info_msg",
    "camera_info_to_intrinsics",
    "classify_image_error",
    "cloud_msg",
    "depth_image_msg",
    "RawImage",
    "image_from_cdr",
    "image_msg",
    "image_msg_to_depth",
    "MessageBuffer",
    "msg_to_rgb",
    "packed_cloud_from_msg",
    "stamp_to_ns",
    "to_byte_array",
]

_NS_PER_S = 1_000_000_000


def _keeps_arrays(msg_type: type) -> dict[str, bool]:
    """Constructor arguments that make ``msg_type``'s setters keep an ``array.array`` as is.

    Jazzy and later generate a ``check_fields`` switch: off (the default) the ``data`` setter
    copies whatever it gets; on, it stores an ``array.array('B')`` without copying. Humble has no
    switch (and refuses unknown arguments) but always stores it as is.
    """
    return {"check_fields": True} if "_check_fields" in getattr(msg_type, "__slots__", ()) else {}


_IMAGE_KW = _keeps_arrays(Image)
_CLOUD_KW = _keeps_arrays(PointCloud2)


def to_byte_array(data: npt.NDArray[Any] | bytes | bytearray | memoryview) -> array.array[int]:
    """An ``array.array('B')`` copy of a contiguous buffer, made with one memcpy."""
    if isinstance(data, array.array) and data.typecode == "B":
        return data
    if isinstance(data, np.ndarray):
        view = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    else:
        view = memoryview(data)
    out: array.array[int] = array.array("B")
    out.frombytes(view.cast("B"))
    return out


class MessageBuffer:
    """One ``array.array('B')`` reused as the ``data`` of successive messages of one publisher.

    :meth:`allocate` (a :data:`cloudypoints_core.pointcloud.Allocator`) resizes it to exactly the
    bytes asked for and returns a writeable numpy view to fill; :meth:`array_for` returns the
    array itself when it is given that view (nothing copied), else copies the data into it.
    Resizing keeps the memory the array already has (a shrink or a small growth touches no new
    pages), where a new array per frame costs a fresh allocation and its page faults (about
    5 ms per 30 MB cloud). Use one buffer per publisher, from one thread, and publish the
    message before filling the buffer again (rclpy serialises during ``publish``).
    """

    def __init__(self) -> None:
        self._array: array.array[int] = array.array("B")

    def _resize(self, nbytes: int) -> None:
        arr = self._array
        try:
            if len(arr) > nbytes:
                del arr[nbytes:]
            elif len(arr) < nbytes:
                arr.frombytes(bytes(nbytes - len(arr)))
        except BufferError:
            # A view of the previous frame is still alive (held by a caller): leave it alone.
            self._array = array.array("B", bytes(nbytes))

    def allocate(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """A writeable uint8 view of the buffer, resized to ``nbytes``."""
        self._resize(nbytes)
        return np.frombuffer(self._array, dtype=np.uint8)

    def holds(self, data: npt.NDArray[Any]) -> bool:
        """Whether ``data`` is exactly this buffer's current contents (a view from allocate)."""
        arr = self._array
        return (
            isinstance(data, np.ndarray)
            and data.flags.c_contiguous
            and data.nbytes == len(arr)
            and data.__array_interface__["data"][0] == arr.buffer_info()[0]
        )

    def array_for(self, data: npt.NDArray[Any]) -> array.array[int]:
        """The buffer holding the bytes of ``data``: as is when ``data`` was written into it,
        else after one memcpy into it (no new allocation)."""
        if not self.holds(data):
            flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            np.copyto(self.allocate(flat.size), flat)
        return self._array


def _data_array(data: npt.NDArray[Any], buffer: MessageBuffer | None) -> array.array[int]:
    return to_byte_array(data) if buffer is None else buffer.array_for(data)


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


class HeaderLike(Protocol):
    """A std_msgs/Header or a :class:`RawHeader`: a stamp with ``sec``/``nanosec``, a frame."""

    @property
    def stamp(self) -> Any: ...

    @property
    def frame_id(self) -> str: ...


def copy_header(header: HeaderLike) -> Header:
    """A new Header with the same stamp and frame (outputs must not share the input's object)."""
    out = Header()
    out.stamp.sec = header.stamp.sec
    out.stamp.nanosec = header.stamp.nanosec
    out.frame_id = header.frame_id
    return out


# ------------------------------------------------------------------------------ decoding
@dataclass(frozen=True)
class RawStamp:
    sec: int
    nanosec: int


@dataclass(frozen=True)
class RawHeader:
    stamp: RawStamp
    frame_id: str


@dataclass(frozen=True)
class RawImage:
    """The fields of a sensor_msgs/Image read from its serialized form; ``data`` is a read-only
    uint8 view into the serialized bytes (no copy). Duck-types as an Image for the core."""

    header: RawHeader
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: npt.NDArray[np.uint8]


#: CDR encapsulation identifiers whose layout of sensor_msgs/Image this module reads: XCDR1
#: (CDR_BE, CDR_LE) and XCDR2 without headers (PLAIN_CDR2 BE/LE). Every field of an Image is at
#: most 4 bytes wide, so both align the same way. Anything else goes through rclpy.
_PLAIN_CDR = {b"\x00\x00": ">", b"\x00\x01": "<", b"\x00\x06": ">", b"\x00\x07": "<"}


class _CdrReader:
    """Sequential reads of a CDR payload (alignment relative to the byte after the 4-byte
    encapsulation header); IndexError when the buffer ends early."""

    def __init__(self, data: bytes, order: str) -> None:
        self.data = data
        self.pos = 4
        self._u32 = struct.Struct(order + "I")
        self._i32 = struct.Struct(order + "i")

    def _align4(self) -> None:
        self.pos += -(self.pos - 4) % 4

    def u32(self) -> int:
        self._align4()
        if self.pos + 4 > len(self.data):
            raise IndexError("CDR data ends inside an integer")
        (value,) = self._u32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def i32(self) -> int:
        self._align4()
        if self.pos + 4 > len(self.data):
            raise IndexError("CDR data ends inside an integer")
        (value,) = self._i32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise IndexError("CDR data ends inside a byte")
        self.pos += 1
        return self.data[self.pos - 1]

    def string(self) -> str:
        size = self.u32()  # includes the terminating NUL
        if size == 0 or self.pos + size > len(self.data):
            raise IndexError("CDR string does not fit")
        text = self.data[self.pos : self.pos + size - 1].decode("utf-8")
        self.pos += size
        return text

    def byte_view(self) -> npt.NDArray[np.uint8]:
        size = self.u32()
        if self.pos + size > len(self.data):
            raise IndexError("CDR byte sequence does not fit")
        view = np.frombuffer(self.data, dtype=np.uint8, count=size, offset=self.pos)
        self.pos += size
        return view


def image_from_cdr(data: bytes) -> Image | RawImage:
    """A sensor_msgs/Image from its serialized bytes (a ``raw=True`` subscription's message).

    The pixels stay where they are: ``data`` of the result is a view of ``data``. Taking an
    image raw and reading it here costs about a tenth of rclpy's deserialisation (which copies
    the pixels three times into an ``array.array``), and a frame the node drops unprocessed
    costs only the raw take. An encoding of the serialized form this reader does not know, or
    bytes that do not parse, fall back to rclpy's deserialisation.
    """
    order = _PLAIN_CDR.get(bytes(data[:2]))
    if order is not None:
        try:
            r = _CdrReader(data, order)
            stamp = RawStamp(sec=r.i32(), nanosec=r.u32())
            header = RawHeader(stamp=stamp, frame_id=r.string())
            height, width = r.u32(), r.u32()
            encoding = r.string()
            is_bigendian = r.u8()
            step = r.u32()
            pixels = r.byte_view()
            return RawImage(header, height, width, encoding, is_bigendian, step, pixels)
        except (IndexError, UnicodeDecodeError, struct.error):
            pass
    from rclpy.serialization import deserialize_message

    msg: Image = deserialize_message(data, Image)
    return msg


def msg_to_rgb(msg: Image | RawImage | CompressedImage) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB of a raw or compressed image message (core errors propagate)."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg)
    return image_msg_to_rgb(msg)


def image_msg_to_depth(msg: Image) -> npt.NDArray[np.float32]:
    """Depth in metres from a 32FC1 (metres) or 16UC1/mono16 (millimetres, 0 = invalid) image;
    invalid pixels NaN."""
    arr = image_msg_to_numpy(msg)
    if msg.encoding == "32FC1":
        return np.asarray(arr, dtype=np.float32)
    if msg.encoding in ("16UC1", "mono16"):
        out = arr.astype(np.float32) * np.float32(1e-3)
        out[arr == 0] = np.nan
        return out
    raise EncodingError(f"a depth image must be 32FC1 or 16UC1, got {msg.encoding!r}")


def classify_image_error(msg: Image | RawImage | CompressedImage, exc: Exception) -> str:
    """A short reason for a frame the core refused to decode, for counters and throttled logs."""
    if isinstance(msg, CompressedImage):
        return "empty_image" if len(msg.data) == 0 else "bad_compressed_data"
    if msg.height == 0 or msg.width == 0:
        return "empty_image"
    info = ENCODINGS.get(msg.encoding)
    if info is None:
        return "bad_encoding"
    if msg.step < msg.width * info.pixel_bytes or len(msg.data) < msg.step * msg.height:
        return "short_data"
    return "bad_encoding" if isinstance(exc, EncodingError) else "bad_image"


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """Intrinsics of a CameraInfo (the core's :meth:`Intrinsics.from_camera_info`)."""
    return Intrinsics.from_camera_info(msg)


# ------------------------------------------------------------------------------ encoding
def image_msg(
    array_: npt.NDArray[Any],
    encoding: str,
    header: Header,
    buffer: MessageBuffer | None = None,
) -> Image:
    """An Image of ``array_`` (any encoding the core knows), data set through the fast path
    (copied into ``buffer`` when given, else into a new array)."""
    fields = numpy_to_image_fields(array_, encoding, copy=False)
    msg = Image(**_IMAGE_KW)
    msg.header = header
    msg.height = fields["height"]
    msg.width = fields["width"]
    msg.encoding = fields["encoding"]
    msg.is_bigendian = int(fields["is_bigendian"])
    msg.step = fields["step"]
    msg.data = _data_array(fields["data"], buffer)
    return msg


def depth_image_msg(
    depth_m: npt.NDArray[np.float32], header: Header, buffer: MessageBuffer | None = None
) -> Image:
    """A 32FC1 depth image in metres (REP 118: NaN where invalid)."""
    if depth_m.dtype != np.float32:
        raise InputError(f"depth must be float32 metres, got dtype {depth_m.dtype}")
    return image_msg(depth_m, "32FC1", header, buffer)


def camera_info_msg(intr: Intrinsics, header: Header) -> CameraInfo:
    """CameraInfo for ``intr``: K, D, R = identity, P = [K | 0]."""
    msg = CameraInfo()
    msg.header = header
    msg.width = intr.width
    msg.height = intr.height
    msg.distortion_model = intr.distortion_model or "plumb_bob"
    msg.d = [float(c) for c in intr.d_vector()]
    msg.k = intr.k_matrix().reshape(-1)
    msg.r = np.eye(3).reshape(-1)
    msg.p = intr.p_matrix().reshape(-1)
    return msg


def cloud_msg(
    packed: PackedCloud, header: Header, buffer: MessageBuffer | None = None
) -> PointCloud2:
    """A PointCloud2 from the core's packed layout: no copy when ``packed`` was written into
    ``buffer`` (``backproject_packed(..., out=buffer.allocate)``), else one memcpy."""
    msg = PointCloud2(**_CLOUD_KW)
    msg.header = header
    msg.height = packed.height
    msg.width = packed.width
    msg.fields = [
        PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
        for f in packed.fields
    ]
    msg.is_bigendian = bool(packed.is_bigendian)
    msg.point_step = packed.point_step
    msg.row_step = packed.row_step
    msg.is_dense = bool(packed.is_dense)
    msg.data = _data_array(packed.data[: packed.row_step * packed.height], buffer)
    return msg


def packed_cloud_from_msg(msg: Any) -> PackedCloud:
    """The core's view of a PointCloud2 (rclpy or rosbags), zero-copy over ``msg.data``."""
    data = msg.data
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    return PackedCloud(
        fields=tuple(
            PointFieldSpec(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in msg.fields
        ),
        data=buf.reshape(-1).view(np.uint8),
        height=int(msg.height),
        width=int(msg.width),
        point_step=int(msg.point_step),
        row_step=int(msg.row_step),
        is_dense=bool(msg.is_dense),
        is_bigendian=bool(msg.is_bigendian),
    )
