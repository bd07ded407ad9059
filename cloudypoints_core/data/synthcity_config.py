"""The knobs of the SynthCity street-scene generator, as one frozen, validated dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from cloudypoints_core.errors import ConfigError

Range = tuple[float, float]


@dataclass(frozen=True)
class SynthCityConfig:
    """Ranges (lo, hi) are sampled uniformly per seed unless said otherwise; lengths in metres.

    Camera defaults follow Cityscapes: 2048x1024 with fx = fy = 2262.5 px, mounted 1.22 m above
    the road and pitched 0.038 rad down; the principal point is jittered per seed by up to
    ``principal_point_jitter_px`` (at the base resolution) and never sits exactly at the centre.
    """

    base_width: int = 2048
    base_height: int = 1024
    fx_px: float = 2262.5
    #: Relative jitter of the focal length per seed (0 keeps one canonical camera for metric nets).
    fx_jitter_frac: float = 0.0
    principal_point_jitter_px: tuple[float, float] = (48.0, 24.0)
    camera_height_m: float = 1.22
    camera_height_jitter_m: float = 0.08
    #: Positive pitch looks down (as Cityscapes' camera.json).
    pitch_rad: float = 0.038
    pitch_jitter_rad: float = 0.02
    roll_jitter_rad: float = 0.012
    yaw_jitter_rad: float = 0.03
    lateral_jitter_m: float = 0.3
    #: Vehicle bounce during a drive: pitch and height oscillation amplitudes.
    bounce_pitch_rad: float = 0.003
    bounce_height_m: float = 0.01

    lanes: tuple[int, int] = (2, 4)
    lane_width_m: Range = (2.8, 3.6)
    parking_lane_probability: float = 0.7
    sidewalk_width_m: Range = (1.5, 6.0)
    kerb_height_m: Range = (0.12, 0.18)
    building_height_m: Range = (5.0, 35.0)
    building_length_m: Range = (6.0, 30.0)
    building_setback_m: Range = (0.0, 4.0)
    #: Distance from the start to the T-junction closing the street (log-uniform).
    street_length_m: Range = (30.0, 320.0)
    cross_street_spacing_m: Range = (40.0, 160.0)
    #: Fraction of parking slots taken (per seed).
    parked_car_density: Range = (0.3, 1.0)
    moving_car_spacing_m: Range = (10.0, 80.0)
    tree_probability: float = 0.6
    tree_spacing_m: Range = (7.0, 16.0)
    pole_spacing_m: Range = (15.0, 40.0)

    sun_elevation_deg: Range = (8.0, 70.0)
    overcast_probability: float = 0.4
    #: Distance at which haze has taken 63 % of the contrast (log-uniform).
    fog_distance_m: Range = (250.0, 3000.0)
    #: Gaussian sensor noise in 8-bit levels.
    sensor_noise_std: float = 1.5
    #: Lens softness: weight of each neighbour in a separable 3-tap blur of the image (0 = off).
    optical_blur: float = 0.15
    #: Fraction of light lost in the image corners (cos^4-like falloff, 0 = off).
    vignetting: float = 0.15

    #: Default drive of ``render_frame(index=k)`` and ``render_sequence``.
    speed_mps: float = 8.0
    rate_hz: float = 17.0
    #: During a drive the closing junction is moved to stay at least this far ahead.
    min_view_ahead_m: float = 25.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "principal_point_jitter_px":
                _check_pair(f.name, value)
            elif isinstance(value, tuple):
                _check_range(f.name, value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                _fail(f.name, value, "a number")
            elif not math.isfinite(value):
                _fail(f.name, value, "finite")
        for name in ("fx_px", "camera_height_m", "rate_hz", "min_view_ahead_m"):
            if getattr(self, name) <= 0:
                _fail(name, getattr(self, name), "> 0")
        for name in ("base_width", "base_height"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16:
                _fail(name, value, "an integer >= 16")
        non_negative = (
            "fx_jitter_frac",
            "camera_height_jitter_m",
            "pitch_jitter_rad",
            "roll_jitter_rad",
            "yaw_jitter_rad",
            "lateral_jitter_m",
            "bounce_pitch_rad",
            "bounce_height_m",
            "sensor_noise_std",
            "speed_mps",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), ">= 0")
        for name in ("parking_lane_probability", "tree_probability", "overcast_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                _fail(name, value, "a probability in [0, 1]")
        if not 0.0 <= self.vignetting < 1.0:
            _fail("vignetting", self.vignetting, "within [0, 1)")
        if not 0.0 <= self.optical_blur < 0.5:
            _fail("optical_blur", self.optical_blur, "within [0, 0.5)")
        if self.fx_jitter_frac >= 0.5:
            _fail("fx_jitter_frac", self.fx_jitter_frac, "< 0.5")
        if self.camera_height_jitter_m >= self.camera_height_m:
            _fail(
                "camera_height_jitter_m",
                self.camera_height_jitter_m,
                f"smaller than camera_height_m ({self.camera_height_m})",
            )
        lo_lanes, hi_lanes = self.lanes
        if int(lo_lanes) != lo_lanes or int(hi_lanes) != hi_lanes or lo_lanes < 1 or hi_lanes > 8:
            _fail("lanes", self.lanes, "whole numbers within [1, 8]")
        strictly_positive_ranges = (
            "lane_width_m",
            "sidewalk_width_m",
            "kerb_height_m",
            "building_height_m",
            "building_length_m",
            "street_length_m",
            "cross_street_spacing_m",
            "moving_car_spacing_m",
            "tree_spacing_m",
            "pole_spacing_m",
            "fog_distance_m",
        )
        for name in strictly_positive_ranges:
            if getattr(self, name)[0] <= 0:
                _fail(name, getattr(self, name), "positive")
        if self.kerb_height_m[1] >= 0.5:
            _fail("kerb_height_m", self.kerb_height_m, "below 0.5 m")
        if self.building_setback_m[0] < 0:
            _fail("building_setback_m", self.building_setback_m, ">= 0")
        lo, hi = self.parked_car_density
        if lo < 0 or hi > 1:
            _fail("parked_car_density", self.parked_car_density, "within [0, 1]")
        lo, hi = self.sun_elevation_deg
        if lo <= 0 or hi > 90:
            _fail("sun_elevation_deg", self.sun_elevation_deg, "within (0, 90]")
        if self.building_length_m[0] < 3.0:
            _fail("building_length_m", self.building_length_m, "at least 3 m")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthCityConfig:
        """A config from a plain mapping (e.g. YAML); unknown keys are errors, lists -> tuples."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown SynthCityConfig keys {unknown}; expected some of {sorted(known)}"
            )
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), ready for YAML or JSON."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"SynthCityConfig.{name} must be {expected}, got {value!r}")


def _check_range(name: str, value: tuple[Any, ...]) -> None:
    if len(value) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        _fail(name, value, "a (lo, hi) pair of finite numbers")
    if value[0] > value[1]:
        _fail(name, value, "a range with lo <= hi")


def _check_pair(name: str, value: Any) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in value)
    ):
        _fail(name, value, "a pair of finite numbers >= 0")
