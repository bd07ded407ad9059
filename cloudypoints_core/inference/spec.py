"""The model spec: what a depth network expects as input and what its output means.

A spec travels with the weights as ``spec.yaml`` in a model package and, with the same fields,
as YAML text in the ONNX metadata under :data:`ONNX_METADATA_KEY`, so an ONNX file or a TensorRT
engine built from it is never separated from the knowledge of how to feed it and read it.

``spec_version`` 1 is the original format (stretch to an input size that is a multiple of 32,
fx-only canonical focal rule with ``train_fx_px``); every v1 package loads and runs exactly as
before. Version 2 describes networks from elsewhere by their own conventions instead of code:
``input_multiple``, ``resize_policy`` (``stretch``, ``keep_aspect_pad`` with ``pad_value``,
``keep_aspect_crop``, ``lower_bound``), ``interpolation``, ``focal_rule`` (``none``, ``fx``,
``mean_fxfy``) against ``reference_focal_px``, the ``affine_inverse_depth`` output kind and
``mask_outputs`` (extra outputs that mark pixels invalid, such as a sky head).
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
#: How the camera image is fitted to the network input. ``resize`` is the v1 name of ``stretch``.
RESIZE_POLICIES = ("stretch", "keep_aspect_pad", "keep_aspect_crop", "lower_bound", "resize")
#: Input resampling: ``auto`` (v1: area when shrinking both axes, else linear), ``linear``,
#: ``cubic``, ``area``, ``area_or_cubic`` (area when shrinking both axes, else cubic).
INTERPOLATIONS = ("auto", "linear", "cubic", "area", "area_or_cubic")
#: Which focal length of the camera at the network input scales a metric output.
FOCAL_RULES = ("none", "fx", "mean_fxfy")
#: A mask output marks a pixel invalid when its value is at or above (``above``) or below
#: (``below``) the threshold.
MASK_DIRECTIONS = ("above", "below")
SPEC_VERSION = 2
#: v2 fields and their v1 meaning: a version 1 spec must leave them at these values.
_V1_DEFAULTS: dict[str, Any] = {
    "input_multiple": 32,
    "interpolation": "auto",
    "focal_rule": "fx",
    "reference_focal_px": None,
    "pad_value": (0.0, 0.0, 0.0),
    "mask_outputs": (),
}


@dataclass(frozen=True)
class MaskOutput:
    """An extra network output that marks pixels invalid (NaN depth), e.g. a sky head.

    A pixel is invalid when the output is >= ``threshold`` (``invalid_when="above"``) or
    < ``threshold`` (``"below"``).
    """

    name: str
    threshold: float
    invalid_when: str = "above"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "invalid_when": self.invalid_when}


@dataclass(frozen=True)
class ModelSpec:
    """Input contract and output meaning of a depth network.

    ``mean``/``std`` apply to pixel values scaled to [0, 1]. The raw network output is mapped by
    ``raw * output_scale + output_shift`` to a quantity of kind ``output_kind``; depths outside
    [``min_depth_m``, ``max_depth_m``] are invalid (NaN). For ``metric_depth`` models with a
    ``focal_rule`` other than ``none``, depth is multiplied by focal_at_input / reference, where
    focal_at_input is fx (``fx``) or (fx + fy) / 2 (``mean_fxfy``) of the camera at the network
    input after fitting, and the reference is ``reference_focal_px`` or, for models trained
    here, ``train_fx_px`` (the focal length in pixels at the input resolution they were trained
    with). ``pad_value`` is in pixel units (0-255) in the image's RGB order.
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
    input_multiple: int = 32
    interpolation: str = "auto"
    focal_rule: str = "fx"
    reference_focal_px: float | None = None
    pad_value: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mask_outputs: tuple[MaskOutput, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "pad_value", tuple(float(v) for v in self.pad_value))
        object.__setattr__(self, "arch_config", dict(self.arch_config))
        masks: list[Any] = []
        for entry in self.mask_outputs:
            item: Any = entry
            if isinstance(item, Mapping):
                try:
                    item = MaskOutput(**{str(k): v for k, v in item.items()})
                except TypeError as exc:
                    raise ModelError(
                        f"model spec {self.name!r}: bad mask_outputs entry {dict(item)}: {exc}; "
                        "expected name, threshold, invalid_when"
                    ) from exc
            masks.append(item)
        object.__setattr__(self, "mask_outputs", tuple(masks))
        self.validate()

    @property
    def fit_policy(self) -> str:
        """The resize policy under its v2 name (``resize`` is ``stretch``)."""
        return "stretch" if self.resize_policy == "resize" else self.resize_policy

    @property
    def reference_focal(self) -> float | None:
        """The focal length (px) the metric output is normalised to, None when not used."""
        if self.output_kind != "metric_depth" or self.focal_rule == "none":
            return None
        if self.reference_focal_px is not None:
            return float(self.reference_focal_px)
        return None if self.train_fx_px is None else float(self.train_fx_px)

    def validate(self) -> None:
        """Raise ModelError listing every field that is wrong."""
        problems: list[str] = []
        if not self.name:
            problems.append("name is empty")
        if not self.architecture:
            problems.append("architecture is empty")
        multiple = self.input_multiple
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple <= 0:
            problems.append(f"input_multiple must be a positive integer, got {multiple!r}")
            multiple = 1
        for key in ("input_width", "input_height"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{key} must be a positive integer, got {value!r}")
            elif value % multiple:
                problems.append(
                    f"{key} must be a multiple of input_multiple {multiple} (network stride or "
                    f"patch size), got {value}"
                )
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
        if self.interpolation not in INTERPOLATIONS:
            problems.append(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if self.focal_rule not in FOCAL_RULES:
            problems.append(f"focal_rule must be one of {FOCAL_RULES}, got {self.focal_rule!r}")
        for key in ("reference_focal_px", "train_fx_px"):
            value = getattr(self, key)
            if value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                problems.append(f"{key} must be a finite positive number of pixels, got {value!r}")
        if (
            self.output_kind == "metric_depth"
            and self.focal_rule != "none"
            and self.reference_focal_px is None
            and self.train_fx_px is None
        ):
            problems.append(
                f"metric_depth models with focal_rule {self.focal_rule!r} need "
                "reference_focal_px or train_fx_px (focal length in pixels at the model's input "
                "resolution); use focal_rule 'none' for a model whose output is metric for any "
                "camera"
            )
        if len(self.pad_value) != 3 or any(
            not math.isfinite(v) or not 0 <= v <= 255 for v in self.pad_value
        ):
            problems.append(f"pad_value needs 3 values in [0, 255], got {self.pad_value!r}")
        for mask in self.mask_outputs:
            if not isinstance(mask, MaskOutput):
                problems.append(f"mask_outputs entries must be MaskOutput, got {mask!r}")
                continue
            if not mask.name or mask.name == self.output_name:
                problems.append(
                    f"mask output name must be non-empty and differ from output_name "
                    f"{self.output_name!r}, got {mask.name!r}"
                )
            if mask.invalid_when not in MASK_DIRECTIONS:
                problems.append(
                    f"mask output {mask.name!r}: invalid_when must be one of {MASK_DIRECTIONS}, "
                    f"got {mask.invalid_when!r}"
                )
            if not (isinstance(mask.threshold, (int, float)) and math.isfinite(mask.threshold)):
                problems.append(
                    f"mask output {mask.name!r}: threshold must be a finite number, "
                    f"got {mask.threshold!r}"
                )
        if self.spec_version == 1:
            changed = sorted(
                key
                for key, v1 in _V1_DEFAULTS.items()
                if getattr(self, key) != (tuple(v1) if isinstance(v1, tuple) else v1)
            )
            if self.resize_policy != "resize":
                changed.insert(0, "resize_policy")
            if self.output_kind == "affine_inverse_depth":
                changed.insert(0, "output_kind")
            if changed:
                problems.append(
                    f"spec_version 1 cannot use the version 2 features {changed}; "
                    "set spec_version: 2"
                )
        if self.onnx_file is None and self.weights_file is None:
            problems.append("a package needs onnx_file or weights_file")
        if not isinstance(self.spec_version, int) or self.spec_version < 1:
            problems.append(f"spec_version must be a positive integer, got {self.spec_version!r}")
        elif self.spec_version > SPEC_VERSION:
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
        if self.spec_version == 1:
            # A v1 spec is written exactly as v1 wrote it, so older readers still load it.
            for key in _V1_DEFAULTS:
                data.pop(key)
            return data
        data["pad_value"] = list(self.pad_value)
        data["mask_outputs"] = [m.to_dict() for m in self.mask_outputs]
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
        # A file without spec_version predates versioning: it is version 1.
        kwargs.setdefault("spec_version", 1)
        for key in ("mean", "std", "pad_value", "mask_outputs"):
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
