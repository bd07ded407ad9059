"""Vectorised ray casting and shading of SynthCity scenes: exact z-depth, labels and an RGB image.

Each pixel's ray is intersected with the road plane and with every primitive whose projected
bounds cover it (boxes by slabs, vertical cylinders and ellipsoids by quadratics), keeping the
nearest hit; depth is the hit's z in the camera optical frame, so rays are parametrised with an
optical-frame z of 1. Shading happens once per pixel afterwards (textures in world metres,
Lambertian sun and sky light, cast shadows, haze).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.data import synthcity_textures as tx
from cloudypoints_core.data.synthcity_scene import (
    Kind,
    Lighting,
    Mat,
    PrimArrays,
    Scene,
    SynthLabel,
)
from cloudypoints_core.geometry import Intrinsics

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Objects farther than this (optical z) cast no ray-traced shadows.
_SHADOW_RANGE_M = 60.0
#: Rays start this far in front of the camera (metres of optical z).
NEAR_M = 0.05

# Outward unit normals of box faces in the order -x, +x, -y, +y, -z, +z.
_BOX_NORMALS = np.array(
    [[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float32
)
_CORNER_BITS = np.array([[(i >> b) & 1 for b in range(3)] for i in range(8)])
_EDGES = np.array([(i, i | (1 << b)) for i in range(8) for b in range(3) if not i & (1 << b)])


@dataclass(frozen=True)
class RenderOutput:
    rgb: npt.NDArray[np.uint8]
    depth_m: F32
    labels: npt.NDArray[np.uint8]


def screen_rects(
    aabb: F64, rot: F64, cam: F64, intr: Intrinsics
) -> tuple[npt.NDArray[np.intp], F64, npt.NDArray[np.bool_]]:
    """Pixel rectangles (N, 4) = row0, row1, col0, col1 (exclusive ends) covering each box's image,
    the nearest optical z of each box, and whether the box is in view at all.

    The box is clipped against the near plane before projecting (a facade beside and behind the
    camera still has a finite image), so the rectangle is exact up to a one-pixel margin.
    """
    n = aabb.shape[0]
    xs = aabb[:, [0, 3]]
    ys = aabb[:, [1, 4]]
    zs = aabb[:, [2, 5]]
    b = _CORNER_BITS
    corners = (
        np.stack([xs[:, b[:, 0]], ys[:, b[:, 1]], zs[:, b[:, 2]]], axis=-1) - cam
    )  # (N, 8, 3)
    # Optical frame: R^T (p - c) for each row vector p (einsum: no multi-threaded BLAS call).
    pc = np.einsum("nki,ij->nkj", corners, rot)
    za = pc[:, _EDGES[:, 0], 2]
    zb = pc[:, _EDGES[:, 1], 2]
    crossing = (za - NEAR_M) * (zb - NEAR_M) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crossing, (NEAR_M - za) / (zb - za), 0.0)
    pe = pc[:, _EDGES[:, 0]] + s[..., None] * (pc[:, _EDGES[:, 1]] - pc[:, _EDGES[:, 0]])
    pts = np.concatenate([pc, pe], axis=1)  # (N, 20, 3)
    valid = np.concatenate([pc[..., 2] >= NEAR_M, crossing], axis=1)
    z = np.where(valid, pts[..., 2], 1.0)
    u = intr.fx_px * pts[..., 0] / z + intr.cx_px
    v = intr.fy_px * pts[..., 1] / z + intr.cy_px
    big = 1e9
    umin = np.where(valid, u, big).min(axis=1)
    umax = np.where(valid, u, -big).max(axis=1)
    vmin = np.where(valid, v, big).min(axis=1)
    vmax = np.where(valid, v, -big).max(axis=1)
    zmin = np.where(valid, pts[..., 2], np.inf).min(axis=1)
    rects = np.empty((n, 4), dtype=np.intp)
    rects[:, 0] = np.clip(np.floor(vmin), 0, intr.height)
    rects[:, 1] = np.clip(np.ceil(vmax) + 1, 0, intr.height)
    rects[:, 2] = np.clip(np.floor(umin), 0, intr.width)
    rects[:, 3] = np.clip(np.ceil(umax) + 1, 0, intr.width)
    visible = valid.any(axis=1) & (rects[:, 1] > rects[:, 0]) & (rects[:, 3] > rects[:, 2])
    return rects, zmin, visible


def _ray_dirs(rot: F64, intr: Intrinsics) -> list[F32]:
    """World directions (x, y, z components, each (H, W)) of rays with optical z = 1."""
    us = ((np.arange(intr.width) - intr.cx_px) / intr.fx_px).astype(np.float32)[None, :]
    vs = ((np.arange(intr.height) - intr.cy_px) / intr.fy_px).astype(np.float32)[:, None]
    return [
        (float(rot[i, 0]) * us + float(rot[i, 1]) * vs + np.float32(rot[i, 2])).astype(np.float32)
        for i in range(3)
    ]


def _box_t(o: tuple[float, float, float], inv: list[F32], g: list[Any]) -> F32:
    """Entry distance (optical z) of rays from ``o`` with inverse directions ``inv`` into boxes
    ``g`` = x0, y0, z0, x1, y1, z1 (scalars or per-ray arrays); inf where missed."""
    t0 = (g[0] - o[0]) * inv[0]
    t1 = (g[3] - o[0]) * inv[0]
    tn = np.minimum(t0, t1)
    tf = np.maximum(t0, t1)
    for a in (1, 2):
        t0 = (g[a] - o[a]) * inv[a]
        t1 = (g[a + 3] - o[a]) * inv[a]
        np.maximum(tn, np.minimum(t0, t1), out=tn)
        np.minimum(tf, np.maximum(t0, t1), out=tf)
    return np.where((tn <= tf) & (tn > NEAR_M), tn, np.float32(np.inf))


def _vcyl_t(o: tuple[float, float, float], d: list[F32], inv_z: F32, g: list[Any]) -> F32:
    """Entry distance into vertical cylinders g = cx, cy, z0, z1, r (side or top cap), or inf."""
    dx, dy, dz = d
    ox, oy = o[0] - g[0], o[1] - g[1]
    a = dx * dx + dy * dy
    bh = ox * dx + oy * dy
    r2 = g[4] * g[4]
    # bh^2 - a (|o|^2 - r^2) rewritten with Lagrange's identity: no cancellation for thin, far
    # poles (the textbook form loses the pole's radius in float32 rounding).
    cross = ox * dy - oy * dx
    disc = a * r2 - cross * cross
    t = (-bh - np.sqrt(np.maximum(disc, 0.0))) / a
    z = o[2] + t * dz
    side = (disc >= 0) & (z >= g[2]) & (z <= g[3])
    tc = (g[3] - o[2]) * inv_z
    xc = ox + tc * dx
    yc = oy + tc * dy
    cap = xc * xc + yc * yc <= r2
    t = np.where(side, t, np.where(cap, tc, np.float32(np.inf)))
    return np.where(t > NEAR_M, t, np.float32(np.inf))


def _ellipsoid_t(o: tuple[float, float, float], d: list[F32], g: list[Any]) -> F32:
    """Entry distance into axis-aligned ellipsoids g = cx, cy, cz, rx, ry, rz; inf if missed."""
    rx, ry, rz = 1.0 / g[3], 1.0 / g[4], 1.0 / g[5]
    ox, oy, oz = (o[0] - g[0]) * rx, (o[1] - g[1]) * ry, (o[2] - g[2]) * rz
    ex, ey, ez = d[0] * rx, d[1] * ry, d[2] * rz
    a = ex * ex + ey * ey + ez * ez
    bh = ox * ex + oy * ey + oz * ez
    # Same identity as for cylinders: a - |o x e|^2 instead of bh^2 - a (|o|^2 - 1).
    cx_ = oy * ez - oz * ey
    cy_ = oz * ex - ox * ez
    cz_ = ox * ey - oy * ex
    disc = a - (cx_ * cx_ + cy_ * cy_ + cz_ * cz_)
    t = (-bh - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > NEAR_M), t, np.float32(np.inf))


#: Primitives covering fewer pixels than this are intersected together in one vectorised batch
#: (a loop iteration costs tens of microseconds of interpreter time whatever the size).
_BATCH_AREA_PX = 600


def cast(
    prims: PrimArrays, rot: F64, cam: F64, intr: Intrinsics
) -> tuple[F32, npt.NDArray[np.int32], list[F32]]:
    """Nearest hit per pixel: z-depth (inf where nothing is hit), primitive id (-1), ray dirs."""
    d = _ray_dirs(rot, intr)
    with np.errstate(divide="ignore"):
        inv = [np.float32(1.0) / c for c in d]
    o = (float(cam[0]), float(cam[1]), float(cam[2]))
    ground = d[2] < 0
    depth = np.where(ground, np.float32(-o[2]) * inv[2], np.float32(np.inf)).astype(np.float32)
    pid = np.where(ground, 0, -1).astype(np.int32)

    aabb = prims.aabb()
    rects, zmin, visible = screen_rects(aabb[1:], rot, cam, intr)
    area = (rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])
    small = visible & (area < _BATCH_AREA_PX)
    order = np.argsort(zmin)
    kinds = prims.kind
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for j in order:
            if not visible[j] or small[j]:
                continue
            r0, r1, c0, c1 = rects[j]
            dsub = depth[r0:r1, c0:c1]
            # Front-to-back order makes this occlusion test skip most hidden boxes.
            if dsub.max() <= zmin[j]:
                continue
            i = j + 1
            g = prims.geom[i].tolist()  # Python floats keep the arithmetic in float32
            k = kinds[i]
            if k == Kind.BOX:
                t = _box_t(o, [a[r0:r1, c0:c1] for a in inv], g)
            elif k == Kind.VCYL:
                t = _vcyl_t(o, [a[r0:r1, c0:c1] for a in d], inv[2][r0:r1, c0:c1], g)
            else:
                t = _ellipsoid_t(o, [a[r0:r1, c0:c1] for a in d], g)
            hit = t < dsub
            dsub[hit] = t[hit]
            pid[r0:r1, c0:c1][hit] = i
        if np.any(small):
            _cast_batch(prims, np.flatnonzero(small), rects, o, d, inv, depth, pid)
    return depth, pid, d


def _cast_batch(
    prims: PrimArrays,
    js: npt.NDArray[np.intp],
    rects: npt.NDArray[np.intp],
    o: tuple[float, float, float],
    d: list[F32],
    inv: list[F32],
    depth: F32,
    pid: npt.NDArray[np.int32],
) -> None:
    """Intersect many small primitives at once: one (pixel, primitive) pair per rectangle pixel."""
    w = depth.shape[1]
    r = rects[js]
    heights = r[:, 1] - r[:, 0]
    widths = r[:, 3] - r[:, 2]
    counts = heights * widths
    owner = np.repeat(np.arange(js.size), counts)
    local = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    wo = widths[owner]
    pix = (r[owner, 0] + local // wo) * w + r[owner, 2] + local % wo
    prim = js[owner] + 1
    geom = prims.geom32[prim]
    kind = prims.kind[prim]
    t = np.full(pix.size, np.inf, dtype=np.float32)
    flat_d = [c.ravel() for c in d]
    flat_inv = [c.ravel() for c in inv]
    for k in (Kind.BOX, Kind.VCYL, Kind.ELLIPSOID):
        sel = np.flatnonzero(kind == k)
        if sel.size == 0:
            continue
        px = pix[sel]
        g = [geom[sel, c] for c in range(6)]
        if k == Kind.BOX:
            t[sel] = _box_t(o, [c[px] for c in flat_inv], g)
        elif k == Kind.VCYL:
            t[sel] = _vcyl_t(o, [c[px] for c in flat_d], flat_inv[2][px], g)
        else:
            t[sel] = _ellipsoid_t(o, [c[px] for c in flat_d], g)
    dflat = depth.ravel()
    hit = np.flatnonzero(t < dflat[pix])
    if hit.size == 0:
        return
    pix, t, prim = pix[hit], t[hit], prim[hit]
    # Nearest hit per pixel: sort by pixel, then depth, and keep each pixel's first entry.
    order = np.lexsort((t, pix))
    ps = pix[order]
    first = order[np.concatenate([[True], ps[1:] != ps[:-1]])]
    dflat[pix[first]] = t[first]
    pid.ravel()[pix[first]] = prim[first]


def render(
    scene: Scene,
    prims: PrimArrays,
    rot: F64,
    cam: F64,
    intr: Intrinsics,
    rng: np.random.Generator,
) -> RenderOutput:
    """Ray-cast and shade one frame of ``scene`` seen by a camera at ``cam`` with rotation ``rot``
    (camera-to-world, optical frame)."""
    h, w = intr.height, intr.width
    depth, pid, d = cast(prims, rot, cam, intr)
    hit = pid >= 0
    sel = np.flatnonzero(hit)
    sky_sel = np.flatnonzero(~hit)
    p = pid.ravel()[sel]
    t = depth.ravel()[sel]
    dx, dy, dz = (c.ravel()[sel] for c in d)
    # World points of every pixel (0 depth for sky keeps them finite); the shadow rays reuse them.
    depth0 = np.where(hit, depth, np.float32(0.0))
    pts = [np.float32(c) + depth0 * dc for c, dc in zip(cam, d, strict=True)]
    if prims.kind[0] == Kind.PLANE:
        # Exact zero for the road plane (the product above rounds to ~1e-7).
        pts[2][pid == 0] = 0.0
    px, py, pz = (c.ravel()[sel] for c in pts)

    nx, ny, nz = _normals(prims, p, px, py, pz, dx, dy, dz)
    ray_len = np.sqrt(dx * dx + dy * dy + dz * dz)
    dist = t * ray_len
    cosang = np.abs(nx * dx + ny * dy + nz * dz) / ray_len
    f_px = float(np.sqrt(intr.fx_px * intr.fy_px))
    fp = dist / np.float32(f_px) / np.maximum(cosang, np.float32(0.12))
    log2fp = np.log2(fp)
    surf = _Surface(p, px, py, pz, nx, ny, nz, fp, log2fp)

    albedo = np.empty((sel.size, 3), dtype=np.float32)
    glass = np.zeros(sel.size, dtype=np.float32)
    mats = prims.mat[p]
    for m, fn in _MATERIALS.items():
        ii = np.flatnonzero(mats == m)
        if ii.size:
            albedo[ii], glass[ii] = fn(scene, prims, surf, ii)

    lt = scene.lighting
    sun = lt.sun_dir.astype(np.float32)
    ndl = nx * sun[0] + ny * sun[1] + nz * sun[2]
    foliage = mats == Mat.FOLIAGE
    ndl = np.where(foliage, (ndl + np.float32(0.4)) / np.float32(1.4), ndl)
    np.clip(ndl, 0.0, None, out=ndl)
    shadow_img, ao_img = _object_shadows(scene, prims, depth0, pid, pts, rot, cam, intr)
    shadow = shadow_img.ravel()[sel] * _building_shadows(scene, px, py, pz)
    ao = ao_img.ravel()[sel]
    # Aerial perspective: distant surfaces fade into the horizon colour.
    keep = np.exp(-dist / np.float32(lt.fog_distance_m))
    # Light = sun * (n.l) * shadow + sky * (0.6 + 0.4 nz) * ao + bounce * (0.5 - 0.5 nz) * ao,
    # all times the haze transmittance, as one (M, 3) x (3, 3) product.
    # (Per channel on purpose: a matrix product here would wake multi-threaded BLAS.)
    w_sun = ndl * shadow * keep
    aok = ao * keep
    w_sky = (np.float32(0.6) + np.float32(0.4) * nz) * aok
    w_bounce = (np.float32(0.5) - np.float32(0.5) * nz) * aok
    col = albedo
    for k in range(3):
        col[:, k] *= (
            w_sun * np.float32(lt.sun_rgb[k])
            + w_sky * np.float32(lt.ambient_rgb[k])
            + w_bounce * np.float32(lt.bounce_rgb[k])
        )
    gi = np.flatnonzero(glass > 0)
    if gi.size:
        # Glass and paint mirror the sky (reflected rays going down see the dark street), with
        # Schlick's Fresnel term: faint head-on, strong at grazing angles.
        rl = ray_len[gi]
        ngz = nz[gi]
        dn = (nx[gi] * dx[gi] + ny[gi] * dy[gi] + ngz * dz[gi]) / rl
        rz = dz[gi] / rl - 2.0 * dn * ngz
        refl = _sky_gradient(lt, np.clip(rz, 0.0, 1.0))
        refl *= np.where(rz < 0, np.float32(0.25), np.float32(1.0))[:, None]
        fres = np.float32(0.06) + np.float32(0.94) * (np.float32(1.0) - np.abs(dn)) ** 5
        refl *= ((0.5 + 0.5 * shadow[gi]) * glass[gi] * keep[gi] * fres)[:, None]
        col[gi] += refl
    fog = np.float32(1.0) - keep
    for k in range(3):
        col[:, k] += fog * np.float32(0.9 * lt.horizon_rgb[k])

    img = np.empty((h * w, 3), dtype=np.float32)
    img[sel] = col
    if sky_sel.size:
        img[sky_sel] = _sky(lt, [c.ravel()[sky_sel] for c in d], f_px)

    # Auto exposure on the mean luminance, as a camera would meter the scene.
    lum = img[::29].mean()
    gain = np.float32(np.clip(lt.exposure_target / max(float(lum), 1e-4), 0.3, 6.0))
    vig = scene.config.vignetting
    if vig > 0:
        img.reshape(h, w, 3)[...] *= (_falloff(h, w, intr.cx_px, intr.cy_px) * (vig * gain))[
            ..., None
        ] + np.float32(gain * (1.0 - vig))
    else:
        img *= gain
    blur = scene.config.optical_blur
    if blur > 0 and h >= 3 and w >= 3:
        # A real lens never renders the hard, aliased edges of a ray caster: a light separable blur
        # of the colour image (depth and labels stay exact).
        img3 = img.reshape(h, w, 3)
        centre = np.float32(1.0 - 2.0 * blur)
        side = np.float32(blur)
        rows = img3 * centre
        rows[1:] += img3[:-1] * side
        rows[:-1] += img3[1:] * side
        rows[0] += img3[0] * side
        rows[-1] += img3[-1] * side
        img3[...] = rows * centre
        img3[:, 1:] += rows[:, :-1] * side
        img3[:, :-1] += rows[:, 1:] * side
        img3[:, 0] += rows[:, 0] * side
        img3[:, -1] += rows[:, -1] * side
    np.clip(img, 0.0, 1.0, out=img)
    np.sqrt(img, out=img)  # display encoding (gamma 2)
    img *= np.float32(255.0)
    sigma = scene.config.sensor_noise_std
    if sigma > 0:
        # A window into a cached noise field at a random offset: drawing fresh normals per pixel
        # would cost as much as the shading.
        field = _noise_field(h * w * 3)
        start = int(rng.integers(0, field.size - h * w * 3 + 1))
        img += field[start : start + h * w * 3].reshape(h * w, 3) * np.float32(sigma)
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    rgb = img.astype(np.uint8).reshape(h, w, 3)

    label_table = np.concatenate([[SynthLabel.SKY], prims.label]).astype(np.uint8)
    labels = label_table[pid + 1]
    return RenderOutput(rgb=rgb, depth_m=depth, labels=labels)


@functools.lru_cache(maxsize=8)
def _falloff(h: int, w: int, cx: float, cy: float) -> F32:
    """Relative illumination 1 at the principal point falling to 0 at the farthest corner."""
    u = (np.arange(w, dtype=np.float32) - np.float32(cx))[None, :]
    v = (np.arange(h, dtype=np.float32) - np.float32(cy))[:, None]
    r2 = (u * u + v * v) / np.float32(max(cx, w - cx) ** 2 + max(cy, h - cy) ** 2)
    out = (np.float32(1.0) - r2).astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4)
def _noise_field(n: int) -> F32:
    """Standard normal noise of ``n`` values plus slack for random offsets (fixed seed)."""
    field = np.random.default_rng(0xC0FFEE).standard_normal(n + 65536, dtype=np.float32)
    field.flags.writeable = False
    return field


# --------------------------------------------------------------------------------- geometry
@dataclass
class _Surface:
    """Per hit pixel (flat arrays): primitive id, world point, normal and footprint (m/pixel)."""

    p: npt.NDArray[np.int32]
    x: F32
    y: F32
    z: F32
    nx: F32
    ny: F32
    nz: F32
    fp: F32
    log2fp: F32


def _normals(
    prims: PrimArrays,
    p: npt.NDArray[np.int32],
    px: F32,
    py: F32,
    pz: F32,
    dx: F32,
    dy: F32,
    dz: F32,
) -> tuple[F32, F32, F32]:
    """World unit normals of the hit surfaces (flat arrays)."""
    m = p.size
    nx = np.zeros(m, dtype=np.float32)
    ny = np.zeros(m, dtype=np.float32)
    nz = np.zeros(m, dtype=np.float32)
    kinds = prims.kind[p]
    nz[kinds == Kind.PLANE] = 1.0
    ii = np.flatnonzero(kinds == Kind.BOX)
    if ii.size:
        g = prims.geom32[p[ii]]
        dxi, dyi, dzi = dx[ii], dy[ii], dz[ii]
        # A ray enters a box through the near face of each slab; the hit face is the one whose
        # plane the point lies on.
        ex = np.abs(px[ii] - np.where(dxi > 0, g[:, 0], g[:, 3]))
        ey = np.abs(py[ii] - np.where(dyi > 0, g[:, 1], g[:, 4]))
        ez = np.abs(pz[ii] - np.where(dzi > 0, g[:, 2], g[:, 5]))
        on_x = (ex <= ey) & (ex <= ez)
        on_y = ~on_x & (ey <= ez)
        on_z = ~on_x & ~on_y
        one = np.float32(1.0)
        nx[ii] = np.where(on_x, np.where(dxi > 0, -one, one), 0.0)
        ny[ii] = np.where(on_y, np.where(dyi > 0, -one, one), 0.0)
        nz[ii] = np.where(on_z, np.where(dzi > 0, -one, one), 0.0)
    ii = np.flatnonzero(kinds == Kind.VCYL)
    if ii.size:
        g = prims.geom32[p[ii]]
        top = pz[ii] >= g[:, 3] - 1e-3
        nx[ii] = np.where(top, 0.0, (px[ii] - g[:, 0]) / g[:, 4])
        ny[ii] = np.where(top, 0.0, (py[ii] - g[:, 1]) / g[:, 4])
        nz[ii] = top
    ii = np.flatnonzero(kinds == Kind.ELLIPSOID)
    if ii.size:
        g = prims.geom32[p[ii]]
        vx = (px[ii] - g[:, 0]) / (g[:, 3] * g[:, 3])
        vy = (py[ii] - g[:, 1]) / (g[:, 4] * g[:, 4])
        vz = (pz[ii] - g[:, 2]) / (g[:, 5] * g[:, 5])
        norm = np.sqrt(vx * vx + vy * vy + vz * vz)
        nx[ii] = vx / norm
        ny[ii] = vy / norm
        nz[ii] = vz / norm
    return nx, ny, nz


# -------------------------------------------------------------------------------- shadows
def _building_shadows(scene: Scene, px: F32, py: F32, pz: F32) -> F32:
    """1 in sunlight, 0 in the shadow of the facade rows (height profiles along each side)."""
    lt = scene.lighting
    lx, ly, lz = (float(v) for v in lt.sun_dir)
    lit = np.ones(px.shape, dtype=bool)
    g = scene.profile_height.shape[1]
    x0 = scene.profile_x0
    for side_i, side in enumerate((1.0, -1.0)):
        toward = ly * side
        if toward < 0.02:
            continue
        across = side * py
        yf_near = float(scene.profile_facade_y[side_i].min())
        lam = (yf_near - across) / toward
        for _ in range(2):
            gi = np.clip(((px + lam * lx - x0) * 2.0).astype(np.intp), 0, g - 1)
            lam = (scene.profile_facade_y[side_i][gi].astype(np.float32) - across) / np.float32(
                toward
            )
        gi = np.clip(((px + lam * lx - x0) * 2.0).astype(np.intp), 0, g - 1)
        height = scene.profile_height[side_i][gi].astype(np.float32)
        lit &= ~((lam > 0.05) & (pz + lam * lz < height))
    if lx > 0.02 and scene.end_row_height > 0:
        lam = (np.float32(scene.x_end + 4.0) - px) / np.float32(lx)
        yy = py + lam * ly
        lit &= ~((lam > 0.05) & (pz + lam * lz < scene.end_row_height) & (np.abs(yy) < 150))
    if lz <= 0:
        lit[:] = False
    return lit.astype(np.float32)


def _object_shadows(
    scene: Scene,
    prims: PrimArrays,
    depth0: F32,
    pid: npt.NDArray[np.int32],
    pts: list[F32],
    rot: F64,
    cam: F64,
    intr: Intrinsics,
) -> tuple[F32, F32]:
    """Sun shadows of cars, trees, poles and signs by shadow rays (only pixels in each caster's
    shadow rectangle), and contact darkening (ambient occlusion) under cars."""
    h, w = depth0.shape
    shadow = np.ones((h, w), dtype=np.float32)
    ao = np.ones((h, w), dtype=np.float32)
    casters = np.flatnonzero(prims.casts_shadow)
    if casters.size == 0:
        return shadow, ao
    sun = scene.lighting.sun_dir
    do_sun = sun[2] > 0.05 and not scene.lighting.overcast
    aabb = prims.aabb()[casters]
    # Shadow volume bounds: the caster plus its footprint dropped along the sun onto the road.
    vol = aabb.copy()
    if do_sun:
        drop = aabb[:, 5:6] / sun[2]
        fx_, fy_ = aabb[:, [0, 3]] - drop * sun[0], aabb[:, [1, 4]] - drop * sun[1]
        vol[:, 0] = np.minimum(vol[:, 0], fx_.min(axis=1))
        vol[:, 3] = np.maximum(vol[:, 3], fx_.max(axis=1))
        vol[:, 1] = np.minimum(vol[:, 1], fy_.min(axis=1))
        vol[:, 4] = np.maximum(vol[:, 4], fy_.max(axis=1))
    vol[:, 2] = 0.0
    is_car = prims.mat[casters] == Mat.CAR_BODY
    vol[is_car, :2] -= 0.6
    vol[is_car, 3:5] += 0.6
    rects, zmin, visible = screen_rects(vol, rot, cam, intr)
    hitmask = pid >= 0
    with np.errstate(divide="ignore"):
        inv_sun = [1.0 / v if v != 0 else np.inf for v in sun.tolist()]
    sun_l = sun.tolist()  # Python floats keep the per-pixel arithmetic in float32
    with np.errstate(invalid="ignore", over="ignore"):
        for k, i in enumerate(casters):
            # Far casters: their shadows are a few hazy pixels, not worth the rays.
            if not visible[k] or zmin[k] > _SHADOW_RANGE_M:
                continue
            r0, r1, c0, c1 = rects[k]
            dsub = depth0[r0:r1, c0:c1]
            if dsub.max() < zmin[k]:
                continue
            valid = hitmask[r0:r1, c0:c1] & (pid[r0:r1, c0:c1] != i)
            px, py, pz = (c[r0:r1, c0:c1] for c in pts)
            g = prims.geom[i].tolist()
            kind = prims.kind[i]
            if do_sun:
                if kind == Kind.BOX:
                    t0 = (g[0] - px) * inv_sun[0]
                    t1 = (g[3] - px) * inv_sun[0]
                    tn, tf = np.minimum(t0, t1), np.maximum(t0, t1)
                    for a in (1, 2):
                        t0 = (g[a] - (py if a == 1 else pz)) * inv_sun[a]
                        t1 = (g[a + 3] - (py if a == 1 else pz)) * inv_sun[a]
                        tn = np.maximum(tn, np.minimum(t0, t1))
                        tf = np.minimum(tf, np.maximum(t0, t1))
                    blocked = (np.maximum(tn, 0.02) <= tf) & valid
                    strength = 0.95
                elif kind == Kind.VCYL:
                    ox, oy = px - g[0], py - g[1]
                    a = sun_l[0] ** 2 + sun_l[1] ** 2
                    bh = ox * sun_l[0] + oy * sun_l[1]
                    c = ox * ox + oy * oy - g[4] ** 2
                    disc = bh * bh - a * c
                    s = (-bh + np.sqrt(np.maximum(disc, 0.0))) / a
                    blocked = valid & (disc > 0) & (s > 0.02) & (pz + s * sun_l[2] < g[3])
                    strength = 0.95
                else:
                    ox, oy, oz = (px - g[0]) / g[3], (py - g[1]) / g[4], (pz - g[2]) / g[5]
                    ex, ey, ez = sun_l[0] / g[3], sun_l[1] / g[4], sun_l[2] / g[5]
                    a = ex * ex + ey * ey + ez * ez
                    bh = ox * ex + oy * ey + oz * ez
                    c = ox * ox + oy * oy + oz * oz - 1.0
                    disc = bh * bh - a * c
                    s = (-bh + np.sqrt(np.maximum(disc, 0.0))) / a
                    blocked = valid & (disc > 0) & (s > 0.05)
                    # Light comes through gaps between the leaves: a dappled shadow.
                    bx, by, bz = px[blocked], py[blocked], pz[blocked]
                    n = tx.sample_noise(
                        tx.BANK_BLOTCH,
                        bx + 0.6 * by,
                        bz + 0.4 * by,
                        0.1,
                        np.full(bx.shape, -4.0, np.float32),
                        g[0],
                    )
                    leafy = np.clip(np.float32(0.75) + np.float32(0.5) * n, 0.0, 1.0)
                    shadow[r0:r1, c0:c1][blocked] *= np.float32(1.0) - np.float32(0.85) * leafy
                    strength = 0.0
                if strength > 0:
                    shadow[r0:r1, c0:c1][blocked] *= np.float32(1.0 - strength)
            if prims.mat[i] == Mat.CAR_BODY:
                # Contact shadow: the road under and right beside a car sees little sky.
                ddx = np.maximum(np.abs(px - (g[0] + g[3]) / 2) - (g[3] - g[0]) / 2, 0.0)
                ddy = np.maximum(np.abs(py - (g[1] + g[4]) / 2) - (g[4] - g[1]) / 2, 0.0)
                near = np.sqrt(ddx * ddx + ddy * ddy) + 2.0 * np.maximum(pz, 0.0)
                occl = np.float32(0.75) * np.exp(-near / np.float32(0.35))
                low = valid & (pz < 0.3)
                ao[r0:r1, c0:c1][low] *= (np.float32(1.0) - occl)[low]
                if do_sun:
                    continue
                # Overcast: the body still blocks most of the sky right under it.
                shadow[r0:r1, c0:c1][low] *= (np.float32(1.0) - occl)[low]
    return shadow, ao


# ------------------------------------------------------------------------------------ sky
def _sky_gradient(lt: Lighting, elev: F32) -> F32:
    zen = lt.zenith_rgb.astype(np.float32)
    hor = lt.horizon_rgb.astype(np.float32)
    wgt = np.sqrt(np.clip(elev, 0.0, 1.0))[:, None]
    return hor + (zen - hor) * wgt


def _sky(lt: Lighting, d: list[F32], f_px: float) -> F32:
    dx, dy, dz = d
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    ex, ey, ez = dx / norm, dy / norm, dz / norm
    col = _sky_gradient(lt, ez)
    # Clouds on a layer 1.5 km up, filtered by the footprint like any texture.
    ez_c = np.maximum(ez, np.float32(0.02))
    dist = np.float32(1500.0) / ez_c
    u = ex * dist
    v = ey * dist
    log2fp = np.log2(dist / np.float32(f_px) / ez_c)
    off = lt.cloud_offset
    n = tx.sample_noise(tx.BANK_LARGE, u, v, 40.0, log2fp, off) + 0.5 * tx.sample_noise(
        tx.BANK_BLOTCH, u, v, 12.0, log2fp, off + 31
    )
    cover = lt.cloud_cover
    c = np.clip((n - (1.6 - 2.4 * cover)) * 0.6, 0.0, 1.0) * np.clip(ez * 8.0, 0.0, 1.0)
    grey = np.full(3, 0.9 * float(lt.horizon_rgb.mean()), dtype=np.float32)
    cloud = grey * (1.0 + 0.15 * np.clip(n, -1, 1))[:, None]
    col += c[:, None] * (cloud - col)
    sun = lt.sun_dir.astype(np.float32)
    cosang = ex * sun[0] + ey * sun[1] + ez * sun[2]
    if not lt.overcast:
        glow = np.float32(0.25) * np.exp((cosang - 1.0) * 25.0) + (cosang > 0.9995) * np.float32(
            3.0
        )
        col += (glow * (1.0 - c))[:, None] * lt.sun_rgb.astype(np.float32) / 3.0
    return col


# ------------------------------------------------------------------------------ materials
def _asphalt(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    x, y, lf, fp = s.x[ii], s.y[ii], s.log2fp[ii], s.fp[ii]
    off = scene.texture_offset
    n1 = tx.sample_noise(tx.BANK_FINE, x, y, 0.015, lf, off)
    n2 = tx.sample_noise(tx.BANK_BLOTCH, x, y, 0.6, lf, off + 40)
    grain = 1.0 + 0.2 * n1 + 0.12 * n2
    # Repaired patches: the blotch noise's extremes become darker or fresher asphalt.
    grain *= np.where(n2 > 1.4, np.float32(0.82), np.where(n2 < -1.6, np.float32(1.12), 1.0))
    col = scene.road_rgb.astype(np.float32) * grain[:, None]
    on_road = np.flatnonzero(np.abs(y) < scene.road_half_m + 0.2)
    if on_road.size == 0 or scene.markings.shape[0] == 0:
        return col, np.zeros(ii.size, dtype=np.float32)
    xj, yj, fj = x[on_road], y[on_road], fp[on_road]
    # Each pixel takes the marking line nearest to it (lines are at least 0.2 m apart).
    mk = scene.markings[np.argsort(scene.markings[:, 0])].T.astype(np.float32)
    k = np.searchsorted((mk[0, 1:] + mk[0, :-1]) / 2, yj)
    ym, hw, period, dash, offset, is_yellow = (np.take(row, k) for row in mk)
    cov = tx.line_coverage(np.abs(yj - ym), hw, fj)
    dashed = np.flatnonzero((period > 0) & (cov > 0))
    if dashed.size:
        cov[dashed] *= tx.periodic_coverage(
            xj[dashed],
            period[dashed],
            offset[dashed] + dash[dashed] / 2,
            dash[dashed] / 2,
            fj[dashed],
        )
    if scene.zebras.shape[0]:
        zb = scene.zebras[np.argsort(scene.zebras[:, 0])].T.astype(np.float32)
        kz = np.maximum(np.searchsorted(zb[0], xj + fj) - 1, 0)
        zcov = tx.interval_coverage(xj, np.take(zb[0], kz), np.take(zb[1], kz), fj)
        hitz = np.flatnonzero((zcov > 0) & (np.abs(yj) < scene.road_half_m - 0.4))
        if hitz.size:
            zc = zcov[hitz] * tx.periodic_coverage(yj[hitz], 1.0, 0.25, 0.25, fj[hitz])
            cov[hitz] = np.maximum(cov[hitz], zc)
            is_yellow[hitz] = np.where(zc > 0, 0.0, is_yellow[hitz])
    painted = np.flatnonzero(cov > 0)
    if painted.size == 0:
        return col, np.zeros(ii.size, dtype=np.float32)
    xj, fj, cov, is_yellow = xj[painted], fj[painted], cov[painted], is_yellow[painted]
    # No markings across junctions: each pixel checks the junction starting last before it.
    junc = scene.junctions[np.argsort(scene.junctions[:, 0])].T.astype(np.float32)
    kj = np.maximum(np.searchsorted(junc[0], xj + fj) - 1, 0)
    cov *= 1.0 - tx.interval_coverage(xj, np.take(junc[0], kj), np.take(junc[1], kj), fj)
    target = on_road[painted]
    cov *= np.clip(0.8 + 0.4 * n2[target], 0.0, 1.0)  # worn paint
    paint = np.where(
        (is_yellow > 0)[:, None],
        scene.yellow_rgb.astype(np.float32),
        scene.paint_rgb.astype(np.float32),
    )
    cj = col[target]
    col[target] = cj + cov[:, None] * (paint - cj)
    return col, np.zeros(ii.size, dtype=np.float32)


def _pavement(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    x, y, z, lf, fp = s.x[ii], s.y[ii], s.z[ii], s.log2fp[ii], s.fp[ii]
    off = scene.texture_offset + 17
    top = s.nz[ii] > 0.5
    u = np.where(top, x, np.where(np.abs(s.nx[ii]) > 0.5, y, x))
    v = np.where(top, y, z)
    n1 = tx.sample_noise(tx.BANK_FINE, u, v, 0.012, lf, off)
    n2 = tx.sample_noise(tx.BANK_BLOTCH, u, v, 0.3, lf, off + 60)
    tile = scene.tile_m
    grout = np.maximum(
        tx.periodic_coverage(x, tile, 0.0, 0.008, fp),
        tx.periodic_coverage(y, tile, 0.0, 0.008, fp),
    )
    cell = tx.cell_hash(
        np.floor(x / tile).astype(np.int64), np.floor(y / tile).astype(np.int64), 7
    )
    fade = np.clip(1.0 - fp / tile, 0.0, 1.0)
    shade = 1.0 + (cell - 0.5) * 0.18 * fade + 0.12 * n1 + 0.1 * n2
    shade *= 1.0 - 0.45 * grout
    rh = prims.params[s.p[ii], 0]
    kerb = tx.interval_coverage(np.abs(y), rh, rh + 0.22, fp)
    kerb = np.where(top, kerb, 1.0)
    pav = scene.pavement_rgb.astype(np.float32)
    krb = scene.kerb_rgb.astype(np.float32)
    col = (pav * (1.0 - kerb)[:, None] + krb * kerb[:, None]) * shade[:, None]
    return col, np.zeros(ii.size, dtype=np.float32)


def _facade(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    pids = s.p[ii]
    col = np.empty((ii.size, 3), dtype=np.float32)
    reflect = np.zeros(ii.size, dtype=np.float32)
    top = s.nz[ii] > 0.5
    off = scene.texture_offset
    ti = np.flatnonzero(top)
    if ti.size:
        n = tx.sample_noise(
            tx.BANK_LARGE, s.x[ii[ti]], s.y[ii[ti]], 0.7, s.log2fp[ii[ti]], off + 5
        )
        col[ti] = prims.colour2[pids[ti]] * (1.0 + 0.1 * n)[:, None]
    vi = np.flatnonzero(~top)
    if vi.size == 0:
        return col, reflect
    iv = ii[vi]
    pv = pids[vi]
    z, lf, fp = s.z[iv], s.log2fp[iv], s.fp[iv]
    u = np.where(np.abs(s.ny[iv]) > 0.5, s.x[iv], s.y[iv])
    period, floor_h, win_w, win_h, ground, shop, salt, height = (
        np.take(row, pv) for row in prims.params_t
    )
    n1 = tx.sample_noise(tx.BANK_FINE, u + salt, z, 0.02, lf, off)
    n3 = tx.sample_noise(tx.BANK_LARGE, u + salt, z, 0.7, lf, off + 11)
    has_win = win_w > 0
    safe_period = np.where(has_win, period, 1.0)
    safe_floor = np.where(has_win, floor_h, 1.0)
    phase = salt * 0.37
    zz = z - ground
    # Cornices between floors and a darker plinth: horizontal structure at a known scale.
    band = tx.periodic_coverage(zz, safe_floor, 0.0, 0.12, fp) * (zz > 0) * has_win
    plinth = tx.interval_coverage(z, -1.0, 0.5, fp)
    shade = 1.0 + 0.07 * n1 + 0.09 * n3 - 0.12 * band - 0.25 * plinth
    wall = prims.colour[pv] * shade[:, None]
    # Window openings (outer) and panes (inner, inside a 7 cm frame), where the building has any.
    wi = np.flatnonzero(has_win)
    if wi.size == 0:
        col[vi] = wall
        return col, reflect
    u, zz, z, fp = u[wi], zz[wi], z[wi], fp[wi]
    sp, sf, phase, ground = safe_period[wi], safe_floor[wi], phase[wi], ground[wi]
    half_w = 0.5 * sp * win_w[wi]
    half_h = 0.5 * sf * win_h[wi]
    storeys = tx.interval_coverage(z, ground, height[wi] - 1.0, fp)
    centre_u = phase + 0.5 * sp
    centre_z = 0.55 * sf
    cx_out = tx.periodic_coverage(u, sp, centre_u, half_w, fp)
    cz_out = tx.periodic_coverage(zz, sf, centre_z, half_h, fp) * storeys
    cx_in = tx.periodic_coverage(u, sp, centre_u, half_w - 0.07, fp)
    cz_in = tx.periodic_coverage(zz, sf, centre_z, half_h - 0.07, fp) * storeys
    win = cx_in * cz_in
    # Shop fronts: wide windows on the ground floor of some buildings.
    shop_cov = tx.periodic_coverage(u, 2.0 * sp, phase, 0.7 * sp, fp)
    shop_cov *= tx.interval_coverage(z, 0.45, ground - 0.5, fp) * shop[wi]
    win = np.maximum(win, shop_cov)
    frame = np.maximum(cx_out * cz_out - win, 0.0)
    gl = np.flatnonzero((win > 0) | (frame > 0))
    win, frame = win[gl], frame[gl]
    cell = tx.cell_hash(
        np.floor((u[gl] - phase[gl]) / sp[gl]).astype(np.int64),
        np.floor(zz[gl] / sf[gl]).astype(np.int64),
        int(scene.seed) & 0xFFFF,
    )
    # Dark panes, some with light curtains; white or dark frames per building.
    pane = np.float32(0.01) + np.float32(0.04) * cell + (cell > 0.8) * np.float32(0.15)
    frame_alb = np.where(salt[wi][gl] % 3.0 < 1.0, np.float32(0.6), np.float32(0.08))
    target = wi[gl]
    wall_t = wall[target]
    keep = (1.0 - win - frame)[:, None]
    wall[target] = wall_t * keep + (pane * win + frame_alb * frame)[:, None] * _PANE_TINT
    col[vi] = wall
    reflect[vi[target]] = win
    return col, reflect


_PANE_TINT = np.array([0.92, 1.0, 1.08], dtype=np.float32)


def _car_body(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    pids = s.p[ii]
    prm = prims.params[pids]
    cxc, cyc, length, width, heading, kind, body_h = (prm[:, k] for k in range(7))
    x, y, z = s.x[ii], s.y[ii], s.z[ii]
    col = prims.colour[pids].copy()
    glass = np.zeros(ii.size, dtype=np.float32)
    side = np.abs(s.ny[ii]) > 0.5
    endf = np.abs(s.nx[ii]) > 0.5
    xl = x - cxc
    facing = np.sign(s.nx[ii]) * heading  # > 0 on the front face
    along = xl * heading  # > 0 towards the front
    yl = np.abs(y - cyc)
    # Wheels: dark tyres with lighter rims, drawn on the side faces. Kinds: 0 car, 1 van,
    # 2 bus, 3 lorry cab, 4 lorry cargo box.
    big = kind >= 2
    wr = np.where(big, np.float32(0.5), np.float32(0.33))
    wc = np.where(kind == 2, length / 2 - 2.2, length / 2 - 0.85)
    wc = np.where(kind >= 3, length / 2 - 1.1, wc)
    dw = np.sqrt((np.abs(xl) - wc) ** 2 + (z - wr) ** 2)
    # A lorry cab has only its front axle, the cargo box only the rear ones.
    axle_ok = ((kind != 3) | (along > 0)) & ((kind != 4) | (along < 0))
    tyre = side & (dw < wr) & axle_ok
    rim = tyre & (dw < wr * 0.55)
    sill = side & (z < np.where(big, 0.7, 0.3))
    col[sill] *= 0.55
    col[tyre] = np.float32(0.025)
    col[rim] = np.float32(0.3)
    # Lights and number plate on the ends.
    lamp_z = np.where(kind > 0, 0.9, body_h - 0.3)
    lamp = (
        endf
        & (yl > width / 2 - 0.45)
        & (yl < width / 2 - 0.06)
        & (z > lamp_z)
        & (z < lamp_z + 0.16)
        & ((kind != 4) | (facing < 0))
    )
    col[lamp & (facing > 0)] = np.float32(0.75)
    col[lamp & (facing < 0)] = np.array([0.55, 0.03, 0.02], np.float32)
    plate = endf & (yl < 0.26) & (z > 0.32) & (z < 0.44)
    col[plate] = np.float32(0.8)
    bumper = endf & (z < 0.3) & ~plate
    col[bumper] *= 0.5
    # Windscreens (vans, buses, lorry cabs), front side windows (vans, cabs), the bus's band of
    # side windows with pillars every 1.4 m.
    screen = (kind >= 1) & (kind <= 3) & (z > body_h - 0.95) & (z < body_h - 0.3)
    screen &= endf & (facing > 0) & (yl < width / 2 - 0.1)
    front_side = (kind == 1) | (kind == 3)
    front_side &= side & (along > length / 2 - np.where(kind == 3, 1.6, 1.5))
    front_side &= (z > body_h - 0.95) & (z < body_h - 0.3)
    pillar = np.abs(np.mod(xl, np.float32(1.4)) - np.float32(0.7)) < 0.06
    band = (kind == 2) & side & (z > 1.2) & (z < body_h - 0.35) & (np.abs(xl) < length / 2 - 0.3)
    band &= ~pillar
    vglass = screen | front_side | band
    col[vglass] = np.float32(0.03)
    glass[vglass] = 1.0
    # A hint of clearcoat on the paint.
    glass = np.where(tyre | rim | lamp | plate | vglass, glass, np.float32(0.5))
    return col, glass


def _car_cabin(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    pids = s.p[ii]
    prm = prims.params[pids]
    cxc, cyc, cab_l, cab_w, heading, _, z0, z1 = (prm[:, k] for k in range(8))
    x, y, z = s.x[ii], s.y[ii], s.z[ii]
    paint = prims.colour[pids]
    side = np.abs(s.ny[ii]) > 0.5
    endf = np.abs(s.nx[ii]) > 0.5
    xl = np.abs(x - cxc)
    below_roof = z < z1 - 0.07
    side_glass = side & (xl < cab_l / 2 - 0.12) & (np.abs(xl - cab_l * 0.08) > 0.05) & below_roof
    end_glass = endf & (np.abs(y - cyc) < cab_w / 2 - 0.1) & below_roof & (z > z0 + 0.03)
    is_glass = side_glass | end_glass
    col = np.where(is_glass[:, None], np.float32(0.025), paint)
    glass = np.where(is_glass, np.float32(1.0), np.float32(0.5))
    del heading
    return col.astype(np.float32), glass


def _metal(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    n = tx.sample_noise(tx.BANK_BLOTCH, s.x[ii] + s.y[ii], s.z[ii], 0.05, s.log2fp[ii], 5.0)
    col = prims.colour[s.p[ii]] * (1.0 + 0.06 * n)[:, None]
    return col, np.full(ii.size, 0.05, dtype=np.float32)


def _sign(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    front = (s.nx[ii] < -0.5)[:, None]
    pids = s.p[ii]
    return np.where(front, prims.colour[pids], prims.colour2[pids]), np.zeros(ii.size, np.float32)


def _bark(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    n = tx.sample_noise(
        tx.BANK_FINE, s.x[ii] * 3.0 + s.y[ii] * 2.0, s.z[ii] * 0.3, 0.01, s.log2fp[ii], 3.0
    )
    col = prims.colour[s.p[ii]] * (1.0 + 0.25 * n)[:, None]
    return col, np.zeros(ii.size, np.float32)


def _foliage(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    pids = s.p[ii]
    x, y, z = s.x[ii], s.y[ii], s.z[ii]
    salt = prims.params[pids, 0]
    lf = s.log2fp[ii]
    # Two projections of 2D noise, multiplied, so the clumps do not smear into stripes.
    n = tx.sample_noise(tx.BANK_BLOTCH, x + salt, z + 0.5 * y, 0.045, lf, 9.0)
    n2 = tx.sample_noise(tx.BANK_BLOTCH, y - 0.5 * x + salt, z, 0.045, lf, 71.0)
    n3 = tx.sample_noise(tx.BANK_FINE, x + 0.6 * y, z, 0.015, lf, 21.0)
    leaf = np.clip(0.6 + 0.22 * n + 0.22 * n2 + 0.1 * n3, 0.12, 1.3)
    # Leaves deeper in the crown (facing down) see less light.
    depth_shade = 0.7 + 0.3 * np.clip(s.nz[ii] + 0.5, 0.0, 1.0)
    col = prims.colour[pids] * (leaf * depth_shade)[:, None]
    return col, np.zeros(ii.size, np.float32)


def _plain(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    n = tx.sample_noise(tx.BANK_BLOTCH, s.x[ii] + s.y[ii], s.z[ii], 0.04, s.log2fp[ii], 13.0)
    return prims.colour[s.p[ii]] * (1.0 + 0.06 * n)[:, None], np.zeros(ii.size, np.float32)


def _grass(
    scene: Scene, prims: PrimArrays, s: _Surface, ii: npt.NDArray[np.intp]
) -> tuple[F32, F32]:
    x, y, lf = s.x[ii], s.y[ii], s.log2fp[ii]
    n1 = tx.sample_noise(tx.BANK_FINE, x, y, 0.01, lf, 31.0)
    n2 = tx.sample_noise(tx.BANK_BLOTCH, x, y, 0.3, lf, 57.0)
    col = prims.colour[s.p[ii]] * (1.0 + 0.3 * n1 + 0.2 * n2)[:, None]
    # Worn, browner patches.
    col[:, 0] *= 1.0 + 0.15 * np.clip(n2, 0.0, None)
    return col, np.zeros(ii.size, np.float32)


_MATERIALS = {
    Mat.ASPHALT: _asphalt,
    Mat.PAVEMENT: _pavement,
    Mat.FACADE: _facade,
    Mat.CAR_BODY: _car_body,
    Mat.CAR_CABIN: _car_cabin,
    Mat.METAL: _metal,
    Mat.SIGN: _sign,
    Mat.BARK: _bark,
    Mat.FOLIAGE: _foliage,
    Mat.PLAIN: _plain,
    Mat.GRASS: _grass,
}
