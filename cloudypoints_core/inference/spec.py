"""The model spec: what a depth network expects as input and what its output means.

A spec travels with the weights as ``spec.yaml`` in a model package and, with the same fields,
as YAML text in the ONNX metadata under :data:`ONNX_METADATA_KEY`, so an ONNX file or a TensorRT
engine built from it is never separated from the knowledge of how to feed it and read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import ModelError

ONNX_METADATA_KEY = "cloudypoints_spec"
OUTPUT_KINDS = ("metric_depth", "relative_inverse_depth", "affine_inverse_depth", "disparity")
CHANNEL_ORDERS = ("rgb", "bgr")
RESIZE_POLICIES = ("resize",)
SPEC_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Input contract and output meaning of a depth network.

    ``mean``/``std`` apply to pixel values scaled to [0, 1]. The raw network output is mapped by
    ``raw * output_scale + output_shift`` to a quantity of kind ``output_kind``; depths outside
    [``min_depth_m``, ``max_depth_m``] are invalid (NaN). For ``metric_depth`` models
    ``train_fx_px`` is the focal length, in pixels at the model's input resolution, the model was
    trained with: at inference depth is multiplied by fx_camera_at_input / train_fx_px.
    """

    name: str
    architecture: str
    input_width: int
    input_height: int
    output_kind: str = "metric_depth"
    arch_config: Mapping[str, Any] = field(default_factory=dict)
    channel_order: str = "rgb"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize_policy: str = "resize"
    output_scale: float = 1.0
    output_shift: float = 0.0
    min_depth_m: float = 0.5
    max_depth_m: float = 80.0
    train_fx_px: float | None = None
    onnx_file: str | None = "model.onnx"
    weights_file: str | None = "model.pt"
    input_name: str = "image"
    output_name: str = "depth"
    spec_version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "arch_config", dict(self.arch_config))
        self.validate()

    def validate(self) -> None:
        """Raise ModelError listing every field that is wrong."""
        problems: list[str] = []
        if not self.name:
            problems.append("name is empty")
        if not self.architecture:
            problems.append("architecture is empty")
        for key in ("input_width", "input_height"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{key} must be a positive integer, got {value!r}")
            elif value % 32:
                problems.append(f"{key} must be a multiple of 32 (network stride), got {value}")
        if self.output_kind not in OUTPUT_KINDS:
            problems.append(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(
                f"channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}"
            )
        if self.resize_policy not in RESIZE_POLICIES:
            problems.append(
                f"resize_policy must be one of {RESIZE_POLICIES}, got {self.resize_policy!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append(f"mean and std need 3 values each, got {self.mean!r} and {self.std!r}")
        elif any(not math.isfinite(s) or s <= 0 for s in self.std):
            problems.append(f"std values must be finite and positive, got {self.std!r}")
        if not (math.isfinite(self.output_scale) and self.output_scale != 0):
            problems.append(f"output_scale must be finite and non-zero, got {self.output_scale!r}")
        if not math.isfinite(self.output_shift):
            problems.append(f"output_shift must be finite, got {self.output_shift!r}")
        if not (0 < self.min_depth_m < self.max_depth_m and math.isfinite(self.max_depth_m)):
            problems.append(
                f"need 0 < min_depth_m < max_depth_m < inf, got {self.min_depth_m!r}, "
                f"{self.max_depth_m!r}"
            )
        if self.output_kind == "metric_depth":
            if self.train_fx_px is None or not (
                math.isfinite(self.train_fx_px) and self.train_fx_px > 0
            ):
                problems.append(
                    "metric_depth models need train_fx_px (focal length in pixels at the model's "
                    f"input resolution), got {self.train_fx_px!r}"
                )
        if self.onnx_file is None and self.weights_file is None:
            problems.append("a package needs onnx_file or weights_file")
        if self.spec_version > SPEC_VERSION:
            problems.append(
                f"spec_version {self.spec_version} is newer than this CloudyPoints understands "
                f"({SPEC_VERSION}); upgrade cloudypoints"
            )
        if problems:
            raise ModelError(f"invalid model spec {self.name!r}: " + "; ".join(problems))

    # ------------------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        data["arch_config"] = dict(self.arch_config)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "spec") -> ModelSpec:
        if not isinstance(data, Mapping):
            raise ModelError(
                f"{source}: expected a mapping of spec fields, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(
                f"{source}: unknown spec fields {unknown}; known fields: {sorted(known)}"
            )
        missing = [
            k for k in ("name", "architecture", "input_width", "input_height") if k not in data
        ]
        if missing:
            raise ModelError(f"{source}: missing required spec fields {missing}")
        kwargs = dict(data)
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ModelError(f"{source}: {exc}") from exc

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "spec") -> ModelSpec:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ModelError(f"{source}: not valid YAML ({exc})") from exc
        return cls.from_dict(data, source=source)

    def save(self, path: str | Path) -> None:
        from cloudypoints_core.io import atomic_write_bytes

        atomic_write_bytes(Path(path), self.to_yaml().encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> ModelSpec:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ModelError(f"model spec {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"model spec {path} cannot be read: {exc}") from exc
        return cls.from_yaml(text, source=str(path))
