"""Tests of cloudypoints_core.geometry: intrinsics bookkeeping, OpenCV sampling, rays, 3D."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from cloudypoints_core import geometry
from cloudypoints_core.errors import InputError, IntrinsicsError
from cloudypoints_core.geometry import (
    Interpolation,
    Intrinsics,
    PointSet,
    _ray_grid_cached,
    backproject,
    crop_image,
    distort_normalised,
    pixel_rays,
    project,
    ray_grid,
    resize_image,
)

PLUMB_BOB = (-0.28, 0.07, 0.0005, 0.0002, -0.008)
PLUMB_BOB_MILD = (-0.05, 0.01, 0.0003, -0.0002, 0.0)
RATIONAL = (0.8, 0.2, 0.0005, -0.0003, 0.005, 1.15, 0.45, 0.03)


def make_intr(dist: tuple[float, ...] = (), width: int = 160, height: int = 120) -> Intrinsics:
    model = "rational_polynomial" if len(dist) == 8 else "plumb_bob"
    # An off-centre principal point and fx != fy catch swapped or centred assumptions.
    return Intrinsics(
        fx_px=0.80 * width,
        fy_px=0.82 * width,
        cx_px=0.47 * width + 0.3,
        cy_px=0.53 * height - 0.2,
        width=width,
        height=height,
        dist=dist,
        distortion_model=model,
    )


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))


# ------------------------------------------------------------------------------ Intrinsics
class TestIntrinsicsFromRos:
    K = [500.0, 0.0, 320.5, 0.0, 505.0, 240.25, 0.0, 0.0, 1.0]

    def test_k_fields(self) -> None:
        intr = Intrinsics.from_ros(self.K, 640, 480)
        assert (intr.fx_px, intr.fy_px, intr.cx_px, intr.cy_px) == (500.0, 505.0, 320.5, 240.25)
        assert intr.size == (640, 480) and intr.shape == (480, 640)
        assert not intr.has_distortion
        np.testing.assert_array_equal(intr.k_matrix(), np.reshape(self.K, (3, 3)))

    @pytest.mark.parametrize(
        ("model", "d"),
        [
            ("plumb_bob", PLUMB_BOB),
            ("plumb_bob", PLUMB_BOB[:4]),
            ("rational_polynomial", RATIONAL),
        ],
    )
    def test_distortion_kept(self, model: str, d: tuple[float, ...]) -> None:
        p = [400.0, 0, 300, 0, 0, 400.0, 200, 0, 0, 0, 1, 0]
        intr = Intrinsics.from_ros(self.K, 640, 480, d, model, p)
        # With distortion, K (not P) describes the raw image.
        assert intr.fx_px == 500.0 and intr.dist == tuple(d)
        assert intr.distortion_model == model
        assert intr.d_vector()[: len(d)].tolist() == list(d)

    def test_p_used_when_rectified(self) -> None:
        p = [480.0, 0, 310.0, 0, 0, 482.0, 235.0, 0, 0, 0, 1, 0]
        intr = Intrinsics.from_ros(self.K, 640, 480, [0.0] * 5, "plumb_bob", p)
        assert (intr.fx_px, intr.fy_px, intr.cx_px, intr.cy_px) == (480.0, 482.0, 310.0, 235.0)
        # image_rect with the raw camera's D: rectified=True ignores D and trusts P.
        intr2 = Intrinsics.from_ros(self.K, 640, 480, PLUMB_BOB, "plumb_bob", p, rectified=True)
        assert intr2 == intr and not intr2.has_distortion

    def test_zero_p_falls_back_to_k(self) -> None:
        intr = Intrinsics.from_ros(self.K, 640, 480, (), "plumb_bob", [0.0] * 12)
        assert intr.fx_px == 500.0

    def test_unknown_model_with_zero_d_is_accepted(self) -> None:
        intr = Intrinsics.from_ros(self.K, 640, 480, [0.0] * 4, "equidistant")
        assert not intr.has_distortion

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"k": [1.0] * 8}, "9 values"),
            ({"d": [0.1, 0.0, 0.0, 0.0, 0.0], "distortion_model": "equidistant"}, "not supported"),
            ({"d": [0.1] * 5, "distortion_model": "rational_polynomial"}, "8 coefficients"),
            ({"d": [0.1] * 6}, "5 coefficients"),
            ({"d": [float("nan")] * 5}, "finite"),
            ({"p": [1.0] * 11}, "12 values"),
            ({"k": [0.0] * 9}, "fx_px"),
            ({"k": [500, 0, 320, 0, float("nan"), 240, 0, 0, 1]}, "fy_px"),
            ({"width": 0}, "width"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, object], match: str) -> None:
        args: dict[str, object] = {"k": self.K, "width": 640, "height": 480}
        args.update(kwargs)
        with pytest.raises(IntrinsicsError, match=match):
            Intrinsics.from_ros(**args)  # type: ignore[arg-type]


class TestIntrinsicsValue:
    @pytest.mark.parametrize(
        "change",
        [
            {"fx_px": 0.0},
            {"fx_px": -1.0},
            {"fy_px": math.nan},
            {"fx_px": math.inf},
            {"fx_px": True},
            {"cx_px": math.nan},
            {"cy_px": "1"},
            {"width": 0},
            {"height": -3},
            {"width": 10.5},
            {"dist": (math.nan, 0, 0, 0, 0)},
            {"dist": (0.1,) * 6},
            {"distortion_model": "kannala_brandt"},
        ],
    )
    def test_validation(self, change: dict[str, object]) -> None:
        base = dict(fx_px=100.0, fy_px=100.0, cx_px=50.0, cy_px=40.0, width=100, height=80)
        base.update(change)
        with pytest.raises(IntrinsicsError):
            Intrinsics(**base)  # type: ignore[arg-type]

    def test_numpy_scalars_normalised_and_hashable(self) -> None:
        a = Intrinsics(np.float32(100), np.float64(101), np.float32(50), 40, np.int64(100), 80)
        b = Intrinsics(100.0, 101.0, 50.0, 40.0, 100, 80, dist=(0.0,) * 5)
        assert a == b and hash(a) == hash(b) and b.dist == ()
        assert type(a.fx_px) is float and type(a.width) is int
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.fx_px = 3.0  # type: ignore[misc]

    def test_dict_round_trip(self) -> None:
        intr = make_intr(RATIONAL)
        assert Intrinsics.from_dict(intr.to_dict()) == intr
        with pytest.raises(IntrinsicsError, match="lacks"):
            Intrinsics.from_dict({"fx_px": 1.0})
        with pytest.raises(IntrinsicsError):
            Intrinsics.from_dict({**intr.to_dict(), "fx_px": "wide"})

    def test_resize_and_crop_bookkeeping(self) -> None:
        intr = make_intr(width=640, height=480)
        r = intr.resized(320, 120)
        assert r.fx_px == intr.fx_px / 2 and r.fy_px == intr.fy_px / 4
        assert r.cx_px == (intr.cx_px + 0.5) / 2 - 0.5
        assert r.cy_px == (intr.cy_px + 0.5) / 4 - 0.5
        assert intr.scaled(0.5) == intr.resized(320, 240)
        c = intr.cropped(10, 20, 100, 50)
        assert (c.cx_px, c.cy_px, c.width, c.height) == (intr.cx_px - 10, intr.cy_px - 20, 100, 50)
        assert c.fx_px == intr.fx_px
        assert intr.resized(640, 480) == intr

    @pytest.mark.parametrize(
        "window", [(-1, 0, 10, 10), (0, 0, 0, 10), (600, 0, 41, 10), (0, 400, 10, 81)]
    )
    def test_bad_crop(self, window: tuple[int, int, int, int]) -> None:
        with pytest.raises(IntrinsicsError):
            make_intr(width=640, height=480).cropped(*window)

    def test_bad_resize(self) -> None:
        with pytest.raises(IntrinsicsError):
            make_intr().resized(0, 10)

    @pytest.mark.parametrize("dist", [(), PLUMB_BOB, RATIONAL])
    def test_flip_matches_mirrored_points(self, dist: tuple[float, ...], rng) -> None:
        intr = make_intr(dist)
        pts = rng.uniform([-1, -0.8, 2], [1, 0.8, 6], size=(200, 3))
        uv, _ = project(pts, intr)
        mirrored = pts * [-1, 1, 1]
        uv_f, _ = project(mirrored, intr.flipped_horizontally())
        np.testing.assert_allclose(uv_f[:, 0], intr.width - 1 - uv[:, 0], atol=1e-9)
        np.testing.assert_allclose(uv_f[:, 1], uv[:, 1], atol=1e-9)


# ------------------------------------------------------------------------------ OpenCV sampling
def ramp(width: int, height: int, axis: int) -> np.ndarray:
    """An image whose value is its own column (axis 1) or row (axis 0) coordinate."""
    u, v = pixel_grid(width, height)
    return (u if axis == 1 else v).astype(np.float32)


@pytest.mark.parametrize(
    ("size", "interpolation"),
    [
        ((320, 240), "linear"),
        ((160, 120), "linear"),
        ((213, 157), "linear"),
        ((1000, 701), "linear"),
        ((320, 240), "area"),
        ((160, 120), "area"),
        ((213, 157), "area"),
        ((97, 61), "area"),
    ],
)
def test_resized_intrinsics_match_opencv_sampling(
    size: tuple[int, int], interpolation: Interpolation
) -> None:
    """cv2.resize samples a linear ramp exactly where the resized intrinsics put each pixel.

    Bilinear sampling (and box averaging) of a linear function returns its value at the sample
    position (box centre), so the resized ramp tells which source coordinate each destination
    pixel shows. Its ray through the source intrinsics must equal its ray through the resized ones.
    """
    intr = make_intr(width=640, height=480)
    w, h = size
    for axis in (1, 0):
        out, new = resize_image(ramp(640, 480, axis), intr, w, h, interpolation)
        assert out.shape == (h, w) and new.size == (w, h)
        if axis == 1:
            f, c, f2, c2, values = intr.fx_px, intr.cx_px, new.fx_px, new.cx_px, out[0, :]
        else:
            f, c, f2, c2, values = intr.fy_px, intr.cy_px, new.fy_px, new.cy_px, out[:, 0]
        # Leave out the borders, where OpenCV clamps samples to the edge.
        inner = slice(3, values.size - 3)
        coord = np.arange(values.size, dtype=np.float64)[inner]
        # Where the ray through the sampled source coordinate crosses the resized image.
        landed = (values[inner] - c) / f * f2 + c2
        # OpenCV's area tables drop box fractions below 1e-3, which for a non-integer factor
        # moves a box centre by a few thousandths of a destination pixel; the rest is exact. (The
        # naive rule cx -> cx * s would be (1 - s) / 2 >= 0.25 pixel off here.)
        fractional = interpolation == "area" and (640 % w or 480 % h)
        np.testing.assert_allclose(landed, coord, atol=0.005 if fractional else 5e-4)


def test_nearest_is_within_half_a_source_pixel() -> None:
    intr = make_intr(width=640, height=480)
    out, new = resize_image(ramp(640, 480, 1), intr, 160, 120, "nearest")
    sampled = out[0].astype(np.float64)
    predicted = (np.arange(160) - new.cx_px) / new.fx_px * intr.fx_px + intr.cx_px
    assert np.abs(sampled - predicted).max() <= 0.5 + 1e-6
    # OpenCV's plain INTER_NEAREST would be 1.5 source pixels off at this factor.
    plain = cv2.resize(ramp(640, 480, 1), (160, 120), interpolation=cv2.INTER_NEAREST)[0]
    assert np.abs(plain - predicted).max() > 1.0


def render_blobs(uv: np.ndarray, width: int, height: int, sigma_px: float) -> np.ndarray:
    """Gaussian spots (peak 1) centred at the sub-pixel positions ``uv`` (N, 2)."""
    u, v = pixel_grid(width, height)
    img = np.zeros((height, width), dtype=np.float64)
    for cu, cv in uv:
        win = (np.abs(u - cu) < 6 * sigma_px) & (np.abs(v - cv) < 6 * sigma_px)
        img[win] += np.exp(-((u[win] - cu) ** 2 + (v[win] - cv) ** 2) / (2 * sigma_px**2))
    return img.astype(np.float32)


def centroids(img: np.ndarray, guesses: np.ndarray, radius: float) -> np.ndarray:
    u, v = pixel_grid(img.shape[1], img.shape[0])
    out = []
    for gu, gv in guesses:
        win = np.hypot(u - gu, v - gv) < radius
        weight = img[win].astype(np.float64)
        total = weight.sum()
        out.append([np.sum(weight * u[win]) / total, np.sum(weight * v[win]) / total])
    return np.array(out)


@pytest.mark.parametrize(
    ("size", "interpolation"),
    [((400, 300), "linear"), ((400, 300), "area"), ((577, 433), "area"), ((577, 433), "linear")],
)
def test_projected_points_land_where_resized_intrinsics_predict(
    size: tuple[int, int], interpolation: Interpolation, rng
) -> None:
    """Render 3D points as spots in a large image, resize it, find the spots again."""
    intr = make_intr(width=1600, height=1200)
    pts = np.stack(
        [rng.uniform(-1.0, 1.0, 12), rng.uniform(-0.8, 0.8, 12), rng.uniform(3.0, 5.0, 12)],
        axis=-1,
    )
    uv, _ = project(pts, intr)
    # Keep spots apart so their tails do not overlap.
    keep = [0]
    for i in range(1, len(uv)):
        if np.min(np.hypot(*(uv[keep] - uv[i]).T)) > 120:
            keep.append(i)
    pts, uv = pts[keep], uv[keep]
    img = render_blobs(uv, intr.width, intr.height, sigma_px=10.0)
    small, small_intr = resize_image(img, intr, *size, interpolation=interpolation)
    predicted, _ = project(pts, small_intr)
    found = centroids(small, predicted, radius=6 * 10.0 * size[0] / intr.width)
    np.testing.assert_allclose(found, predicted, atol=0.02)
    # The naive rule cx -> cx * s would miss by (1 - s) / 2 pixels: the test can tell.
    s = size[0] / intr.width
    naive = dataclasses.replace(small_intr, cx_px=intr.cx_px * s)
    naive_uv, _ = project(pts, naive)
    assert np.abs(naive_uv[:, 0] - found[:, 0]).min() > 0.3


def test_crop_then_resize_tracks_points(rng) -> None:
    intr = make_intr(width=1600, height=1200)
    pts = np.array([[0.6, 0.4, 4.0], [-0.5, 0.3, 3.5], [0.4, -0.5, 4.5]])
    uv, _ = project(pts, intr)
    img = render_blobs(uv, intr.width, intr.height, sigma_px=10.0)
    crop, crop_intr = crop_image(img, intr, 300, 250, 1000, 700)
    assert np.shares_memory(crop, img) and crop.shape == (700, 1000)
    small, small_intr = resize_image(crop, crop_intr, 500, 350, "area")
    predicted, _ = project(pts, small_intr)
    np.testing.assert_allclose(centroids(small, predicted, radius=20), predicted, atol=0.02)


class TestImageHelpers:
    def test_resize_keeps_channels_and_dtype(self) -> None:
        intr = make_intr()
        img = np.zeros((120, 160, 3), np.uint8)
        out, new = resize_image(img, intr, 80, 60, "area")
        assert out.shape == (60, 80, 3) and out.dtype == np.uint8 and new == intr.resized(80, 60)
        one, _ = resize_image(np.zeros((120, 160, 1), np.float32), intr, 40, 30)
        assert one.shape == (30, 40, 1)

    def test_resize_non_contiguous(self) -> None:
        intr = make_intr()
        img = np.arange(120 * 320, dtype=np.float32).reshape(120, 320)[:, ::2]
        out, _ = resize_image(img, intr, 160, 120)
        np.testing.assert_array_equal(out, img)

    @pytest.mark.parametrize(
        ("img", "args"),
        [
            (np.zeros((120, 161), np.float32), (80, 60, "linear")),
            (np.zeros((120, 160), np.float32), (80, 60, "cubic")),
            (np.zeros(120 * 160, np.float32), (80, 60, "linear")),
            ([[0.0]], (80, 60, "linear")),
        ],
    )
    def test_resize_errors(self, img, args) -> None:
        with pytest.raises(InputError):
            resize_image(img, make_intr(), *args)

    def test_crop_errors(self) -> None:
        with pytest.raises(IntrinsicsError):
            crop_image(np.zeros((120, 160)), make_intr(), 100, 0, 61, 10)
        with pytest.raises(InputError):
            crop_image(np.zeros((121, 160)), make_intr(), 0, 0, 10, 10)


# ------------------------------------------------------------------------------ rays
class TestRayGrid:
    def test_pinhole_values_cached_read_only(self) -> None:
        intr = make_intr()
        grid = ray_grid(intr)
        assert grid.shape == (120, 160, 3) and grid.dtype == np.float32
        u, v = pixel_grid(160, 120)
        np.testing.assert_allclose(grid[..., 0], (u - intr.cx_px) / intr.fx_px, rtol=1e-6)
        np.testing.assert_allclose(grid[..., 1], (v - intr.cy_px) / intr.fy_px, rtol=1e-6)
        assert np.all(grid[..., 2] == 1.0)
        assert ray_grid(intr) is grid
        # An equal but distinct Intrinsics object hits the cache too.
        assert ray_grid(Intrinsics.from_dict(intr.to_dict())) is grid
        assert not grid.flags.writeable
        with pytest.raises(ValueError):
            grid[0, 0, 0] = 1.0
        assert 0 < (_ray_grid_cached.cache_info().maxsize or 0) <= 16

    def test_mild_distortion_agrees_with_cv2_undistort_points(self) -> None:
        intr = make_intr(PLUMB_BOB_MILD)
        u, v = pixel_grid(160, 120)
        ref = cv2.undistortPoints(
            np.stack([u, v], -1).reshape(-1, 1, 2), intr.k_matrix(), np.array(intr.dist)
        ).reshape(120, 160, 2)
        np.testing.assert_allclose(ray_grid(intr)[..., :2], ref, atol=1e-5)

    @pytest.mark.parametrize("dist", [PLUMB_BOB, RATIONAL])
    def test_strong_distortion_rays_reproject_to_their_pixels(self, dist) -> None:
        intr = make_intr(dist)
        grid = ray_grid(intr)
        assert np.all(np.isfinite(grid))
        uv, z = project(grid, intr)
        u, v = pixel_grid(160, 120)
        np.testing.assert_allclose(uv[..., 0], u, atol=1e-3)
        np.testing.assert_allclose(uv[..., 1], v, atol=1e-3)
        np.testing.assert_array_equal(z, 1.0)

    def test_non_invertible_distortion_marks_pixels_invalid(self, caplog) -> None:
        # Strong pincushion that folds over near the corners: those rays cannot be recovered.
        dist = (0.3, -0.1, 0.001, 0.0005, 0.01, 0.5, -0.05, 0.02)
        intr = Intrinsics(99.0, 102.0, 75.5, 63.4, 160, 120, dist, "rational_polynomial")
        geometry._ray_grid_cached.cache_clear()  # the warning is logged when the grid is built
        grid = ray_grid(intr)
        bad = np.isnan(grid[..., 0])
        assert bad.any() and bad.mean() < 0.5
        assert "do not undistort" in caplog.text
        assert np.isnan(grid[bad]).all()
        uv, _ = project(grid[~bad], intr)
        u, v = pixel_grid(160, 120)
        np.testing.assert_allclose(uv[:, 0], u[~bad], atol=0.011)
        # Such pixels never give points: NaN in organised clouds, absent otherwise.
        depth = np.full(intr.shape, 4.0, np.float32)
        org = backproject(depth, intr)
        np.testing.assert_array_equal(np.isnan(org.xyz).all(-1), bad)
        assert backproject(depth, intr, organised=False).xyz.shape == ((~bad).sum(), 3)
        sub = backproject(depth, intr, stride=3, roi=(1, 2, 150, 110))
        np.testing.assert_array_equal(np.isnan(sub.xyz).all(-1), bad[2:112:3, 1:151:3])

    def test_not_intrinsics(self) -> None:
        with pytest.raises(InputError):
            ray_grid((500.0, 500.0, 80.0, 60.0))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ back-projection
def random_depth(rng, intr: Intrinsics) -> np.ndarray:
    return rng.uniform(0.5, 30.0, size=intr.shape).astype(np.float32)


@pytest.mark.parametrize("dist", [(), PLUMB_BOB, RATIONAL])
def test_backproject_then_project_round_trip(dist, rng) -> None:
    intr = make_intr(dist)
    depth = random_depth(rng, intr)
    pts = backproject(depth, intr)
    assert pts.organised and pts.xyz.shape == (120, 160, 3) and pts.xyz.dtype == np.float32
    uv, z = project(pts.xyz, intr)
    u, v = pixel_grid(160, 120)
    np.testing.assert_allclose(uv[..., 0], u, atol=2e-3)
    np.testing.assert_allclose(uv[..., 1], v, atol=2e-3)
    np.testing.assert_array_equal(z, depth)


def test_backproject_matches_pinhole_formula(rng) -> None:
    intr = make_intr()
    depth = random_depth(rng, intr).astype(np.float64)
    u, v = pixel_grid(160, 120)
    expected = np.stack(
        [depth * (u - intr.cx_px) / intr.fx_px, depth * (v - intr.cy_px) / intr.fy_px, depth], -1
    )
    got = backproject(depth, intr)  # float64 input is accepted, output float32
    assert got.xyz.dtype == np.float32
    np.testing.assert_allclose(got.xyz, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, 0.0, np.inf, -np.inf, -2.0, -0.0])
def test_invalid_depths(bad: float, rng) -> None:
    intr = make_intr()
    depth = random_depth(rng, intr)
    depth[5, 7] = bad
    depth[100:, :3] = bad
    rgb = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    org = backproject(depth, intr, rgb=rgb)
    invalid = np.isnan(org.xyz).any(-1)
    assert invalid.sum() == 1 + 20 * 3
    assert invalid[5, 7] and np.isnan(org.xyz[5, 7]).all()
    assert np.isfinite(org.xyz[~invalid]).all()
    flat = backproject(depth, intr, organised=False, rgb=rgb)
    assert flat.xyz.shape == (120 * 160 - 61, 3) and np.isfinite(flat.xyz).all()
    np.testing.assert_array_equal(flat.xyz, org.xyz[~invalid])
    np.testing.assert_array_equal(flat.rgb, rgb[~invalid])


def test_all_invalid_gives_no_points() -> None:
    intr = make_intr()
    depth = np.full(intr.shape, np.nan, np.float32)
    assert backproject(depth, intr, organised=False).xyz.shape == (0, 3)
    assert np.isnan(backproject(depth, intr).xyz).all()


@pytest.mark.parametrize("stride", [1, 2, 3, 7])
@pytest.mark.parametrize("roi", [None, (0, 0, 160, 120), (13, 21, 50, 37), (159, 119, 1, 1)])
def test_stride_and_roi(stride: int, roi, rng) -> None:
    intr = make_intr()
    depth = random_depth(rng, intr)
    depth[::5, ::3] = np.nan
    rgb = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    full = backproject(depth, intr, rgb=rgb)
    x0, y0, w, h = roi or (0, 0, 160, 120)
    sel = (slice(y0, y0 + h, stride), slice(x0, x0 + w, stride))
    got = backproject(depth, intr, stride=stride, roi=roi, rgb=rgb)
    assert got.xyz.shape == (math.ceil(h / stride), math.ceil(w / stride), 3)
    np.testing.assert_array_equal(got.xyz, full.xyz[sel])
    np.testing.assert_array_equal(got.rgb, rgb[sel])
    flat = backproject(depth, intr, stride=stride, roi=roi, rgb=rgb, organised=False)
    valid = ~np.isnan(full.xyz[sel][..., 2])
    np.testing.assert_array_equal(flat.xyz, full.xyz[sel][valid])
    np.testing.assert_array_equal(flat.rgb, rgb[sel][valid])


def test_range_filter_is_on_z_not_euclidean_range() -> None:
    intr = make_intr()
    depth = np.full(intr.shape, 9.5, np.float32)
    depth[0, 0] = 2.0
    depth[0, 1] = 3.0  # boundaries are inclusive
    depth[0, 2] = 10.0
    depth[0, 3] = 10.5
    pts = backproject(depth, intr, min_range_m=3.0, max_range_m=10.0)
    z = pts.xyz[..., 2]
    assert np.isnan(z[0, 0]) and z[0, 1] == 3.0 and z[0, 2] == 10.0 and np.isnan(z[0, 3])
    # A corner pixel at z = 9.5 is more than 10 m away along its ray, and still kept.
    assert np.linalg.norm(pts.xyz[-1, -1]) > 10.0 and z[-1, -1] == np.float32(9.5)


@pytest.mark.parametrize(
    ("depth", "kwargs", "match"),
    [
        (np.zeros((120, 160), np.uint16), {}, "floating point"),
        (np.zeros((120, 160, 1), np.float32), {}, r"\(H, W\)"),
        ([[1.0]], {}, r"\(H, W\)"),
        (np.zeros((60, 80), np.float32), {}, "80x60"),
        (np.zeros((0, 160), np.float32), {}, "empty"),
        (np.ones((120, 160), np.float32), {"rgb": np.zeros((120, 160, 3), np.float32)}, "uint8"),
        (np.ones((120, 160), np.float32), {"rgb": np.zeros((120, 160, 4), np.uint8)}, "uint8"),
        (np.ones((120, 160), np.float32), {"rgb": np.zeros((60, 80, 3), np.uint8)}, "rgb is"),
        (np.ones((120, 160), np.float32), {"stride": 0}, "stride"),
        (np.ones((120, 160), np.float32), {"stride": 1.5}, "stride"),
        (np.ones((120, 160), np.float32), {"roi": (150, 0, 20, 10)}, "roi"),
        (np.ones((120, 160), np.float32), {"roi": (0, 0, 0, 10)}, "roi"),
        (np.ones((120, 160), np.float32), {"roi": (0, 0, 10)}, "roi"),
        (np.ones((120, 160), np.float32), {"min_range_m": -1.0}, "range"),
        (np.ones((120, 160), np.float32), {"min_range_m": 5.0, "max_range_m": 4.0}, "range"),
        (np.ones((120, 160), np.float32), {"max_range_m": math.nan}, "range"),
    ],
)
def test_backproject_errors(depth, kwargs, match: str) -> None:
    with pytest.raises(InputError, match=match):
        backproject(depth, make_intr(), **kwargs)


def test_pointset_is_frozen() -> None:
    ps = PointSet(np.zeros((4, 3), np.float32))
    assert not ps.organised and len(ps) == 4 and ps.rgb is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.rgb = None  # type: ignore[misc]


# ------------------------------------------------------------------------------ projection
@pytest.mark.parametrize("dist", [(), PLUMB_BOB, PLUMB_BOB[:4], RATIONAL])
def test_project_matches_cv2_project_points(dist, rng) -> None:
    intr = make_intr(dist)
    pts = rng.uniform([-2, -1.5, 1], [2, 1.5, 8], size=(500, 3))
    ref, _ = cv2.projectPoints(
        pts, np.zeros(3), np.zeros(3), intr.k_matrix(), np.array(intr.d_vector())
    )
    uv, z = project(pts, intr)
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-8)
    np.testing.assert_array_equal(z, pts[:, 2])


def test_project_behind_camera_and_shapes() -> None:
    intr = make_intr()
    pts = np.array([[[0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [np.nan, 0, 1], [0.0, 0.0, 2.0]]])
    uv, z = project(pts, intr)
    assert uv.shape == (1, 4, 2) and z.shape == (1, 4)
    assert np.isnan(uv[0, :3]).all()
    np.testing.assert_allclose(uv[0, 3], [intr.cx_px, intr.cy_px])
    with pytest.raises(InputError):
        project(np.zeros((3, 2)), intr)


def test_distort_normalised_identity_without_coefficients(rng) -> None:
    xy = rng.normal(size=(10, 2))
    np.testing.assert_array_equal(distort_normalised(xy, ()), xy)


# --------------------------------------------------------------------- CameraInfo binning, ROI
def _camera_info(
    binning: tuple[int, int] = (0, 0), roi: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> object:
    """A CameraInfo-like message of a 640x480 plumb-bob camera with REP 104 binning and ROI."""
    from types import SimpleNamespace

    k = [500.0, 0.0, 319.3, 0.0, 480.0, 241.7, 0.0, 0.0, 1.0]
    return SimpleNamespace(
        width=640,
        height=480,
        distortion_model="plumb_bob",
        d=[-0.2, 0.05, 0.001, -0.002, 0.0],
        k=k,
        p=[500.0, 0.0, 319.3, 0.0, 0.0, 480.0, 241.7, 0.0, 0.0, 0.0, 1.0, 0.0],
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3]),
    )


@pytest.mark.parametrize(
    ("binning", "roi", "size"),
    [
        ((2, 2), (0, 0, 0, 0), (320, 240)),
        ((4, 2), (0, 0, 0, 0), (160, 240)),
        ((0, 0), (100, 60, 200, 150), (200, 150)),
        ((2, 2), (101, 61, 301, 151), (150, 75)),  # odd sizes: the last column/row unsent
        ((3, 1), (0, 0, 0, 0), (213, 480)),
    ],
)
def test_camera_info_binning_and_roi_describe_the_sent_image(
    binning: tuple[int, int], roi: tuple[int, int, int, int], size: tuple[int, int]
) -> None:
    full = Intrinsics.from_camera_info(_camera_info())  # type: ignore[arg-type]
    sent = Intrinsics.from_camera_info(_camera_info(binning, roi))  # type: ignore[arg-type]
    assert sent.size == size and sent.dist == full.dist
    # Every pixel of the sent image must see what the full-resolution camera sees at the
    # centre of the block of full-resolution pixels it was made of.
    bx, by = max(binning[0], 1), max(binning[1], 1)
    rays = ray_grid(sent)
    v, u = np.mgrid[0 : sent.height : 7, 0 : sent.width : 9]
    uv_full, _ = project(rays[v, u].astype(np.float64), full)
    ok = np.isfinite(rays[v, u]).all(axis=-1)
    assert ok.mean() > 0.95
    np.testing.assert_allclose(
        uv_full[..., 0][ok], (roi[0] + bx * u + (bx - 1) / 2)[ok], atol=2e-3
    )
    np.testing.assert_allclose(
        uv_full[..., 1][ok], (roi[1] + by * v + (by - 1) / 2)[ok], atol=2e-3
    )


def test_camera_info_without_binning_fields_is_full_resolution() -> None:
    from types import SimpleNamespace

    msg = _camera_info()
    bare = SimpleNamespace(
        **{k: v for k, v in vars(msg).items() if k not in ("roi", "binning_x", "binning_y")}
    )
    assert Intrinsics.from_camera_info(bare) == Intrinsics.from_camera_info(msg)  # type: ignore[arg-type]
    assert Intrinsics.from_camera_info(msg).size == (640, 480)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("binning", "roi", "message"),
    [
        ((0, 0), (600, 0, 100, 100), "does not fit"),
        ((0, 0), (0, 400, 100, 100), "does not fit"),
        ((1000, 1), (0, 0, 0, 0), "leaves no pixel"),
    ],
)
def test_camera_info_with_impossible_binning_or_roi_is_refused(
    binning: tuple[int, int], roi: tuple[int, int, int, int], message: str
) -> None:
    with pytest.raises(IntrinsicsError, match=message):
        Intrinsics.from_camera_info(_camera_info(binning, roi))  # type: ignore[arg-type]


def test_pixel_rays_are_rows_of_the_ray_grid() -> None:
    intr = make_intr(PLUMB_BOB)
    u, v = np.array([0, 5, 159]), np.array([0, 7, 119])
    np.testing.assert_array_equal(pixel_rays(intr, u, v), ray_grid(intr)[v, u])
    with pytest.raises(InputError, match="integer"):
        pixel_rays(intr, u.astype(float), v)
    with pytest.raises(InputError, match="outside"):
        pixel_rays(intr, np.array([160]), np.array([0]))
