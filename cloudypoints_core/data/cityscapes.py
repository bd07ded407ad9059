"""Cityscapes as a depth data set: RGB frames with metric depth from the stereo disparity maps.

Layout (as the official archives extract)::

    {root}/leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png   8-bit RGB
    {root}/disparity/{split}/{city}/{city}_{seq:06d}_{frame:06d}_disparity.png       16-bit gray
    {root}/camera/{split}/{city}/{city}_{seq:06d}_{frame:06d}_camera.json
    {root}/vehicle/..._vehicle.json, {root}/timestamp/..._timestamp.txt               (optional)

and with ``sequence=True`` the 30-frame snippets (about 17 Hz, the annotated frame is index 19)
under ``leftImg8bit_sequence/`` and ``disparity_sequence/``; their calibration is the ``camera/``
file of the annotated frame of the same city and sequence number (calibrations are per recording).

Disparity pixel p: 0 is invalid, otherwise d = (p - 1) / 256 px, and d = 0 (p = 1) is invalid too.
Depth = baseline * fx / d with baseline and fx read from each frame's own camera JSON. The bottom
quarter of the rows shows the ego-vehicle's hood and is masked (or cropped away).

Bad files policy: the constructor scans the index (pairs exist, every camera JSON parses, and with
``scan="header"`` every PNG header has the right size, bit depth and channels). Offenders are
listed (first few in the message, all in :attr:`CityscapesDataset.bad_files`);
``bad_files="raise"`` (default) fails right there, ``bad_files="skip"`` logs them and drops those
frames, so an epoch never dies on a file the scan could see. A PNG whose header is fine but whose
body is truncated still raises :class:`DatasetError` naming the file when read;
:meth:`CityscapesDataset.check` decodes every file to find those ahead of time.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import DatasetError
from cloudypoints_core.geometry import Intrinsics

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Frames per split in the official release (leftImg8bit_trainvaltest).
OFFICIAL_COUNTS: Mapping[str, int] = {"train": 2975, "val": 500, "test": 1525}
#: Native frame size of every Cityscapes camera (width, height).
NATIVE_SIZE: tuple[int, int] = (2048, 1024)
#: Rows kept above the ego-vehicle's hood (the literature crops the bottom quarter).
DEFAULT_HOOD_FRACTION = 0.25
#: The annotated frame's index inside a 30-frame sequence snippet.
ANNOTATED_SNIPPET_INDEX = 19
SNIPPET_LENGTH = 30
#: Folder with the bundled split files.
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
#: Environment variable naming the root (the one the official cityscapesScripts use).
ROOT_ENV = "CITYSCAPES_DATASET"
#: How many offenders an error message lists before "and N more".
_MAX_LISTED = 5

_NAME_RE = re.compile(
    r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_(?P<type>[A-Za-z0-9]+)\.(?P<ext>\w+)$"
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA.
_RGB_COLOR_TYPES = frozenset({2, 6})

HoodMode = Literal["mask", "crop", "none"]
ScanMode = Literal["header", "names"]
BadFilePolicy = Literal["raise", "skip"]


# --------------------------------------------------------------------------------------------
# camera calibration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CityscapesCamera:
    """One ``*_camera.json``: pinhole intrinsics (px) and the stereo rig's mounting (m, rad).

    ``height_m`` is the extrinsic ``z`` (camera height above the road), ``pitch_rad`` the rig's
    downward pitch. The intrinsics describe the images as stored on disk (2048x1024 for the real
    data set).
    """

    fx_px: float
    fy_px: float
    u0_px: float
    v0_px: float
    baseline_m: float
    height_m: float
    pitch_rad: float
    roll_rad: float = 0.0
    yaw_rad: float = 0.0
    x_m: float = 0.0
    y_m: float = 0.0

    @classmethod
    def from_json(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> CityscapesCamera:
        """Parse a camera JSON file (path) or its already-loaded content (mapping)."""
        where = "camera mapping"
        if isinstance(source, Mapping):
            data: Any = source
        else:
            where = str(source)
            try:
                with open(source, encoding="utf-8") as handle:
                    data = json.load(handle)
            except FileNotFoundError as exc:
                raise DatasetError(f"camera file {where} does not exist") from exc
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DatasetError(f"camera file {where} is not readable JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise DatasetError(f"{where}: expected a JSON object, got {type(data).__name__}")
        intrinsic = data.get("intrinsic")
        extrinsic = data.get("extrinsic")
        if not isinstance(intrinsic, Mapping) or not isinstance(extrinsic, Mapping):
            raise DatasetError(
                f"{where}: expected objects 'intrinsic' (fx, fy, u0, v0) and 'extrinsic' "
                f"(baseline, pitch, z, ...), found keys {sorted(data)}"
            )
        missing = [f"intrinsic.{k}" for k in ("fx", "fy", "u0", "v0") if k not in intrinsic]
        missing += [f"extrinsic.{k}" for k in ("baseline", "z", "pitch") if k not in extrinsic]
        if missing:
            raise DatasetError(f"{where}: missing calibration fields {missing}")
        try:
            camera = cls(
                fx_px=float(intrinsic["fx"]),
                fy_px=float(intrinsic["fy"]),
                u0_px=float(intrinsic["u0"]),
                v0_px=float(intrinsic["v0"]),
                baseline_m=float(extrinsic["baseline"]),
                height_m=float(extrinsic["z"]),
                pitch_rad=float(extrinsic["pitch"]),
                roll_rad=float(extrinsic.get("roll", 0.0)),
                yaw_rad=float(extrinsic.get("yaw", 0.0)),
                x_m=float(extrinsic.get("x", 0.0)),
                y_m=float(extrinsic.get("y", 0.0)),
            )
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: calibration values must be numbers ({exc})") from exc
        bad = [
            name
            for name in ("fx_px", "fy_px", "baseline_m")
            if not (math.isfinite(getattr(camera, name)) and getattr(camera, name) > 0)
        ]
        bad += [
            name
            for name in ("u0_px", "v0_px", "height_m", "pitch_rad")
            if not math.isfinite(getattr(camera, name))
        ]
        if bad:
            raise DatasetError(
                f"{where}: {', '.join(f'{n}={getattr(camera, n)!r}' for n in bad)} invalid; "
                "fx, fy and baseline must be finite and positive, the others finite"
            )
        return camera

    def to_json_dict(self) -> dict[str, dict[str, float]]:
        """The content of a ``*_camera.json`` file with these values (the official key names)."""
        return {
            "extrinsic": {
                "baseline": self.baseline_m,
                "pitch": self.pitch_rad,
                "roll": self.roll_rad,
                "x": self.x_m,
                "y": self.y_m,
                "yaw": self.yaw_rad,
                "z": self.height_m,
            },
            "intrinsic": {"fx": self.fx_px, "fy": self.fy_px, "u0": self.u0_px, "v0": self.v0_px},
        }

    def intrinsics(
        self, width: int, height: int, calibration_size: tuple[int, int] | None = None
    ) -> Intrinsics:
        """Intrinsics of a ``width`` x ``height`` image.

        ``calibration_size`` (width, height) is the size the JSON values refer to; ``None`` means
        the image itself (true for the real data set, whose images are stored at 2048x1024).
        """
        native = Intrinsics(
            self.fx_px, self.fy_px, self.u0_px, self.v0_px, *(calibration_size or (width, height))
        )
        if native.size == (width, height):
            return native
        return native.resized(width, height)

    def mounting(self) -> dict[str, float]:
        """Mounting of the camera as a sample's ``"camera"`` entry (metres and radians)."""
        return {
            "baseline_m": self.baseline_m,
            "height_m": self.height_m,
            "pitch_rad": self.pitch_rad,
            "roll_rad": self.roll_rad,
            "yaw_rad": self.yaw_rad,
        }


def disparity_to_depth(
    disparity_png: npt.NDArray[np.integer[Any]], baseline_m: float, fx_px: float
) -> npt.NDArray[np.float32]:
    """Metric depth (m, float32, NaN invalid) from a Cityscapes 16-bit disparity image.

    p = 0 is invalid; otherwise d = (p - 1) / 256 px and depth = baseline * fx / d; p = 1 gives
    d = 0, which is invalid too. ``fx_px`` must be the focal length at the disparity's resolution.
    """
    raw = np.asarray(disparity_png)
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise DatasetError(
            f"disparity must be a 2-D integer image (uint16 PNG), got dtype {raw.dtype} "
            f"shape {raw.shape}"
        )
    if not (math.isfinite(baseline_m) and baseline_m > 0 and math.isfinite(fx_px) and fx_px > 0):
        raise DatasetError(
            f"baseline_m and fx_px must be finite and positive, got {baseline_m!r}, {fx_px!r}"
        )
    # depth = baseline * fx / ((p - 1) / 256) = (256 * baseline * fx) / (p - 1), computed in
    # place in one float32 buffer (the constant in float64, then one rounding per pixel).
    depth = raw.astype(np.float32)
    depth -= np.float32(1.0)
    valid = raw > 1
    np.divide(np.float32(256.0 * baseline_m * fx_px), depth, out=depth, where=valid)
    np.copyto(depth, np.float32(np.nan), where=~valid)
    return depth


def hood_rows(height: int, hood_fraction: float = DEFAULT_HOOD_FRACTION) -> int:
    """Number of rows kept above the hood: round((1 - hood_fraction) * height)."""
    if not 0.0 <= hood_fraction < 1.0:
        raise DatasetError(f"hood_fraction must be in [0, 1), got {hood_fraction!r}")
    return int(round((1.0 - hood_fraction) * height))


# --------------------------------------------------------------------------------------------
# split files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitFile:
    """A split file: which official folder, the frame keys to keep (none = all), a count check."""

    path: Path | None
    split: str | None
    keys: tuple[str, ...]
    expect_count: int | None = None
    description: str = ""


def read_split_file(path_or_name: str | os.PathLike[str]) -> SplitFile:
    """Read a split file (a path, or the name of a bundled one such as ``cityscapes_test_1525``).

    Format: ``#`` comments; ``split: NAME`` and ``expect_count: N`` directives; then one frame key
    (``city_seq_frame``, e.g. ``berlin_000000_000019``) per line. No keys means every frame of the
    split's folder.
    """
    path = Path(path_or_name)
    if not path.is_file():
        bundled = SPLITS_DIR / f"{Path(path_or_name).name.removesuffix('.txt')}.txt"
        if bundled.is_file():
            path = bundled
        else:
            known = sorted(p.stem for p in SPLITS_DIR.glob("*.txt"))
            raise DatasetError(
                f"split file {path_or_name} does not exist (and is not a bundled split; bundled: "
                f"{known})"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split file {path} cannot be read: {exc}") from exc
    split: str | None = None
    expect: int | None = None
    keys: list[str] = []
    comments: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if raw.strip().startswith("#"):
            comments.append(raw.strip().lstrip("#").strip())
        if not line:
            continue
        if ":" in line:
            name, _, value = (part.strip() for part in line.partition(":"))
            if name == "split":
                if value not in SPLITS:
                    raise DatasetError(
                        f"{path}:{number}: split must be one of {SPLITS}, got {value!r}"
                    )
                split = value
            elif name == "expect_count":
                if not value.isdigit():
                    raise DatasetError(
                        f"{path}:{number}: expect_count must be an integer, got {value!r}"
                    )
                expect = int(value)
            else:
                raise DatasetError(
                    f"{path}:{number}: unknown directive {name!r}; known: split, expect_count"
                )
            continue
        if not re.fullmatch(r".+_\d{6}_\d{6}", line):
            raise DatasetError(
                f"{path}:{number}: {line!r} is not a frame key of the form city_SEQ_FRAME "
                "(e.g. berlin_000000_000019)"
            )
        keys.append(line)
    return SplitFile(path, split, tuple(keys), expect, " ".join(comments[:2]))


def write_split_file(
    path: str | os.PathLike[str],
    keys: Iterable[str],
    *,
    split: str | None = None,
    expect_count: int | None = None,
    comment: str = "",
) -> Path:
    """Write a split file pinning ``keys`` (e.g. ``dataset.keys``) atomically."""
    from cloudypoints_core.io import atomic_write_text

    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    if split is not None:
        lines.append(f"split: {split}")
    if expect_count is not None:
        lines.append(f"expect_count: {int(expect_count)}")
    lines.extend(sorted(set(keys)))
    return atomic_write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# file reading
# --------------------------------------------------------------------------------------------
def read_png_header(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    """(width, height, bit_depth, colour_type) from a PNG's IHDR chunk; ValueError if not a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file ({len(head)} header bytes)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    return int(width), int(height), int(bit_depth), int(colour_type)


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """An 8-bit image file as (H, W, 3) RGB; DatasetError naming the file if undecodable."""
    from cloudypoints_core._optional import require

    cv2 = require("cv2", "reading Cityscapes images")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3:
        raise DatasetError(f"cannot decode image {path} (missing, truncated or not an image)")
    # In place: a numpy channel flip would copy 6 MB per frame at 2048x1024.
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)


def read_disparity(path: Path) -> npt.NDArray[np.uint16]:
    """A 16-bit disparity PNG; DatasetError naming the file if it is unreadable or not uint16."""
    from cloudypoints_core._optional import require

    cv2 = require("cv2", "reading Cityscapes disparity")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot decode disparity {path} (missing, truncated or not a PNG)")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(
            f"disparity {path} must be a single-channel 16-bit PNG, got dtype {raw.dtype} "
            f"shape {raw.shape}"
        )
    return raw


def _read_optional_extras(paths: Sequence[Path]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            if path.name.endswith("_timestamp.txt"):
                extras["stamp_ns"] = int(path.read_text(encoding="utf-8").strip())
            elif path.name.endswith("_vehicle.json"):
                extras["vehicle"] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            # Optional metadata: a bad file costs the field, not the sample.
            log.warning("ignoring unreadable %s: %s", path, exc)
    return extras


def _resize_nearest(array: npt.NDArray[Any], width: int, height: int) -> npt.NDArray[Any]:
    # Nearest sampling with centred pixels (source index floor((dst + 0.5) * src / dst)), the same
    # convention the intrinsics follow, so each kept depth lands where its ray says it should.
    src_h, src_w = array.shape[:2]
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.intp), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.intp), src_w - 1)
    return array[rows[:, None], cols[None, :]]


def _resize_rgb(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    from cloudypoints_core._optional import require

    cv2 = require("cv2", "resizing Cityscapes images")
    shrinking = width < rgb.shape[1] and height < rgb.shape[0]
    # Area averaging when shrinking avoids aliasing; linear when enlarging.
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


# --------------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CityscapesFrame:
    """One indexed frame: its key and the files that make a sample."""

    key: str
    split: str
    city: str
    seq: int
    frame: int
    image_path: Path
    disparity_path: Path
    camera_path: Path
    #: Index inside its 30-frame snippet (19 = the annotated frame); None when unknown.
    snippet_index: int | None = None
    extra_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class BadFile:
    """A frame the scan rejected and why."""

    key: str
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _list_dir(path: Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(entry.name for entry in entries)
    except FileNotFoundError:
        return []


def _describe_offenders(bad: Sequence[BadFile]) -> str:
    shown = "; ".join(str(b) for b in bad[:_MAX_LISTED])
    more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
    return shown + more


class CityscapesDataset:
    """Cityscapes frames with metric depth from disparity, as sample dictionaries.

    ``dataset[i]`` returns::

        {"rgb": uint8 (H, W, 3), "depth_m": float32 (H, W) NaN = invalid,
         "valid_mask": bool (H, W), "intrinsics": Intrinsics (at H x W),
         "camera": {"baseline_m", "height_m", "pitch_rad", "roll_rad", "yaw_rad"},
         "key": "city_SEQ_FRAME", "split": str, "city": str, "index": int,
         "snippet_index": int | None, ["stamp_ns": int], ["vehicle": dict]}

    Args:
        root: folder holding ``leftImg8bit/``, ``disparity/``, ``camera/`` (and the ``*_sequence``
            folders for ``sequence=True``).
        split: ``train``, ``val`` or ``test`` (the official folders).
        sequence: read the 30-frame snippets instead of the annotated frames.
        split_file: a split file (path or bundled name) restricting the frames; see
            :func:`read_split_file`. Its ``split:`` directive, if any, must agree with ``split``.
        size: (width, height) to resize every sample to (RGB by area/linear, depth and mask by
            nearest so validity stays exact, intrinsics via ``Intrinsics.resized``); None = native.
        hood: ``mask`` (bottom ``hood_fraction`` of rows invalid), ``crop`` (rows removed,
            intrinsics cropped) or ``none``.
        max_depth_m: depths beyond this become invalid (None keeps every finite depth).
        calibration_size: (width, height) the camera JSON values refer to; None = the images'.
        scan: ``header`` also checks every PNG header at construction; ``names`` only pairs.
        bad_files: ``raise`` fails at construction listing offenders; ``skip`` drops them.
        limit: keep at most this many frames, evenly spread over the index (quick looks).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        sequence: bool = False,
        split_file: str | os.PathLike[str] | None = None,
        size: tuple[int, int] | None = None,
        hood: HoodMode = "mask",
        hood_fraction: float = DEFAULT_HOOD_FRACTION,
        max_depth_m: float | None = None,
        calibration_size: tuple[int, int] | None = None,
        scan: ScanMode = "header",
        bad_files: BadFilePolicy = "raise",
        limit: int | None = None,
        progress: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.sequence = bool(sequence)
        self.hood: HoodMode = hood
        self.hood_fraction = float(hood_fraction)
        self.max_depth_m = max_depth_m
        self.calibration_size = calibration_size
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.warnings: list[str] = []
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
        if hood not in ("mask", "crop", "none"):
            raise DatasetError(f"hood must be 'mask', 'crop' or 'none', got {hood!r}")
        hood_rows(100, self.hood_fraction)  # validates the fraction
        if scan not in ("header", "names"):
            raise DatasetError(f"scan must be 'header' or 'names', got {scan!r}")
        if bad_files not in ("raise", "skip"):
            raise DatasetError(f"bad_files must be 'raise' or 'skip', got {bad_files!r}")
        if self.size is not None and (self.size[0] <= 0 or self.size[1] <= 0):
            raise DatasetError(f"size must be a positive (width, height), got {size!r}")
        if max_depth_m is not None and not max_depth_m > 0:
            raise DatasetError(f"max_depth_m must be positive or None, got {max_depth_m!r}")

        self.split_spec = read_split_file(split_file) if split_file is not None else None
        if self.split_spec is not None and self.split_spec.split not in (None, split):
            raise DatasetError(
                f"split file {self.split_spec.path} is for split {self.split_spec.split!r} but "
                f"the data set was asked for {split!r}"
            )
        suffix = "_sequence" if self.sequence else ""
        self.image_dir = self.root / f"leftImg8bit{suffix}" / split
        self.disparity_dir = self.root / f"disparity{suffix}" / split
        self.camera_dir = self.root / "camera" / split
        self._check_root()

        frames, bad = self._index()
        frames = self._apply_split_file(frames)
        self.cameras: dict[Path, CityscapesCamera] = {}
        self._native_sizes: dict[str, tuple[int, int]] = {}
        frames, more_bad = self._load_cameras(frames)
        bad += more_bad
        if scan == "header":
            frames, more_bad = self._scan_headers(frames, progress)
            bad += more_bad
        self.bad_files: list[BadFile] = bad
        if bad:
            message = (
                f"Cityscapes {split}{' sequence' if self.sequence else ''} under {self.root}: "
                f"{len(bad)} bad frame(s): {_describe_offenders(bad)}"
            )
            if bad_files == "raise":
                raise DatasetError(
                    message + ". Fix or remove them, or pass bad_files='skip' to drop them."
                )
            log.warning("%s; skipping them", message)
        if not frames:
            raise DatasetError(
                f"no usable Cityscapes frames in {self.image_dir}"
                + (f" (all {len(bad)} were bad)" if bad else "")
            )
        if limit is not None and 0 < limit < len(frames):
            picks = np.linspace(0, len(frames) - 1, int(limit)).round().astype(int)
            frames = [frames[i] for i in sorted(set(picks.tolist()))]
        self.frames: list[CityscapesFrame] = frames
        expected = self.split_spec.expect_count if self.split_spec else None
        if expected is not None and len(frames) != expected:
            note = (
                f"split file {self.split_spec.path if self.split_spec else ''} expects "
                f"{expected} frames but {len(frames)} are available under {self.image_dir}"
            )
            log.warning("%s", note)
            self.warnings.append(note)

    # ------------------------------------------------------------------------- construction
    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(
                f"Cityscapes root {self.root} does not exist or is not a folder; expected the "
                "folder where leftImg8bit_trainvaltest.zip, disparity_trainvaltest.zip and "
                "camera_trainvaltest.zip were extracted"
            )
        if self.image_dir.is_dir() and self.disparity_dir.is_dir() and self.camera_dir.is_dir():
            return
        missing = [
            str(p.relative_to(self.root))
            for p in (self.image_dir, self.disparity_dir, self.camera_dir)
            if not p.is_dir()
        ]
        found = _list_dir(self.root)
        hint = ""
        if self.root.name.startswith(("leftImg8bit", "disparity", "camera")):
            hint = f"; {self.root} looks like one of the data folders: pass its parent as the root"
        elif (self.root / "cityscapes").is_dir():
            hint = f"; did you mean {self.root / 'cityscapes'}?"
        elif (self.root / f"leftImg8bit{'_sequence' if self.sequence else ''}").is_dir():
            present = _list_dir(self.root / f"leftImg8bit{'_sequence' if self.sequence else ''}")
            hint = f"; splits present: {present}"
        folders = (
            "leftImg8bit_sequence,disparity_sequence,camera"
            if self.sequence
            else "leftImg8bit,disparity,camera"
        )
        raise DatasetError(
            f"{self.root} is not a Cityscapes root for split {self.split!r}"
            f"{' (sequence)' if self.sequence else ''}: missing {missing}; expected "
            f"{{root}}/{{{folders}}}/{self.split}/<city>/<city>_<seq>_<frame>_<type>.<ext>; "
            f"found in the root: {found[:20] or 'nothing'}{hint}"
        )

    def _index(self) -> tuple[list[CityscapesFrame], list[BadFile]]:
        frames: list[CityscapesFrame] = []
        bad: list[BadFile] = []
        cities = [c for c in _list_dir(self.image_dir) if (self.image_dir / c).is_dir()]
        if not cities:
            raise DatasetError(
                f"{self.image_dir} holds no city folders; found {_list_dir(self.image_dir)[:20]}"
            )
        for city in cities:
            disparity_names = set(_list_dir(self.disparity_dir / city))
            camera_frames: dict[int, list[int]] = {}
            for name in _list_dir(self.camera_dir / city):
                match = _NAME_RE.match(name)
                if match and match["type"] == "camera" and match["ext"] == "json":
                    camera_frames.setdefault(int(match["seq"]), []).append(int(match["frame"]))
            for numbers in camera_frames.values():
                numbers.sort()
            for name in _list_dir(self.image_dir / city):
                match = _NAME_RE.match(name)
                if not match or match["type"] != "leftImg8bit" or match["ext"] != "png":
                    continue
                seq, number = int(match["seq"]), int(match["frame"])
                stem = f"{match['city']}_{seq:06d}_{number:06d}"
                image_path = self.image_dir / city / name
                disparity_name = f"{stem}_disparity.png"
                if disparity_name not in disparity_names:
                    bad.append(
                        BadFile(
                            stem,
                            self.disparity_dir / city / disparity_name,
                            f"missing disparity for {image_path.name}",
                        )
                    )
                    continue
                camera_frame, snippet_index = self._camera_frame_for(
                    number, camera_frames.get(seq, [])
                )
                if camera_frame < 0:
                    # Annotated frames need their own file; snippets any of their sequence's.
                    where = (
                        self.camera_dir / city
                        if self.sequence
                        else self.camera_dir / city / f"{stem}_camera.json"
                    )
                    bad.append(
                        BadFile(stem, where, f"missing camera calibration for {image_path.name}")
                    )
                    continue
                camera_name = f"{match['city']}_{seq:06d}_{camera_frame:06d}_camera.json"
                camera_path = self.camera_dir / city / camera_name
                frames.append(
                    CityscapesFrame(
                        key=stem,
                        split=self.split,
                        city=city,
                        seq=seq,
                        frame=number,
                        image_path=image_path,
                        disparity_path=self.disparity_dir / city / disparity_name,
                        camera_path=camera_path,
                        snippet_index=snippet_index,
                        extra_paths=self._extra_paths(city, stem),
                    )
                )
        return frames, bad

    def _camera_frame_for(self, number: int, annotated: list[int]) -> tuple[int, int | None]:
        """Camera file frame number for a frame and its snippet index (-1 if none).

        ``annotated`` is the sorted list of frame numbers with a camera file in the sequence.
        """
        at = bisect.bisect_left(annotated, number)
        if not self.sequence:
            found = at < len(annotated) and annotated[at] == number
            return (number, ANNOTATED_SNIPPET_INDEX) if found else (-1, None)
        if not annotated:
            return -1, None
        # A snippet spans annotated - 19 .. annotated + 10; the nearest annotated frame of the
        # same sequence number is the snippet's own (and shares the recording's calibration).
        candidates = annotated[max(at - 1, 0) : at + 1]
        nearest = min(candidates, key=lambda f: (abs(f - number), f))
        index = number - nearest + ANNOTATED_SNIPPET_INDEX
        return nearest, index if 0 <= index < SNIPPET_LENGTH else None

    def _extra_paths(self, city: str, stem: str) -> tuple[Path, ...]:
        order = ("_sequence", "") if self.sequence else ("", "_sequence")
        paths = []
        for kind, ext in (("timestamp", "txt"), ("vehicle", "json")):
            for suffix in order:
                folder = self.root / f"{kind}{suffix}" / self.split / city
                paths.append(folder / f"{stem}_{kind}.{ext}")
        return tuple(paths)

    def _apply_split_file(self, frames: list[CityscapesFrame]) -> list[CityscapesFrame]:
        if self.split_spec is None or not self.split_spec.keys:
            return frames
        by_key = {f.key: f for f in frames}
        missing = [k for k in self.split_spec.keys if k not in by_key]
        if missing:
            shown = ", ".join(missing[:_MAX_LISTED])
            extra = len(missing) - _MAX_LISTED
            more = f" (and {extra} more)" if extra > 0 else ""
            raise DatasetError(
                f"split file {self.split_spec.path} names {len(missing)} frame(s) that are not "
                f"usable under {self.image_dir}: {shown}{more}"
            )
        return [by_key[k] for k in dict.fromkeys(self.split_spec.keys)]

    def _load_cameras(
        self, frames: list[CityscapesFrame]
    ) -> tuple[list[CityscapesFrame], list[BadFile]]:
        bad: list[BadFile] = []
        broken: dict[Path, str] = {}
        for path in sorted({f.camera_path for f in frames}):
            try:
                self.cameras[path] = CityscapesCamera.from_json(path)
            except DatasetError as exc:
                broken[path] = str(exc)
        kept = []
        for frame in frames:
            if frame.camera_path in broken:
                bad.append(BadFile(frame.key, frame.camera_path, broken[frame.camera_path]))
            else:
                kept.append(frame)
        return kept, bad

    def _scan_headers(
        self, frames: list[CityscapesFrame], progress: bool
    ) -> tuple[list[CityscapesFrame], list[BadFile]]:
        from cloudypoints_core._optional import require

        tqdm = require("tqdm", "progress bars").tqdm
        kept: list[CityscapesFrame] = []
        bad: list[BadFile] = []
        for frame in tqdm(
            frames, desc=f"scan {self.split}", unit="frame", disable=not progress, leave=False
        ):
            problem = self._header_problem(frame)
            if problem is None:
                kept.append(frame)
            else:
                bad.append(BadFile(frame.key, *problem))
        return kept, bad

    def _header_problem(self, frame: CityscapesFrame) -> tuple[Path, str] | None:
        """(offending file, reason) if the frame's PNG headers or calibration do not fit."""
        try:
            width, height, bits, colour = read_png_header(frame.image_path)
        except (OSError, ValueError) as exc:
            return frame.image_path, f"unreadable image: {exc}"
        if bits != 8 or colour not in _RGB_COLOR_TYPES:
            return frame.image_path, (
                f"expected an 8-bit RGB PNG, got bit depth {bits} colour type {colour}"
            )
        try:
            d_width, d_height, d_bits, d_colour = read_png_header(frame.disparity_path)
        except (OSError, ValueError) as exc:
            return frame.disparity_path, f"unreadable disparity: {exc}"
        if d_bits != 16 or d_colour != 0:
            return frame.disparity_path, (
                f"expected a 16-bit grayscale PNG, got bit depth {d_bits} colour type {d_colour}"
            )
        if (d_width, d_height) != (width, height):
            return frame.disparity_path, (
                f"disparity is {d_width}x{d_height} but the image is {width}x{height}"
            )
        camera = self.cameras[frame.camera_path]
        cal_w, cal_h = self.calibration_size or (width, height)
        # A principal point outside the frame means the JSON describes other (larger) images.
        if not (-0.5 <= camera.u0_px <= cal_w - 0.5 and -0.5 <= camera.v0_px <= cal_h - 0.5):
            return frame.camera_path, (
                f"principal point ({camera.u0_px}, {camera.v0_px}) lies outside the "
                f"{cal_w}x{cal_h} calibration frame: this calibration does not describe these "
                "images (set calibration_size)"
            )
        self._native_sizes[frame.key] = (width, height)
        return None

    # ----------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return (
            f"CityscapesDataset(root={str(self.root)!r}, split={self.split!r}, "
            f"sequence={self.sequence}, frames={len(self)}, size={self.size}, hood={self.hood!r})"
        )

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.frames]

    @property
    def cities(self) -> list[str]:
        return sorted({f.city for f in self.frames})

    def camera(self, index: int) -> CityscapesCamera:
        """Calibration of frame ``index`` (no image is read)."""
        return self.cameras[self.frames[index].camera_path]

    def native_size(self, index: int) -> tuple[int, int] | None:
        """(width, height) of frame ``index`` as stored, when the header scan saw it."""
        return self._native_sizes.get(self.frames[index].key)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        index = index % len(self)
        frame = self.frames[index]
        camera = self.cameras[frame.camera_path]
        rgb = read_rgb(frame.image_path)
        raw = read_disparity(frame.disparity_path)
        if raw.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{frame.disparity_path} is {raw.shape[1]}x{raw.shape[0]} but "
                f"{frame.image_path} is {rgb.shape[1]}x{rgb.shape[0]}"
            )
        height, width = raw.shape
        intrinsics = camera.intrinsics(width, height, self.calibration_size)
        # Disparity is measured in pixels of the stored image, so fx must be at that resolution.
        depth = disparity_to_depth(raw, camera.baseline_m, intrinsics.fx_px)
        if self.max_depth_m is not None:
            depth[depth > self.max_depth_m] = np.nan
        keep = hood_rows(height, self.hood_fraction)
        if self.hood == "mask":
            depth[keep:] = np.nan
        elif self.hood == "crop":
            depth, rgb = depth[:keep], rgb[:keep]
            intrinsics = intrinsics.cropped(0, 0, width, keep)
        if self.size is not None and self.size != (rgb.shape[1], rgb.shape[0]):
            out_w, out_h = self.size
            rgb = _resize_rgb(rgb, out_w, out_h)
            depth = _resize_nearest(depth, out_w, out_h)
            intrinsics = intrinsics.resized(out_w, out_h)
        sample: dict[str, Any] = {
            "rgb": np.ascontiguousarray(rgb),
            "depth_m": np.ascontiguousarray(depth, dtype=np.float32),
            "valid_mask": np.isfinite(depth),
            "intrinsics": intrinsics,
            "camera": camera.mounting(),
            "key": frame.key,
            "split": frame.split,
            "city": frame.city,
            "index": index,
            "snippet_index": frame.snippet_index,
        }
        sample.update(_read_optional_extras(frame.extra_paths))
        return sample

    def check(self, progress: bool = False) -> list[BadFile]:
        """Decode every frame's files and return those that fail (slow: reads all the data)."""
        from cloudypoints_core._optional import require

        tqdm = require("tqdm", "progress bars").tqdm
        bad: list[BadFile] = []
        for frame in tqdm(
            self.frames, desc=f"check {self.split}", unit="frame", disable=not progress
        ):
            checks: tuple[tuple[Path, Callable[[Path], object]], ...] = (
                (frame.image_path, read_rgb),
                (frame.disparity_path, read_disparity),
            )
            for path, reader in checks:
                try:
                    reader(path)
                except DatasetError as exc:
                    bad.append(BadFile(frame.key, path, str(exc)))
        return bad


def available_splits(root: str | os.PathLike[str], sequence: bool = False) -> list[str]:
    """Official splits present under ``root`` (image, disparity and camera folders all there)."""
    base = Path(root)
    suffix = "_sequence" if sequence else ""
    return [
        s
        for s in SPLITS
        if (base / f"leftImg8bit{suffix}" / s).is_dir()
        and (base / f"disparity{suffix}" / s).is_dir()
        and (base / "camera" / s).is_dir()
    ]


class SkipUnreadable:
    """A map-style view of a data set that survives a frame that cannot be decoded mid-epoch.

    The construction scan catches missing, empty, mis-typed and mis-sized files; a PNG whose body
    is damaged is only found when read. Then this view logs the file once and serves the next
    readable frame instead, so a long training run is not lost to one bad file (the frames it
    replaced are in :attr:`unreadable`). After ``max_tries`` consecutive failures it raises.
    """

    def __init__(self, dataset: Any, max_tries: int = 16) -> None:
        self.dataset = dataset
        self.max_tries = max(1, int(max_tries))
        self.unreadable: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.dataset)
        errors = []
        for step in range(min(self.max_tries, n)):
            k = (int(index) + step) % n
            try:
                return self.dataset[k]
            except DatasetError as exc:
                if k not in self.unreadable:
                    log.warning("frame %d is unreadable, serving the next one instead: %s", k, exc)
                    self.unreadable[k] = str(exc)
                errors.append(str(exc))
        raise DatasetError(
            f"{len(errors)} consecutive frames from index {index} are unreadable: {errors[:3]}"
        )


_TRAINING_OPTIONS = frozenset(
    {
        "root",
        "folder",
        "split_file",
        "sequence",
        "size",
        "hood",
        "hood_fraction",
        "max_depth_m",
        "calibration_size",
        "scan",
        "bad_files",
        "limit",
        "cache",
        "on_read_error",
    }
)


def training_dataset(options: Mapping[str, Any], *, split: str, data: Any, cache_dir: Path) -> Any:
    """Factory for the trainer's data set registry: ``data.dataset: cityscapes``.

    Options (the ``data.train`` / ``data.val`` / ``data.test`` mapping): ``root`` (required, or
    ``$CITYSCAPES_DATASET``, the variable the official cityscapesScripts read), ``folder``
    (official split folder, default the split's name), ``split_file``, ``sequence`` (false),
    ``hood`` (``mask``), ``max_depth_m``, ``size`` ([W, H], default native), ``limit``,
    ``scan`` (``header``), ``bad_files`` (``skip``: frames the scan rejects are logged and
    dropped), ``on_read_error`` (``substitute``: a frame that fails to decode mid-epoch is
    replaced by the next one, see :class:`SkipUnreadable`; ``raise``), ``cache`` (false; true
    decodes every frame once into ``cache_dir``, at ``size`` or else the network input size,
    and trains from memory-mapped arrays).
    """
    from cloudypoints_core.errors import ConfigError

    unknown = sorted(set(options) - _TRAINING_OPTIONS)
    if unknown:
        raise ConfigError(
            f"data.{split}: unknown Cityscapes options {unknown}; known: "
            f"{sorted(_TRAINING_OPTIONS)}"
        )
    root = options.get("root") or os.environ.get(ROOT_ENV)
    if not root:
        raise ConfigError(
            f"data.{split}.root is not set (nor $CITYSCAPES_DATASET): give the folder holding "
            "leftImg8bit/, disparity/ and camera/"
        )
    size = options.get("size")
    if options.get("cache", False) and size is None:
        size = (int(data.input_width), int(data.input_height))
    on_error = options.get("on_read_error", "substitute")
    if on_error not in ("substitute", "raise"):
        raise ConfigError(
            f"data.{split}.on_read_error must be 'substitute' or 'raise', got {on_error!r}"
        )
    calibration_size = options.get("calibration_size")
    dataset: Any = CityscapesDataset(
        Path(str(root)).expanduser(),
        str(options.get("folder", split)),
        sequence=bool(options.get("sequence", False)),
        split_file=options.get("split_file"),
        size=None if size is None else (int(size[0]), int(size[1])),
        hood=options.get("hood", "mask"),
        hood_fraction=float(options.get("hood_fraction", DEFAULT_HOOD_FRACTION)),
        max_depth_m=options.get("max_depth_m"),
        calibration_size=(
            None
            if calibration_size is None
            else (int(calibration_size[0]), int(calibration_size[1]))
        ),
        scan=options.get("scan", "header"),
        bad_files=options.get("bad_files", "skip"),
        limit=options.get("limit"),
        progress=True,
    )
    if on_error == "substitute":
        dataset = SkipUnreadable(dataset)
    if not options.get("cache", False):
        return dataset
    import hashlib

    from cloudypoints_core.training.data import build_array_cache

    base = dataset.dataset if isinstance(dataset, SkipUnreadable) else dataset
    key = json.dumps(
        {
            "root": str(base.root.resolve()),
            "split": base.split,
            "keys": base.keys,
            "sequence": base.sequence,
            "size": base.size,
            "hood": base.hood,
            "hood_fraction": base.hood_fraction,
            "max_depth_m": base.max_depth_m,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    width, height = base.size
    folder = cache_dir / "cityscapes" / f"{split}-{width}x{height}-n{len(base)}-{digest}"
    return build_array_cache(dataset, folder, f"Cityscapes {split}")


__all__ = [
    "ANNOTATED_SNIPPET_INDEX",
    "ROOT_ENV",
    "NATIVE_SIZE",
    "OFFICIAL_COUNTS",
    "SPLITS",
    "BadFile",
    "CityscapesCamera",
    "CityscapesDataset",
    "CityscapesFrame",
    "SkipUnreadable",
    "SplitFile",
    "available_splits",
    "disparity_to_depth",
    "hood_rows",
    "read_png_header",
    "read_split_file",
    "training_dataset",
    "write_split_file",
]
