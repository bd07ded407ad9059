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
import ctypes
import functools
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
    "CloudWriter",
    "raw_publishing_works",
    "serialized_depth_image",
    "serialized_image",
    "serialized_image_msg",
    "camera_info_to_intrinsics",
    "classify_image_error",
    "cloud_msg",
    "depth_image_msg",
    "header_stamp_ns",
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


def header_stamp_ns(cdr: bytes | memoryview) -> int | None:
    """Header stamp of a serialized message whose first field is ``std_msgs/Header`` (Image,
    CameraInfo, PointCloud2, ...), None if too short.

    CDR: a 4-byte encapsulation header (byte 1 odd = little endian), then ``int32 sec`` and
    ``uint32 nanosec`` of ``header.stamp``. Reading it from the bytes spares deserialising a
    message just to learn when it was taken.
    """
    if len(cdr) < 12:
        return None
    endian = "<" if cdr[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(f"{endian}iI", cdr, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


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


# ------------------------------------------------------------------------------ serialized output
# Publishing a message costs rclpy two passes over its data before DDS sees it: the Python
# message is converted into its C struct (a memcpy of ``data``) and that struct is serialised
# (another). ``Publisher.publish`` also takes the serialized bytes themselves (``publish_raw``:
# one copy into DDS). The writers below produce those bytes directly, in the layout rclpy's own
# serialiser produces (little-endian XCDR1, encapsulation 0x0001, alignment counted from the
# byte after the 4-byte header), and hand out a writeable view of the ``data`` field so that
# the pixels or points are written once, in their final place. :func:`raw_publishing_works`
# checks the layout against the middleware's deserialiser once per process; the node falls back
# to message objects when it does not hold.

_PyBytes_FromStringAndSize = ctypes.pythonapi.PyBytes_FromStringAndSize
_PyBytes_FromStringAndSize.restype = ctypes.py_object
_PyBytes_FromStringAndSize.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_PyBytes_AsString = ctypes.pythonapi.PyBytes_AsString
_PyBytes_AsString.restype = ctypes.c_void_p
_PyBytes_AsString.argtypes = (ctypes.py_object,)

_XCDR1_LE = b"\x00\x01\x00\x00"


def _new_bytes(size: int) -> tuple[bytes, npt.NDArray[np.uint8]]:
    """A new ``bytes`` of ``size`` (> 1) uninitialised bytes and a writeable numpy view of it.

    CPython's C API allows exactly this: a bytes object made by ``PyBytes_FromStringAndSize``
    with a NULL source may be filled through ``PyBytes_AsString`` before anyone else sees it
    (sizes 0 and 1 may be shared singletons, so they are refused). The view keeps the object
    alive; fill it, then publish the object and drop the view.
    """
    if size < 2:
        raise InputError(f"a serialized message has at least 4 bytes, asked for {size}")
    blob = _PyBytes_FromStringAndSize(None, size)
    window = (ctypes.c_uint8 * size).from_address(_PyBytes_AsString(blob))
    window._owner = blob  # type: ignore[attr-defined]  # the view's base keeps the bytes alive
    view: npt.NDArray[np.uint8] = np.ctypeslib.as_array(window)
    return blob, view


class _CdrWriter:
    """The fixed-size part of a message in XCDR1 little-endian, with the offsets of the
    fields that are filled in later."""

    def __init__(self) -> None:
        self.buf = bytearray(_XCDR1_LE)

    def _align4(self) -> None:
        self.buf += bytes(-(len(self.buf) - 4) % 4)

    def u32(self, value: int) -> int:
        """Append an unsigned 32-bit integer; returns its offset."""
        self._align4()
        offset = len(self.buf)
        self.buf += struct.pack("<I", value)
        return offset

    def i32(self, value: int) -> None:
        self._align4()
        self.buf += struct.pack("<i", value)

    def u8(self, value: int) -> int:
        offset = len(self.buf)
        self.buf.append(value & 0xFF)
        return offset

    def string(self, text: str) -> None:
        encoded = text.encode("utf-8") + b"\x00"
        self.u32(len(encoded))
        self.buf += encoded

    def header(self, header: HeaderLike) -> None:
        self.i32(int(header.stamp.sec))
        self.u32(int(header.stamp.nanosec))
        self.string(str(header.frame_id))


def serialized_image(
    header: HeaderLike,
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool = False,
) -> tuple[bytes, npt.NDArray[np.uint8]]:
    """A serialized sensor_msgs/Image and a writeable view of its ``step * height`` data bytes
    (uninitialised: the caller fills every byte before publishing)."""
    w = _CdrWriter()
    w.header(header)
    w.u32(height)
    w.u32(width)
    w.string(encoding)
    w.u8(int(is_bigendian))
    w.u32(step)
    nbytes = step * height
    w.u32(nbytes)
    blob, view = _new_bytes(len(w.buf) + nbytes)
    view[: len(w.buf)] = np.frombuffer(w.buf, dtype=np.uint8)
    return blob, view[len(w.buf) :]


def serialized_image_msg(array_: npt.NDArray[Any], encoding: str, header: HeaderLike) -> bytes:
    """:func:`image_msg` as serialized bytes: the pixels are copied once, into them."""
    fields = numpy_to_image_fields(array_, encoding, copy=False)
    blob, data = serialized_image(
        header,
        fields["height"],
        fields["width"],
        fields["encoding"],
        fields["step"],
        bool(fields["is_bigendian"]),
    )
    np.copyto(data, np.ascontiguousarray(fields["data"]).reshape(-1).view(np.uint8))
    return blob


def serialized_depth_image(depth_m: npt.NDArray[np.float32], header: HeaderLike) -> bytes:
    """:func:`depth_image_msg` as serialized bytes."""
    if depth_m.dtype != np.float32:
        raise InputError(f"depth must be float32 metres, got dtype {depth_m.dtype}")
    return serialized_image_msg(depth_m, "32FC1", header)


class CloudWriter:
    """A serialized sensor_msgs/PointCloud2 whose ``data`` the core writes in place.

    ``allocate`` is a :data:`cloudypoints_core.pointcloud.Allocator`: pass it as ``out`` to
    ``backproject_packed`` (or ``pack_points``), which asks once for exactly the cloud's bytes;
    :meth:`finish` then writes the fields only known afterwards (size, density) and returns the
    bytes to publish. One writer per message.
    """

    def __init__(self, header: HeaderLike, fields: tuple[PointFieldSpec, ...]) -> None:
        w = _CdrWriter()
        w.header(header)
        self._height_at = w.u32(0)
        self._width_at = w.u32(0)
        w.u32(len(fields))
        for f in fields:
            w.string(f.name)
            w.u32(f.offset)
            w.u8(f.datatype)
            w.u32(f.count)
        self._bigendian_at = w.u8(0)
        self._point_step_at = w.u32(0)
        self._row_step_at = w.u32(0)
        self._size_at = w.u32(0)
        self._prefix = bytes(w.buf)
        self._fields = fields
        self._blob: bytes | None = None
        self._view: npt.NDArray[np.uint8] | None = None

    def allocate(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """A writeable view of the message's ``data`` field, ``nbytes`` long."""
        if self._blob is not None:
            raise InputError("CloudWriter.allocate called twice: use one writer per message")
        prefix = len(self._prefix)
        blob, view = _new_bytes(prefix + nbytes + 1)  # + is_dense
        view[:prefix] = np.frombuffer(self._prefix, dtype=np.uint8)
        self._blob, self._view = blob, view
        return view[prefix : prefix + nbytes]

    def finish(self, packed: PackedCloud) -> bytes:
        """The serialized message of ``packed``, which must have been written into
        :meth:`allocate`'s view."""
        blob, view = self._blob, self._view
        if blob is None or view is None:
            raise InputError("CloudWriter.finish before allocate: nothing was written")
        prefix = len(self._prefix)
        nbytes = packed.row_step * packed.height
        data = packed.data
        # An empty cloud has no bytes to find (numpy may give an empty view any address).
        elsewhere = (
            nbytes > 0
            and data.__array_interface__["data"][0] != view[prefix:].__array_interface__["data"][0]
        )
        if packed.fields != self._fields or nbytes != len(blob) - prefix - 1 or elsewhere:
            raise InputError(
                "the packed cloud was not written into this CloudWriter's buffer (or its fields "
                "differ); use cloud_msg for other clouds"
            )
        put, raw = struct.pack_into, view.data
        put("<I", raw, self._height_at, packed.height)
        put("<I", raw, self._width_at, packed.width)
        view[self._bigendian_at] = int(packed.is_bigendian)
        put("<I", raw, self._point_step_at, packed.point_step)
        put("<I", raw, self._row_step_at, packed.row_step)
        put("<I", raw, self._size_at, nbytes)
        view[-1] = int(packed.is_dense)
        self._blob = self._view = None
        return blob


@functools.lru_cache(maxsize=1)
def raw_publishing_works() -> bool:
    """Whether the serialized messages written here read back through the middleware's own
    deserialiser as the messages they stand for (checked once per process)."""
    from rclpy.impl.implementation_singleton import rclpy_implementation
    from rclpy.serialization import deserialize_message

    from cloudypoints_core.pointcloud import XYZRGB_FIELDS, pack_points

    if not hasattr(rclpy_implementation.Publisher, "publish_raw"):  # rclpy without bytes
        return False

    header = Header()
    header.stamp.sec, header.stamp.nanosec, header.frame_id = 1_700_000_000, 123_456_789, "cam_é"
    depth = np.array([[1.5, np.nan, 3.0]], dtype=np.float32)
    xyz = np.arange(6, dtype=np.float32).reshape(2, 3)
    rgb = np.array([[1, 2, 3], [250, 251, 252]], dtype=np.uint8)
    try:
        image = deserialize_message(serialized_depth_image(depth, header), Image)
        writer = CloudWriter(header, XYZRGB_FIELDS)
        cloud = deserialize_message(
            writer.finish(pack_points(xyz, rgb, out=writer.allocate)), PointCloud2
        )
    except Exception:  # any failure means: do not publish raw bytes
        return False
    # The same messages as the object path builds (byte-wise data: NaN included).
    return bool(
        image == depth_image_msg(depth, header)
        and cloud == cloud_msg(pack_points(xyz, rgb), header)
    )
