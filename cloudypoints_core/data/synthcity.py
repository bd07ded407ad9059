"""SynthCity: procedural street scenes with exact metric depth for training and testing depth nets.

A seed fixes a street (lanes, kerbs, pavements, facades with windows, parked and moving cars,
poles, signs, trees, sky, lighting) and a Cityscapes-like camera (2048x1024 base, fx = fy =
2262.5 px, principal point jittered near the centre, about 1.22 m above the road, pitched down
about 0.038 rad, with roll, yaw and lateral jitter). Frames are ray cast in numpy, so depth is
exact: z along the optical axis in metres, ``inf`` for sky.

World frame (metres): x forward along the street (the driving direction), y left, z up; the road
surface is z = 0, the street's centre line y = 0 and the camera starts at x = 0. Poses are
camera-to-world 4x4 matrices of the optical frame (x right, y down, z forward).

    frame = render_frame(seed=3, width=512, height=256)
    for frame in render_sequence(seed=3, n_frames=30, width=512, height=256, speed_mps=10.0):
        ...
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.data.synthcity_config import SynthCityConfig
from cloudypoints_core.data.synthcity_render import render
from cloudypoints_core.data.synthcity_scene import (
    PrimArrays,
    Scene,
    SynthLabel,
    build_scene,
    car_prims,
    street_length,
    walker_prims,
)
from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.geometry import Intrinsics

__all__ = [
    "SynthCityConfig",
    "SynthCityDataset",
    "SynthFrame",
    "SynthLabel",
    "base_intrinsics",
    "render_frame",
    "render_sequence",
    "tune_allocator",
    "write_sequence",
]

log = logging.getLogger(__name__)

# Optical frame (x right, y down, z forward) -> world axes (x forward, y left, z up).
_OPTICAL_TO_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: frames compare by identity
class SynthFrame:
    """One rendered frame.

    ``depth_m`` is z-depth along the optical axis (not ray length) in metres, ``inf`` for sky;
    ``labels`` holds ``SynthLabel`` ids (Cityscapes train ids); ``pose`` maps optical-frame points
    to the world frame (see the module docstring); ``camera_height_m`` is the height of the
    camera centre above the road, ``pitch_rad`` (positive looks down) and ``roll_rad`` its
    attitude relative to the road, at this frame.
    """

    rgb: npt.NDArray[np.uint8]
    depth_m: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    intrinsics: Intrinsics
    pose: npt.NDArray[np.float64]
    stamp_ns: int
    seed: int
    index: int
    camera_height_m: float
    pitch_rad: float
    roll_rad: float


def base_intrinsics(seed: int, config: SynthCityConfig | None = None) -> Intrinsics:
    """The seed's camera at the base resolution (2048x1024 by default)."""
    cfg = _check_config(config)
    _check_seed(seed)
    scene = _scene(int(seed), cfg, street_length(int(seed), cfg))
    return _base_intr(scene)


def render_frame(
    seed: int,
    width: int = 512,
    height: int = 256,
    config: SynthCityConfig | None = None,
    index: int = 0,
) -> SynthFrame:
    """Frame ``index`` of the seed's default drive (``config.speed_mps`` at ``config.rate_hz``).

    Equals frame ``index`` of ``render_sequence(seed, n, width, height, config.speed_mps,
    config.rate_hz, config)`` whenever the street is long enough for both drives (the closing
    junction is moved further away when a drive would come within ``config.min_view_ahead_m``).
    """
    cfg = _check_config(config)
    _check_seed(seed)
    _check_size(width, height)
    if not isinstance(index, numbers.Integral) or isinstance(index, bool) or index < 0:
        raise InputError(f"index must be an integer >= 0, got {index!r}")
    travel = cfg.speed_mps * int(index) / cfg.rate_hz
    scene = _scene_for_drive(int(seed), cfg, travel)
    return _render_index(scene, int(index), int(width), int(height), cfg.speed_mps, cfg.rate_hz)


def render_sequence(
    seed: int,
    n_frames: int,
    width: int = 512,
    height: int = 256,
    speed_mps: float | None = None,
    rate_hz: float = 17.0,
    config: SynthCityConfig | None = None,
) -> Iterator[SynthFrame]:
    """Frames 0 .. n_frames-1 of the camera driving forward through the seed's street.

    Frame i is at x = speed_mps * i / rate_hz and stamped ``start + round(i * 1e9 / rate_hz)``;
    moving cars move with the same clock. Arguments are checked before the first frame.
    """
    cfg = _check_config(config)
    _check_seed(seed)
    _check_size(width, height)
    if not isinstance(n_frames, numbers.Integral) or isinstance(n_frames, bool) or n_frames < 1:
        raise InputError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    speed = cfg.speed_mps if speed_mps is None else speed_mps
    if not _finite_number(speed) or speed < 0:
        raise InputError(f"speed_mps must be a finite number >= 0, got {speed_mps!r}")
    if not _finite_number(rate_hz) or rate_hz <= 0:
        raise InputError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
    travel = float(speed) * (int(n_frames) - 1) / float(rate_hz)
    scene = _scene_for_drive(int(seed), cfg, travel)
    return _sequence(scene, int(n_frames), int(width), int(height), float(speed), float(rate_hz))


def _sequence(
    scene: Scene, n: int, width: int, height: int, speed: float, rate: float
) -> Iterator[SynthFrame]:
    for i in range(n):
        yield _render_index(scene, i, width, height, speed, rate)


class SynthCityDataset:
    """Random-access SynthCity samples for training loops (no torch import).

    Sample ``k`` renders seed ``seeds[k // frames_per_seed]`` at frame index
    ``(k % frames_per_seed) * index_stride`` of its default drive. A sample is a dict:

    - ``"rgb"``: (H, W, 3) uint8 image
    - ``"depth_m"``: (H, W) float32 z-depth in metres, ``inf`` for sky
    - ``"labels"``: (H, W) uint8 ``SynthLabel`` ids
    - ``"intrinsics"``: ``Intrinsics`` at (width, height)
    - ``"seed"``: int, ``"index"``: int (the frame index in the seed's drive)
    - ``"pose"``: (4, 4) float64 camera-to-world, ``"camera_height_m"``: float

    With ``fast_malloc`` (default) the first sample calls ``tune_allocator()`` in the process that
    renders it (each data-loader worker), which makes rendering about 15 % faster.
    """

    def __init__(
        self,
        seeds: Sequence[int] | range,
        width: int,
        height: int,
        frames_per_seed: int = 1,
        config: SynthCityConfig | None = None,
        index_stride: int = 10,
        fast_malloc: bool = True,
    ) -> None:
        self.config = _check_config(config)
        _check_size(width, height)
        self.seeds = [int(s) for s in seeds]
        for s in self.seeds:
            _check_seed(s)
        for name, value in (("frames_per_seed", frames_per_seed), ("index_stride", index_stride)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        self.width = int(width)
        self.height = int(height)
        self.frames_per_seed = int(frames_per_seed)
        self.index_stride = int(index_stride)
        self.fast_malloc = bool(fast_malloc)

    def __len__(self) -> int:
        return len(self.seeds) * self.frames_per_seed

    def __getitem__(self, k: int) -> dict[str, Any]:
        n = len(self)
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise InputError(f"SynthCityDataset index must be an integer, got {k!r}")
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"SynthCityDataset index {k} out of range for {n} samples")
        if self.fast_malloc:
            _tune_once()
        seed = self.seeds[k // self.frames_per_seed]
        index = (k % self.frames_per_seed) * self.index_stride
        f = render_frame(seed, self.width, self.height, self.config, index)
        return {
            "rgb": f.rgb,
            "depth_m": f.depth_m,
            "labels": f.labels,
            "intrinsics": f.intrinsics,
            "seed": f.seed,
            "index": f.index,
            "pose": f.pose,
            "camera_height_m": f.camera_height_m,
        }


def write_sequence(
    out_dir: str | os.PathLike[str],
    seed: int,
    n_frames: int,
    width: int = 512,
    height: int = 256,
    speed_mps: float | None = None,
    rate_hz: float = 17.0,
    config: SynthCityConfig | None = None,
    depth_format: str = "npy",
    progress: bool = True,
    fast_malloc: bool = True,
) -> Path:
    """Render a drive and save it under ``out_dir``; returns the folder.

    Layout: ``rgb/{i:06d}.png``, ``depth/{i:06d}.npy`` (float32 metres, inf = sky) or with
    ``depth_format="png16"`` ``depth/{i:06d}.png`` (uint16 millimetres, 0 = sky or beyond
    65.535 m), ``labels/{i:06d}.png`` (SynthLabel ids), ``intrinsics.json``
    (``Intrinsics.to_dict``)
    and ``frames.json`` (per frame: stamp_ns, pose, camera height, pitch, roll). Every file is
    written atomically (temp file + rename). ``fast_malloc`` calls ``tune_allocator()`` first.
    """
    if depth_format not in ("npy", "png16"):
        raise InputError(f"depth_format must be 'npy' or 'png16', got {depth_format!r}")
    if fast_malloc:
        _tune_once()
    frames = render_sequence(seed, n_frames, width, height, speed_mps, rate_hz, config)
    from cloudypoints_core._optional import require
    from cloudypoints_core.io import atomic_write_bytes, atomic_write_text

    cv2 = require("cv2", "SynthCity PNG output")
    root = Path(out_dir)
    for sub in ("rgb", "depth", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if progress:
        tqdm = require("tqdm", "progress bars").tqdm
        frames = tqdm(frames, total=int(n_frames), desc=f"SynthCity seed {seed}", unit="frame")
    records = []
    intr: Intrinsics | None = None
    for f in frames:
        intr = f.intrinsics
        name = f"{f.index:06d}"
        ok, png = cv2.imencode(".png", np.ascontiguousarray(f.rgb[..., ::-1]))
        if not ok:
            raise InputError(f"PNG encoding of frame {f.index} failed")
        atomic_write_bytes(root / "rgb" / f"{name}.png", png.tobytes(), fsync=False)
        if depth_format == "npy":
            buf = io.BytesIO()
            np.save(buf, f.depth_m)
            atomic_write_bytes(root / "depth" / f"{name}.npy", buf.getvalue(), fsync=False)
        else:
            mm = np.where(np.isfinite(f.depth_m), np.round(f.depth_m * 1000.0), 0.0)
            mm = np.where(mm > 65535, 0, mm).astype(np.uint16)
            ok, png = cv2.imencode(".png", mm)
            if not ok:
                raise InputError(f"PNG encoding of depth frame {f.index} failed")
            atomic_write_bytes(root / "depth" / f"{name}.png", png.tobytes(), fsync=False)
        ok, png = cv2.imencode(".png", f.labels)
        if not ok:
            raise InputError(f"PNG encoding of labels of frame {f.index} failed")
        atomic_write_bytes(root / "labels" / f"{name}.png", png.tobytes(), fsync=False)
        records.append(
            {
                "index": f.index,
                "stamp_ns": f.stamp_ns,
                "pose": f.pose.tolist(),
                "camera_height_m": f.camera_height_m,
                "pitch_rad": f.pitch_rad,
                "roll_rad": f.roll_rad,
                "rgb": f"rgb/{name}.png",
                "depth": f"depth/{name}.{'npy' if depth_format == 'npy' else 'png'}",
                "labels": f"labels/{name}.png",
            }
        )
    if intr is not None:
        atomic_write_text(root / "intrinsics.json", json.dumps(intr.to_dict(), indent=2))
    meta = {
        "generator": "SynthCity",
        "seed": int(seed),
        "width": int(width),
        "height": int(height),
        "rate_hz": float(rate_hz),
        "depth_format": depth_format,
        "depth_units": (
            "m (npy, inf = sky)" if depth_format == "npy" else "mm (uint16, 0 = invalid)"
        ),
        "world_frame": "x forward along the street, y left, z up; road surface z = 0",
        "labels": {label.name.lower(): int(label) for label in SynthLabel},
        "frames": records,
    }
    atomic_write_text(root / "frames.json", json.dumps(meta, indent=1))
    return root


def tune_allocator(keep_mb: int = 256) -> bool:
    """Ask glibc to keep freed memory instead of returning every large numpy temporary to the OS.

    Rendering allocates hundreds of short-lived arrays larger than glibc's mmap threshold; each is
    mapped and unmapped again, and the page faults cost about 15 % of a frame. This process-wide
    setting (all arrays under 32 MB come from the heap, up to ``keep_mb`` of free heap is kept)
    removes that. Opt-in because it changes the whole process; returns False where it does not
    apply (not glibc).
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok_mmap = mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    ok_trim = mallopt(m_trim_threshold, int(keep_mb) * 1024 * 1024)
    if not (ok_mmap and ok_trim):
        log.warning("mallopt refused the SynthCity allocator settings")
        return False
    return True


@functools.lru_cache(maxsize=1)
def _tune_once() -> bool:
    return tune_allocator()


# ------------------------------------------------------------------------------ internals
def _render_index(
    scene: Scene, index: int, width: int, height: int, speed: float, rate: float
) -> SynthFrame:
    cfg = scene.config
    t = index / rate
    bounce = scene.bounce
    # Vehicle bounce: slow pitch and height oscillations (amplitudes from the config).
    pitch = scene.pitch_rad + cfg.bounce_pitch_rad * math.sin(
        2 * math.pi * bounce[0] * t + bounce[1]
    )
    cam_h = scene.cam_height_m + cfg.bounce_height_m * math.sin(
        2 * math.pi * bounce[2] * t + bounce[3]
    )
    roll = scene.roll_rad
    cam = np.array([speed * t, scene.cam_y, cam_h])
    rot = _rotation(scene.yaw_rad, pitch, roll)
    pose = np.eye(4)
    pose[:3, :3] = rot
    pose[:3, 3] = cam
    intr = _base_intr(scene).resized(width, height)
    prims = _prims_at(scene, t, speed)
    rng = np.random.default_rng([scene.seed, index, 0x5EED])
    out = render(scene, prims, rot, cam, intr, rng)
    stamp = scene.stamp0_ns + int(round(index * 1e9 / rate))
    return SynthFrame(
        rgb=out.rgb,
        depth_m=out.depth_m,
        labels=out.labels,
        intrinsics=intr,
        pose=pose,
        stamp_ns=stamp,
        seed=scene.seed,
        index=index,
        camera_height_m=float(cam_h),
        pitch_rad=float(pitch),
        roll_rad=float(roll),
    )


def _rotation(yaw: float, pitch: float, roll: float) -> npt.NDArray[np.float64]:
    """Camera-to-world rotation: yaw about z (left positive), pitch about y (down positive),
    roll about the forward axis x, applied to the level optical frame."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx @ _OPTICAL_TO_WORLD


def _prims_at(scene: Scene, t: float, speed: float) -> PrimArrays:
    """Static primitives plus cars and pedestrians at time t (moving cars reaching the closing
    junction turn off)."""
    parts = [scene.static]
    if scene.cars:
        xs = np.array(
            [c.x + ((speed + c.speed_mps) if c.ego_lane else c.speed_mps) * t for c in scene.cars]
        )
        stop = scene.junctions[-1, 0] - 1.0
        keep = [
            i
            for i, c in enumerate(scene.cars)
            if (c.speed_mps == 0.0 and not c.ego_lane) or xs[i] + c.length / 2 < stop
        ]
        parts.append(car_prims([scene.cars[i] for i in keep], xs[keep]))
    if scene.walkers:
        xs = np.array([wk.x + wk.speed_mps * t for wk in scene.walkers])
        parts.append(walker_prims(scene.walkers, xs))
    return PrimArrays.concat(parts) if len(parts) > 1 else scene.static


def _base_intr(scene: Scene) -> Intrinsics:
    cfg = scene.config
    return Intrinsics(
        scene.fx_px, scene.fx_px, scene.cx_px, scene.cy_px, cfg.base_width, cfg.base_height
    )


def _scene_for_drive(seed: int, cfg: SynthCityConfig, travel_m: float) -> Scene:
    length = street_length(seed, cfg)
    # Quantise the extension so that nearby drives share one cached scene.
    need = travel_m + cfg.min_view_ahead_m
    end = length if need <= length else math.ceil(need / 10.0) * 10.0
    return _scene(seed, cfg, end)


@functools.lru_cache(maxsize=8)
def _scene(seed: int, cfg: SynthCityConfig, end_x: float) -> Scene:
    return build_scene(seed, cfg, min_end_x=end_x)


def _check_config(config: SynthCityConfig | None) -> SynthCityConfig:
    if config is None:
        return SynthCityConfig()
    if not isinstance(config, SynthCityConfig):
        raise ConfigError(f"config must be a SynthCityConfig or None, got {type(config).__name__}")
    return config


def _check_seed(seed: object) -> None:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or int(seed) < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")


def _check_size(width: object, height: object) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or int(value) < 1:
            raise InputError(f"{name} must be a positive integer number of pixels, got {value!r}")


def _finite_number(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
