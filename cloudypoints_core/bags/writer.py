"""Write rosbag2 bags (MCAP or SQLite3) of camera frames: image, CameraInfo and ground-truth depth.

A bag is written into a hidden staging folder beside the target and moved onto the target name
only when it is complete, so an interrupted run never leaves something that looks like a bag.
Topics (defaults): ``/camera/image`` (``sensor_msgs/Image`` rgb8) or ``/camera/image/compressed``
(``CompressedImage`` png/jpeg), ``/camera/camera_info`` and ``/camera/depth_gt`` (``32FC1`` metres,
NaN invalid), all stamped alike with frame ``camera_optical_frame`` (REP 103 optical frame) and
recorded at their header stamp, so ``ros2 bag play`` reproduces the original timing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core import __version__
from cloudypoints_core._optional import require
from cloudypoints_core.bags import (
    DEFAULT_CAMERA_INFO_TOPIC,
    DEFAULT_DEPTH_GT_TOPIC,
    DEFAULT_FRAME_ID,
    DEFAULT_IMAGE_TOPIC,
)
from cloudypoints_core.bags import messages as m
from cloudypoints_core.bags.typestore import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    get_typestore,
    typestore_name,
)
from cloudypoints_core.errors import BagError, InputError
from cloudypoints_core.geometry import Intrinsics

log = logging.getLogger(__name__)

#: rosbag2 storage plugins ``rosbags`` can write (both readable by ``ros2 bag``).
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
#: rosbag2 metadata version written (the version Jazzy and Kilted write).
BAG_VERSION = 9
#: Cityscapes and SynthCity sequences are sampled at about 17 Hz.
DEFAULT_RATE_HZ = 17.0


@dataclass(frozen=True)
class BagTopics:
    """Topic names of a camera bag; ``compressed_image`` defaults to ``image + "/compressed"``
    (the image_transport convention) and ``depth_gt=None`` writes no ground truth."""

    image: str = DEFAULT_IMAGE_TOPIC
    camera_info: str = DEFAULT_CAMERA_INFO_TOPIC
    depth_gt: str | None = DEFAULT_DEPTH_GT_TOPIC
    compressed_image: str | None = None

    def image_topic(self, image_format: str) -> str:
        """The topic the images go to for ``image_format`` (raw, png or jpeg)."""
        if image_format == "raw":
            return self.image
        return self.compressed_image or f"{self.image.rstrip('/')}/compressed"


@dataclass(frozen=True)
class FrameRecord:
    """One camera frame to write: rgb8 (H, W, 3), its intrinsics, optional depth (metres)."""

    rgb: npt.NDArray[np.uint8]
    intrinsics: Intrinsics
    stamp_ns: int
    depth_m: npt.NDArray[np.float32] | None = None
    #: Optional 3x4 projection matrix for CameraInfo.P (``[K | 0]`` when None).
    p: npt.NDArray[np.float64] | None = None


def _check_choice(value: str, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{what} must be one of {list(choices)}, got {value!r}")
    return value


class BagWriter:
    """Context manager writing camera frames to a new rosbag2 at ``path`` (a folder).

    On a clean exit the bag is closed (index and ``metadata.yaml`` written) and moved onto
    ``path``; on an exception it is aborted and removed, and ``path`` is left as it was.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage: str = "mcap",
        image_format: str = "raw",
        topics: BagTopics | None = None,
        frame_id: str = DEFAULT_FRAME_ID,
        jpeg_quality: int = 95,
        overwrite: bool = False,
        custom_data: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.storage = _check_choice(storage, STORAGES, "storage")
        self.image_format = _check_choice(
            "jpeg" if image_format == "jpg" else image_format, m.IMAGE_FORMATS, "image format"
        )
        self.topics = topics or BagTopics()
        self.frame_id = frame_id
        self.jpeg_quality = int(jpeg_quality)
        self.overwrite = overwrite
        self.custom_data = {
            "cloudypoints.version": __version__,
            "cloudypoints.typestore": typestore_name(),
            "cloudypoints.frame_id": frame_id,
            **dict(custom_data or {}),
        }
        self.frames_written = 0
        self._staging: Path | None = None
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self._last_stamp: int | None = None

    # ------------------------------------------------------------------------ context manager
    def __enter__(self) -> BagWriter:
        rosbag2 = require("rosbags.rosbag2", "writing rosbag2 bags")
        if self.path.exists() and not self.overwrite:
            raise BagError(f"{self.path} exists already; remove it or pass overwrite=True")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The bag folder is created under its final name inside a hidden staging folder, so the
        # storage file inside it (``<name>.mcap``) already carries the final name after the move.
        self._staging = self.path.parent / f".{self.path.name}.partial-{uuid.uuid4().hex[:8]}"
        self._staging.mkdir()
        plugins = {"mcap": rosbag2.StoragePlugin.MCAP, "sqlite3": rosbag2.StoragePlugin.SQLITE3}
        plugin = plugins[self.storage]
        try:
            self._writer = rosbag2.Writer(
                self._staging / self.path.name, version=BAG_VERSION, storage_plugin=plugin
            )
            for key, value in self.custom_data.items():
                self._writer.set_custom_data(key, str(value))
            self._writer.open()
            store = get_typestore()
            image_type = IMAGE_TYPE if self.image_format == "raw" else COMPRESSED_IMAGE_TYPE
            self._conns["camera_info"] = self._writer.add_connection(
                self.topics.camera_info, CAMERA_INFO_TYPE, typestore=store
            )
            self._conns["image"] = self._writer.add_connection(
                self.topics.image_topic(self.image_format), image_type, typestore=store
            )
            if self.topics.depth_gt:
                self._conns["depth_gt"] = self._writer.add_connection(
                    self.topics.depth_gt, IMAGE_TYPE, typestore=store
                )
        except Exception:
            self._discard()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        staging = self._staging
        if staging is None:
            raise BagError("BagWriter.__exit__ called without a matching __enter__")
        try:
            self._writer.close()
        except Exception:
            self._discard()
            raise
        self._writer = None
        staged = staging / self.path.name
        if self.path.exists() and self.overwrite:
            # Not atomic for folders (rename cannot replace a non-empty folder); the new bag is
            # complete before the old one goes, so at worst the old one is missing, never half.
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        os.replace(staged, self.path)
        staging.rmdir()
        self._staging = None
        log.info(
            "wrote %d frames to %s (%s, %s)",
            self.frames_written,
            self.path,
            self.storage,
            self.image_format,
        )

    def _discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.abort()
            self._writer = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    # --------------------------------------------------------------------------------- writing
    def write_frame(
        self,
        rgb: npt.NDArray[np.uint8],
        intrinsics: Intrinsics,
        stamp_ns: int,
        depth_m: npt.NDArray[np.floating[Any]] | None = None,
        *,
        p: npt.ArrayLike | None = None,
    ) -> None:
        """Write one frame: CameraInfo first (so players deliver it before the image), the image,
        then the ground-truth depth when the bag has a depth topic and ``depth_m`` is given."""
        if self._writer is None:
            raise BagError("BagWriter.write_frame called outside its 'with' block")
        rgb_arr = np.asarray(rgb)
        if rgb_arr.shape[:2] != intrinsics.shape:
            raise InputError(
                f"image is {rgb_arr.shape[1]}x{rgb_arr.shape[0]} but the intrinsics are "
                f"{intrinsics.width}x{intrinsics.height}"
            )
        stamp_ns = int(stamp_ns)
        if self._last_stamp is not None and stamp_ns <= self._last_stamp:
            raise InputError(f"stamps must increase: {stamp_ns} ns after {self._last_stamp} ns")
        info = m.camera_info_message(intrinsics, stamp_ns, self.frame_id, p=p)
        if self.image_format == "raw":
            image = m.image_message(rgb_arr, "rgb8", stamp_ns, self.frame_id)
        else:
            image = m.compressed_image_message(
                rgb_arr, self.image_format, stamp_ns, self.frame_id, jpeg_quality=self.jpeg_quality
            )
        self._writer.write(self._conns["camera_info"], stamp_ns, m.serialize(info))
        self._writer.write(self._conns["image"], stamp_ns, m.serialize(image))
        if depth_m is not None and "depth_gt" in self._conns:
            depth = np.asarray(depth_m)
            if depth.shape != rgb_arr.shape[:2]:
                # Allowed (ground truth may come at another resolution) but worth a word.
                log.warning(
                    "depth %s and image %s differ in size at stamp %d",
                    depth.shape,
                    rgb_arr.shape[:2],
                    stamp_ns,
                )
            msg = m.depth_message(depth, stamp_ns, self.frame_id)
            self._writer.write(self._conns["depth_gt"], stamp_ns, m.serialize(msg))
        self._last_stamp = stamp_ns
        self.frames_written += 1

    def write(self, frame: FrameRecord) -> None:
        self.write_frame(frame.rgb, frame.intrinsics, frame.stamp_ns, frame.depth_m, p=frame.p)


def write_frames_bag(
    path: str | os.PathLike[str],
    frames: Iterable[FrameRecord],
    *,
    total: int | None = None,
    progress: bool = True,
    desc: str = "writing bag",
    **writer_options: Any,
) -> Path:
    """Write ``frames`` to a new bag at ``path`` (options as :class:`BagWriter`); return it."""
    tqdm = require("tqdm", "progress bars").tqdm
    with BagWriter(path, **writer_options) as writer:
        for frame in tqdm(frames, total=total, desc=desc, unit="frame", disable=not progress):
            writer.write(frame)
        if writer.frames_written == 0:
            raise BagError(f"no frames to write to {path}")
    return Path(path)


def write_synthcity_bag(
    path: str | os.PathLike[str],
    seed: int = 0,
    n_frames: int = 30,
    width: int = 640,
    height: int = 320,
    storage: str = "mcap",
    image_format: str = "raw",
    topics: BagTopics | None = None,
    *,
    speed_mps: float | None = None,
    rate_hz: float = DEFAULT_RATE_HZ,
    frame_id: str = DEFAULT_FRAME_ID,
    progress: bool = True,
    overwrite: bool = False,
    jpeg_quality: int = 95,
) -> Path:
    """Render a SynthCity drive and write it as a rosbag2 (see the module docstring for topics).

    Ground truth is exact: SynthCity's sky (``inf``) becomes NaN. Stamps are SynthCity's
    (``rate_hz`` apart); ``speed_mps`` None takes SynthCity's default speed.
    """
    if n_frames <= 0:
        raise InputError(f"n_frames must be positive, got {n_frames}")
    from cloudypoints_core.data import synthcity

    frames = synthcity.render_sequence(
        seed, n_frames, width, height, speed_mps=speed_mps, rate_hz=rate_hz
    )
    records = (
        FrameRecord(
            rgb=f.rgb, intrinsics=f.intrinsics, stamp_ns=int(f.stamp_ns), depth_m=f.depth_m
        )
        for f in frames
    )
    return write_frames_bag(
        path,
        records,
        total=n_frames,
        progress=progress,
        desc=f"SynthCity seed {seed} -> {Path(path).name}",
        storage=storage,
        image_format=image_format,
        topics=topics,
        frame_id=frame_id,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
        custom_data={
            "cloudypoints.source": "synthcity",
            "cloudypoints.synthcity": f"seed={seed} n_frames={n_frames} size={width}x{height} "
            f"speed_mps={speed_mps} rate_hz={rate_hz}",
        },
    )
