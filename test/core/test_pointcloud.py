"""Tests of cloudypoints_core.pointcloud: PointCloud2 bytes decoded independently, PLY files."""

from __future__ import annotations

import array
import math

import numpy as np
import pytest

from cloudypoints_core import pointcloud
from cloudypoints_core.errors import InputError
from cloudypoints_core.geometry import Intrinsics, backproject
from cloudypoints_core.pointcloud import (
    FLOAT32,
    POINT_STEP,
    UINT32,
    PackedCloud,
    PointFieldSpec,
    backproject_packed,
    pack_points,
    read_ply,
    unpack_points,
    write_ply,
)


def decode_independently(cloud: PackedCloud) -> tuple[np.ndarray, np.ndarray | None]:
    """Read points back using only the declared field offsets (as a ROS subscriber would)."""
    offsets = {f.name: f.offset for f in cloud.fields}
    assert all(f.datatype == FLOAT32 and f.count == 1 for f in cloud.fields)
    raw = bytes(cloud.data)
    assert len(raw) == cloud.row_step * cloud.height
    names = ["x", "y", "z"] + (["rgb"] if "rgb" in offsets else [])
    dtype = np.dtype(
        {
            "names": names,
            "formats": ["<f4", "<f4", "<f4"] + (["<u4"] if "rgb" in offsets else []),
            "offsets": [offsets[n] for n in names],
            "itemsize": cloud.point_step,
        }
    )
    rec = np.frombuffer(raw, dtype=dtype).reshape(cloud.height, cloud.width)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=-1)
    rgb = None
    if "rgb" in offsets:
        word = rec["rgb"]
        rgb = np.stack([(word >> 16) & 255, (word >> 8) & 255, word & 255], -1).astype(np.uint8)
    return xyz, rgb


def random_cloud(rng, shape: tuple[int, ...], nan_fraction: float = 0.0):
    xyz = rng.normal(size=(*shape, 3)).astype(np.float32)
    if nan_fraction:
        xyz[rng.random(shape) < nan_fraction] = np.nan
    rgb = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    return xyz, rgb


class TestPackPoints:
    @pytest.mark.parametrize("shape", [(7, 11), (100, 2048), (1, 5), (37,), (1,), (0,)])
    @pytest.mark.parametrize("coloured", [True, False])
    def test_layout_decoded_independently(self, shape, coloured: bool, rng) -> None:
        xyz, rgb = random_cloud(rng, shape, nan_fraction=0.1 if len(shape) == 2 else 0.0)
        cloud = pack_points(xyz, rgb if coloured else None)
        height, width = shape if len(shape) == 2 else (1, shape[0])
        assert (cloud.height, cloud.width) == (height, width)
        assert cloud.point_step == POINT_STEP == 16 and cloud.row_step == 16 * width
        assert cloud.is_bigendian is False
        expected_fields = [("x", 0), ("y", 4), ("z", 8)] + ([("rgb", 12)] if coloured else [])
        assert [(f.name, f.offset) for f in cloud.fields] == expected_fields
        assert all(f.datatype == 7 for f in cloud.fields)
        assert cloud.is_dense == bool(np.isfinite(xyz).all())
        got_xyz, got_rgb = decode_independently(cloud)
        np.testing.assert_array_equal(got_xyz, xyz.reshape(height, width, 3))
        words = np.frombuffer(bytes(cloud.data), dtype="<u4").reshape(-1, 4)[:, 3]
        if coloured:
            np.testing.assert_array_equal(got_rgb, rgb.reshape(height, width, 3))
            # The float's four bytes are the little-endian uint32 0x00RRGGBB: B, G, R, 0.
            r, g, b = (rgb.reshape(-1, 3)[:, k].astype(np.uint32) for k in range(3))
            np.testing.assert_array_equal(words, (r << 16) | (g << 8) | b)
            tail = np.frombuffer(bytes(cloud.data), np.uint8).reshape(-1, 16)[:, 12:]
            np.testing.assert_array_equal(tail, np.stack([b, g, r, 0 * r], -1))
        else:
            np.testing.assert_array_equal(words, 0)  # padding is zeroed, not leftover memory

    def test_float64_and_strided_inputs(self, rng) -> None:
        xyz = rng.normal(size=(20, 30, 3))
        rgb = rng.integers(0, 256, size=(20, 60, 3), dtype=np.uint8)[:, ::2]
        cloud = pack_points(xyz[:, :, :], rgb)
        got_xyz, got_rgb = decode_independently(cloud)
        np.testing.assert_array_equal(got_xyz, xyz.astype(np.float32))
        np.testing.assert_array_equal(got_rgb, rgb)

    def test_inf_is_not_dense(self) -> None:
        xyz = np.zeros((4, 3), np.float32)
        xyz[2, 0] = np.inf
        assert not pack_points(xyz).is_dense

    @pytest.mark.parametrize(
        ("xyz", "rgb"),
        [
            (np.zeros((4, 2), np.float32), None),
            (np.zeros((4, 3), np.int32), None),
            (np.zeros((2, 2, 2, 3), np.float32), None),
            (np.zeros((0, 5, 3), np.float32), None),
            (np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)),
            (np.zeros((4, 3), np.float32), np.zeros((5, 3), np.uint8)),
            ([[0.0, 0.0, 0.0]], None),
        ],
    )
    def test_errors(self, xyz, rgb) -> None:
        with pytest.raises(InputError):
            pack_points(xyz, rgb)

    def test_data_as_array_for_rclpy(self, rng) -> None:
        cloud = pack_points(*random_cloud(rng, (3, 4)))
        data = cloud.data_as_array()
        assert isinstance(data, array.array) and data.typecode == "B"
        assert data.tobytes() == cloud.data.tobytes() and len(data) == 3 * 4 * 16


class TestUnpack:
    @pytest.mark.parametrize("shape", [(6, 9), (13,)])
    def test_round_trip(self, shape, rng) -> None:
        xyz, rgb = random_cloud(rng, shape, nan_fraction=0.2)
        got_xyz, got_rgb = unpack_points(pack_points(xyz, rgb))
        np.testing.assert_array_equal(got_xyz, xyz)
        np.testing.assert_array_equal(got_rgb, rgb)
        only_xyz, none = unpack_points(pack_points(xyz))
        assert none is None
        np.testing.assert_array_equal(only_xyz, xyz)

    @pytest.mark.parametrize("big_endian", [False, True])
    def test_foreign_layout(self, big_endian: bool, rng) -> None:
        """Another driver's cloud: other field order, wider points, padded rows, byte order."""
        h, w, step, row_step = 3, 5, 32, 5 * 32 + 8
        xyz, rgb = random_cloud(rng, (h, w))
        e = ">" if big_endian else "<"
        buf = np.zeros(h * row_step, np.uint8)
        rec = np.ndarray(
            (h, w),
            dtype=np.dtype(
                {
                    "names": ["rgb", "z", "x", "y"],
                    "formats": [e + "u4", e + "f4", e + "f4", e + "f4"],
                    "offsets": [0, 8, 16, 24],
                    "itemsize": step,
                }
            ),
            buffer=buf,
            strides=(row_step, step),
        )
        rec["x"], rec["y"], rec["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
        r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
        rec["rgb"] = (r << 16) | (g << 8) | b
        cloud = PackedCloud(
            fields=(
                PointFieldSpec("rgb", 0, UINT32),
                PointFieldSpec("z", 8, FLOAT32),
                PointFieldSpec("x", 16, FLOAT32),
                PointFieldSpec("y", 24, FLOAT32),
            ),
            data=buf,
            height=h,
            width=w,
            point_step=step,
            row_step=row_step,
            is_dense=True,
            is_bigendian=big_endian,
        )
        got_xyz, got_rgb = unpack_points(cloud)
        np.testing.assert_array_equal(got_xyz, xyz)
        np.testing.assert_array_equal(got_rgb, rgb)

    def test_missing_fields(self) -> None:
        cloud = PackedCloud(
            (PointFieldSpec("x", 0, FLOAT32),), np.zeros(16, np.uint8), 1, 1, 16, 16, True
        )
        with pytest.raises(InputError, match="lacks"):
            unpack_points(cloud)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"data": np.zeros(31, np.uint8)},
            {"data": np.zeros(32, np.float32)},
            {"row_step": 8},
            {"fields": (PointFieldSpec("x", 14, FLOAT32),)},
            {"fields": (PointFieldSpec("x", 0, 99),)},
            {"point_step": 0},
        ],
    )
    def test_packed_cloud_validation(self, kwargs) -> None:
        args = dict(
            fields=(PointFieldSpec("x", 0, FLOAT32),),
            data=np.zeros(32, np.uint8),
            height=1,
            width=2,
            point_step=16,
            row_step=32,
            is_dense=True,
        )
        args.update(kwargs)
        with pytest.raises(InputError):
            PackedCloud(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ one pass
INTR = Intrinsics(130.0, 128.0, 79.3, 61.7, 160, 120)
INTR_DIST = Intrinsics(130.0, 128.0, 79.3, 61.7, 160, 120, (-0.2, 0.05, 0.001, -0.001, 0.0))
# An integer principal point puts exact zeros in the ray grid (signed-zero corner cases).
INTR_INT = Intrinsics(130.0, 128.0, 80.0, 60.0, 160, 120)


@pytest.mark.parametrize(
    "intr", [INTR, INTR_DIST, INTR_INT], ids=["pinhole", "distorted", "integer-centre"]
)
@pytest.mark.parametrize("coloured", [True, False])
@pytest.mark.parametrize("organised", [True, False])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"stride": 3},
        {"roi": (10, 7, 101, 53)},
        {"roi": (10, 7, 101, 53), "stride": 4},
        {"min_range_m": 2.0, "max_range_m": 20.0},
    ],
)
@pytest.mark.parametrize("path", ["default", "numpy"])
def test_backproject_packed_equals_backproject_then_pack(
    intr, coloured: bool, organised: bool, options, path: str, rng, monkeypatch
) -> None:
    if path == "numpy":  # the code used without numba (the default path compiles with it)
        monkeypatch.setattr(pointcloud._fused, "available", lambda: False)
    depth = rng.uniform(0.5, 30.0, size=intr.shape).astype(np.float32)
    depth[rng.random(intr.shape) < 0.1] = np.nan
    depth[0, :5] = [0.0, -1.0, np.inf, -np.inf, np.nan]
    rgb = rng.integers(0, 256, size=(*intr.shape, 3), dtype=np.uint8) if coloured else None
    ps = backproject(depth, intr, rgb=rgb, organised=organised, **options)
    expected = pack_points(ps.xyz, ps.rgb)
    got = backproject_packed(depth, intr, rgb, organised=organised, **options)
    assert got.fields == expected.fields
    assert (got.height, got.width, got.row_step) == (
        expected.height,
        expected.width,
        expected.row_step,
    )
    assert got.is_dense == expected.is_dense == (not organised)
    np.testing.assert_array_equal(got.data, expected.data)


@pytest.mark.parametrize("shape", [(7, 11), (100, 2048), (37,), (1,)])
def test_colour_without_cv2(shape, monkeypatch, rng) -> None:
    """The numpy colour route (used when OpenCV is missing) packs the same bytes."""
    xyz, rgb = random_cloud(rng, shape)
    with_cv2 = pack_points(xyz, rgb)
    monkeypatch.setattr(pointcloud, "_cv2_or_none", lambda: None)
    without = pack_points(xyz, rgb)
    np.testing.assert_array_equal(without.data, with_cv2.data)
    _, got_rgb = decode_independently(without)
    np.testing.assert_array_equal(got_rgb.reshape(rgb.shape), rgb)


def test_out_buffer(rng) -> None:
    depth = rng.uniform(1.0, 5.0, size=INTR.shape).astype(np.float32)
    rgb = rng.integers(0, 256, size=(*INTR.shape, 3), dtype=np.uint8)
    out = np.zeros(120 * 160 * 16 + 5, np.uint8)
    cloud = backproject_packed(depth, INTR, rgb, out=out)
    assert np.shares_memory(cloud.data, out) and cloud.data.size == 120 * 160 * 16
    np.testing.assert_array_equal(cloud.data, backproject_packed(depth, INTR, rgb).data)
    xyz = rng.normal(size=(10, 3)).astype(np.float32)
    packed = pack_points(xyz, out=out)
    assert np.shares_memory(packed.data, out)
    np.testing.assert_array_equal(unpack_points(packed)[0], xyz)
    for bad in (np.zeros(10, np.uint8), np.zeros((200, 200), np.uint8)[:, ::2], [0] * 400):
        with pytest.raises(InputError, match="out"):
            pack_points(xyz, out=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="out"):
        backproject_packed(depth, INTR, organised=False, out=np.zeros(100, np.uint8))


@pytest.mark.parametrize("coloured", [True, False])
def test_unorganised_cloud_keeps_valid_points_in_row_major_order(coloured: bool, rng) -> None:
    """The unorganised path (assembled whole, then compacted) against points decoded from the
    organised cloud and filtered independently; also into an ``out`` buffer."""
    depth = rng.uniform(0.5, 30.0, size=INTR.shape).astype(np.float32)
    depth[rng.random(INTR.shape) < 0.3] = np.nan
    depth[1, :4] = [0.0, -2.0, np.inf, 45.0]  # invalid, invalid, invalid, beyond max_range_m
    rgb = rng.integers(0, 256, size=(*INTR.shape, 3), dtype=np.uint8) if coloured else None
    organised = backproject_packed(depth, INTR, rgb, max_range_m=40.0)
    xyz, colours = decode_independently(organised)
    keep = np.isfinite(xyz[..., 2])
    flat = backproject_packed(depth, INTR, rgb, max_range_m=40.0, organised=False)
    assert (flat.height, flat.width, flat.is_dense) == (1, int(keep.sum()), True)
    got_xyz, got_rgb = decode_independently(flat)
    np.testing.assert_array_equal(got_xyz[0], xyz[keep])
    if coloured:
        assert colours is not None and got_rgb is not None
        np.testing.assert_array_equal(got_rgb[0], colours[keep])
    else:
        assert flat.field_names == ("x", "y", "z")
        np.testing.assert_array_equal(flat.data.view(np.uint32).reshape(-1, 4)[:, 3], 0)
    out = np.full(INTR.width * INTR.height * POINT_STEP, 7, np.uint8)
    into = backproject_packed(depth, INTR, rgb, max_range_m=40.0, organised=False, out=out)
    assert np.shares_memory(into.data, out)
    np.testing.assert_array_equal(into.data, flat.data)


def test_compiled_unorganised_path_is_used_and_matches_numpy_at_the_range_edges(
    rng, monkeypatch
) -> None:
    """With numba installed (requirements.txt) unorganised clouds take the compiled path, and
    its validity test is numpy's to the last float32: bounds that float32 rounds (0.1, 30.3)
    and depths right at them, both sides."""
    from cloudypoints_core import _fused

    assert _fused.available(), "numba from requirements.txt should be importable here"
    edges = []
    for bound in (0.1, 30.3):
        b = np.float32(bound)
        edges += [np.nextafter(b, np.float32(0)), b, np.nextafter(b, np.float32(100))]
    depth = rng.uniform(0.05, 31.0, size=INTR.shape).astype(np.float32)
    depth[5, : len(edges)] = edges
    depth[6, :4] = [np.nan, np.inf, 0.0, -0.0]
    rgb = rng.integers(0, 256, size=(*INTR.shape, 3), dtype=np.uint8)
    for kwargs in (
        {"min_range_m": 0.1, "max_range_m": 30.3},
        {"min_range_m": 0.0, "max_range_m": math.inf},
        {"min_range_m": 0.1, "max_range_m": 1e39},  # beyond float32: no upper limit
    ):
        compiled = backproject_packed(depth, INTR, rgb, organised=False, **kwargs)
        calls: list[int] = []

        def numpy_only(calls: list[int] = calls) -> bool:
            calls.append(1)
            return False

        monkeypatch.setattr(pointcloud._fused, "available", numpy_only)
        reference = backproject_packed(depth, INTR, rgb, organised=False, **kwargs)
        monkeypatch.undo()
        assert calls, "the numpy path was not taken"
        assert compiled.width == reference.width, kwargs
        np.testing.assert_array_equal(compiled.data, reference.data)


def test_numba_can_be_switched_off(monkeypatch) -> None:
    from cloudypoints_core import _fused

    monkeypatch.setenv(_fused.DISABLE_ENV, "1")
    assert _fused._numba() is None
    monkeypatch.setenv(_fused.DISABLE_ENV, "0")
    assert _fused._numba() is not None


def test_unorganised_cloud_without_valid_points() -> None:
    cloud = backproject_packed(np.full(INTR.shape, np.nan, np.float32), INTR, organised=False)
    assert (cloud.height, cloud.width, cloud.data.size, cloud.is_dense) == (1, 0, 0, True)


def test_backproject_packed_with_unusable_rays(rng) -> None:
    # A lens model that folds over near the corners: those pixels have no ray.
    dist = (0.3, -0.1, 0.001, 0.0005, 0.01, 0.5, -0.05, 0.02)
    intr = Intrinsics(99.0, 102.0, 75.5, 63.4, 160, 120, dist, "rational_polynomial")
    depth = rng.uniform(1.0, 5.0, size=intr.shape).astype(np.float32)
    for options in ({}, {"stride": 2}, {"roi": (3, 5, 150, 100)}):
        cloud = backproject_packed(depth, intr, **options)
        assert not cloud.is_dense
        ps = backproject(depth, intr, **options)
        np.testing.assert_array_equal(cloud.data, pack_points(ps.xyz).data)
        flat = backproject_packed(depth, intr, organised=False, **options)
        assert flat.is_dense and flat.width == int((~np.isnan(ps.xyz[..., 2])).sum())


def test_backproject_packed_all_valid_is_dense(rng) -> None:
    depth = rng.uniform(1.0, 5.0, size=INTR.shape).astype(np.float32)
    cloud = backproject_packed(depth, INTR)
    assert cloud.is_dense and (cloud.height, cloud.width) == (120, 160)
    xyz, _ = decode_independently(cloud)
    np.testing.assert_array_equal(xyz[..., 2], depth)
    u = np.arange(160, dtype=np.float64)
    np.testing.assert_allclose(xyz[..., 0], depth * ((u - INTR.cx_px) / INTR.fx_px), rtol=1e-6)


def test_backproject_packed_errors() -> None:
    with pytest.raises(InputError):
        backproject_packed(np.zeros((10, 10), np.float32), INTR)
    with pytest.raises(InputError):
        backproject_packed(np.ones((120, 160), np.float32), INTR, np.zeros((120, 160), np.uint8))


# ------------------------------------------------------------------------------ PLY
class TestPly:
    def test_round_trip_with_colour_and_header(self, tmp_path, rng) -> None:
        xyz, rgb = random_cloud(rng, (9, 13), nan_fraction=0.25)
        path = write_ply(tmp_path / "cloud.ply", xyz, rgb)
        valid = np.isfinite(xyz).all(-1)
        n = int(valid.sum())
        blob = path.read_bytes()
        header = (
            "ply\nformat binary_little_endian 1.0\ncomment written by CloudyPoints\n"
            f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        ).encode()
        assert blob.startswith(header) and len(blob) == len(header) + 15 * n
        # The first vertex, decoded by hand.
        first = np.frombuffer(blob, dtype="<f4", count=3, offset=len(header))
        np.testing.assert_array_equal(first, xyz[valid][0])
        assert tuple(blob[len(header) + 12 : len(header) + 15]) == tuple(rgb[valid][0])
        got_xyz, got_rgb = read_ply(path)
        np.testing.assert_array_equal(got_xyz, xyz[valid])
        np.testing.assert_array_equal(got_rgb, rgb[valid])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.ply"]  # no temp files

    def test_without_colour(self, tmp_path, rng) -> None:
        xyz = rng.normal(size=(50, 3))
        path = write_ply(tmp_path / "sub" / "plain.ply", xyz)
        assert b"red" not in path.read_bytes()[:300]
        got_xyz, got_rgb = read_ply(path)
        assert got_rgb is None
        np.testing.assert_array_equal(got_xyz, xyz.astype(np.float32))

    def test_empty(self, tmp_path) -> None:
        path = write_ply(tmp_path / "e.ply", np.full((2, 3), np.nan), np.zeros((2, 3), np.uint8))
        xyz, rgb = read_ply(path)
        assert xyz.shape == (0, 3) and rgb is not None and rgb.shape == (0, 3)

    def test_failed_write_keeps_old_file(self, tmp_path) -> None:
        path = write_ply(tmp_path / "c.ply", np.zeros((3, 3)))
        before = path.read_bytes()
        with pytest.raises(InputError):
            write_ply(path, np.zeros((3, 3)), np.zeros((4, 3), np.uint8))
        assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1

    def test_read_ascii_and_big_endian(self, tmp_path) -> None:
        ascii_ply = (
            "ply\nformat ascii 1.0\nelement camera 1\nproperty float k\n"
            "element vertex 2\nproperty double x\nproperty double y\nproperty double z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\n"
            "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
            "7\n1 2 3 10 20 30\n-1 0.5 2 255 0 1\n3 0 1 1\n"
        )
        (tmp_path / "a.ply").write_text(ascii_ply)
        xyz, rgb = read_ply(tmp_path / "a.ply")
        np.testing.assert_array_equal(xyz, [[1, 2, 3], [-1, 0.5, 2]])
        np.testing.assert_array_equal(rgb, [[10, 20, 30], [255, 0, 1]])
        body = np.array([(1.5, -2.0, 3.25)], dtype=[("x", ">f4"), ("y", ">f4"), ("z", ">f4")])
        header = (
            b"ply\nformat binary_big_endian 1.0\nelement vertex 1\nproperty float x\n"
            b"property float y\nproperty float z\nend_header\n"
        )
        (tmp_path / "b.ply").write_bytes(header + body.tobytes())
        xyz, rgb = read_ply(tmp_path / "b.ply")
        assert rgb is None
        np.testing.assert_array_equal(xyz, [[1.5, -2.0, 3.25]])

    @pytest.mark.parametrize(
        "content",
        [
            b"not a ply file",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
            b"property float y\nproperty float z\nend_header\n" + b"\0" * 20,
            b"ply\nformat binary_middle_endian 1.0\nend_header\n",
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n",
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quaternion x\nend_header\n",
        ],
    )
    def test_read_errors(self, tmp_path, content: bytes) -> None:
        (tmp_path / "bad.ply").write_bytes(content)
        with pytest.raises(InputError):
            read_ply(tmp_path / "bad.ply")

    def test_write_errors(self, tmp_path) -> None:
        with pytest.raises(InputError):
            write_ply(tmp_path / "x.ply", np.zeros((3, 2)))
