"""Writes a tiny Cityscapes tree in the exact layout, names and file formats of the real data set.

The scene is analytic (a road plane below the horizon, a facade row above it, sky at the top)
so the tests know each pixel's depth; disparity is stored the Cityscapes way (uint16 PNG,
p = round(d * 256) + 1, p = 0 invalid) with some p = 0 and p = 1 holes. Every city has its own
calibration, so code that reads one camera file for all frames gives wrong depths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

#: Cities per split, as in the real release (names are real Cityscapes cities).
LAYOUT: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum"),
    "val": ("frankfurt", "lindau"),
    "test": ("berlin", "bonn"),
}
#: Sequence numbers written per city; the annotated frame of each is number 19 (snippet index 19).
SEQUENCES = (0, 1)
ANNOTATED_FRAME = 19

# Calibrations at the native 2048x1024 resolution; the first is the real example from the docs,
# the others differ the way recordings do (baseline, focal length, mounting).
NATIVE_CALIBRATIONS: dict[str, dict[str, float]] = {
    "aachen": dict(
        baseline=0.209313,
        fx=2262.52,
        fy=2265.3017905988554,
        u0=1096.98,
        v0=513.137,
        z=1.22,
        pitch=0.038,
        roll=0.0,
        yaw=-0.0195,
        x=1.7,
        y=0.1,
    ),
    "bochum": dict(
        baseline=0.222126,
        fx=2268.36,
        fy=2225.5405988775956,
        u0=1048.64,
        v0=519.277,
        z=1.18,
        pitch=0.05,
        roll=0.0,
        yaw=0.007,
        x=1.7,
        y=-0.1,
    ),
    "frankfurt": dict(
        baseline=0.209313,
        fx=2262.52,
        fy=2265.3017905988554,
        u0=1096.98,
        v0=513.137,
        z=1.22,
        pitch=0.038,
        roll=0.0,
        yaw=-0.0195,
        x=1.7,
        y=0.1,
    ),
    "lindau": dict(
        baseline=0.21409,
        fx=2265.0,
        fy=2265.0,
        u0=1067.0,
        v0=520.0,
        z=1.25,
        pitch=0.03,
        roll=0.0,
        yaw=0.0,
        x=1.7,
        y=0.1,
    ),
    "berlin": dict(
        baseline=0.216,
        fx=2250.0,
        fy=2250.0,
        u0=1030.0,
        v0=500.0,
        z=1.3,
        pitch=0.045,
        roll=0.0,
        yaw=0.0,
        x=1.7,
        y=0.1,
    ),
    "bonn": dict(
        baseline=0.20,
        fx=2270.0,
        fy=2272.0,
        u0=1050.0,
        v0=530.0,
        z=1.15,
        pitch=0.02,
        roll=0.0,
        yaw=0.0,
        x=1.7,
        y=0.1,
    ),
}


@dataclass
class FixtureTree:
    """What was written: root, the keys per split, and the calibration used per key."""

    root: Path
    width: int
    height: int
    keys: dict[str, list[str]] = field(default_factory=dict)
    sequence_keys: dict[str, list[str]] = field(default_factory=dict)
    #: Calibration at the written resolution per key (baseline, fx, fy, u0, v0, z, pitch).
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)


def scaled_calibration(native: dict[str, float], width: int, height: int) -> dict[str, float]:
    """The calibration of the same camera at ``width`` x ``height`` (pixel-centre convention)."""
    sx, sy = width / 2048.0, height / 1024.0
    out = dict(native)
    out.update(
        fx=native["fx"] * sx,
        fy=native["fy"] * sy,
        u0=(native["u0"] + 0.5) * sx - 0.5,
        v0=(native["v0"] + 0.5) * sy - 0.5,
    )
    return out


def camera_json(cal: dict[str, float]) -> dict[str, dict[str, float]]:
    """The official camera JSON structure."""
    return {
        "extrinsic": {k: cal[k] for k in ("baseline", "pitch", "roll", "x", "y", "yaw", "z")},
        "intrinsic": {k: cal[k] for k in ("fx", "fy", "u0", "v0")},
    }


def scene_depth(
    cal: dict[str, float], width: int, height: int, phase: float
) -> npt.NDArray[np.float64]:
    """Depth (m, inf = sky) of a road plane, a facade band and sky, for one calibration."""
    v = np.arange(height, dtype=np.float64)[:, None] + np.zeros((1, width))
    u = np.arange(width, dtype=np.float64)[None, :] + np.zeros((height, 1))
    horizon = cal["v0"] - cal["fy"] * np.tan(cal["pitch"])
    below = v - horizon
    with np.errstate(divide="ignore", invalid="ignore"):
        road = cal["z"] * cal["fy"] / below
    facade = 12.0 + 40.0 * (0.5 + 0.5 * np.sin(u / width * 6.0 + phase))
    depth = np.where(below > 0.5, np.minimum(road, facade), facade)
    depth[v < 0.15 * height] = np.inf  # sky
    return depth


def depth_to_disparity_png(
    depth_m: npt.NDArray[np.float64], baseline_m: float, fx_px: float
) -> npt.NDArray[np.uint16]:
    """Encode depth as Cityscapes stores disparity: p = round(d * 256) + 1, 0 where invalid."""
    with np.errstate(divide="ignore"):
        d = baseline_m * fx_px / depth_m
    p = np.where(np.isfinite(depth_m) & (depth_m > 0), np.round(d * 256.0) + 1.0, 0.0)
    return np.clip(p, 0, 65535).astype(np.uint16)


def _write_frame(
    root: Path,
    kind_suffix: str,
    split: str,
    city: str,
    seq: int,
    frame: int,
    cal: dict[str, float],
    width: int,
    height: int,
    rng: np.random.Generator,
    with_camera: bool,
) -> None:
    stem = f"{city}_{seq:06d}_{frame:06d}"
    depth = scene_depth(cal, width, height, phase=0.3 * seq + 0.05 * frame)
    p = depth_to_disparity_png(depth, cal["baseline"], cal["fx"])
    # Holes the way SGM leaves them: some p = 0 and some p = 1 (zero disparity, also invalid).
    holes = rng.random(p.shape)
    p[holes < 0.03] = 0
    p[(holes >= 0.03) & (holes < 0.04)] = 1
    shade = np.clip(255.0 * 8.0 / np.where(np.isfinite(depth), depth + 8.0, 1e9), 0, 255)
    rgb = np.stack([shade, 0.6 * shade + 40, 255 - shade], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    image_dir = root / f"leftImg8bit{kind_suffix}" / split / city
    disp_dir = root / f"disparity{kind_suffix}" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    disp_dir.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(image_dir / f"{stem}_leftImg8bit.png"), rgb[:, :, ::-1].copy()):
        raise OSError(f"cannot write {image_dir}")
    if not cv2.imwrite(str(disp_dir / f"{stem}_disparity.png"), p):
        raise OSError(f"cannot write {disp_dir}")
    if with_camera:
        cam_dir = root / "camera" / split / city
        cam_dir.mkdir(parents=True, exist_ok=True)
        (cam_dir / f"{stem}_camera.json").write_text(json.dumps(camera_json(cal), indent=2))
        veh_dir = root / "vehicle" / split / city
        veh_dir.mkdir(parents=True, exist_ok=True)
        (veh_dir / f"{stem}_vehicle.json").write_text(
            json.dumps(
                {
                    "gpsHeading": 180.0,
                    "gpsLatitude": 50.77,
                    "gpsLongitude": 6.08,
                    "outsideTemperature": 12.5,
                    "speed": 8.3 + seq,
                    "yawRate": 0.01,
                },
                indent=2,
            )
        )


def write_cityscapes_fixture(
    root: Path,
    *,
    width: int = 256,
    height: int = 128,
    layout: dict[str, tuple[str, ...]] | None = None,
    sequences: tuple[int, ...] = SEQUENCES,
    sequence_splits: tuple[str, ...] = ("train",),
    snippet_length: int = 30,
    seed: int = 0,
) -> FixtureTree:
    """Write the tree under ``root`` and describe it.

    Annotated frames: ``{city}_{seq:06d}_000019`` for every city and sequence. Sequence snippets
    (``*_sequence`` folders, frames 0 .. snippet_length - 1, annotated one at 19, timestamps at
    17 Hz) for the splits in ``sequence_splits``.
    """
    rng = np.random.default_rng(seed)
    tree = FixtureTree(root=root, width=width, height=height)
    for split, cities in (layout or LAYOUT).items():
        tree.keys[split] = []
        tree.sequence_keys[split] = []
        for city in cities:
            cal = scaled_calibration(NATIVE_CALIBRATIONS[city], width, height)
            for seq in sequences:
                key = f"{city}_{seq:06d}_{ANNOTATED_FRAME:06d}"
                _write_frame(
                    root,
                    "",
                    split,
                    city,
                    seq,
                    ANNOTATED_FRAME,
                    cal,
                    width,
                    height,
                    rng,
                    with_camera=True,
                )
                tree.keys[split].append(key)
                tree.calibration[key] = cal
                if split not in sequence_splits:
                    continue
                stamp_dir = root / "timestamp_sequence" / split / city
                stamp_dir.mkdir(parents=True, exist_ok=True)
                for frame in range(snippet_length):
                    skey = f"{city}_{seq:06d}_{frame:06d}"
                    _write_frame(
                        root,
                        "_sequence",
                        split,
                        city,
                        seq,
                        frame,
                        cal,
                        width,
                        height,
                        rng,
                        with_camera=False,
                    )
                    stamp_ns = 1_400_000_000_000_000_000 + seq * 10**10 + round(frame * 1e9 / 17.0)
                    (stamp_dir / f"{skey}_timestamp.txt").write_text(f"{stamp_ns}\n")
                    tree.sequence_keys[split].append(skey)
                    tree.calibration.setdefault(skey, cal)
    return tree


def write_full_size_frame(
    root: Path, split: str = "test", city: str = "berlin", seq: int = 7
) -> tuple[str, dict[str, float]]:
    """One 2048x1024 frame (the real size, for the crop test); returns key and calibration."""
    cal = dict(NATIVE_CALIBRATIONS[city])
    _write_frame(
        root,
        "",
        split,
        city,
        seq,
        ANNOTATED_FRAME,
        cal,
        2048,
        1024,
        np.random.default_rng(seq),
        with_camera=True,
    )
    return f"{city}_{seq:06d}_{ANNOTATED_FRAME:06d}", cal


def expected_depth(
    disparity_png: npt.NDArray[np.uint16], baseline_m: float, fx_px: float
) -> npt.NDArray[np.float64]:
    """Independent reference decoding, pixel formula straight from the Cityscapes README."""
    p = disparity_png.astype(np.float64)
    out = np.full(p.shape, np.nan)
    ok = p > 1
    out[ok] = baseline_m * fx_px / ((p[ok] - 1.0) / 256.0)
    return out
