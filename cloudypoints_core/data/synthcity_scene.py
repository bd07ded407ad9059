"""Random street layouts for SynthCity: roads, kerbs, facades, cars, poles and trees as primitives.

World frame (metres, right-handed, REP 103 style): x forward along the street (the direction the
camera drives), y to the left, z up; the road surface is the plane z = 0 and the street's centre
line is y = 0. The camera starts at x = 0. Traffic keeps to the right.

A layout is a pure function of the seed, the config and the street's end: components (street,
each facade row, parked cars, traffic, furniture, trees, people, look, camera) draw from separate
random streams, so most of a street stays the same when its end is moved for a longer drive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from cloudypoints_core.data.synthcity_config import SynthCityConfig

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


class SynthLabel(IntEnum):
    """Semantic class ids of ``SynthFrame.labels``: the Cityscapes train ids of these classes."""

    ROAD = 0
    SIDEWALK = 1  # includes the kerb faces
    BUILDING = 2
    WALL = 3
    POLE = 5
    TRAFFIC_LIGHT = 6
    TRAFFIC_SIGN = 7
    VEGETATION = 8
    TERRAIN = 9
    SKY = 10
    PERSON = 11
    CAR = 13
    TRUCK = 14
    BUS = 15


class Kind(IntEnum):
    """Primitive shapes the ray caster intersects."""

    PLANE = 0  # the road plane z = 0 (primitive 0 only)
    BOX = 1  # axis-aligned box: x0, y0, z0, x1, y1, z1
    VCYL = 2  # vertical cylinder: cx, cy, z0, z1, r, -
    ELLIPSOID = 3  # axis-aligned ellipsoid: cx, cy, cz, rx, ry, rz


class Mat(IntEnum):
    """Materials (texture programs) of primitives."""

    ASPHALT = 0
    PAVEMENT = 1
    FACADE = 2
    CAR_BODY = 3
    CAR_CABIN = 4
    METAL = 5
    SIGN = 6
    BARK = 7
    FOLIAGE = 8
    PLAIN = 9
    GRASS = 10


N_PARAMS = 8

# sRGB-ish albedos; squared later to approximate linear light (the renderer encodes with sqrt).
FACADE_PALETTE = np.array(
    [
        [0.80, 0.74, 0.62],
        [0.86, 0.82, 0.70],
        [0.88, 0.87, 0.84],
        [0.62, 0.62, 0.62],
        [0.58, 0.34, 0.26],
        [0.80, 0.62, 0.38],
        [0.85, 0.76, 0.52],
        [0.66, 0.70, 0.74],
        [0.82, 0.60, 0.50],
        [0.48, 0.44, 0.40],
        [0.74, 0.70, 0.66],
        [0.70, 0.52, 0.40],
    ]
)
ROOF_PALETTE = np.array(
    [[0.30, 0.30, 0.32], [0.45, 0.22, 0.17], [0.40, 0.40, 0.40], [0.25, 0.25, 0.28]]
)
CAR_PALETTE = np.array(
    [
        [0.90, 0.90, 0.90],
        [0.08, 0.08, 0.09],
        [0.45, 0.46, 0.48],
        [0.70, 0.71, 0.72],
        [0.60, 0.08, 0.07],
        [0.12, 0.22, 0.50],
        [0.20, 0.25, 0.22],
        [0.55, 0.50, 0.40],
        [0.85, 0.85, 0.82],
        [0.30, 0.30, 0.32],
    ]
)
CAR_WEIGHTS = np.array([0.2, 0.18, 0.16, 0.14, 0.06, 0.07, 0.04, 0.04, 0.06, 0.05])
SIGN_PALETTE = np.array(
    [[0.10, 0.25, 0.65], [0.80, 0.10, 0.08], [0.92, 0.92, 0.90], [0.90, 0.70, 0.05]]
)


@dataclass
class PrimArrays:
    """Primitives as parallel arrays (row i is primitive i; row 0 is the road plane)."""

    kind: npt.NDArray[np.int8]
    geom: F64  # (N, 6), meaning per Kind
    label: npt.NDArray[np.uint8]
    mat: npt.NDArray[np.int8]
    colour: F32  # (N, 3) linear albedo
    colour2: F32  # (N, 3) secondary albedo (roof, car body around the glass)
    params: F32  # (N, N_PARAMS) material parameters
    casts_shadow: npt.NDArray[
        np.bool_
    ]  # small objects shadowed by ray tests (buildings use profiles)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @property
    def params_t(self) -> F32:
        """``params`` transposed (N_PARAMS, N), for per-pixel ``np.take`` of single columns."""
        cached = self.__dict__.get("_params_t")
        if cached is None or cached.shape[1] != self.params.shape[0]:
            cached = np.ascontiguousarray(self.params.T)
            self.__dict__["_params_t"] = cached
        return cached

    @property
    def geom32(self) -> F32:
        """``geom`` as float32, for per-pixel gathers."""
        cached = self.__dict__.get("_geom32")
        if cached is None or cached.shape != self.geom.shape:
            cached = self.geom.astype(np.float32)
            self.__dict__["_geom32"] = cached
        return cached

    def aabb(self) -> F64:
        """Axis-aligned bounds (N, 6) as x0, y0, z0, x1, y1, z1 (the plane gets a dummy box)."""
        g = self.geom
        out = g.copy()
        cyl = self.kind == Kind.VCYL
        out[cyl] = np.stack(
            [
                g[cyl, 0] - g[cyl, 4],
                g[cyl, 1] - g[cyl, 4],
                g[cyl, 2],
                g[cyl, 0] + g[cyl, 4],
                g[cyl, 1] + g[cyl, 4],
                g[cyl, 3],
            ],
            axis=1,
        )
        ell = self.kind == Kind.ELLIPSOID
        out[ell] = np.concatenate([g[ell, :3] - g[ell, 3:], g[ell, :3] + g[ell, 3:]], axis=1)
        return out

    @staticmethod
    def concat(parts: list[PrimArrays]) -> PrimArrays:
        return PrimArrays(
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in PrimArrays.__dataclass_fields__
            )
        )


class PrimBuilder:
    """Collects primitives one by one (a few hundred per scene) and packs them into arrays."""

    def __init__(self) -> None:
        self.rows: list[
            tuple[int, tuple[float, ...], int, int, F64, F64, tuple[float, ...], bool]
        ] = []

    def add(
        self,
        kind: Kind,
        geom: tuple[float, ...],
        label: SynthLabel,
        mat: Mat,
        colour: F64,
        colour2: F64 | None = None,
        params: tuple[float, ...] = (),
        shadow: bool = False,
    ) -> None:
        c2 = colour if colour2 is None else colour2
        self.rows.append((int(kind), geom, int(label), int(mat), colour, c2, params, shadow))

    def box(
        self,
        x0: float,
        y0: float,
        z0: float,
        x1: float,
        y1: float,
        z1: float,
        label: SynthLabel,
        mat: Mat,
        colour: F64,
        colour2: F64 | None = None,
        params: tuple[float, ...] = (),
        shadow: bool = False,
    ) -> None:
        self.add(
            Kind.BOX,
            (min(x0, x1), min(y0, y1), min(z0, z1), max(x0, x1), max(y0, y1), max(z0, z1)),
            label,
            mat,
            colour,
            colour2,
            params,
            shadow,
        )

    def arrays(self) -> PrimArrays:
        n = len(self.rows)
        params = np.zeros((n, N_PARAMS), dtype=np.float32)
        geom = np.zeros((n, 6), dtype=np.float64)
        for i, row in enumerate(self.rows):
            geom[i, : len(row[1])] = row[1]
            params[i, : len(row[6])] = row[6]
        return PrimArrays(
            kind=np.array([r[0] for r in self.rows], dtype=np.int8).reshape(n),
            geom=geom,
            label=np.array([r[2] for r in self.rows], dtype=np.uint8).reshape(n),
            mat=np.array([r[3] for r in self.rows], dtype=np.int8).reshape(n),
            colour=np.array([r[4] for r in self.rows], dtype=np.float32).reshape(n, 3),
            colour2=np.array([r[5] for r in self.rows], dtype=np.float32).reshape(n, 3),
            params=params,
            casts_shadow=np.array([r[7] for r in self.rows], dtype=bool).reshape(n),
        )


@dataclass(frozen=True)
class Car:
    """A vehicle on the road; moving ones advance along x at ``speed_mps`` (signed).

    ``kind``: 0 car (body + cabin), 1 van, 2 bus, 3 lorry (cab + cargo box).
    """

    x: float  # centre at t = 0
    y: float
    heading: int  # +1 faces +x, -1 faces -x
    length: float
    width: float
    body_h: float
    roof_h: float
    kind: int
    colour: tuple[float, float, float]
    speed_mps: float = 0.0
    ego_lane: bool = False  # moving in the camera's lane: speed is relative to the camera's


@dataclass(frozen=True)
class Walker:
    """A pedestrian on a pavement; walks along x at ``speed_mps`` (signed, 0 = standing)."""

    x: float
    y: float
    height: float
    girth: float  # torso radius
    speed_mps: float
    torso: tuple[float, float, float]
    legs: tuple[float, float, float]
    skin: tuple[float, float, float]


@dataclass
class Lighting:
    sun_dir: F64  # unit vector towards the sun (world)
    sun_rgb: F64
    ambient_rgb: F64
    bounce_rgb: F64
    zenith_rgb: F64
    horizon_rgb: F64
    cloud_cover: float
    cloud_offset: float
    fog_distance_m: float
    exposure_target: float
    overcast: bool


@dataclass
class Scene:
    """A street layout and its look, fixed per seed (moving cars are stored at t = 0)."""

    seed: int
    config: SynthCityConfig
    road_half_m: float
    kerb_h_m: float
    markings: F64  # (K, 6): y, half_width, period (0 = solid), dash length, offset, yellow flag
    junctions: F64  # (J, 2) x intervals where the main road is a junction (no markings)
    zebras: F64  # (Z, 2) x intervals with zebra crossings
    x_end: float  # front of the closing building row
    static: PrimArrays
    cars: list[Car]
    walkers: list[Walker]
    # Building height profiles for cheap cast shadows, per side (left, right) on a 0.5 m x grid.
    profile_x0: float
    profile_height: F64  # (2, G)
    profile_facade_y: F64  # (2, G) |y| of the facade nearest the street
    end_row_height: float
    lighting: Lighting
    road_rgb: F64
    paint_rgb: F64
    yellow_rgb: F64
    pavement_rgb: F64
    kerb_rgb: F64
    tile_m: float
    texture_offset: float
    # Camera (constant per seed)
    fx_px: float
    cx_px: float
    cy_px: float
    cam_y: float
    cam_height_m: float
    pitch_rad: float
    roll_rad: float
    yaw_rad: float
    bounce: F64 = field(
        default_factory=lambda: np.zeros(4)
    )  # pitch freq, phase, height freq, phase
    stamp0_ns: int = 0


def _srgb_to_linear(c: F64) -> F64:
    return np.asarray(c, dtype=np.float64) ** 2


def _jitter_colour(rng: np.random.Generator, c: F64, amount: float, tint: float = 0.03) -> F64:
    """Brightness jitter of +-amount and a per-channel tint (sRGB-ish units)."""
    c = np.asarray(c, dtype=np.float64) * rng.uniform(1 - amount, 1 + amount) + rng.normal(
        0, tint, 3
    )
    return np.minimum(np.maximum(c, 0.02), 0.98)  # (np.clip's overhead shows at this call count)


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _log_u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


_N_STREAMS = 12
_LENGTH_STREAM = 10


def street_length(seed: int, config: SynthCityConfig) -> float:
    """Distance to the closing junction of ``seed``'s street before any extension for a drive."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(_N_STREAMS)[_LENGTH_STREAM])
    return _log_u(rng, config.street_length_m)


def build_scene(seed: int, config: SynthCityConfig, min_end_x: float = 0.0) -> Scene:
    """The layout of ``seed``; the closing junction is placed at least at ``min_end_x``."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(_N_STREAMS)]
    (
        r_cam,
        r_street,
        r_left,
        r_right,
        r_park,
        r_move,
        r_furn,
        r_look,
        r_far,
        r_trees,
        _,
        r_people,
    ) = streams
    cfg = config

    # ---------------------------------------------------------------- street cross-section
    n_lanes = int(r_street.integers(cfg.lanes[0], cfg.lanes[1] + 1))
    one_way = n_lanes == 1 or r_street.random() < 0.15
    n_fwd = (
        n_lanes if one_way else max(1, n_lanes // 2 + int(n_lanes % 2 and r_street.random() < 0.5))
    )
    lane_w = _u(r_street, cfg.lane_width_m)
    park_w = float(r_street.uniform(2.0, 2.5))
    park_right = r_street.random() < cfg.parking_lane_probability
    park_left = r_street.random() < cfg.parking_lane_probability
    widths = (
        ([park_w] if park_right else []) + [lane_w] * n_lanes + ([park_w] if park_left else [])
    )
    road_w = float(sum(widths))
    rh = road_w / 2.0
    edges = -rh + np.concatenate([[0.0], np.cumsum(widths)])
    first_lane = 1 if park_right else 0
    lane_centres = [
        (edges[first_lane + i] + edges[first_lane + i + 1]) / 2 for i in range(n_lanes)
    ]
    lane_dirs = [1 if i < n_fwd else -1 for i in range(n_lanes)]
    sidewalk_w = (
        _u(r_street, cfg.sidewalk_width_m),
        _u(r_street, cfg.sidewalk_width_m),
    )  # left, right
    kerb_h = _u(r_street, cfg.kerb_height_m)
    street_len = street_length(seed, cfg)
    junction_w = float(r_street.uniform(9.0, 16.0))
    x_end = max(street_len, min_end_x)

    markings: list[tuple[float, ...]] = []
    dash_period = float(r_street.choice([9.0, 12.0, 6.0]))
    dash_on = dash_period / 3.0
    yellow = float(r_street.random() < 0.2)
    for i in range(n_lanes - 1):
        y = float(edges[first_lane + i + 1])
        if lane_dirs[i] != lane_dirs[i + 1]:
            style = r_street.random()
            if style < 0.4:
                markings.append((y, 0.06, 0.0, 0.0, 0.0, yellow))
            elif style < 0.6:
                markings.append((y - 0.1, 0.05, 0.0, 0.0, 0.0, yellow))
                markings.append((y + 0.1, 0.05, 0.0, 0.0, 0.0, yellow))
            else:
                markings.append(
                    (y, 0.06, dash_period, dash_on, float(r_street.uniform(0, 9)), yellow)
                )
        else:
            markings.append((y, 0.06, dash_period, dash_on, float(r_street.uniform(0, 9)), 0.0))
    for side_edge, parked in (
        (edges[first_lane], park_right),
        (edges[first_lane + n_lanes], park_left),
    ):
        if parked and r_street.random() < 0.5:
            markings.append((float(side_edge), 0.05, 0.0, 0.0, 0.0, 0.0))
        elif not parked and r_street.random() < 0.6:
            inset = 0.35 if side_edge < 0 else -0.35
            markings.append((float(side_edge + inset), 0.06, 0.0, 0.0, 0.0, 0.0))

    # Cross streets: x intervals, open on the left, right or both sides.
    crosses: list[tuple[float, float, bool, bool]] = []
    x = float(r_street.uniform(12.0, 90.0))
    while True:
        w = float(r_street.uniform(8.0, 15.0))
        if x + w > x_end - junction_w - 25.0:
            break
        side = r_street.random()
        crosses.append((x, x + w, side < 0.75, side > 0.45 or side < 0.25))
        x += w + _u(r_street, cfg.cross_street_spacing_m)
    junction_start = x_end - junction_w
    open_left = [(a, b) for a, b, lft, _ in crosses if lft] + [(junction_start, x_end)]
    open_right = [(a, b) for a, b, _, rgt in crosses if rgt] + [(junction_start, x_end)]
    junctions = np.array(
        [(a, b) for a, b, _, _ in crosses] + [(junction_start, x_end)], dtype=np.float64
    )
    zebras = []
    for a, _, _, _ in crosses:
        if r_street.random() < 0.35:
            zebras.append((a - 4.5, a - 1.5))
    if r_street.random() < 0.35:
        zebras.append((junction_start - 4.5, junction_start - 1.5))

    # ------------------------------------------------------------------------ look
    overcast = r_look.random() < cfg.overcast_probability
    elev = math.radians(_u(r_look, cfg.sun_elevation_deg))
    azim = r_look.uniform(-math.pi, math.pi)
    sun_dir = np.array(
        [math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)]
    )
    warm = max(0.0, 1.0 - elev / math.radians(35.0))
    sun_rgb = np.array([1.0, 0.93 - 0.12 * warm, 0.85 - 0.3 * warm])
    if overcast:
        sun_rgb *= r_look.uniform(0.05, 0.35)
        grey = r_look.uniform(0.55, 0.85)
        zenith = np.array([grey, grey * 1.01, grey * 1.05]) * r_look.uniform(0.75, 0.95)
        horizon = np.array([grey, grey, grey * 1.02]) * 1.05
        ambient = np.array([0.9, 0.92, 0.97]) * r_look.uniform(0.8, 1.1)
        cloud_cover = float(r_look.uniform(0.6, 1.0))
    else:
        sun_rgb *= r_look.uniform(2.2, 3.2)
        zenith = np.array([0.18, 0.32, 0.62]) * r_look.uniform(0.7, 1.2)
        horizon = np.array([0.62, 0.72, 0.85]) * r_look.uniform(0.85, 1.1)
        ambient = np.array([0.45, 0.52, 0.65]) * r_look.uniform(0.6, 1.0)
        cloud_cover = float(r_look.uniform(0.0, 0.7))
    lighting = Lighting(
        sun_dir=sun_dir,
        sun_rgb=sun_rgb,
        ambient_rgb=ambient,
        bounce_rgb=np.array([0.12, 0.11, 0.10]) * (0.4 if overcast else 1.0),
        zenith_rgb=zenith,
        horizon_rgb=horizon,
        cloud_cover=cloud_cover,
        cloud_offset=float(r_look.uniform(0, 1000)),
        fog_distance_m=_log_u(r_look, cfg.fog_distance_m),
        exposure_target=float(r_look.uniform(0.16, 0.26)),
        overcast=overcast,
    )
    road_rgb = _srgb_to_linear(_jitter_colour(r_look, np.array([0.42, 0.42, 0.43]), 0.2, 0.008))
    paint_rgb = _srgb_to_linear(np.array([0.85, 0.85, 0.83]) * r_look.uniform(0.8, 1.0))
    yellow_rgb = _srgb_to_linear(np.array([0.85, 0.68, 0.15]))
    pavement_rgb = _srgb_to_linear(
        _jitter_colour(r_look, np.array([0.62, 0.6, 0.57]), 0.15, 0.015)
    )
    kerb_rgb = _srgb_to_linear(_jitter_colour(r_look, np.array([0.68, 0.68, 0.66]), 0.08, 0.005))
    tile_m = float(r_look.choice([0.3, 0.4, 0.5, 0.6]))
    street_style_h = _u(r_look, (cfg.building_height_m[0] * 1.3, cfg.building_height_m[1] * 0.6))

    # -------------------------------------------------------------------- geometry
    pb = PrimBuilder()
    pb.add(Kind.PLANE, (), SynthLabel.ROAD, Mat.ASPHALT, road_rgb)
    grid_x0 = -60.0
    grid_n = int((x_end + 80.0 - grid_x0) / 0.5) + 1
    prof_h = np.zeros((2, grid_n))
    prof_y = np.zeros((2, grid_n))
    for side_i, (side, rng, opens, sw) in enumerate(
        ((1.0, r_left, open_left, sidewalk_w[0]), (-1.0, r_right, open_right, sidewalk_w[1]))
    ):
        prof_y[side_i] = rh + sw + 30.0
        # Sidewalk slabs between the openings (they run far back so cross streets get kerbs too).
        cuts = sorted(open_for_side for open_for_side in opens)
        start = -80.0
        for a, b in cuts + [(x_end + 200.0, x_end + 200.0)]:
            if a > start:
                pb.box(
                    start,
                    side * rh,
                    0.0,
                    a,
                    side * (rh + 220.0),
                    kerb_h,
                    SynthLabel.SIDEWALK,
                    Mat.PAVEMENT,
                    pavement_rgb,
                    params=(rh,),
                )
            start = b
        _facade_row(
            pb,
            rng,
            cfg,
            side,
            rh + sw,
            cuts,
            x_end,
            street_style_h,
            prof_h[side_i],
            prof_y[side_i],
            grid_x0,
        )
        for a, b in cuts[:-1]:
            _cross_street_buildings(pb, r_far, cfg, side, rh + sw, a, b, street_style_h)
    # The closing row across the street, beyond the T-junction.
    end_h = _end_row(
        pb, r_far, cfg, x_end, pavement_rgb, kerb_h, rh, street_style_h, junction_start
    )
    _skyline(pb, r_far, cfg, rh, x_end)
    _lawns(pb, r_people, rh, kerb_h, sidewalk_w, open_left, open_right, x_end)
    _trees(pb, r_trees, cfg, rh, sidewalk_w, open_left, open_right, x_end)
    _poles(pb, r_furn, cfg, rh, sidewalk_w, open_left, open_right, x_end)
    walkers = _walkers(r_people, rh, sidewalk_w, open_left, open_right, x_end)

    # ------------------------------------------------------------------------- cars
    cars: list[Car] = []
    density = _u(r_park, cfg.parked_car_density)
    for parked, centre, heading, opens in (
        (park_right, (edges[0] + edges[1]) / 2, 1, open_right),
        (park_left, (edges[-2] + edges[-1]) / 2, -1, open_left),
    ):
        if not parked:
            continue
        x = float(r_park.uniform(-40.0, -30.0))
        while x < junction_start - 6.0:
            car = _random_car(
                r_park, x, centre + heading * r_park.uniform(-0.05, 0.2), heading, 0.0
            )
            blocked = any(a - 6.0 < x + car.length and x < b + 3.0 for a, b in opens)
            if r_park.random() < density and not blocked:
                cars.append(car)
            x += car.length + float(r_park.uniform(0.6, 3.5))
    ego_lane = int(r_cam.integers(0, n_fwd))
    for lane_i, (yc, direction) in enumerate(zip(lane_centres, lane_dirs, strict=True)):
        speed = float(r_move.uniform(3.0, 14.0))
        is_ego = lane_i == ego_lane
        x = float(r_move.uniform(8.0, 40.0)) if is_ego else float(r_move.uniform(-60.0, -20.0))
        while x < junction_start - 6.0:
            if is_ego:
                v = float(r_move.uniform(0.5, 4.0))  # added to the camera's speed
            else:
                v = direction * speed
            car = _random_car(
                r_move, x, yc + r_move.uniform(-0.25, 0.25), direction, v, ego=is_ego, big=True
            )
            cars.append(car)
            x += car.length + _u(r_move, cfg.moving_car_spacing_m) * (2.0 if is_ego else 1.0)

    # ------------------------------------------------------------------------- camera
    cam_y = float(
        lane_centres[ego_lane] + r_cam.uniform(-cfg.lateral_jitter_m, cfg.lateral_jitter_m)
    )
    fx = cfg.fx_px * (1.0 + r_cam.uniform(-cfg.fx_jitter_frac, cfg.fx_jitter_frac))
    jx, jy = cfg.principal_point_jitter_px
    # Never exactly the centre: at least a quarter of the jitter away, random sign.
    cx = cfg.base_width / 2.0 + r_cam.choice([-1.0, 1.0]) * r_cam.uniform(0.25, 1.0) * jx
    cy = cfg.base_height / 2.0 + r_cam.choice([-1.0, 1.0]) * r_cam.uniform(0.25, 1.0) * jy
    if jx == 0 and jy == 0:
        cx, cy = cfg.base_width / 2.0 - 0.5, cfg.base_height / 2.0 - 0.5
    cam_h = cfg.camera_height_m + r_cam.uniform(
        -cfg.camera_height_jitter_m, cfg.camera_height_jitter_m
    )
    pitch = cfg.pitch_rad + r_cam.uniform(-cfg.pitch_jitter_rad, cfg.pitch_jitter_rad)
    roll = r_cam.uniform(-cfg.roll_jitter_rad, cfg.roll_jitter_rad)
    yaw = r_cam.uniform(-cfg.yaw_jitter_rad, cfg.yaw_jitter_rad)
    bounce = np.array(
        [
            r_cam.uniform(0.7, 2.0),
            r_cam.uniform(0, 2 * math.pi),
            r_cam.uniform(0.7, 2.0),
            r_cam.uniform(0, 2 * math.pi),
        ]
    )
    stamp0 = int(r_cam.integers(1_400_000_000, 1_700_000_000)) * 1_000_000_000

    return Scene(
        seed=seed,
        config=cfg,
        road_half_m=rh,
        kerb_h_m=kerb_h,
        markings=np.array(markings, dtype=np.float64).reshape(-1, 6),
        junctions=junctions,
        zebras=np.array(zebras, dtype=np.float64).reshape(-1, 2),
        x_end=x_end,
        static=pb.arrays(),
        cars=cars,
        walkers=walkers,
        profile_x0=grid_x0,
        profile_height=prof_h,
        profile_facade_y=prof_y,
        end_row_height=end_h,
        lighting=lighting,
        road_rgb=road_rgb,
        paint_rgb=paint_rgb,
        yellow_rgb=yellow_rgb,
        pavement_rgb=pavement_rgb,
        kerb_rgb=kerb_rgb,
        tile_m=tile_m,
        texture_offset=float(r_look.uniform(0, 256)),
        fx_px=fx,
        cx_px=cx,
        cy_px=cy,
        cam_y=cam_y,
        cam_height_m=cam_h,
        pitch_rad=pitch,
        roll_rad=roll,
        yaw_rad=yaw,
        bounce=bounce,
        stamp0_ns=stamp0,
    )


def _facade_params(rng: np.random.Generator, height: float) -> tuple[float, ...]:
    """Window grid of one building: period, floor height, window fractions, ground floor, salt."""
    period = float(rng.uniform(2.2, 4.0))
    floor_h = float(rng.uniform(2.8, 3.6))
    win_w = float(rng.uniform(0.35, 0.6))
    win_h = float(rng.uniform(0.4, 0.6))
    shop = float(height > 7 and rng.random() < 0.5)
    # Shops take a tall ground floor; otherwise the window grid starts above a low plinth.
    ground = float(rng.uniform(3.2, 4.5)) if shop else float(rng.uniform(0.3, 0.9))
    return (period, floor_h, win_w, win_h, ground, shop, float(rng.integers(0, 10_000)), height)


def _building(
    pb: PrimBuilder,
    rng: np.random.Generator,
    x0: float,
    x1: float,
    y_near: float,
    y_far: float,
    height: float,
    balconies: bool = False,
) -> None:
    """A building whose street-facing facade is the plane y = y_near."""
    wall = _srgb_to_linear(
        _jitter_colour(rng, FACADE_PALETTE[rng.integers(len(FACADE_PALETTE))], 0.1)
    )
    roof = _srgb_to_linear(_jitter_colour(rng, ROOF_PALETTE[rng.integers(len(ROOF_PALETTE))], 0.1))
    params = _facade_params(rng, height)
    pb.box(x0, y_near, 0.0, x1, y_far, height, SynthLabel.BUILDING, Mat.FACADE, wall, roof, params)
    sign = 1.0 if y_far > y_near else -1.0
    if height > 8 and rng.random() < 0.25:
        # A set-back top storey or roof structure breaks the skyline.
        inset = float(rng.uniform(1.0, 2.5))
        extra = float(rng.uniform(2.5, 4.0))
        pb.box(
            x0 + inset,
            y_near + sign * inset,
            height,
            x1 - inset,
            y_far,
            height + extra,
            SynthLabel.BUILDING,
            Mat.FACADE,
            wall * 0.9,
            roof,
            _facade_params(rng, height + extra),
        )
    if balconies and height > 8 and x1 - x0 > 6 and rng.random() < 0.18:
        # Balcony bands: slabs with a parapet, one per storey, sticking out towards the street.
        floor_h, ground = params[1], params[4]
        depth = float(rng.uniform(0.9, 1.5))
        rail = _srgb_to_linear(
            _jitter_colour(rng, FACADE_PALETTE[rng.integers(len(FACADE_PALETTE))], 0.1)
        )
        plain = (0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        z = ground + floor_h - 0.2
        n = 0
        while z + 1.2 < height - 1.0 and n < 8:
            pb.box(
                x0 + 0.6,
                y_near - sign * depth,
                z,
                x1 - 0.6,
                y_near,
                z + 1.05,
                SynthLabel.BUILDING,
                Mat.FACADE,
                rail,
                rail,
                plain,
            )
            z += floor_h
            n += 1


def _facade_row(
    pb: PrimBuilder,
    rng: np.random.Generator,
    cfg: SynthCityConfig,
    side: float,
    facade_y: float,
    cuts: list[tuple[float, float]],
    x_end: float,
    style_h: float,
    prof_h: F64,
    prof_y: F64,
    grid_x0: float,
) -> None:
    """Buildings along one side of the main street, leaving the cross streets open."""
    x = -60.0
    lo_h, hi_h = cfg.building_height_m
    clear = 2.5  # a pavement's width of clearance along cross streets
    while x < x_end:
        length = _u(rng, cfg.building_length_m)
        gap = float(rng.uniform(1.0, 4.0)) if rng.random() < 0.15 else 0.0
        setback = (
            float(rng.uniform(0.0, 1.0)) if rng.random() < 0.7 else _u(rng, cfg.building_setback_m)
        )
        height = float(np.clip(style_h * rng.uniform(0.65, 1.45), lo_h, hi_h))
        if rng.random() < 0.06:
            height = float(np.clip(style_h * rng.uniform(1.8, 3.0), lo_h, hi_h * 1.8))
        depth = float(rng.uniform(14.0, 35.0))
        kind = rng.random()
        x0, x1 = x, x + length
        x = x1 + gap
        for a, b in cuts:
            if b + clear <= x0:
                continue
            if x0 >= a - clear:
                x0 = x1 = x = b + clear  # inside a cross street: skip past it
            elif x1 > a - clear:
                x1 = a - clear
                x = b + clear
            break
        if x1 - x0 >= 3.0:
            y0 = side * (facade_y + setback)
            if kind < 0.07:
                # A garden wall with greenery behind instead of a building.
                wall_h = float(rng.uniform(1.0, 2.3))
                colour = _srgb_to_linear(
                    _jitter_colour(rng, FACADE_PALETTE[rng.integers(12)], 0.1)
                )
                pb.box(
                    x0,
                    y0,
                    0.0,
                    x1,
                    y0 + side * 0.3,
                    wall_h,
                    SynthLabel.WALL,
                    Mat.FACADE,
                    colour,
                    colour,
                    (0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, wall_h),
                )
                h_prof = wall_h
            else:
                _building(pb, rng, x0, x1, y0, y0 + side * depth, height, balconies=True)
                h_prof = height
            i0 = max(0, int((x0 - grid_x0) / 0.5))
            i1 = min(prof_h.shape[0], int((x1 - grid_x0) / 0.5) + 1)
            prof_h[i0:i1] = h_prof
            prof_y[i0:i1] = facade_y + setback


def _cross_street_buildings(
    pb: PrimBuilder,
    rng: np.random.Generator,
    cfg: SynthCityConfig,
    side: float,
    facade_y: float,
    a: float,
    b: float,
    style_h: float,
) -> None:
    """Facades lining a cross street beyond the corner buildings, and one closing it."""
    lo_h, hi_h = cfg.building_height_m
    sw = float(rng.uniform(2.0, 4.0))
    far = float(rng.uniform(60.0, 180.0))
    for xa, xb in ((a - sw - 30.0, a - sw), (b + sw, b + sw + 30.0)):
        y = facade_y + 25.0
        while y < far:
            length = float(rng.uniform(10.0, 30.0))
            h = float(np.clip(style_h * rng.uniform(0.6, 1.5), lo_h, hi_h))
            _building(pb, rng, xa, xb, side * y, side * min(y + length, far), h)
            y += length
    h = float(np.clip(style_h * rng.uniform(0.8, 1.8), lo_h, hi_h * 1.5))
    _building(pb, rng, a - sw - 30.0, b + sw + 30.0, side * far, side * (far + 20.0), h)


def _end_row(
    pb: PrimBuilder,
    rng: np.random.Generator,
    cfg: SynthCityConfig,
    x_end: float,
    pavement: F64,
    kerb_h: float,
    rh: float,
    style_h: float,
    junction_start: float,
) -> float:
    """Pavement and a row of buildings across the street beyond the closing T-junction."""
    sw = float(rng.uniform(2.0, 5.0))
    pb.box(
        x_end,
        -300.0,
        0.0,
        x_end + 80.0,
        300.0,
        kerb_h,
        SynthLabel.SIDEWALK,
        Mat.PAVEMENT,
        pavement,
        params=(1e6,),
    )
    lo_h, hi_h = cfg.building_height_m
    y = -float(rng.uniform(120.0, 200.0))
    heights = []
    while y < 160.0:
        length = float(rng.uniform(8.0, 30.0))
        h = float(np.clip(style_h * rng.uniform(0.6, 1.6), lo_h, hi_h))
        if abs(y + length / 2) < rh + 20:
            heights.append(h)
        setback = float(rng.uniform(0.0, 2.0))
        _building(pb, rng, x_end + sw + setback, x_end + sw + setback + 25.0, y, y + length, h)
        y += length
    # The T-junction's own side streets, lined with buildings down to the horizon.
    for side in (1.0, -1.0):
        _cross_street_buildings(pb, rng, cfg, side, rh + 3.0, junction_start, x_end, style_h)
    return float(np.mean(heights)) if heights else 0.0


def _skyline(
    pb: PrimBuilder, rng: np.random.Generator, cfg: SynthCityConfig, rh: float, x_end: float
) -> None:
    """Taller buildings behind the front rows, visible above the roofs."""
    for _ in range(int(rng.integers(0, 9))):
        x = float(rng.uniform(10.0, x_end + 150.0))
        side = 1.0 if rng.random() < 0.5 else -1.0
        y = side * float(rng.uniform(rh + 50.0, rh + 160.0))
        w = float(rng.uniform(15.0, 40.0))
        h = float(rng.uniform(cfg.building_height_m[1] * 0.7, cfg.building_height_m[1] * 2.2))
        _building(pb, rng, x, x + w, y, y + side * w, h)


def _trees(
    pb: PrimBuilder,
    rng: np.random.Generator,
    cfg: SynthCityConfig,
    rh: float,
    sidewalk_w: tuple[float, float],
    open_left: list[tuple[float, float]],
    open_right: list[tuple[float, float]],
    x_end: float,
) -> None:
    for side, sw, opens in ((1.0, sidewalk_w[0], open_left), (-1.0, sidewalk_w[1], open_right)):
        if rng.random() >= cfg.tree_probability:
            continue
        hue = rng.uniform(0.0, 1.0)
        leaf = np.array([0.30 + 0.12 * hue, 0.42 + 0.06 * hue, 0.16]) * rng.uniform(0.75, 1.1)
        bark = np.array([0.36, 0.31, 0.26]) * rng.uniform(0.75, 1.1)
        x = float(rng.uniform(-30.0, -10.0))
        spacing = _u(rng, cfg.tree_spacing_m)
        while x < x_end - 10.0:
            y = side * (rh + min(sw * 0.5, float(rng.uniform(0.8, 1.4))))
            if not any(a - 2.0 < x < b + 2.0 for a, b in opens):
                size = float(rng.uniform(0.7, 1.3))
                trunk_h = float(rng.uniform(2.2, 3.5)) * size
                r = float(rng.uniform(0.1, 0.2)) * size
                pb.add(
                    Kind.VCYL,
                    (x, y, 0.0, trunk_h + 1.0, r, 0.0),
                    SynthLabel.VEGETATION,
                    Mat.BARK,
                    _srgb_to_linear(_jitter_colour(rng, bark, 0.1, 0.01)),
                    shadow=True,
                )
                radius = float(rng.uniform(1.6, 3.0)) * size
                cz = trunk_h + radius * 0.75
                colour = _srgb_to_linear(_jitter_colour(rng, leaf, 0.1, 0.015))
                for k in range(int(rng.integers(2, 5))):
                    off = rng.uniform(-0.45, 0.45, 3) * radius
                    rad = radius * rng.uniform(0.55, 0.9, 3)
                    rad[2] *= 0.85
                    if k == 0:
                        # The central lobe stands in for the whole crown in shadow rays.
                        off[:] = 0.0
                        rad = np.array([radius * 0.85, radius * 0.85, radius * 0.72])
                    pb.add(
                        Kind.ELLIPSOID,
                        (x + off[0], y + off[1] * 0.6, cz + off[2] * 0.6, rad[0], rad[1], rad[2]),
                        SynthLabel.VEGETATION,
                        Mat.FOLIAGE,
                        colour * rng.uniform(0.8, 1.2),
                        params=(float(rng.uniform(0, 256)),),
                        shadow=k == 0,
                    )
            x += spacing * float(rng.uniform(0.8, 1.25))


def _poles(
    pb: PrimBuilder,
    rng: np.random.Generator,
    cfg: SynthCityConfig,
    rh: float,
    sidewalk_w: tuple[float, float],
    open_left: list[tuple[float, float]],
    open_right: list[tuple[float, float]],
    x_end: float,
) -> None:
    metal = _srgb_to_linear(np.array([0.5, 0.51, 0.52]) * rng.uniform(0.6, 1.1))
    both = rng.random() < 0.5
    first_side = 1.0 if rng.random() < 0.5 else -1.0
    spacing = _u(rng, cfg.pole_spacing_m)
    for side, opens in ((1.0, open_left), (-1.0, open_right)):
        if not both and side != first_side:
            continue
        x = float(rng.uniform(-20.0, 0.0))
        h = float(rng.uniform(6.0, 9.0))
        while x < x_end - 5.0:
            if not any(a - 1.0 < x < b + 1.0 for a, b in opens):
                y = side * (rh + 0.45)
                pb.add(
                    Kind.VCYL,
                    (x, y, 0.0, h, 0.09, 0.0),
                    SynthLabel.POLE,
                    Mat.METAL,
                    metal,
                    shadow=True,
                )
                arm = float(rng.uniform(1.0, 2.0))
                pb.box(
                    x - 0.05,
                    y,
                    h - 0.12,
                    x + 0.05,
                    y - side * arm,
                    h,
                    SynthLabel.POLE,
                    Mat.METAL,
                    metal,
                )
                pb.box(
                    x - 0.3,
                    y - side * (arm - 0.1),
                    h - 0.22,
                    x + 0.3,
                    y - side * (arm + 0.35),
                    h - 0.02,
                    SynthLabel.POLE,
                    Mat.METAL,
                    metal * 0.7,
                )
            x += spacing * float(rng.uniform(0.9, 1.1))
    # Traffic lights on the near right corner of every junction (main-street junctions are the
    # openings present on both lists).
    dark = _srgb_to_linear(np.array([0.12, 0.12, 0.12]))
    for a, _ in sorted(set(open_left) | set(open_right)):
        if rng.random() < 0.6:
            x = a - float(rng.uniform(1.0, 2.5))
            y = -(rh + float(rng.uniform(0.4, 0.8)))
            h = float(rng.uniform(3.0, 3.6))
            pb.add(
                Kind.VCYL,
                (x, y, 0.0, h, 0.07, 0.0),
                SynthLabel.POLE,
                Mat.METAL,
                metal,
                shadow=True,
            )
            pb.box(
                x - 0.2,
                y - 0.17,
                h - 1.0,
                x - 0.07,
                y + 0.17,
                h,
                SynthLabel.TRAFFIC_LIGHT,
                Mat.SIGN,
                dark,
                dark,
                shadow=True,
            )
    # Traffic signs on short poles facing the oncoming camera.
    x = float(rng.uniform(5.0, 60.0))
    while x < x_end - 5.0:
        side = 1.0 if rng.random() < 0.3 else -1.0
        opens = open_left if side > 0 else open_right
        if not any(a - 1.0 < x < b + 1.0 for a, b in opens):
            y = side * (rh + float(rng.uniform(0.35, 0.6)))
            h = float(rng.uniform(2.2, 2.8))
            pb.add(
                Kind.VCYL,
                (x, y, 0.0, h + 0.3, 0.035, 0.0),
                SynthLabel.POLE,
                Mat.METAL,
                metal,
                shadow=True,
            )
            colour = _srgb_to_linear(SIGN_PALETTE[rng.integers(len(SIGN_PALETTE))])
            size = float(rng.uniform(0.5, 0.8))
            pb.box(
                x - 0.06,
                y - size / 2,
                h - size / 2 + 0.3,
                x - 0.03,
                y + size / 2,
                h + size / 2 + 0.3,
                SynthLabel.TRAFFIC_SIGN,
                Mat.SIGN,
                colour,
                metal,
                shadow=True,
            )
        x += float(rng.uniform(25.0, 90.0))


def _lawns(
    pb: PrimBuilder,
    rng: np.random.Generator,
    rh: float,
    kerb_h: float,
    sidewalk_w: tuple[float, float],
    open_left: list[tuple[float, float]],
    open_right: list[tuple[float, float]],
    x_end: float,
) -> None:
    """Grass strips between kerb and footway on some streets (trees stand in them)."""
    for side, sw, opens in ((1.0, sidewalk_w[0], open_left), (-1.0, sidewalk_w[1], open_right)):
        if sw < 2.5 or rng.random() > 0.35:
            continue
        width = float(rng.uniform(0.8, min(2.5, sw - 1.2)))
        grass = _srgb_to_linear(_jitter_colour(rng, np.array([0.42, 0.47, 0.3]), 0.15, 0.02))
        y0, y1 = side * (rh + 0.3), side * (rh + 0.3 + width)
        start = -80.0
        for a, b in sorted(opens) + [(x_end + 100.0, x_end + 100.0)]:
            if a - 1.0 > start + 1.0:
                pb.box(
                    start + 1.0,
                    y0,
                    0.0,
                    a - 1.0,
                    y1,
                    kerb_h + 0.04,
                    SynthLabel.TERRAIN,
                    Mat.GRASS,
                    grass,
                    params=(float(rng.uniform(0, 100)),),
                )
            start = b
            if start > x_end:
                break


def _walkers(
    rng: np.random.Generator,
    rh: float,
    sidewalk_w: tuple[float, float],
    open_left: list[tuple[float, float]],
    open_right: list[tuple[float, float]],
    x_end: float,
) -> list[Walker]:
    """Pedestrians standing or walking along the pavements."""
    out: list[Walker] = []
    density = float(rng.uniform(0.0, 0.5))  # per 10 m of pavement
    skins = np.array([[0.95, 0.8, 0.7], [0.85, 0.65, 0.5], [0.6, 0.45, 0.35], [0.4, 0.28, 0.2]])
    for side, sw, opens in ((1.0, sidewalk_w[0], open_left), (-1.0, sidewalk_w[1], open_right)):
        if sw < 1.2 or density <= 0:
            continue
        x = float(rng.uniform(-20.0, 0.0))
        while x < x_end - 5.0:
            x += float(rng.exponential(10.0 / density))
            if x >= x_end - 5.0 or any(a - 1.0 < x < b + 1.0 for a, b in opens):
                continue
            y = side * (rh + float(rng.uniform(0.7, max(0.8, sw - 0.4))))
            height = float(np.clip(rng.normal(1.72, 0.09), 1.5, 1.98))
            if rng.random() < 0.1:
                height *= 0.7  # a child
            speed = (
                0.0
                if rng.random() < 0.4
                else float(rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6))
            )
            torso = _srgb_to_linear(np.clip(rng.uniform(0.08, 0.9, 3), 0.05, 0.95))
            legs = _srgb_to_linear(np.array([0.15, 0.17, 0.25]) * rng.uniform(0.5, 2.0))
            skin = _srgb_to_linear(skins[rng.integers(len(skins))])
            out.append(
                Walker(
                    x,
                    y,
                    height,
                    float(rng.uniform(0.15, 0.21)),
                    speed,
                    tuple(torso.tolist()),
                    tuple(legs.tolist()),
                    tuple(skin.tolist()),
                )
            )
    return out


def walker_prims(walkers: list[Walker], xs: F64) -> PrimArrays:
    """Legs (a box), torso (a cylinder) and head (an ellipsoid) of each pedestrian at ``xs``."""
    pb = PrimBuilder()
    for wk, x in zip(walkers, xs, strict=True):
        h = wk.height
        x = float(x)
        hip, shoulder = 0.48 * h, 0.83 * h
        pb.box(
            x - 0.12,
            wk.y - 0.16,
            0.0,
            x + 0.12,
            wk.y + 0.16,
            hip + 0.05,
            SynthLabel.PERSON,
            Mat.PLAIN,
            np.array(wk.legs),
            shadow=True,
        )
        pb.add(
            Kind.VCYL,
            (x, wk.y, hip, shoulder, wk.girth, 0.0),
            SynthLabel.PERSON,
            Mat.PLAIN,
            np.array(wk.torso),
            shadow=True,
        )
        r = 0.065 * h
        pb.add(
            Kind.ELLIPSOID,
            (x, wk.y, shoulder + 0.06 + r, r * 0.8, r * 0.8, r),
            SynthLabel.PERSON,
            Mat.PLAIN,
            np.array(wk.skin),
        )
    return pb.arrays() if pb.rows else empty_prims()


def _random_car(
    rng: np.random.Generator,
    x_rear: float,
    y: float,
    heading: int,
    speed: float,
    ego: bool = False,
    big: bool = False,
) -> Car:
    u = rng.random()
    kind = 1 if u < 0.12 else (2 if u < 0.15 and big else (3 if u < 0.19 and big else 0))
    if kind == 1:
        length, width = float(rng.uniform(4.8, 5.6)), float(rng.uniform(1.9, 2.05))
        body_h, roof_h = float(rng.uniform(1.9, 2.4)), 0.0
    elif kind == 2:
        length, width = float(rng.uniform(10.5, 12.5)), 2.55
        body_h, roof_h = float(rng.uniform(2.9, 3.2)), 0.0
    elif kind == 3:
        length, width = float(rng.uniform(7.5, 10.0)), 2.5
        body_h, roof_h = 2.9, float(rng.uniform(3.4, 3.9))  # cab height, cargo box height
    else:
        length, width = float(rng.uniform(3.7, 4.9)), float(rng.uniform(1.68, 1.9))
        body_h = float(rng.uniform(0.82, 1.0))
        roof_h = body_h + float(rng.uniform(0.5, 0.65)) + (0.2 if rng.random() < 0.15 else 0.0)
    colour = CAR_PALETTE[rng.choice(len(CAR_PALETTE), p=CAR_WEIGHTS)]
    colour = _srgb_to_linear(_jitter_colour(rng, colour, 0.06))
    return Car(
        x=x_rear + length / 2,
        y=float(y),
        heading=heading,
        length=length,
        width=width,
        body_h=body_h,
        roof_h=roof_h,
        kind=kind,
        colour=(float(colour[0]), float(colour[1]), float(colour[2])),
        speed_mps=speed,
        ego_lane=ego,
    )


_VEHICLE_LABELS = {0: SynthLabel.CAR, 1: SynthLabel.CAR, 2: SynthLabel.BUS, 3: SynthLabel.TRUCK}


def car_prims(cars: list[Car], xs: F64) -> PrimArrays:
    """Boxes of the vehicles at centre positions ``xs`` (body, then cabin or cargo box)."""
    pb = PrimBuilder()
    for car, x in zip(cars, xs, strict=True):
        colour = np.array(car.colour)
        x = float(x)
        hl, hw = car.length / 2, car.width / 2
        label = _VEHICLE_LABELS[car.kind]
        if car.kind == 3:
            # Lorry: a cab at the front and a taller cargo box behind it.
            cab_l = 2.3
            front = x + car.heading * hl
            cab_x = front - car.heading * cab_l / 2
            cargo_l = car.length - cab_l - 0.2
            cargo_x = front - car.heading * (cab_l + 0.2 + cargo_l / 2)
            cab = (cab_x, car.y, cab_l, car.width, float(car.heading), 3.0, car.body_h, 0.0)
            pb.box(
                cab_x - cab_l / 2,
                car.y - hw,
                0.3,
                cab_x + cab_l / 2,
                car.y + hw,
                car.body_h,
                label,
                Mat.CAR_BODY,
                colour,
                colour,
                cab,
                shadow=True,
            )
            box_rgb = np.array([0.8, 0.8, 0.78]) if car.colour[0] > 0.3 else colour
            cargo = (cargo_x, car.y, cargo_l, car.width, float(car.heading), 4.0, car.roof_h, 0.0)
            pb.box(
                cargo_x - cargo_l / 2,
                car.y - hw,
                0.3,
                cargo_x + cargo_l / 2,
                car.y + hw,
                car.roof_h,
                label,
                Mat.CAR_BODY,
                box_rgb,
                box_rgb,
                cargo,
                shadow=True,
            )
            continue
        params = (
            x,
            car.y,
            car.length,
            car.width,
            float(car.heading),
            float(car.kind),
            car.body_h,
            0.0,
        )
        z0 = 0.06 if car.kind < 2 else 0.3
        pb.box(
            x - hl,
            car.y - hw,
            z0,
            x + hl,
            car.y + hw,
            car.body_h,
            label,
            Mat.CAR_BODY,
            colour,
            colour,
            params,
            shadow=True,
        )
        if car.kind == 0:
            cab_l = car.length * 0.52
            cab_x = x - car.heading * car.length * 0.06
            cabin = (
                cab_x,
                car.y,
                cab_l,
                car.width - 0.14,
                float(car.heading),
                0.0,
                car.body_h,
                car.roof_h,
            )
            pb.box(
                cab_x - cab_l / 2,
                car.y - hw + 0.07,
                car.body_h,
                cab_x + cab_l / 2,
                car.y + hw - 0.07,
                car.roof_h,
                label,
                Mat.CAR_CABIN,
                colour,
                colour,
                cabin,
                shadow=True,
            )
    return pb.arrays() if pb.rows else empty_prims()


def empty_prims() -> PrimArrays:
    return PrimArrays(
        kind=np.zeros(0, np.int8),
        geom=np.zeros((0, 6)),
        label=np.zeros(0, np.uint8),
        mat=np.zeros(0, np.int8),
        colour=np.zeros((0, 3), np.float32),
        colour2=np.zeros((0, 3), np.float32),
        params=np.zeros((0, N_PARAMS), np.float32),
        casts_shadow=np.zeros(0, bool),
    )
