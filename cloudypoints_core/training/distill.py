"""Distillation: label the frames of your own bags once with a big teacher model, then train a
real-time student on those labels (and on a depth topic of the bags) with the project's trainer.

The pipeline behind ``cloudypoints distill``:

1. **Frames.** Every rosbag2 (images + camera infos, optionally a depth topic such as LiDAR
   projected to the camera: sparse, NaN or 0 where empty) or image folder (images plus a
   ``camera.yaml``/``camera.json``) is read in time order (:mod:`cloudypoints_core.bags.reader`).
2. **Labels.** The teacher (any model package, through the one inference facade) runs once per
   frame. Its depth, the frame resized to the label size and the depth topic are written to an
   on-disk cache, one ``.npz`` per frame written atomically, keyed by teacher hash, source and
   frame, so a stopped run resumes without relabelling, and epochs cost only the student. Pixels
   the teacher marks invalid (NaN: sky, beyond its range) stay NaN and are never trained on.
3. **Split.** Each source's timeline is cut into blocks of ``block_s`` seconds; whole blocks go
   to validation and test (spread evenly over the recording), with ``gap_s`` dropped at every
   boundary between splits, so neighbouring frames never leak across (random frames would).
4. **Training.** The trainer (:func:`cloudypoints_core.training.trainer.train`, with its losses,
   AMP, resume, DDP and MLflow tracking) trains the student on the ``distill`` data set: the
   teacher's depth is ``depth_m`` (weight ``teacher_weight``), the depth topic ``aux_depth_m``
   (weight ``depth_topic_weight``).
5. **Report.** The student package is scored on the test blocks through the facade against the
   teacher (agreement) and the depth topic (error), beside the teacher's own error, and the
   numbers, the teacher, the bags and the split are written into its ``MODEL_CARD.md``.

Cache layout: ``<label_cache>/<teacher hash>/<source key>-<W>x<H>/<index>_<stamp>.npz`` plus a
``frames-*.json`` listing written when a source is complete (then the bag is not even read).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, DatasetError, ScaleError
from cloudypoints_core.geometry import Intrinsics
from cloudypoints_core.io import atomic_write_bytes, atomic_write_text
from cloudypoints_core.training.config import (
    CONFIG_DIR,
    TrainingConfig,
    _build_section,
    apply_overrides,
)

__all__ = [
    "DistillConfig",
    "DistillFrames",
    "FrameLabel",
    "LabelStats",
    "assign_splits",
    "distill",
    "distill_dataset",
    "label_sources",
    "load_distill_config",
    "resize_sparse_depth",
    "teacher_hash",
]

log = logging.getLogger(__name__)

#: Image files an image folder may hold (read in name order, which is taken as time order).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Camera files an image folder is searched for, in this order.
CAMERA_FILES = ("camera.yaml", "camera.yml", "camera.json")
#: Cache file format; a change invalidates every cached label.
LABEL_FORMAT = "cloudypoints-distill-labels-v1"


# -------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DistillConfig:
    """The ``distill`` section of a distillation config (the other sections are the trainer's).

    ``depth_topic``: None finds a depth topic by type/name as ``bag evaluate`` does; ``"none"``
    uses no depth topic. ``camera_height_m`` / ``camera_pitch_rad`` / ``fixed_scale`` give a
    relative teacher its metric scale (ground plane, or a fixed factor). ``label_width`` /
    ``label_height`` (None: the student's input size) is the resolution labels are cached at.
    """

    teacher: str | None = None
    teacher_backend: str = "auto"
    teacher_device: str = "cpu"
    teacher_options: Mapping[str, Any] = field(default_factory=dict)
    camera_height_m: float | None = None
    camera_pitch_rad: float | None = None
    fixed_scale: float | None = None
    bags: tuple[str, ...] = ()
    image_folders: tuple[str, ...] = ()
    image_topic: str | None = None
    info_topic: str | None = None
    depth_topic: str | None = None
    #: Frame rate assumed for image folders (their frames have no stamps), for time blocks.
    folder_rate_hz: float = 10.0
    teacher_weight: float = 1.0
    depth_topic_weight: float = 1.0
    label_width: int | None = None
    label_height: int | None = None
    #: Keep every N-th frame (camera streams at 15-30 Hz repeat themselves frame to frame).
    frame_stride: int = 1
    max_frames_per_source: int | None = None
    block_s: float = 10.0
    gap_s: float = 1.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    #: Where labels are cached; None: <data.cache_dir or $CLOUDYPOINTS_CACHE>/distill.
    label_cache: str | None = None
    #: Backend that scores the finished student package for its card.
    eval_backend: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        if not self.bags and not self.image_folders:
            raise ConfigError("distillation needs at least one --bag or --images folder")
        for key in ("camera_height_m", "fixed_scale"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"distill.{key} must be positive or null, got {value}")
        if self.teacher_weight < 0 or self.depth_topic_weight < 0:
            raise ConfigError(
                "distill.teacher_weight and distill.depth_topic_weight must be >= 0, got "
                f"{self.teacher_weight}, {self.depth_topic_weight}"
            )
        for key in ("label_width", "label_height"):
            value = getattr(self, key)
            if value is not None and value < 8:
                raise ConfigError(f"distill.{key} must be >= 8 or null, got {value}")
        if self.frame_stride < 1:
            raise ConfigError(f"distill.frame_stride must be >= 1, got {self.frame_stride}")
        if self.max_frames_per_source is not None and self.max_frames_per_source < 1:
            raise ConfigError(
                f"distill.max_frames_per_source must be >= 1 or null, got "
                f"{self.max_frames_per_source}"
            )
        if not (self.block_s > 0 and self.gap_s >= 0 and self.folder_rate_hz > 0):
            raise ConfigError(
                "need distill.block_s > 0, distill.gap_s >= 0 and distill.folder_rate_hz > 0, "
                f"got {self.block_s}, {self.gap_s}, {self.folder_rate_hz}"
            )
        if not (
            0 < self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigError(
                "distill.val_fraction and distill.test_fraction must be in (0, 1) with a sum "
                f"below 1, got {self.val_fraction}, {self.test_fraction}"
            )


def load_distill_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **distill_options: Any,
) -> tuple[DistillConfig, TrainingConfig]:
    """(distill section, training config) from YAML ``path`` (None: the shipped
    ``distill_default``) with ``overrides`` and then ``distill_options`` (command-line flags)
    applied. The training config's data set is set to ``distill``; its splits are filled in
    when the labels exist."""
    yaml = require("yaml", "distillation configs")
    p = Path(path) if path is not None else CONFIG_DIR / "distill_default.yaml"
    if not p.exists() and not p.suffix and (CONFIG_DIR / f"{p.name}.yaml").exists():
        p = CONFIG_DIR / f"{p.name}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"distillation config {p} does not exist") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"distillation config {p} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    section = dict(data.pop("distill", None) or {})
    section.update({k: v for k, v in distill_options.items() if v is not None})
    for key in ("bags", "image_folders"):
        if key in section:
            section[key] = [str(v) for v in section[key]]
    dcfg = _build_section(DistillConfig, section, f"{p}: distill")
    dcfg.validate()
    data_section = dict(data.get("data") or {})
    if data_section.get("dataset", "distill") != "distill":
        raise ConfigError(
            f"{p}: data.dataset must be 'distill' (or absent) for distillation, got "
            f"{data_section['dataset']!r}"
        )
    data_section["dataset"] = "distill"
    # Placeholders: the real split options (a manifest path) are set once labels exist.
    data_section.setdefault("train", {})
    data_section.setdefault("val", {})
    data["data"] = data_section
    optim = dict(data.get("optim") or {})
    optim["depth_weight"] = dcfg.teacher_weight
    optim["aux_weight"] = dcfg.depth_topic_weight
    data["optim"] = optim
    tcfg = TrainingConfig.from_dict(data, source=str(p))
    return dcfg, tcfg


# ------------------------------------------------------------------------------ frames in
@dataclass(frozen=True)
class SourceFrame:
    """One decoded input frame of a bag or image folder."""

    index: int
    stamp_ns: int
    rgb: npt.NDArray[np.uint8]
    intrinsics: Intrinsics
    depth_m: npt.NDArray[np.float32] | None


@dataclass(frozen=True)
class FrameLabel:
    """A cached, labelled frame: where it lies on disk and in time."""

    source: str
    index: int
    stamp_ns: int
    path: Path
    has_depth: bool


class _Source:
    """A bag or image folder: a stable key, a display name and its frames in time order."""

    name: str
    key: str
    kind: str

    def frames(self) -> Iterator[SourceFrame]:  # pragma: no cover - interface
        raise NotImplementedError

    def frame_count(self) -> int | None:
        return None

    def topics(self) -> dict[str, str | None]:
        """Where the frames came from (image, camera info and depth topics of a bag)."""
        return {}


class _BagSource(_Source):
    kind = "bag"

    def __init__(self, path: Path, config: DistillConfig) -> None:
        from cloudypoints_core.bags.reader import bag_info

        self.path = path
        self.config = config
        self.info = bag_info(path)
        self.name = str(path)
        # The bag's identity, not its location: a moved or copied bag keeps its labels.
        ident = {
            "name": path.name.removesuffix(".mcap").removesuffix(".db3"),
            "start_ns": self.info.start_ns,
            "duration_ns": self.info.duration_ns,
            "messages": self.info.message_count,
            "topics": [[t.name, t.msgtype, t.count] for t in self.info.topics],
            "image_topic": config.image_topic,
            "info_topic": config.info_topic,
            "depth_topic": config.depth_topic,
        }
        self.key = _short_hash(json.dumps(ident, sort_keys=True))
        self.streams: Any = None

    def frame_count(self) -> int | None:
        counts = [t.count for t in self.info.topics if "image" in t.name.lower()]
        if self.config.image_topic:
            counts = [t.count for t in self.info.topics if t.name == self.config.image_topic]
        return max(counts) if counts else None

    def frames(self) -> Iterator[SourceFrame]:
        from cloudypoints_core.bags.reader import FrameReader

        no_depth = (self.config.depth_topic or "").lower() == "none"
        reader = FrameReader(
            self.path,
            self.config.image_topic,
            self.config.info_topic,
            None if no_depth else self.config.depth_topic,
            decode_gt=not no_depth,
        )
        for frame in reader:
            self.streams = reader.streams
            yield SourceFrame(
                frame.index, frame.stamp_ns, frame.rgb, frame.intrinsics, frame.depth_gt_m
            )
        self.streams = reader.streams

    def topics(self) -> dict[str, str | None]:
        streams = self.streams
        if streams is None:
            return {}
        return {
            "image": streams.image,
            "camera_info": streams.camera_info,
            "depth": streams.depth_gt,
        }


class _FolderSource(_Source):
    kind = "images"

    def __init__(self, folder: Path, config: DistillConfig) -> None:
        if not folder.is_dir():
            raise DatasetError(f"image folder {folder} does not exist")
        self.folder = folder
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DatasetError(
                f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        camera = next((folder / n for n in CAMERA_FILES if (folder / n).exists()), None)
        if camera is None:
            raise DatasetError(
                f"image folder {folder} has no camera file; add one of {list(CAMERA_FILES)} "
                "(ROS camera_calibration YAML, or Cityscapes camera JSON)"
            )
        self.camera_file = camera
        self.camera = read_camera_file(camera)
        self.period_ns = int(round(1e9 / config.folder_rate_hz))
        self.name = str(folder)
        ident = [folder.name, camera.read_text(encoding="utf-8")]
        ident += [f"{p.name}:{p.stat().st_size}" for p in self.files]
        self.key = _short_hash("\n".join(ident))

    def frame_count(self) -> int | None:
        return len(self.files)

    def topics(self) -> dict[str, str | None]:
        return {"camera_file": self.camera_file.name}

    def frames(self) -> Iterator[SourceFrame]:
        cv2 = require("cv2", "reading image folders")
        for index, path in enumerate(self.files):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                log.warning("%s: not a readable image, skipped", path)
                continue
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            intr = self.camera(rgb.shape[1], rgb.shape[0])
            yield SourceFrame(index, index * self.period_ns, rgb, intr, None)


def read_camera_file(path: Path) -> Callable[[int, int], Intrinsics]:
    """Intrinsics factory (image width, height) -> Intrinsics from a camera file.

    Accepts a ROS ``camera_calibration`` YAML (``image_width``, ``image_height``,
    ``camera_matrix.data``, ``distortion_model``, ``distortion_coefficients.data``) or a
    Cityscapes camera JSON (``intrinsic.fx/fy/u0/v0``, calibrated at the image's own size).
    Images of another size than the calibration are refused (a silent rescale would hide a
    wrong file).
    """
    yaml = require("yaml", "camera files")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"camera file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"camera file {path}: expected a mapping, got {type(data).__name__}")
    if "camera_matrix" in data:
        try:
            k = [float(v) for v in data["camera_matrix"]["data"]]
            width, height = int(data["image_width"]), int(data["image_height"])
            d = [float(v) for v in (data.get("distortion_coefficients") or {}).get("data", [])]
            model = str(data.get("distortion_model") or "plumb_bob")
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"camera file {path}: ROS calibration needs image_width, image_height and "
                f"camera_matrix.data ({exc})"
            ) from exc

        def ros(w: int, h: int) -> Intrinsics:
            if (w, h) != (width, height):
                raise DatasetError(
                    f"camera file {path} is for {width}x{height} images, got one of {w}x{h}"
                )
            return Intrinsics.from_ros(k, width, height, d, model)

        return ros
    if "intrinsic" in data:
        try:
            i = data["intrinsic"]
            fx, fy, cx, cy = float(i["fx"]), float(i["fy"]), float(i["u0"]), float(i["v0"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"camera file {path}: intrinsic needs fx, fy, u0, v0") from exc
        return lambda w, h: Intrinsics(fx, fy, cx, cy, w, h)
    raise DatasetError(
        f"camera file {path} is neither a ROS calibration (camera_matrix) nor a Cityscapes "
        f"camera (intrinsic); keys: {sorted(data)}"
    )


def _short_hash(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(raw).hexdigest()[:16]


# -------------------------------------------------------------------------------- teacher
def teacher_hash(config: DistillConfig) -> str:
    """Hash of the teacher's files and of every option that changes its labels."""
    from cloudypoints_core.inference.package import load_model_package

    package = load_model_package(config.teacher)
    digest = hashlib.sha256(LABEL_FORMAT.encode())
    digest.update(package.spec.to_yaml().encode())
    # The ONNX file is what every backend runs (TensorRT builds from it); its hash names the
    # weights, and a package without one is hashed by its state dict.
    for path in (package.onnx_path, package.weights_path):
        if path is not None and path.is_file():
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            break
    options = {
        "camera_height_m": config.camera_height_m,
        "camera_pitch_rad": config.camera_pitch_rad,
        "fixed_scale": config.fixed_scale,
        "teacher_options": {
            k: v
            for k, v in dict(config.teacher_options).items()
            if k not in ("num_threads", "intra_op_threads")
        },
    }
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _relative_kind(kind: str) -> bool:
    """True for outputs known only up to a scale (and shift): they need a metric source."""
    return kind != "metric_depth"


def load_teacher(config: DistillConfig) -> Any:
    """The teacher as a :class:`DepthEstimator`; a relative teacher needs a metric source."""
    from cloudypoints_core.inference.facade import DepthEstimator
    from cloudypoints_core.inference.package import load_model_package

    spec = load_model_package(config.teacher).spec
    if (
        _relative_kind(str(spec.output_kind))
        and config.camera_height_m is None
        and config.fixed_scale is None
    ):
        raise ConfigError(
            f"teacher {spec.name!r} outputs {spec.output_kind}: give its metric source, "
            "--camera-height-m (and --camera-pitch-rad) for the ground plane, or "
            "distill.fixed_scale"
        )
    options: dict[str, Any] = dict(config.teacher_options)
    for key in ("camera_height_m", "camera_pitch_rad", "fixed_scale"):
        if getattr(config, key) is not None:
            options[key] = getattr(config, key)
    return DepthEstimator.from_package(
        config.teacher, backend=config.teacher_backend, device=config.teacher_device, **options
    )


# ------------------------------------------------------------------------------ labelling
@dataclass
class LabelStats:
    """What labelling did: teacher calls made, frames taken from the cache, time spent."""

    teacher_calls: int = 0
    cached_frames: int = 0
    unscaled_frames: int = 0
    teacher_s: float = 0.0
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.teacher_calls + self.cached_frames

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["frames"] = self.frames
        out["teacher_frames_per_s"] = (
            self.teacher_calls / self.teacher_s if self.teacher_s > 0 else None
        )
        return out


def resize_sparse_depth(
    depth: npt.NDArray[np.float32], width: int, height: int
) -> npt.NDArray[np.float32]:
    """A depth image (dense or sparse, NaN/<=0 empty) at ``width`` x ``height``.

    Every valid source pixel lands on the target pixel whose area holds its centre (the resize
    convention of DESIGN.md) and the nearest depth wins, as a z-buffer would: sparse LiDAR
    points survive a downscale instead of being skipped by nearest sampling, and no depth is
    ever interpolated across an object edge.
    """
    h0, w0 = depth.shape
    if (h0, w0) == (height, width):
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0))
    out = np.full((height, width), np.inf, dtype=np.float32)
    if rows.size:
        u = np.clip(((cols + 0.5) * (width / w0)).astype(np.int64), 0, width - 1)
        v = np.clip(((rows + 0.5) * (height / h0)).astype(np.int64), 0, height - 1)
        np.minimum.at(out, (v, u), depth[rows, cols])
    out[np.isinf(out)] = np.nan
    return out


def _resize_rgb(rgb: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    if rgb.shape[:2] == (height, width):
        return np.ascontiguousarray(rgb)
    cv2 = require("cv2", "resizing frames")
    shrink = width <= rgb.shape[1] and height <= rgb.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=interp))


def _save_label(
    path: Path,
    rgb: npt.NDArray[np.uint8],
    teacher: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32] | None,
    intr: Intrinsics,
    stamp_ns: int,
    scale_method: str,
) -> None:
    arrays: dict[str, Any] = {
        "rgb": rgb,
        "teacher_m": teacher.astype(np.float32),
        "intrinsics": np.array([intr.fx_px, intr.fy_px, intr.cx_px, intr.cy_px], np.float64),
        "stamp_ns": np.int64(stamp_ns),
        "scale_method": np.array(scale_method),
    }
    if depth is not None:
        arrays["depth_m"] = depth.astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    # fsync per frame would double the cost on slow disks; a torn file fails to load and is
    # relabelled (see _load_label), so rename-atomicity is what matters here.
    atomic_write_bytes(path, buffer.getvalue(), fsync=False)


def _label_ok(path: Path) -> bool:
    """True when ``path`` is a complete label file (a torn or foreign file is relabelled)."""
    try:
        with np.load(path) as data:
            return "teacher_m" in data.files and "rgb" in data.files
    except (OSError, ValueError, EOFError):
        return False


def label_sources(
    config: DistillConfig,
    label_size: tuple[int, int],
    cache_dir: Path,
    *,
    teacher_factory: Callable[[], Any] | None = None,
) -> tuple[list[list[FrameLabel]], LabelStats, str]:
    """Label every frame of every source (teacher once per frame, cached); returns
    (frames per source in time order, stats, teacher hash).

    The teacher is loaded only when some frame is missing from the cache, so a fully cached
    re-run neither loads it nor reads a bag that was completed before.
    """
    from tqdm import tqdm

    from cloudypoints_core.bags.evaluate import _prefetch
    from cloudypoints_core.inference.facade import resize_depth

    width, height = label_size
    t_hash = teacher_hash(config)
    factory = teacher_factory or (lambda: load_teacher(config))
    teacher: Any = None
    stats = LabelStats()
    sources: list[_Source] = [_BagSource(Path(p), config) for p in config.bags]
    sources += [_FolderSource(Path(p), config) for p in config.image_folders]
    out: list[list[FrameLabel]] = []
    for source in sources:
        folder = cache_dir / t_hash / f"{source.key}-{width}x{height}"
        listing = folder / (
            f"frames-s{config.frame_stride}-m{config.max_frames_per_source or 0}.json"
        )
        if listing.exists():
            try:
                done = json.loads(listing.read_text(encoding="utf-8"))
                labels = [
                    FrameLabel(source.name, r["index"], r["stamp_ns"], folder / r["file"], r["d"])
                    for r in done["frames"]
                ]
                topics = dict(done["topics"])
            except (OSError, ValueError, KeyError, TypeError):
                labels = []
            if labels and all(lab.path.exists() for lab in labels):
                stats.cached_frames += len(labels)
                stats.sources.append(_source_row(source, labels, 0, len(labels), topics))
                out.append(labels)
                continue
        labels = []
        calls = cached = 0
        total = source.frame_count()
        if total is not None:
            total = math.ceil(total / config.frame_stride)
            if config.max_frames_per_source:
                total = min(total, config.max_frames_per_source)
        bar = tqdm(
            total=total,
            desc=f"labelling {Path(source.name).name}",
            unit="frame",
            disable=not config.progress or None,
            mininterval=1.0,
        )
        # Bag reading and decoding run a frame or two ahead in a thread (they release the GIL),
        # overlapping with the teacher: the same prefetch `bag evaluate` uses.
        frames = _prefetch(source.frames())
        try:
            for frame in frames:
                if frame.index % config.frame_stride:
                    continue
                if config.max_frames_per_source and len(labels) >= config.max_frames_per_source:
                    break
                path = folder / f"{frame.index:07d}_{frame.stamp_ns}.npz"
                has_depth = frame.depth_m is not None
                if path.exists() and _label_ok(path):
                    cached += 1
                else:
                    if teacher is None:
                        teacher = factory()
                    t0 = time.perf_counter()
                    try:
                        result = teacher.predict(frame.rgb, frame.intrinsics)
                        teacher_m = np.asarray(result.depth_m, dtype=np.float32)
                        method = str(result.scale_method)
                    except ScaleError as exc:
                        # A relative teacher whose ground-plane fit failed on this frame.
                        log.debug("frame %d of %s: %s", frame.index, source.name, exc)
                        teacher_m = np.full(frame.rgb.shape[:2], np.nan, np.float32)
                        method = "none"
                    stats.teacher_s += time.perf_counter() - t0
                    calls += 1
                    if method == "none":
                        # Unscaled relative depth is not metres: learn nothing from the teacher
                        # on this frame (a depth topic, if any, still teaches).
                        teacher_m = np.full(teacher_m.shape, np.nan, np.float32)
                        stats.unscaled_frames += 1
                    teacher_m = resize_depth(teacher_m, width, height, "linear")
                    depth = (
                        None
                        if frame.depth_m is None
                        else resize_sparse_depth(frame.depth_m, width, height)
                    )
                    _save_label(
                        path,
                        _resize_rgb(frame.rgb, width, height),
                        teacher_m,
                        depth,
                        frame.intrinsics.resized(width, height),
                        frame.stamp_ns,
                        method,
                    )
                labels.append(
                    FrameLabel(source.name, frame.index, frame.stamp_ns, path, has_depth)
                )
                bar.update(1)
        finally:
            frames.close()
            bar.close()
        if not labels:
            raise DatasetError(f"{source.name}: no usable frames (see the log for why)")
        labels.sort(key=lambda lab: lab.stamp_ns)
        rows = [
            {
                "index": lab.index,
                "stamp_ns": lab.stamp_ns,
                "file": lab.path.name,
                "d": lab.has_depth,
            }
            for lab in labels
        ]
        topics = source.topics()
        atomic_write_text(
            listing, json.dumps({"topics": topics, "frames": rows}) + "\n", fsync=False
        )
        stats.teacher_calls += calls
        stats.cached_frames += cached
        stats.sources.append(_source_row(source, labels, calls, cached, topics))
        out.append(labels)
    if stats.unscaled_frames == stats.teacher_calls and stats.teacher_calls:
        raise DatasetError(
            "the teacher gave no metric scale on any frame (scale method 'none'); give a camera "
            "height that fits the recordings or distill.fixed_scale"
        )
    return out, stats, t_hash


def _source_row(
    source: _Source,
    labels: list[FrameLabel],
    calls: int,
    cached: int,
    topics: Mapping[str, str | None],
) -> dict[str, Any]:
    stamps = [lab.stamp_ns for lab in labels]
    return {
        "source": source.name,
        "kind": source.kind,
        "topics": dict(topics),
        "key": source.key,
        "frames": len(labels),
        "with_depth_topic": sum(lab.has_depth for lab in labels),
        "duration_s": (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0,
        "teacher_calls": calls,
        "cached": cached,
    }


# ---------------------------------------------------------------------------------- split
def _picks(k: int, fraction: float, phase: float) -> bool:
    """True for about ``fraction`` of block indices k, evenly spread (Bresenham-like)."""
    return math.floor((k + 1) * fraction + phase) > math.floor(k * fraction + phase)


def assign_splits(
    sources: Sequence[Sequence[FrameLabel]], config: DistillConfig
) -> tuple[dict[str, list[FrameLabel]], list[dict[str, Any]]]:
    """Frames per split by time blocks, and one row per block saying where it went.

    Blocks are numbered over all sources in order; test and val blocks are spread evenly over
    that sequence (test with phase 0.5, val with phase 0, a clash goes to test). Frames within
    ``gap_s`` of a boundary between blocks of different splits are dropped from both sides.
    """
    block_ns = config.block_s * 1e9
    gap_ns = config.gap_s * 1e9
    splits: dict[str, list[FrameLabel]] = {"train": [], "val": [], "test": []}
    blocks: list[dict[str, Any]] = []
    k = 0
    for labels in sources:
        if not labels:
            continue
        t0 = labels[0].stamp_ns
        n_blocks = int((labels[-1].stamp_ns - t0) // block_ns) + 1
        names = []
        for b in range(n_blocks):
            if _picks(k + b, config.test_fraction, 0.5):
                names.append("test")
            elif _picks(k + b, config.val_fraction, 0.0):
                names.append("val")
            else:
                names.append("train")
        counts = [0] * n_blocks
        dropped = [0] * n_blocks
        for lab in labels:
            offset = lab.stamp_ns - t0
            b = int(offset // block_ns)
            start, end = b * block_ns, (b + 1) * block_ns
            near_prev = b > 0 and names[b - 1] != names[b] and offset - start < gap_ns
            near_next = b + 1 < n_blocks and names[b + 1] != names[b] and end - offset <= gap_ns
            if near_prev or near_next:
                dropped[b] += 1
                continue
            splits[names[b]].append(lab)
            counts[b] += 1
        for b in range(n_blocks):
            blocks.append(
                {
                    "source": labels[0].source,
                    "block": b,
                    "start_s": b * config.block_s,
                    "end_s": (b + 1) * config.block_s,
                    "split": names[b],
                    "frames": counts[b],
                    "dropped_at_gaps": dropped[b],
                }
            )
        k += n_blocks
    for name in ("train", "val", "test"):
        if not splits[name]:
            raise ConfigError(
                f"no {name} frames: the recordings make {k} time blocks of "
                f"{config.block_s:g} s (val fraction {config.val_fraction:g}, test fraction "
                f"{config.test_fraction:g}, gap {config.gap_s:g} s); lower distill.block_s or "
                "add recordings"
            )
    return splits, blocks


# ------------------------------------------------------------------------------- data set
class DistillFrames:
    """Cached labelled frames as training samples (the ``distill`` data set).

    ``depth_m`` is the teacher's depth (NaN where it has none), ``aux_depth_m`` the depth topic
    (all NaN for frames without one) when any frame of the split has it.
    """

    def __init__(self, files: Sequence[Path], has_aux: bool) -> None:
        self.files = [Path(f) for f in files]
        self.has_aux = has_aux

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> dict[str, Any]:
        path = self.files[k]
        try:
            with np.load(path) as data:
                rgb = np.asarray(data["rgb"])
                teacher = np.asarray(data["teacher_m"], dtype=np.float32)
                fx, fy, cx, cy = (float(v) for v in data["intrinsics"])
                depth = np.asarray(data["depth_m"], np.float32) if "depth_m" in data else None
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"label file {path} is unreadable ({exc}); delete it") from exc
        height, width = teacher.shape
        sample: dict[str, Any] = {
            "rgb": rgb,
            "depth_m": teacher,
            "intrinsics": Intrinsics(fx, fy, cx, cy, width, height),
            "name": path.name,
        }
        if self.has_aux:
            sample["aux_depth_m"] = (
                depth if depth is not None else np.full(teacher.shape, np.nan, np.float32)
            )
        return sample


def distill_dataset(
    options: dict[str, Any], *, split: str, data: Any, cache_dir: Path
) -> DistillFrames:
    """The ``distill`` data set factory: option ``manifest`` (the run's ``distill/frames.json``)
    and optionally ``split`` (default: the trainer's split name)."""
    unknown = sorted(set(options) - {"manifest", "split"})
    if unknown or "manifest" not in options:
        raise ConfigError(
            f"data.{split}: the distill data set takes 'manifest' (and 'split'), got "
            f"{sorted(options)}"
        )
    path = Path(options["manifest"])
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"distillation manifest {path} cannot be read: {exc}") from exc
    which = str(options.get("split", split))
    try:
        files = manifest["splits"][which]
    except KeyError as exc:
        raise DatasetError(f"manifest {path} has no split {which!r}") from exc
    return DistillFrames([Path(f) for f in files], bool(manifest.get("has_depth_topic")))


# -------------------------------------------------------------------------------- the run
def _score_test_frames(
    package_dir: Path,
    files: Sequence[Path],
    backend: str,
    min_m: float,
    max_m: float,
) -> dict[str, Any]:
    """The student package (through the facade, as deployed) on the test frames: its agreement
    with the teacher, its error against the depth topic, and the teacher's own error there."""
    from cloudypoints_core.evaluation.metrics import mean_errors
    from cloudypoints_core.evaluation.protocols import EvalProtocol, evaluate_image, scored_depth
    from cloudypoints_core.inference.facade import DepthEstimator

    protocol = EvalProtocol(
        name="distill",
        min_depth_m=min_m,
        max_depth_m=max_m,
        description="held-out time blocks, whole frame at the label resolution",
    )
    rows: dict[str, list[dict[str, float]]] = {"agreement": [], "student": [], "teacher": []}
    coverage: dict[str, list[float]] = {"agreement": [], "student": [], "teacher": []}
    student = DepthEstimator.from_package(package_dir, backend=backend, device="cpu")
    try:
        for path in files:
            sample = DistillFrames([path], True)[0]
            # Scored unmasked: the protocol clamps what the facade would publish as NaN.
            pred = scored_depth(
                student.predict(sample["rgb"], sample["intrinsics"], keep_unmasked=True)
            )
            pairs = [("agreement", sample["depth_m"], pred)]
            if np.isfinite(sample["aux_depth_m"]).any():
                pairs += [
                    ("student", sample["aux_depth_m"], pred),
                    ("teacher", sample["aux_depth_m"], sample["depth_m"]),
                ]
            for name, gt, p in pairs:
                result = evaluate_image(protocol, gt, p)
                if result.metrics is not None:
                    rows[name].append(result.metrics)
                    coverage[name].append(result.coverage)
    finally:
        student.close()
    out: dict[str, Any] = {"protocol": protocol.summary(), "frames": len(files)}
    for name, values in rows.items():
        out[name] = mean_errors(values) if values else None
        out[f"{name}_coverage"] = float(np.mean(coverage[name])) if coverage[name] else None
        out[f"{name}_images"] = len(values)
    return out


def _card_section(report: Mapping[str, Any]) -> str:
    from cloudypoints_core.evaluation.metrics import METRIC_NAMES

    titles = {"abs_rel": "AbsRel", "sq_rel": "SqRel", "rmse": "RMSE (m)", "rmse_log": "RMSE log"}
    titles.update({"a1": "δ<1.25", "a2": "δ<1.25²", "a3": "δ<1.25³"})
    score = report["test_scores"]
    cfg = report["distill"]
    lines = [
        "## Distillation",
        "",
        f"- Teacher: `{report['teacher']['name']}` ({report['teacher']['output_kind']}, from "
        f"`{report['teacher']['path']}`, hash `{report['teacher']['hash']}`); metric source: "
        f"{report['teacher']['metric_source']}",
        f"- Student: `{report['student']['architecture']}` at "
        f"{report['student']['input_width']}x{report['student']['input_height']}, "
        f"`train_fx_px` {report['student']['train_fx_px']:.3f} px at that resolution",
        f"- Supervision: teacher weight {cfg['teacher_weight']:g}, depth topic weight "
        f"{cfg['depth_topic_weight']:g}; pixels the teacher marks invalid (NaN) are not "
        "trained on",
        f"- Labels: {report['labels']['frames']} frames; the teacher runs on each frame at the "
        "recording's resolution, its depth (inverse depth resized bilinearly) and the depth "
        f"topic (nearest point per pixel) are stored at {report['label_size'][0]}x"
        f"{report['label_size'][1]}, where all scores below are computed; teacher run "
        f"{report['labels']['teacher_calls']} times in this run "
        f"({report['labels']['cached_frames']} frames taken from the cache; "
        f"{report['labels']['unscaled_frames']} frames where the teacher had no metric scale "
        "are not learned from it)",
        "",
        "| source | topics | frames | with depth topic | duration (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in report["labels"]["sources"]:
        topics = ", ".join(f"{k} `{v}`" for k, v in row["topics"].items() if v) or "-"
        lines.append(
            f"| `{row['source']}` | {topics} | {row['frames']} | {row['with_depth_topic']} | "
            f"{row['duration_s']:.1f} |"
        )
    split = report["split"]
    lines += [
        "",
        f"Split by time blocks of {cfg['block_s']:g} s per recording (val fraction "
        f"{cfg['val_fraction']:g}, test fraction {cfg['test_fraction']:g}, {cfg['gap_s']:g} s "
        f"dropped at each boundary between splits): train {split['counts']['train']}, val "
        f"{split['counts']['val']}, test {split['counts']['test']} frames.",
        "",
    ]
    for name in ("val", "test"):
        held = [b for b in split["blocks"] if b["split"] == name]
        text = "; ".join(
            f"`{Path(b['source']).name}` {b['start_s']:g}-{b['end_s']:g} s" for b in held
        )
        lines.append(f"- {name} blocks: {text}")
    lines += [
        "",
        f"On the test blocks ({score['protocol']}):",
        "",
        "| comparison | " + " | ".join(titles[m] for m in METRIC_NAMES) + " | coverage |",
        "|---|" + "---:|" * (len(METRIC_NAMES) + 1),
    ]
    labels = {
        "agreement": "student vs teacher (agreement)",
        "student": "student vs depth topic (error)",
        "teacher": "teacher vs depth topic (error)",
    }
    for key, title in labels.items():
        metrics = score.get(key)
        if not metrics:
            continue
        values = " | ".join(f"{metrics[m]:.3f}" for m in METRIC_NAMES)
        lines.append(f"| {title} | {values} | {score[f'{key}_coverage']:.3f} |")
    if not score.get("student"):
        lines.append("")
        lines.append(
            "The recordings have no depth topic: only agreement with the teacher is known."
        )
    lines += [
        "",
        "The trainer's tables above score against the teacher's labels (`aux_*` keys in "
        "`metrics.jsonl`: against the depth topic).",
        "",
    ]
    return "\n".join(lines)


def distill(
    dcfg: DistillConfig,
    tcfg: TrainingConfig,
    out_dir: str | Path,
    *,
    command: str | None = None,
    teacher_factory: Callable[[], Any] | None = None,
) -> Path:
    """Label, split, train and report (see the module docstring); returns the run folder.

    A run folder that already holds ``checkpoints/last.pt`` is resumed (same config expected);
    labels already in the cache are never recomputed.
    """
    from cloudypoints_core.inference.package import load_model_package
    from cloudypoints_core.training.data import cache_root
    from cloudypoints_core.training.trainer import train

    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    label_size = (
        dcfg.label_width or tcfg.data.input_width,
        dcfg.label_height or tcfg.data.input_height,
    )
    cache_dir = Path(dcfg.label_cache) if dcfg.label_cache else cache_root(tcfg.data) / "distill"
    dist_rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        _init_distributed(tcfg)
    t0 = time.monotonic()
    if dist_rank == 0:
        sources, stats, t_hash = label_sources(
            dcfg, label_size, cache_dir, teacher_factory=teacher_factory
        )
        label_s = time.monotonic() - t0
        splits, blocks = assign_splits(sources, dcfg)
        has_depth = any(lab.has_depth for labels in sources for lab in labels)
        manifest = {
            "format": LABEL_FORMAT,
            "teacher_hash": t_hash,
            "label_size": list(label_size),
            "has_depth_topic": has_depth,
            "splits": {k: [str(lab.path) for lab in v] for k, v in splits.items()},
        }
        atomic_write_text(run_dir / "distill" / "frames.json", json.dumps(manifest) + "\n")
        atomic_write_text(
            run_dir / "distill" / "config.yaml",
            _yaml_dump({"distill": _plain(dataclasses.asdict(dcfg))}),
        )
    if world > 1:
        _barrier()
    manifest_path = str((run_dir / "distill" / "frames.json").resolve())
    has_depth = bool(json.loads(Path(manifest_path).read_text())["has_depth_topic"])
    data = dataclasses.replace(
        tcfg.data,
        train={"manifest": manifest_path, "split": "train"},
        val={"manifest": manifest_path, "split": "val"},
        test={"manifest": manifest_path, "split": "test"},
    )
    if not has_depth and dcfg.teacher_weight == 0:
        raise ConfigError(
            "distill.teacher_weight is 0 but the recordings have no depth topic: nothing to "
            "learn from (give --depth-topic or a positive teacher weight)"
        )
    train_cfg = tcfg
    if not has_depth and tcfg.train.best_metric.startswith("aux_"):
        # Without a depth topic the only reference is the teacher.
        train_cfg = dataclasses.replace(
            tcfg, train=dataclasses.replace(tcfg.train, best_metric="abs_rel")
        )
    train_cfg = dataclasses.replace(train_cfg, data=data)
    train_cfg.validate()
    last = run_dir / "checkpoints" / "last.pt"
    resume = last if last.exists() else None
    t_train = time.monotonic()
    train(train_cfg, out_dir=run_dir, resume=resume, command=command)
    train_s = time.monotonic() - t_train
    if dist_rank != 0:
        return run_dir

    package_dir = run_dir / "package"
    student_spec = load_model_package(package_dir).spec
    teacher_spec = load_model_package(dcfg.teacher).spec
    scores = _score_test_frames(
        package_dir,
        [lab.path for lab in splits["test"]],
        dcfg.eval_backend,
        tcfg.data.eval_min_depth_m,
        tcfg.data.eval_max_depth_m,
    )
    if _relative_kind(str(teacher_spec.output_kind)):
        metric_source = (
            f"ground plane, camera height {dcfg.camera_height_m} m, pitch {dcfg.camera_pitch_rad}"
            f" rad (fixed scale fallback {dcfg.fixed_scale})"
            if dcfg.camera_height_m is not None
            else f"fixed scale {dcfg.fixed_scale}"
        )
    else:
        metric_source = "the teacher's own metric output"
    report = {
        "teacher": {
            "name": teacher_spec.name,
            "path": str(dcfg.teacher or "bundled default model"),
            "hash": t_hash,
            "output_kind": str(teacher_spec.output_kind),
            "metric_source": metric_source,
        },
        "student": {
            "name": student_spec.name,
            "architecture": student_spec.architecture,
            "input_width": student_spec.input_width,
            "input_height": student_spec.input_height,
            "train_fx_px": float(student_spec.train_fx_px or 0.0),
        },
        "label_size": list(label_size),
        "labels": stats.to_dict(),
        "split": {
            "counts": {k: len(v) for k, v in splits.items()},
            "blocks": blocks,
        },
        "distill": _plain(dataclasses.asdict(dcfg)),
        "test_scores": scores,
        "times_s": {"labelling": label_s, "training": train_s},
    }
    atomic_write_text(run_dir / "distill_report.json", json.dumps(report, indent=2) + "\n")
    card_path = package_dir / "MODEL_CARD.md"
    card = card_path.read_text(encoding="utf-8") if card_path.exists() else ""
    marker = "## Limitations"
    section = _card_section(report)
    card = card.replace(marker, section + "\n" + marker, 1) if marker in card else card + section
    atomic_write_text(card_path, card)
    log.info(
        "distilled %s into %s: test agreement AbsRel %s, student vs depth topic %s, teacher %s",
        teacher_spec.name,
        package_dir,
        _fmt(scores.get("agreement")),
        _fmt(scores.get("student")),
        _fmt(scores.get("teacher")),
    )
    return run_dir


def _fmt(metrics: Mapping[str, float] | None) -> str:
    return "n/a" if not metrics else f"{metrics['abs_rel']:.4f}"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _yaml_dump(data: Mapping[str, Any]) -> str:
    yaml = require("yaml", "distillation configs")
    return str(yaml.safe_dump(_plain(data), sort_keys=False))


def _init_distributed(config: TrainingConfig) -> None:
    """Join the torchrun process group before labelling, with a timeout long enough for rank 0
    to label every frame while the other ranks wait (the trainer then reuses the group)."""
    import datetime

    torch = require("torch", "distributed distillation")
    if torch.distributed.is_initialized():
        return
    cuda = config.train.device.startswith("cuda") or (
        config.train.device == "auto" and torch.cuda.is_available()
    )
    torch.distributed.init_process_group(
        backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=12)
    )


def _barrier() -> None:
    torch = require("torch", "distributed distillation")
    torch.distributed.barrier()
