"""Tests of the SynthCity generator: determinism, exact geometry, drives, scaling, variety, I/O."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cloudypoints_core.data.synthcity import (
    SynthCityConfig,
    SynthCityDataset,
    SynthFrame,
    SynthLabel,
    base_intrinsics,
    render_frame,
    render_sequence,
    write_sequence,
)
from cloudypoints_core.errors import ConfigError, InputError
from cloudypoints_core.geometry import Intrinsics

W, H = 256, 128


def imread(path: object) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def camera_points(frame: SynthFrame) -> np.ndarray:
    """(H, W, 3) optical-frame points from depth, with rays computed here from the intrinsics."""
    intr = frame.intrinsics
    u = (np.arange(intr.width) - intr.cx_px) / intr.fx_px
    v = (np.arange(intr.height) - intr.cy_px) / intr.fy_px
    z = np.where(np.isfinite(frame.depth_m), frame.depth_m, np.nan).astype(np.float64)
    return np.stack([z * u[None, :], z * v[:, None], z], axis=-1)


def world_points(frame: SynthFrame) -> np.ndarray:
    pc = camera_points(frame)
    return pc @ frame.pose[:3, :3].T + frame.pose[:3, 3]


def world_rays(frame: SynthFrame) -> np.ndarray:
    intr = frame.intrinsics
    u = (np.arange(intr.width) - intr.cx_px) / intr.fx_px
    v = (np.arange(intr.height) - intr.cy_px) / intr.fy_px
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1)
    return rays @ frame.pose[:3, :3].T


@pytest.fixture(scope="module")
def frame() -> SynthFrame:
    return render_frame(11, W, H)


# ------------------------------------------------------------------------- basic contract
def test_shapes_dtypes_and_metadata(frame: SynthFrame) -> None:
    assert frame.rgb.shape == (H, W, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.shape == (H, W) and frame.depth_m.dtype == np.float32
    assert frame.labels.shape == (H, W) and frame.labels.dtype == np.uint8
    assert frame.intrinsics.shape == (H, W)
    assert frame.pose.shape == (4, 4) and frame.pose.dtype == np.float64
    rot = frame.pose[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_array_equal(frame.pose[3], [0, 0, 0, 1])
    assert isinstance(frame.stamp_ns, int) and frame.stamp_ns > 0
    assert (frame.seed, frame.index) == (11, 0)
    assert 1.1 < frame.camera_height_m < 1.35
    assert frame.pose[2, 3] == pytest.approx(frame.camera_height_m)
    assert abs(frame.pitch_rad - 0.038) < 0.03 and abs(frame.roll_rad) < 0.02
    assert set(np.unique(frame.labels)) <= {int(label) for label in SynthLabel}
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.index = 3  # type: ignore[misc]


def test_camera_looks_forward_along_the_street(frame: SynthFrame) -> None:
    # The optical axis maps to world +x (forward), image x to -y (right), image y to -z (down).
    rot = frame.pose[:3, :3]
    assert rot[:, 2] @ np.array([1.0, 0, 0]) > 0.99
    assert rot[:, 0] @ np.array([0, -1.0, 0]) > 0.99
    assert rot[:, 1] @ np.array([0, 0, -1.0]) > 0.99
    # Pitch looks down: the optical axis has a negative world z of -sin(pitch).
    assert rot[2, 2] == pytest.approx(-math.sin(frame.pitch_rad), abs=1e-9)


def test_determinism_per_seed() -> None:
    a = render_frame(5, 128, 64)
    b = render_frame(5, 128, 64)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.pose, b.pose)
    assert a.intrinsics == b.intrinsics and a.stamp_ns == b.stamp_ns
    c = render_frame(6, 128, 64)
    assert not np.array_equal(a.rgb, c.rgb)
    assert not np.array_equal(a.depth_m, c.depth_m)
    assert a.intrinsics != c.intrinsics


def test_depth_is_positive_or_inf_and_inf_only_for_sky_above_the_horizon(
    frame: SynthFrame,
) -> None:
    d = frame.depth_m
    sky = frame.labels == SynthLabel.SKY
    assert np.all(np.isinf(d) == sky)
    assert np.all(d[~sky] > 0) and np.all(np.isfinite(d[~sky]))
    assert np.all(d[np.isinf(d)] > 0)  # +inf, never -inf or NaN
    assert not np.any(np.isnan(d))
    # Sky only where the ray points upwards in the world (every downward ray meets the ground).
    up = world_rays(frame)[..., 2] > 0
    assert np.all(up[sky])
    assert sky[: H // 2].sum() > 0 and sky[-H // 4 :].sum() == 0


def test_road_points_lie_on_the_road_plane_within_1cm() -> None:
    for seed in (1, 2, 3):
        f = render_frame(seed, W, H)
        road = f.labels == SynthLabel.ROAD
        assert road.sum() > 0.1 * road.size
        pw = world_points(f)
        assert np.abs(pw[road][:, 2]).max() < 0.01
        # Same check in the camera frame: the road is at camera_height_m below the camera along
        # the world up vector expressed in the optical frame.
        up_c = f.pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])
        heights = camera_points(f)[road] @ up_c
        np.testing.assert_allclose(heights, -f.camera_height_m, atol=0.01)


def test_pavement_tops_are_kerb_high() -> None:
    f = render_frame(4, W, H)
    pw = world_points(f)
    side = f.labels == SynthLabel.SIDEWALK
    assert side.sum() > 50
    z = pw[side][:, 2]
    # Kerb tops are 0.12 .. 0.18 m above the road; kerb faces lie between road and top.
    assert z.min() > -0.01 and z.max() < 0.19
    assert np.mean(z > 0.11) > 0.8


def test_principal_point_near_but_not_at_the_centre() -> None:
    for seed in range(6):
        base = base_intrinsics(seed)
        assert (base.width, base.height) == (2048, 1024)
        assert base.fx_px == pytest.approx(2262.5) and base.fy_px == base.fx_px
        assert abs(base.cx_px - 1024) <= 48 and abs(base.cy_px - 512) <= 24
        assert base.cx_px != 1024 and base.cy_px != 512
        assert abs(base.cx_px - 1023.5) > 1 and abs(base.cy_px - 511.5) > 1


@pytest.mark.parametrize("size", [(1024, 512), (512, 256), (200, 150)])
def test_intrinsics_follow_resized(size: tuple[int, int]) -> None:
    w, h = size
    f = render_frame(7, w, h)
    base = base_intrinsics(7)
    assert f.intrinsics == base.resized(w, h)
    sx = w / 2048
    assert f.intrinsics.fx_px == pytest.approx(2262.5 * sx)
    assert f.intrinsics.cx_px == pytest.approx((base.cx_px + 0.5) * sx - 0.5)
    assert f.rgb.shape == (h, w, 3) and f.depth_m.shape == (h, w)


def test_scaling_keeps_the_scene() -> None:
    big = render_frame(8, 512, 256)
    small = render_frame(8, 256, 128)
    assert small.intrinsics == base_intrinsics(8).resized(256, 128)
    assert big.intrinsics.fx_px == pytest.approx(2 * small.intrinsics.fx_px)
    # Pixel (u, v) of the small image has its centre at (2u + 0.5, 2v + 0.5) in the big one: the
    # mean of the 2x2 block straddles it. Compare where the four big pixels agree on the label.
    blocks = big.labels.reshape(128, 2, 256, 2).transpose(0, 2, 1, 3).reshape(128, 256, 4)
    same = np.all(blocks == blocks[..., :1], axis=-1)
    assert np.mean(small.labels[same] == blocks[..., 0][same]) > 0.97
    inv_big = np.where(np.isfinite(big.depth_m), 1.0 / big.depth_m, 0.0)
    inv_small = np.where(np.isfinite(small.depth_m), 1.0 / small.depth_m, 0.0)
    pooled = inv_big.reshape(128, 2, 256, 2).mean(axis=(1, 3))
    assert np.median(np.abs(pooled - inv_small)[same]) < 1e-3


def test_non_standard_aspect_ratio() -> None:
    f = render_frame(9, 160, 120)
    assert f.intrinsics.fx_px != pytest.approx(f.intrinsics.fy_px)
    road = f.labels == SynthLabel.ROAD
    assert np.abs(world_points(f)[road][:, 2]).max() < 0.01


# ------------------------------------------------------------------------------- sequences
def test_sequence_moves_forward_at_speed_and_is_stamped_at_17_hz() -> None:
    speed, rate = 12.0, 17.0
    frames = list(render_sequence(3, 5, 96, 48, speed_mps=speed, rate_hz=rate))
    assert [f.index for f in frames] == list(range(5))
    t = np.array([f.pose[:3, 3] for f in frames])
    step = np.diff(t, axis=0)
    np.testing.assert_allclose(step[:, 0], speed / rate, atol=1e-9)
    np.testing.assert_allclose(step[:, 1], 0.0, atol=1e-9)
    assert np.all(np.abs(step[:, 2]) < 0.01)  # bounce only
    np.testing.assert_allclose(np.linalg.norm(step, axis=1), speed / rate, atol=0.01)
    stamps = np.array([f.stamp_ns for f in frames])
    np.testing.assert_array_equal(stamps - stamps[0], [round(i * 1e9 / rate) for i in range(5)])
    assert all(f.intrinsics == frames[0].intrinsics for f in frames)
    # Frame 0 of a drive at the default speed is render_frame(index=0); frame k of the default
    # drive is render_frame(index=k).
    default = list(render_sequence(3, 3, 96, 48))
    np.testing.assert_array_equal(default[2].depth_m, render_frame(3, 96, 48, index=2).depth_m)
    np.testing.assert_array_equal(default[2].rgb, render_frame(3, 96, 48, index=2).rgb)


def test_moving_cars_move_and_everything_else_stays() -> None:
    cfg = SynthCityConfig(bounce_pitch_rad=0.0, bounce_height_m=0.0)
    moved = 0
    for seed in range(6):
        f0, f1 = render_sequence(seed, 2, 128, 64, speed_mps=0.0, rate_hz=2.0, config=cfg)
        np.testing.assert_array_equal(f0.pose, f1.pose)
        changed = f0.depth_m != f1.depth_m
        movers = [SynthLabel.CAR, SynthLabel.TRUCK, SynthLabel.BUS, SynthLabel.PERSON]
        mobile = np.isin(f0.labels, movers) | np.isin(f1.labels, movers)
        assert not np.any(changed & ~mobile)
        vehicles = movers[:3]
        car = np.isin(f0.labels, vehicles) | np.isin(f1.labels, vehicles)
        moved += int(np.sum(changed & car) > 0)
    assert moved >= 3


def test_long_drive_keeps_the_street_end_ahead() -> None:
    cfg = SynthCityConfig(street_length_m=(30.0, 30.0))
    frames = list(render_sequence(2, 2, 64, 32, speed_mps=100.0, rate_hz=1.0, config=cfg))
    last = frames[-1]
    assert last.pose[0, 3] == pytest.approx(100.0)
    ahead = last.depth_m[last.labels == SynthLabel.ROAD]
    assert ahead.max() > cfg.min_view_ahead_m * 0.5


# --------------------------------------------------------------------------------- variety
def test_variety_across_seeds() -> None:
    medians, sky, far, near = [], [], [], []
    for seed in range(100, 116):
        f = render_frame(seed, 128, 64)
        d = f.depth_m
        fin = np.isfinite(d)
        medians.append(np.median(d[fin]))
        sky.append(np.mean(~fin))
        far.append(d[fin].max())
        objects = fin & ~np.isin(f.labels, [SynthLabel.ROAD, SynthLabel.SIDEWALK])
        near.append(d[objects].min() if objects.any() else np.inf)
    assert np.std(np.log(medians)) > 0.15
    assert np.std(sky) > 0.02
    assert max(far) > 100.0  # some long views
    assert min(near) < 10.0  # some close obstacles
    assert len({round(m, 3) for m in medians}) == len(medians)


def test_config_changes_the_scene() -> None:
    narrow = SynthCityConfig(
        lanes=(1, 1), parking_lane_probability=0.0, sidewalk_width_m=(1.5, 1.5)
    )
    wide = SynthCityConfig(lanes=(4, 4), parking_lane_probability=1.0, sidewalk_width_m=(6.0, 6.0))
    a = render_frame(1, 128, 64, narrow)
    b = render_frame(1, 128, 64, wide)
    assert np.mean(b.labels == SynthLabel.ROAD) > np.mean(a.labels == SynthLabel.ROAD)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs",
    [{"width": 0}, {"height": -4}, {"width": 12.5}, {"seed": -1}, {"seed": 1.5}, {"index": -1}],
)
def test_render_frame_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"seed": 0, "width": 32, "height": 16}
    args.update(kwargs)
    with pytest.raises(InputError, match=next(iter(kwargs))):
        render_frame(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_frames": 0},
        {"n_frames": 2.0},
        {"speed_mps": -1.0},
        {"speed_mps": float("nan")},
        {"rate_hz": 0.0},
        {"width": -1},
    ],
)
def test_render_sequence_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"seed": 0, "n_frames": 2, "width": 32, "height": 16}
    args.update(kwargs)
    with pytest.raises(InputError, match=next(iter(kwargs))):
        render_sequence(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fx_px": 0.0},
        {"lanes": (3, 2)},
        {"lane_width_m": (3.0,)},
        {"tree_probability": 1.5},
        {"kerb_height_m": (0.1, 0.9)},
        {"sensor_noise_std": -1.0},
        {"street_length_m": (0.0, 10.0)},
        {"camera_height_m": float("inf")},
        {"base_width": 10},
        {"fog_distance_m": (5.0, "far")},
        {"principal_point_jitter_px": (-1.0, 2.0)},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        SynthCityConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    cfg = SynthCityConfig(lanes=(2, 3), speed_mps=5.0)
    assert SynthCityConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="colour"):
        SynthCityConfig.from_dict({"colour": 1})
    with pytest.raises(ConfigError):
        render_frame(0, 32, 16, config={"lanes": (2, 2)})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- data set, I/O
def test_dataset_samples() -> None:
    ds = SynthCityDataset([4, 9], 64, 32, frames_per_seed=2, index_stride=5, fast_malloc=False)
    assert len(ds) == 4
    s = ds[3]
    assert set(s) >= {"rgb", "depth_m", "intrinsics", "seed", "index"}
    assert s["seed"] == 9 and s["index"] == 5
    assert s["rgb"].shape == (32, 64, 3) and s["rgb"].dtype == np.uint8
    assert s["depth_m"].shape == (32, 64) and s["depth_m"].dtype == np.float32
    assert isinstance(s["intrinsics"], Intrinsics)
    np.testing.assert_array_equal(s["depth_m"], render_frame(9, 64, 32, index=5).depth_m)
    np.testing.assert_array_equal(ds[-1]["rgb"], s["rgb"])
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(InputError):
        SynthCityDataset([1], 64, 32, frames_per_seed=0)
    with pytest.raises(InputError):
        SynthCityDataset([-3], 64, 32)


@pytest.mark.parametrize("depth_format", ["npy", "png16"])
def test_write_sequence(tmp_path, depth_format: str) -> None:  # type: ignore[no-untyped-def]
    out = write_sequence(
        tmp_path / "seq",
        12,
        3,
        64,
        32,
        depth_format=depth_format,
        progress=False,
        fast_malloc=False,
    )
    frames = list(render_sequence(12, 3, 64, 32))
    meta = json.loads((out / "frames.json").read_text())
    assert meta["seed"] == 12 and len(meta["frames"]) == 3
    intr = Intrinsics.from_dict(json.loads((out / "intrinsics.json").read_text()))
    assert intr == frames[0].intrinsics
    for rec, f in zip(meta["frames"], frames, strict=True):
        assert rec["stamp_ns"] == f.stamp_ns
        np.testing.assert_allclose(rec["pose"], f.pose)
        rgb = imread(out / rec["rgb"])[..., ::-1]
        np.testing.assert_array_equal(rgb, f.rgb)
        labels = imread(out / rec["labels"])
        np.testing.assert_array_equal(labels, f.labels)
        if depth_format == "npy":
            np.testing.assert_array_equal(np.load(out / rec["depth"]), f.depth_m)
        else:
            mm = imread(out / rec["depth"])
            assert mm.dtype == np.uint16
            ok = np.isfinite(f.depth_m) & (f.depth_m < 65.0)
            np.testing.assert_allclose(mm[ok] / 1000.0, f.depth_m[ok], atol=6e-4)
            assert np.all(mm[~np.isfinite(f.depth_m)] == 0)
    assert not list(out.rglob("*.tmp*"))
    with pytest.raises(InputError, match="depth_format"):
        write_sequence(tmp_path / "bad", 1, 1, 32, 16, depth_format="exr", fast_malloc=False)


def test_tune_allocator_in_a_fresh_process() -> None:
    # Process-wide setting: exercised in a child so the test session keeps glibc's defaults.
    code = (
        "from cloudypoints_core.data.synthcity import tune_allocator, render_frame\n"
        "ok = tune_allocator()\n"
        "f = render_frame(1, 64, 32)\n"
        "print(ok, f.rgb.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = (
        "True" if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else "False"
    )
    assert out.stdout.split()[0] == expected
    assert "(32, 64, 3)" in out.stdout
