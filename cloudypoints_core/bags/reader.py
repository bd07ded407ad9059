"""Read camera frames (image, intrinsics, ground-truth depth) from any rosbag2, MCAP or SQLite3.

Topics are taken from the caller or found by message type: colour images (``Image`` with a colour
or mono encoding, or ``CompressedImage``), ``CameraInfo``, and depth images (``Image`` 32FC1/16UC1)
as ground truth. Messages are matched by header stamp; a frame whose camera info never arrives
with its stamp takes the latest earlier one. Problems are counted in :class:`ReadStats` and
logged, never raised mid-stream. A truncated MCAP (a recorder that died) is read up to its last
complete record (:func:`salvage_mcap`) and flagged in ``ReadStats.truncated``; storage that
breaks in the middle of a pass raises :class:`BagError` after every frame read before it has
been yielded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.bags.messages import intrinsics_from_camera_info, stamp_to_ns
from cloudypoints_core.bags.typestore import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    get_typestore,
)
from cloudypoints_core.errors import BagError, CloudyPointsError
from cloudypoints_core.geometry import Intrinsics

log = logging.getLogger(__name__)

#: Image encodings that hold depth, not colour.
DEPTH_ENCODINGS = frozenset({"32FC1", "16UC1", "mono16", "64FC1"})
#: How far (ns of header stamps) a frame waits for its camera info and ground truth before it is
#: completed with what it has. Players and recorders deliver a frame's messages within
#: milliseconds; half a second covers slow recorders without holding many images in memory.
MATCH_WINDOW_NS = 500_000_000


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int

    def __str__(self) -> str:
        return f"{self.name} ({self.msgtype}, {self.count} msgs)"


@dataclass(frozen=True)
class BagInfo:
    """What ``cloudypoints bag info`` shows: storage, duration, topics and message counts."""

    path: Path
    storage: str
    start_ns: int
    duration_ns: int
    message_count: int
    topics: tuple[TopicSummary, ...]
    custom_data: dict[str, str] = field(default_factory=dict)
    #: Why the bag was not read as a whole (a truncated MCAP read up to its last whole record).
    note: str = ""

    def topic_list(self) -> str:
        return ", ".join(str(t) for t in self.topics) or "no topics"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "storage": self.storage,
            "start_ns": self.start_ns,
            "duration_s": self.duration_ns / 1e9,
            "message_count": self.message_count,
            "topics": [{"name": t.name, "type": t.msgtype, "count": t.count} for t in self.topics],
            "custom_data": dict(self.custom_data),
            "note": self.note,
        }


@dataclass(frozen=True)
class BagStreams:
    """The topics a frame is assembled from (``camera_info``/``depth_gt`` may be absent)."""

    image: str
    compressed: bool
    camera_info: str | None
    depth_gt: str | None


@dataclass
class ReadStats:
    """Accounting of one pass over a bag; ``error`` is set when reading stopped early."""

    images: int = 0
    frames: int = 0
    skipped_no_camera_info: int = 0
    skipped_bad_image: int = 0
    camera_info_fallback: int = 0
    missing_gt: int = 0
    bad_gt: int = 0
    read_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: Set when the bag was truncated and only its complete part could be read.
    truncated: str | None = None
    error: str | None = None

    def warn(self, message: str) -> None:
        # Keep the report readable on long bags: the first few occurrences are enough.
        if len(self.warnings) < 50:
            self.warnings.append(message)
        log.warning("%s", message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "frames": self.frames,
            "skipped_no_camera_info": self.skipped_no_camera_info,
            "skipped_bad_image": self.skipped_bad_image,
            "camera_info_fallback": self.camera_info_fallback,
            "missing_gt": self.missing_gt,
            "bad_gt": self.bad_gt,
            "read_s": self.read_s,
            "truncated": self.truncated,
            "error": self.error,
        }


@dataclass(frozen=True)
class BagFrame:
    """One decoded frame: rgb8 (H, W, 3), its intrinsics, ground truth (metres, NaN invalid)."""

    index: int
    stamp_ns: int
    rgb: npt.NDArray[np.uint8]
    intrinsics: Intrinsics
    depth_gt_m: npt.NDArray[np.float32] | None
    #: Time spent reading and decoding this frame's messages (seconds), for overhead accounting.
    read_s: float = 0.0


# ------------------------------------------------------------------------------------- opening
def _storage_path(path: Path) -> tuple[Path, str | None]:
    """The path ``rosbags`` should open and a warning when the bag lacks its metadata."""
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_file():
        if path.suffix not in (".mcap", ".db3"):
            raise BagError(f"{path} is not a rosbag2 (expected a folder, .mcap or .db3 file)")
        return path, None
    if (path / "metadata.yaml").is_file():
        return path, None
    files = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
    if len(files) == 1:
        # An interrupted recording leaves the storage file without metadata.yaml; its messages
        # are still readable (``ros2 bag reindex`` would restore the metadata).
        return files[0], (
            f"bag {path} has no metadata.yaml (interrupted recording?); reading {files[0].name} "
            "directly"
        )
    raise BagError(
        f"{path} is not a rosbag2: no metadata.yaml and "
        f"{'no' if not files else len(files)} storage files (.mcap/.db3)"
    )


_MCAP_MAGIC = b"\x89MCAP0\r\n"


def salvage_mcap(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Copy the complete records of a truncated MCAP file to ``dst`` and close it with a footer.

    An MCAP whose writer died has no summary and no footer, which ``rosbags`` refuses. Its data
    section is still a sequence of ``opcode (1 byte), length (uint64), body`` records; every record
    that lies wholly inside the file is kept, up to the first cut one (or the data-end record), and
    a footer without summary (offset 0) is appended, which readers answer by scanning the records.
    Returns the number of bytes of ``src`` kept; raises :class:`BagError` if it is not an MCAP.
    """
    import struct

    src_path, dst_path = Path(src), Path(dst)
    size = src_path.stat().st_size
    with src_path.open("rb") as fin, dst_path.open("wb") as fout:
        if fin.read(8) != _MCAP_MAGIC:
            raise BagError(f"{src_path} is not an MCAP file (bad magic)")
        fout.write(_MCAP_MAGIC)
        pos = 8
        while pos + 9 <= size:
            fin.seek(pos)
            head = fin.read(9)
            op, length = head[0], struct.unpack("<Q", head[1:])[0]
            end = pos + 9 + length
            # 0x0F is DataEnd (the summary follows); 0x00 is not a record (zero padding).
            if end > size or op in (0x00, 0x02, 0x0F):
                break
            fout.write(head)
            remaining = length
            while remaining:
                block = fin.read(min(remaining, 1 << 22))
                fout.write(block)
                remaining -= len(block)
            pos = end
        # Footer: opcode 0x02, length 20, summary_start 0, summary_offset_start 0, crc 0; magic.
        fout.write(b"\x02" + struct.pack("<QQQI", 20, 0, 0, 0) + _MCAP_MAGIC)
    return pos


@contextlib.contextmanager
def open_bag(path: str | os.PathLike[str]) -> Iterator[Any]:
    """An open ``rosbags`` reader on ``path``; read errors become :class:`BagError`.

    A truncated MCAP (a recorder that died) is salvaged into a temporary copy closed with a
    footer (:func:`salvage_mcap`); the reader then has ``salvaged`` set to a description of what
    was recovered, so callers can mark their results partial.
    """
    import tempfile

    highlevel = require("rosbags.highlevel", "reading rosbag2 bags")
    source, warning = _storage_path(Path(path))
    if warning:
        log.warning("%s", warning)
    reader: Any = None
    with contextlib.ExitStack() as stack:
        try:
            if source.is_file():
                reader = _SingleFileReader(source)
            else:
                reader = highlevel.AnyReader([source], default_typestore=get_typestore())
            reader.open()
        except CloudyPointsError:
            raise
        except Exception as exc:  # rosbags raises many types (ReaderError, KeyError, OSError)
            mcap = _mcap_file(source)
            if mcap is None or not _looks_truncated(exc):
                raise BagError(f"cannot open bag {path}: {type(exc).__name__}: {exc}") from exc
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cp_salvage_")))
            kept = salvage_mcap(mcap, tmp / mcap.name)
            total = mcap.stat().st_size
            try:
                reader = _SingleFileReader(tmp / mcap.name)
                reader.open()
            except Exception as exc2:
                raise BagError(
                    f"cannot open bag {path}: {exc}; salvaging its complete records failed too: "
                    f"{type(exc2).__name__}: {exc2}"
                ) from exc2
            reader.salvaged = (
                f"bag {path} is truncated ({exc}); read the {kept} of {total} bytes of "
                f"{mcap.name} that hold complete records ({reader.message_count} messages)"
            )
            log.warning("%s", reader.salvaged)
        stack.callback(_close_quietly, reader)
        yield reader


def _close_quietly(reader: Any) -> None:
    with contextlib.suppress(Exception):
        reader.close()


def _mcap_file(source: Path) -> Path | None:
    if source.is_file():
        return source if source.suffix == ".mcap" else None
    files = sorted(source.glob("*.mcap"))
    return files[0] if len(files) == 1 else None


def _looks_truncated(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(
        word in text
        for word in ("magic", "footer", "summary", "unexpected end", "not enough", "truncat")
    )


class _SingleFileReader:
    """The subset of AnyReader used here, over one raw .mcap/.db3 file (no metadata.yaml)."""

    def __init__(self, path: Path) -> None:
        rosbag2 = require("rosbags.rosbag2", "reading rosbag2 bags")
        self._reader = rosbag2.Reader(path)
        self.typestore = get_typestore()
        self.salvaged: str | None = None

    def open(self) -> None:
        self._reader.open()
        self.connections = list(self._reader.connections)

    def close(self) -> None:
        self._reader.close()

    @property
    def duration(self) -> int:
        return int(self._reader.duration)

    @property
    def start_time(self) -> int:
        return int(self._reader.start_time)

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    def messages(self, connections: Any = ()) -> Iterator[tuple[Any, int, bytes]]:
        return self._reader.messages(connections=connections)

    def deserialize(self, rawdata: bytes, typ: str) -> Any:
        return self.typestore.deserialize_cdr(rawdata, typ)


def _topic_summaries(reader: Any) -> tuple[TopicSummary, ...]:
    counts: dict[tuple[str, str], int] = {}
    for conn in reader.connections:
        key = (conn.topic, conn.msgtype)
        counts[key] = counts.get(key, 0) + int(conn.msgcount)
    return tuple(TopicSummary(t, ty, n) for (t, ty), n in sorted(counts.items()))


def _read_metadata(folder: Path) -> dict[str, Any]:
    yaml = require("yaml", "reading rosbag2 metadata")
    try:
        data = yaml.safe_load((folder / "metadata.yaml").read_text(encoding="utf-8"))
        info = data["rosbag2_bagfile_information"]
        return info if isinstance(info, dict) else {}
    except Exception:  # unreadable metadata is reported by rosbags when the bag is opened
        return {}


def _info_of(reader: Any, path: Path) -> BagInfo:
    """BagInfo of an open reader (metadata.yaml adds storage details and custom data)."""
    source, _ = _storage_path(path)
    meta = _read_metadata(source) if source.is_dir() else {}
    storage = str(meta.get("storage_identifier") or "")
    if not storage:
        suffix = (
            source.suffix
            if source.is_file()
            else next((p.suffix for p in source.iterdir() if p.suffix in (".mcap", ".db3")), "")
        )
        storage = {".mcap": "mcap", ".db3": "sqlite3"}.get(suffix, "")
    if meta.get("compression_mode"):
        mode, fmt = meta.get("compression_mode"), meta.get("compression_format")
        storage += f" ({fmt} {mode} compression)"
    custom = {str(k): str(v) for k, v in (meta.get("custom_data") or {}).items()}
    count = int(reader.message_count)
    return BagInfo(
        path=path,
        storage=storage,
        start_ns=int(reader.start_time) if count else 0,
        duration_ns=int(reader.duration) if count else 0,
        message_count=count,
        topics=_topic_summaries(reader),
        custom_data=custom,
        note=str(getattr(reader, "salvaged", None) or ""),
    )


def bag_info(path: str | os.PathLike[str], reader: Any = None) -> BagInfo:
    """Storage, timing and topics of a bag (raises :class:`BagError` when it cannot be read).

    ``reader``: the bag already open (:func:`open_bag`), so that a caller that goes on reading
    opens (and salvages, and warns about) a truncated bag once.
    """
    if reader is not None:
        return _info_of(reader, Path(path))
    with open_bag(path) as opened:
        return _info_of(opened, Path(path))


# ------------------------------------------------------------------------------ topic choice
def _first_message(reader: Any, topic: str) -> Any | None:
    conns = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in reader.messages(connections=conns):
        return reader.deserialize(raw, conn.msgtype)
    return None


def _is_depth_topic(reader: Any, name: str) -> bool:
    if "depth" in name.lower():
        return True  # by name: peeking costs a chunk read per topic
    msg = _first_message(reader, name)
    return msg is not None and str(msg.encoding) in DEPTH_ENCODINGS


def _pick(candidates: list[str], prefer: tuple[str, ...]) -> list[str]:
    for word in prefer:
        hits = [c for c in candidates if word in c.lower()]
        if hits:
            return hits
    return candidates


def resolve_streams(
    reader: Any,
    image_topic: str | None = None,
    info_topic: str | None = None,
    gt_topic: str | None = None,
    *,
    path: str | os.PathLike[str] = "",
) -> BagStreams:
    """Choose the image, camera-info and ground-truth topics (given ones are checked).

    Raises :class:`BagError` listing the bag's topics when the image topic is missing or
    ambiguous, or when a given topic is absent or of the wrong type.
    """
    topics = _topic_summaries(reader)
    types = {t.name: t.msgtype for t in topics}
    listing = ", ".join(str(t) for t in topics) or "no topics at all"
    where = f"bag {path}" if path else "the bag"

    def check(name: str, allowed: tuple[str, ...], role: str) -> str:
        if name not in types:
            raise BagError(f"{where} has no {role} topic {name!r}; it has: {listing}")
        if types[name] not in allowed:
            raise BagError(
                f"{role} topic {name!r} in {where} has type {types[name]}, expected one of "
                f"{list(allowed)}; the bag has: {listing}"
            )
        return name

    raw_images = [n for n, t in types.items() if t == IMAGE_TYPE]
    depth_like = [n for n in raw_images if _is_depth_topic(reader, n)]
    colour = [n for n in raw_images if n not in depth_like]
    compressed = [n for n, t in types.items() if t == COMPRESSED_IMAGE_TYPE and "depth" not in n]

    if image_topic:
        image = check(image_topic, (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE), "image")
    else:
        # The same camera often appears raw and compressed: prefer raw (no decoding loss).
        candidates = colour or compressed
        if not candidates:
            raise BagError(
                f"{where} has no colour image topic (sensor_msgs/msg/Image rgb8/bgr8/mono8 or "
                f"CompressedImage); it has: {listing}"
            )
        if len(candidates) > 1:
            raise BagError(
                f"{where} has several image topics {candidates}; choose one with --image-topic "
                f"(the bag has: {listing})"
            )
        image = candidates[0]
    is_compressed = types[image] == COMPRESSED_IMAGE_TYPE

    infos = [n for n, t in types.items() if t == CAMERA_INFO_TYPE]
    if info_topic:
        info: str | None = check(info_topic, (CAMERA_INFO_TYPE,), "camera info")
    elif len(infos) == 1:
        info = infos[0]
    elif not infos:
        info = None
    else:
        # Several cameras: the one in the image topic's namespace.
        namespace = image.rsplit("/", 2 if is_compressed else 1)[0]
        same_ns = [n for n in infos if n.rsplit("/", 1)[0] == namespace]
        if len(same_ns) != 1:
            raise BagError(
                f"{where} has several camera info topics {infos}; choose one with --info-topic"
            )
        info = same_ns[0]

    if gt_topic:
        gt: str | None = check(gt_topic, (IMAGE_TYPE,), "ground-truth depth")
    else:
        gts = _pick([n for n in depth_like if n != image], ("gt", "ground_truth", "groundtruth"))
        if len(gts) > 1:
            raise BagError(
                f"{where} has several depth topics {gts}; choose the ground truth with --gt-topic"
            )
        gt = gts[0] if gts else None
    return BagStreams(image=image, compressed=is_compressed, camera_info=info, depth_gt=gt)


# ---------------------------------------------------------------------------------- decoding
def decode_rgb(msg: Any, compressed: bool) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB of an Image or CompressedImage (rosbags or rclpy message)."""
    from cloudypoints_core import image as image_codec

    if compressed:
        return image_codec.compressed_to_rgb(msg)
    return image_codec.image_msg_to_rgb(msg)


def decode_depth(msg: Any) -> npt.NDArray[np.float32]:
    """Depth in metres (float32, NaN invalid) of a 32FC1 (m) or 16UC1 (mm) depth image."""
    from cloudypoints_core import image as image_codec
    from cloudypoints_core.errors import EncodingError

    encoding = str(msg.encoding)
    arr = image_codec.image_msg_to_numpy(msg)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if encoding in ("32FC1", "64FC1"):
        depth = np.asarray(arr, dtype=np.float32)
    elif encoding in ("16UC1", "mono16"):
        # The REP 118 integer convention: millimetres, 0 = no measurement.
        depth = arr.astype(np.float32) / np.float32(1000.0)
    else:
        raise EncodingError(f"ground truth must be 32FC1 (m) or 16UC1 (mm), got {encoding!r}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    # One pass that also copies: the result never aliases the message's (read-only) buffer.
    return np.where(valid, depth, np.float32(np.nan)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------- frames
@dataclass
class _Pending:
    image: Any = None
    info: Any = None
    gt: Any = None


class FrameReader:
    """Iterate the frames of a bag; ``stats`` and ``streams`` are filled while iterating."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_topic: str | None = None,
        info_topic: str | None = None,
        gt_topic: str | None = None,
        *,
        max_frames: int | None = None,
        decode_gt: bool = True,
    ) -> None:
        self.path = Path(path)
        self.image_topic = image_topic
        self.info_topic = info_topic
        self.gt_topic = gt_topic
        self.max_frames = max_frames
        self.decode_gt = decode_gt
        self.stats = ReadStats()
        self.streams: BagStreams | None = None
        self.info: BagInfo | None = None

    def frame_count(self) -> int:
        """Number of images on the chosen image topic (from the index; no decoding)."""
        if self.info is None or self.streams is None:
            return 0
        return sum(t.count for t in self.info.topics if t.name == self.streams.image)

    def __iter__(self) -> Iterator[BagFrame]:
        with open_bag(self.path) as reader:
            self.info = _info_of(reader, self.path)
            streams = resolve_streams(
                reader, self.image_topic, self.info_topic, self.gt_topic, path=self.path
            )
            self.streams = streams
            if getattr(reader, "salvaged", None):
                self.stats.truncated = str(reader.salvaged)
                self.stats.warn(str(reader.salvaged))
            if streams.camera_info is None:
                self.stats.warn(
                    f"bag {self.path} has no sensor_msgs/msg/CameraInfo topic; images cannot be "
                    f"used without intrinsics (topics: {self.info.topic_list()})"
                )
            if streams.depth_gt is None:
                self.stats.warn(f"bag {self.path} has no ground-truth depth topic")
            # Time spent in here between two frames is the cost of reading and decoding them.
            t_resume = time.perf_counter()
            count = 0
            for frame in self._assemble(reader, streams):
                read_s = time.perf_counter() - t_resume
                self.stats.read_s += read_s
                yield replace(frame, index=count, read_s=read_s)
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    return
                t_resume = time.perf_counter()

    def _assemble(self, reader: Any, streams: BagStreams) -> Iterator[BagFrame]:
        roles = {streams.image: "image"}
        if streams.camera_info:
            roles[streams.camera_info] = "info"
        if streams.depth_gt:
            roles[streams.depth_gt] = "gt"
        conns = [c for c in reader.connections if c.topic in roles]
        pending: OrderedDict[int, _Pending] = OrderedDict()
        latest_info: tuple[int, Any] | None = None
        newest = 0
        try:
            for conn, _, raw in reader.messages(connections=conns):
                role = roles[conn.topic]
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:  # one corrupt message must not end the pass
                    self.stats.warn(f"undecodable message on {conn.topic}: {exc}")
                    continue
                stamp = stamp_to_ns(msg.header.stamp)
                entry = pending.setdefault(stamp, _Pending())
                if role == "image":
                    self.stats.images += 1
                    entry.image = msg
                elif role == "info":
                    entry.info = msg
                    if latest_info is None or stamp >= latest_info[0]:
                        latest_info = (stamp, msg)
                else:
                    entry.gt = msg
                newest = max(newest, stamp)
                # Emit, in stamp order, the frames that are complete or have waited long enough.
                while pending:
                    head_stamp, head = next(iter(pending.items()))
                    complete = (
                        head.image is not None
                        and (head.info is not None or streams.camera_info is None)
                        and (head.gt is not None or streams.depth_gt is None)
                    )
                    if not complete and newest - head_stamp <= MATCH_WINDOW_NS:
                        break
                    pending.popitem(last=False)
                    frame = self._finish(head_stamp, head, latest_info)
                    if frame is not None:
                        yield frame
        except (CloudyPointsError, GeneratorExit):
            raise
        except Exception as exc:  # truncated or corrupt storage: flush what we have, then report
            self.stats.error = f"bag {self.path} could not be read to the end: {exc}"
            for stamp, entry in pending.items():
                frame = self._finish(stamp, entry, latest_info)
                if frame is not None:
                    yield frame
            raise BagError(self.stats.error) from exc
        for stamp, entry in pending.items():
            frame = self._finish(stamp, entry, latest_info)
            if frame is not None:
                yield frame

    def _finish(
        self, stamp: int, entry: _Pending, latest_info: tuple[int, Any] | None
    ) -> BagFrame | None:
        if entry.image is None:
            return None  # camera info or gt without an image: nothing to evaluate
        info = entry.info
        if info is None and latest_info is not None:
            info = latest_info[1]
            self.stats.camera_info_fallback += 1
            if self.stats.camera_info_fallback == 1:
                self.stats.warn(
                    f"image at {stamp} ns has no camera info with the same stamp; using the "
                    f"latest camera info (stamped {latest_info[0]} ns) for it and later frames"
                )
        if info is None:
            self.stats.skipped_no_camera_info += 1
            self.stats.warn(f"image at {stamp} ns skipped: no camera info received before it")
            return None
        if self.streams is None:
            raise BagError(f"bag {self.path}: frames assembled before its topics were chosen")
        try:
            rgb = decode_rgb(entry.image, self.streams.compressed)
            intrinsics = intrinsics_from_camera_info(info)
        except CloudyPointsError as exc:
            self.stats.skipped_bad_image += 1
            self.stats.warn(f"image at {stamp} ns skipped: {exc}")
            return None
        if rgb.shape[:2] != intrinsics.shape:
            self.stats.skipped_no_camera_info += 1
            self.stats.warn(
                f"image at {stamp} ns skipped: it is {rgb.shape[1]}x{rgb.shape[0]} but its camera "
                f"info is {intrinsics.width}x{intrinsics.height}"
            )
            return None
        gt = None
        if entry.gt is not None and self.decode_gt:
            try:
                gt = decode_depth(entry.gt)
            except CloudyPointsError as exc:
                self.stats.bad_gt += 1
                self.stats.warn(f"ground truth at {stamp} ns unusable: {exc}")
        elif entry.gt is None and self.streams is not None and self.streams.depth_gt:
            self.stats.missing_gt += 1
            if self.stats.missing_gt <= 3:
                self.stats.warn(f"image at {stamp} ns has no ground truth with the same stamp")
        self.stats.frames += 1
        return BagFrame(
            index=self.stats.frames - 1,
            stamp_ns=stamp,
            rgb=rgb,
            intrinsics=intrinsics,
            depth_gt_m=gt,
        )


def read_frames(
    path: str | os.PathLike[str],
    image_topic: str | None = None,
    info_topic: str | None = None,
    gt_topic: str | None = None,
    *,
    max_frames: int | None = None,
) -> Iterator[BagFrame]:
    """Yield the frames of the bag at ``path`` in stamp order (see :class:`FrameReader`)."""
    yield from FrameReader(path, image_topic, info_topic, gt_topic, max_frames=max_frames)
