"""Convert Cityscapes sequences (and SynthCity drives) to rosbag2 camera bags with ground truth.

A Cityscapes sequence is one city's 30-frame snippet (about 17 Hz) from ``leftImg8bit_sequence``
(or, without the sequence archive, the single annotated frame from ``leftImg8bit``). Each frame
becomes an image, a CameraInfo from its recording's ``camera/*_camera.json`` (K, P = [K | 0],
plumb_bob with zero D: the images are rectified) and, where a disparity map exists
(``disparity_sequence`` or ``disparity``), a ``32FC1`` depth in metres computed as
``baseline * fx / ((p - 1) / 256)`` with ``p <= 1`` invalid. Stamps come from the
``timestamp_sequence`` files when every frame has one, else from the frame numbers at 17 Hz.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.bags.writer import (
    DEFAULT_RATE_HZ,
    BagTopics,
    FrameRecord,
    write_frames_bag,
    write_synthcity_bag,
)
from cloudypoints_core.errors import DatasetError, InputError

log = logging.getLogger(__name__)

#: Start of the synthetic clock when a sequence has no timestamp files (a fixed, recognisable
#: date, 2015-01-01T00:00:00Z, so converted bags are reproducible byte for byte).
SYNTHETIC_EPOCH_NS = 1_420_070_400 * 1_000_000_000
DATASETS: tuple[str, ...] = ("cityscapes", "synthcity")
#: Timestamp files holding less than this (about 11.6 days) count as relative to the sequence.
RELATIVE_STAMP_LIMIT_NS = 10**15
#: Plausible median frame step of a camera sequence (200 Hz .. 0.5 Hz), in nanoseconds.
MIN_STEP_NS, MAX_STEP_NS = 5_000_000, 2_000_000_000

_IMAGE_RE = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


@dataclass(frozen=True)
class SequenceFrame:
    """The files of one frame of a Cityscapes sequence (``disparity``/``timestamp`` optional)."""

    key: str
    frame: int
    image_path: Path
    camera_path: Path
    disparity_path: Path | None
    timestamp_path: Path | None


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def cityscapes_sequences(root: str | os.PathLike[str], split: str, city: str) -> list[int]:
    """Sequence numbers of ``city`` in ``split`` (sequence folder if present, else annotated)."""
    base = Path(root)
    for kind in ("leftImg8bit_sequence", "leftImg8bit"):
        folder = base / kind / split / city
        if folder.is_dir():
            return sorted(
                {int(m["seq"]) for p in folder.iterdir() if (m := _IMAGE_RE.match(p.name))}
            )
    return []


def cityscapes_sequence_frames(
    root: str | os.PathLike[str], split: str, city: str, sequence: int
) -> list[SequenceFrame]:
    """The frames of one Cityscapes sequence, in frame order, with the files that go with them.

    Raises :class:`DatasetError` naming what is missing (folder, frames or calibration).
    """
    base = Path(root)
    seq_dir = base / "leftImg8bit_sequence" / split / city
    image_dir = seq_dir if seq_dir.is_dir() else base / "leftImg8bit" / split / city
    if not image_dir.is_dir():
        folders = [base / kind / split for kind in ("leftImg8bit_sequence", "leftImg8bit")]
        cities = sorted({p.name for f in folders if f.is_dir() for p in f.iterdir() if p.is_dir()})
        raise DatasetError(
            f"no Cityscapes images for city {city!r} split {split!r} under {base}: expected "
            f"{seq_dir} or {base / 'leftImg8bit' / split / city}; cities present: "
            f"{cities or 'none'}"
        )
    prefix = f"{city}_{sequence:06d}_"
    numbers = sorted(
        int(m["frame"])
        for p in image_dir.iterdir()
        if (m := _IMAGE_RE.match(p.name)) and p.name.startswith(prefix)
    )
    if not numbers:
        available = cityscapes_sequences(base, split, city)
        raise DatasetError(
            f"sequence {sequence} of {city} not found in {image_dir}; sequences there: "
            f"{available[:30] or 'none'}"
        )
    camera_dir = base / "camera" / split / city
    calibrated = (
        sorted(
            int(p.name[len(prefix) : len(prefix) + 6])
            for p in camera_dir.glob(f"{prefix}*_camera.json")
        )
        if camera_dir.is_dir()
        else []
    )
    if not calibrated:
        raise DatasetError(
            f"no camera calibration for {city} sequence {sequence}: expected "
            f"{camera_dir}/{prefix}<frame>_camera.json (from camera_trainvaltest.zip)"
        )
    frames = []
    for number in numbers:
        stem = f"{prefix}{number:06d}"
        # A snippet shares its recording's calibration: the camera file of the nearest annotated
        # frame of the same sequence number.
        cam = min(calibrated, key=lambda f: (abs(f - number), f))
        frames.append(
            SequenceFrame(
                key=stem,
                frame=number,
                image_path=image_dir / f"{stem}_leftImg8bit.png",
                camera_path=camera_dir / f"{prefix}{cam:06d}_camera.json",
                disparity_path=_first_existing(
                    base / "disparity_sequence" / split / city / f"{stem}_disparity.png",
                    base / "disparity" / split / city / f"{stem}_disparity.png",
                ),
                timestamp_path=_first_existing(
                    base / "timestamp_sequence" / split / city / f"{stem}_timestamp.txt",
                    base / "timestamp" / split / city / f"{stem}_timestamp.txt",
                ),
            )
        )
    return frames


def _sequence_stamps(frames: list[SequenceFrame], rate_hz: float) -> list[int]:
    stamps: list[int] = []
    paths = [f.timestamp_path for f in frames if f.timestamp_path is not None]
    if len(paths) == len(frames):
        try:
            stamps = [int(path.read_text().strip()) for path in paths]
        except (OSError, ValueError) as exc:
            log.warning("unreadable Cityscapes timestamp (%s); using %.1f Hz timing", exc, rate_hz)
            stamps = []
        if stamps and not all(b > a for a, b in zip(stamps, stamps[1:], strict=False)):
            log.warning("Cityscapes timestamps do not increase; using %.1f Hz timing", rate_hz)
            stamps = []
        steps = np.diff(stamps) if len(stamps) > 1 else np.array([])
        if steps.size and not MIN_STEP_NS <= float(np.median(steps)) <= MAX_STEP_NS:
            # Not nanoseconds at a camera's rate: another unit or a broken file.
            log.warning(
                "Cityscapes timestamps step by %d (median), not nanoseconds of a camera "
                "frame; using %.1f Hz timing",
                int(np.median(steps)),
                rate_hz,
            )
            stamps = []
        if stamps and stamps[0] < RELATIVE_STAMP_LIMIT_NS:
            # Stamps relative to the sequence start: put them on the synthetic clock so the bag
            # does not start in January 1970 (gaps between frames are kept).
            stamps = [SYNTHETIC_EPOCH_NS + s for s in stamps]
    if not stamps:
        # Frame numbers are consecutive camera frames, so gaps in them stay gaps in time.
        stamps = [SYNTHETIC_EPOCH_NS + round(f.frame * 1e9 / rate_hz) for f in frames]
    return stamps


def _resize_nearest(array: npt.NDArray[Any], width: int, height: int) -> npt.NDArray[Any]:
    # Centred-pixel nearest sampling (the convention Intrinsics.resized follows), so every kept
    # depth stays on the ray its pixel describes; never interpolates across invalid (NaN) pixels.
    src_h, src_w = array.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.intp), src_w - 1)
    return array[rows[:, None], cols[None, :]]


def _cityscapes_records(
    frames: list[SequenceFrame],
    stamps: list[int],
    size: tuple[int, int] | None,
    hood_fraction: float,
    calibration_size: tuple[int, int] | None,
) -> Iterator[FrameRecord]:
    from cloudypoints_core._optional import require
    from cloudypoints_core.data import cityscapes as cs

    cv2 = require("cv2", "converting Cityscapes images")
    cameras: dict[Path, Any] = {}
    for frame, stamp in zip(frames, stamps, strict=True):
        if frame.camera_path not in cameras:
            cameras[frame.camera_path] = cs.CityscapesCamera.from_json(frame.camera_path)
        camera = cameras[frame.camera_path]
        rgb = cs.read_rgb(frame.image_path)
        height, width = rgb.shape[:2]
        intrinsics = camera.intrinsics(width, height, calibration_size)
        depth: npt.NDArray[np.float32] | None = None
        if frame.disparity_path is not None:
            raw = cs.read_disparity(frame.disparity_path)
            if raw.shape != rgb.shape[:2]:
                raise DatasetError(
                    f"{frame.disparity_path} is {raw.shape[1]}x{raw.shape[0]} but "
                    f"{frame.image_path} is {width}x{height}"
                )
            # Disparity is in pixels of the stored image: fx at that resolution.
            depth = cs.disparity_to_depth(raw, camera.baseline_m, intrinsics.fx_px)
            if hood_fraction > 0:
                depth[cs.hood_rows(height, hood_fraction) :] = np.nan
        if size is not None and size != (width, height):
            out_w, out_h = size
            shrinking = out_w < width and out_h < height
            interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            rgb = np.ascontiguousarray(cv2.resize(rgb, (out_w, out_h), interpolation=interp))
            intrinsics = intrinsics.resized(out_w, out_h)
            if depth is not None:
                depth = np.ascontiguousarray(_resize_nearest(depth, out_w, out_h))
        yield FrameRecord(rgb=rgb, intrinsics=intrinsics, stamp_ns=stamp, depth_m=depth)


def convert_cityscapes(
    root: str | os.PathLike[str],
    split: str,
    city: str,
    sequence: int,
    out: str | os.PathLike[str],
    *,
    storage: str = "mcap",
    image_format: str = "raw",
    topics: BagTopics | None = None,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
    rate_hz: float = DEFAULT_RATE_HZ,
    hood_fraction: float = 0.25,
    calibration_size: tuple[int, int] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    jpeg_quality: int = 95,
) -> Path:
    """Write one Cityscapes sequence to a rosbag2 at ``out`` and return its path.

    ``size`` (width, height) resizes images (area), ground truth (nearest) and intrinsics
    together; ``hood_fraction`` of the bottom rows (the ego-vehicle's hood, where disparity is
    meaningless) get NaN ground truth (0 keeps them).
    """
    frames = cityscapes_sequence_frames(root, split, city, sequence)
    if max_frames is not None:
        if max_frames <= 0:
            raise InputError(f"max_frames must be positive, got {max_frames}")
        frames = frames[:max_frames]
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise InputError(f"size must be a positive (width, height), got {size!r}")
    with_gt = sum(f.disparity_path is not None for f in frames)
    if with_gt < len(frames):
        log.warning(
            "%d of %d frames of %s sequence %d have no disparity: no ground truth for them",
            len(frames) - with_gt,
            len(frames),
            city,
            sequence,
        )
    stamps = _sequence_stamps(frames, rate_hz)
    from cloudypoints_core.data.cityscapes import CityscapesCamera

    cam = CityscapesCamera.from_json(frames[0].camera_path)
    intr_note = f"baseline_m={cam.baseline_m} fx_px={cam.fx_px} (at calibration size)"
    return write_frames_bag(
        out,
        _cityscapes_records(frames, stamps, size, hood_fraction, calibration_size),
        total=len(frames),
        progress=progress,
        desc=f"Cityscapes {city} {sequence:06d} -> {Path(out).name}",
        storage=storage,
        image_format=image_format,
        topics=topics,
        overwrite=overwrite,
        jpeg_quality=jpeg_quality,
        custom_data={
            "cloudypoints.source": "cityscapes",
            "cloudypoints.cityscapes": f"split={split} city={city} sequence={sequence} "
            f"frames={frames[0].frame}..{frames[-1].frame} with_gt={with_gt} "
            f"hood_fraction={hood_fraction} size={size or 'native'} {intr_note}",
        },
    )


def convert(dataset: str, out: str | os.PathLike[str], **options: Any) -> Path:
    """Dispatch to :func:`convert_cityscapes` or :func:`write_synthcity_bag` by ``dataset``."""
    if dataset == "cityscapes":
        return convert_cityscapes(out=out, **options)
    if dataset == "synthcity":
        return write_synthcity_bag(out, **options)
    raise InputError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")


__all__ = [
    "DATASETS",
    "SequenceFrame",
    "cityscapes_sequence_frames",
    "cityscapes_sequences",
    "convert",
    "convert_cityscapes",
    "write_synthcity_bag",
]
