"""One table of presets for depth networks published elsewhere, and the importers that use it.

A preset describes a network family by its own conventions, as model-spec fields (input fitting,
normalisation, focal rule, output meaning, I/O names) plus the facts a model card needs (where
the weights come from, their licence, the published accuracy). Nothing else in the code knows
about these families: the facade reads only the spec (STYLE rule 12). The facts and their
sources (repository, file, commit) are in ``docs/models.md``.

Importers are registered by weights file kind (``onnx``; ``pth`` for checkpoints our own networks
load, see :mod:`cloudypoints_core.inference.import_pth`; more can be added
with :func:`register_importer`), each a function ``(preset, weights, out, options) -> Path``
that writes a normal model package. :func:`import_model` picks the importer from the file's
suffix and checks that the preset accepts that kind.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import ConfigError, ModelError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "CardFacts",
    "ImportOptions",
    "Importer",
    "Preset",
    "get_preset",
    "import_model",
    "input_size_for_camera",
    "list_presets",
    "register_importer",
    "register_preset",
    "weights_kind",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Networks that normalise inside the graph take raw pixels: (pixel / 255 - 0) / (1 / 255).
RAW_PIXELS_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)


@dataclass(frozen=True)
class CardFacts:
    """What MODEL_CARD.md says about where a network comes from and how good it is."""

    source: str
    licence: str
    accuracy: str
    notes: str = ""


@dataclass(frozen=True)
class Preset:
    """A network family's conventions (see the module docstring).

    ``spec_fields`` are :class:`~cloudypoints_core.inference.spec.ModelSpec` fields; the
    importer adds name, input size, input multiple and I/O names. ``input_names`` /
    ``output_names`` list the names the official export uses (empty: take the graph's only
    one). ``input_multiples``: the first one dividing both sides of the input size is used.
    ``required_options``: :class:`ImportOptions` fields the user must give (e.g. ``max_depth_m``).
    ``speed``: expected speed, for the README table. ``importer_data``: what an importer of
    another weights kind needs beyond the spec (e.g. the network configuration a ``.pth``
    checkpoint is loaded into); the ONNX importer needs none.
    """

    name: str
    summary: str
    weights_kinds: tuple[str, ...]
    spec_fields: Mapping[str, Any]
    default_input_size: tuple[int, int]
    input_multiples: tuple[int, ...]
    card: CardFacts
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    required_options: tuple[str, ...] = ()
    option_help: Mapping[str, str] = field(default_factory=dict)
    speed: str = ""
    importer_data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportOptions:
    """User choices of one import: input size (W, H) for dynamic graphs, or the camera size
    (W, H) to derive it from (:func:`input_size_for_camera`), the metric head's ``max_depth_m``
    (also the valid range's upper end), a package name, and whether to run the imported
    network once as a check."""

    input_size: tuple[int, int] | None = None
    max_depth_m: float | None = None
    name: str | None = None
    check: bool = True
    camera_size: tuple[int, int] | None = None


def input_size_for_camera(preset: Preset, width: int, height: int) -> tuple[int, int]:
    """The input size (W, H) that shows a ``width`` x ``height`` camera whole under a cropping
    preset: the camera scaled so that it covers the preset's default input, keeping its aspect,
    each side rounded to the input multiple (Depth Anything's lower-bound rule: 1242x375 ->
    1722x518 for a 518 default). ConfigError for presets that never crop."""
    policy = preset.spec_fields.get("resize_policy", "stretch")
    if policy not in ("lower_bound", "keep_aspect_crop"):
        raise ConfigError(
            f"preset {preset.name!r} fits any camera without cropping ({policy}); "
            "--camera-size is only for cropping presets"
        )
    if width <= 0 or height <= 0:
        raise ConfigError(f"camera size must be positive, got {width}x{height}")
    dw, dh = preset.default_input_size
    scale = max(dw / width, dh / height)
    multiple = preset.input_multiples[0]

    def side(value: float, minimum: int) -> int:
        out = int(round(value / multiple)) * multiple
        return out if out >= minimum else int(math.ceil(value / multiple)) * multiple

    return side(width * scale, dw), side(height * scale, dh)


Importer = Callable[[Preset, Path, Path, ImportOptions], Path]

_DA_V2_CARD_SOURCE = (
    "Depth Anything V2 (https://github.com/DepthAnything/Depth-Anything-V2); checkpoints on "
    "Hugging Face (depth-anything/Depth-Anything-V2-Small, -Base, -Large); ONNX exports e.g. "
    "https://github.com/fabio-sim/Depth-Anything-ONNX (the repository's own README points there)"
)

PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> None:
    """Add (or replace) a preset in the table."""
    PRESETS[preset.name] = preset


for _preset in (
    Preset(
        name="depth-anything-v2-relative",
        summary="Depth Anything V2 relative head: affine-invariant inverse depth",
        weights_kinds=("onnx",),
        spec_fields={
            "resize_policy": "lower_bound",
            "interpolation": "cubic",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "output_kind": "affine_inverse_depth",
            "focal_rule": "none",
            "min_depth_m": 0.1,
            "max_depth_m": 80.0,
        },
        default_input_size=(518, 518),
        input_multiples=(14,),
        input_names=("image", "pixel_values", "input"),
        output_names=("depth", "predicted_depth", "output"),
        card=CardFacts(
            source=_DA_V2_CARD_SOURCE,
            licence="Depth-Anything-V2-Small: Apache-2.0; Base/Large/Giant: CC-BY-NC-4.0 "
            "(non-commercial)",
            accuracy="Relative (affine-invariant) inverse depth: the repository README "
            "publishes no accuracy table; the paper (arXiv 2406.09414) reports zero-shot "
            "relative-depth benchmarks after a per-image scale-and-shift fit. Metres need a "
            "scale source (ground plane from the camera height, or a fixed scale).",
        ),
        speed="ViT-S at 518x518: ~0.3-0.6 s/frame on a 2-core CPU, real time on a GPU",
    ),
    Preset(
        name="depth-anything-v2-metric",
        summary="Depth Anything V2 metric head: sigmoid * max_depth metres, not focal-normalised",
        weights_kinds=("onnx",),
        spec_fields={
            "resize_policy": "lower_bound",
            "interpolation": "cubic",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "output_kind": "metric_depth",
            "focal_rule": "none",
            "min_depth_m": 0.1,
        },
        default_input_size=(518, 518),
        input_multiples=(14,),
        input_names=("image", "pixel_values", "input"),
        output_names=("depth", "predicted_depth", "output"),
        required_options=("max_depth_m",),
        option_help={
            "max_depth_m": "--max-depth 80 for the outdoor (Virtual KITTI 2) weights, 20 for "
            "the indoor (Hypersim) weights"
        },
        card=CardFacts(
            source=_DA_V2_CARD_SOURCE.replace(
                "Depth-Anything-V2-Small, -Base, -Large",
                "Depth-Anything-V2-Metric-VKITTI-* and -Metric-Hypersim-*",
            ),
            licence="Small: Apache-2.0; Base/Large: CC-BY-NC-4.0 (non-commercial)",
            accuracy="Fine-tuned on synthetic data (Virtual KITTI 2 outdoor, max 80 m; "
            "Hypersim indoor, max 20 m); the metric_depth README publishes no KITTI table. The "
            "output is metres for the training camera only: it is not focal-normalised, so "
            "expect a scale error on lenses far from the training camera's.",
        ),
        speed="ViT-S at 518x518: ~0.3-0.6 s/frame on a 2-core CPU",
    ),
    Preset(
        name="depth-anything-3-metric",
        summary="Depth Anything 3 metric (DA3METRIC-LARGE): depth = mean(fx, fy) * out / 300",
        weights_kinds=("onnx",),
        spec_fields={
            "resize_policy": "lower_bound",
            "interpolation": "area_or_cubic",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "output_kind": "metric_depth",
            "focal_rule": "mean_fxfy",
            "reference_focal_px": 300.0,
            "min_depth_m": 0.1,
            "max_depth_m": 200.0,
            # The official code keeps pixels whose sky output is < 0.3 (compute_sky_mask).
            "mask_outputs": ({"name": "sky", "threshold": 0.3, "invalid_when": "above"},),
        },
        default_input_size=(504, 280),
        input_multiples=(14,),
        input_names=("image", "pixel_values"),
        output_names=("depth",),
        card=CardFacts(
            source="Depth Anything 3 (https://github.com/ByteDance-Seed/Depth-Anything-3), "
            "DA3METRIC-LARGE on Hugging Face (depth-anything/DA3METRIC-LARGE); ONNX with "
            "outputs depth and sky as exported by "
            "https://github.com/ika-rwth-aachen/ros2-depth-anything-v3-trt (onnx/export.py)",
            licence="DA3METRIC-LARGE: Apache-2.0 (README model table)",
            accuracy="The README publishes no monocular metric-depth KITTI table for "
            "DA3METRIC-LARGE; see the paper (arXiv 2511.10647) for its benchmarks.",
            notes="Sky pixels (sky output >= 0.3) are invalid (NaN), never 'far'.",
        ),
        speed="ViT-L at 504x280: several s/frame on a 2-core CPU; ~30 fps with TensorRT FP16",
    ),
    Preset(
        name="metric3d-v2",
        summary="Metric3D v2: canonical camera of focal 1000 px, letterboxed with the mean colour",
        weights_kinds=("onnx",),
        spec_fields={
            "resize_policy": "keep_aspect_pad",
            "interpolation": "linear",
            # onnx/metric3d_onnx_export.py normalises inside the graph: raw 0-255 RGB goes in.
            "mean": (0.0, 0.0, 0.0),
            "std": RAW_PIXELS_STD,
            "pad_value": (123.675, 116.28, 103.53),
            "output_kind": "metric_depth",
            "focal_rule": "fx",
            "reference_focal_px": 1000.0,
            "min_depth_m": 0.1,
            "max_depth_m": 300.0,
        },
        default_input_size=(1064, 616),
        input_multiples=(14, 32),
        input_names=("image",),
        output_names=("pred_depth",),
        card=CardFacts(
            source="Metric3D v2 (https://github.com/YvanYin/Metric3D), ONNX from its "
            "onnx/metric3d_onnx_export.py (ViT: 616x1064 HxW; ConvNeXt: 544x1216)",
            licence="BSD-2-Clause (code and weights, repository LICENSE)",
            accuracy="README (KITTI / NYU, fine-tuned): ViT-Large KITTI AbsRel 0.044, "
            "delta1 0.985; ViT-giant2 KITTI AbsRel 0.039, delta1 0.989.",
        ),
        speed="ViT-S at 1064x616: ~1-2 s/frame on a 2-core CPU; real time with TensorRT",
    ),
    Preset(
        name="midas-v21-small",
        summary="MiDaS v2.1 small: relative inverse depth, 256x256, normalisation in the graph",
        weights_kinds=("onnx",),
        spec_fields={
            "resize_policy": "stretch",
            "interpolation": "cubic",
            # tf/make_onnx_model.py subtracts the ImageNet mean inside the graph: input is
            # RGB / 255.
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "output_kind": "affine_inverse_depth",
            "focal_rule": "none",
            "min_depth_m": 0.1,
            "max_depth_m": 80.0,
        },
        default_input_size=(256, 256),
        input_multiples=(32,),
        card=CardFacts(
            source="MiDaS v2.1 (https://github.com/isl-org/MiDaS), release v2_1 model-small.onnx",
            licence="MIT (repository LICENSE)",
            accuracy="Relative inverse depth (scale and shift unknown). README accuracy "
            "table (zero-shot, after scale-and-shift alignment): v2.1 Small 256 Eth3d AbsRel "
            "0.1344, KITTI delta1 error 29.27 %, NYUv2 delta1 error 13.43 %; 21 M parameters, "
            "90 fps on an RTX 3090.",
        ),
        speed="about 30-60 ms/frame on a 2-core CPU (ONNX Runtime)",
    ),
):
    register_preset(_preset)

#: The official Depth Anything V2 checkpoints (``.pth``) by size: encoder, parameters (M),
#: licence, file names. Read with our own network (``models/depth_anything_v2.py``) and
#: exported at a fixed size: the conventions are those of the ONNX presets above.
_DA_V2_CHECKPOINTS = {
    "small": ("vits", 24.8, "Apache-2.0"),
    "base": ("vitb", 97.5, "CC-BY-NC-4.0 (non-commercial)"),
    "large": ("vitl", 335.3, "CC-BY-NC-4.0 (non-commercial)"),
}
#: Metric variants: preset word -> (data set, max depth of the sigmoid head, file infix).
_DA_V2_METRIC = {
    "outdoor": ("Virtual KITTI 2", 80.0, "vkitti"),
    "indoor": ("Hypersim", 20.0, "hypersim"),
}


def _da_v2_pth_preset(
    name: str, summary: str, base: str, fields: dict[str, Any], source: str, licence: str
) -> Preset:
    """A ``.pth`` preset read with our own network: the conventions (spec, accuracy, speed) of
    the ONNX preset ``base``, plus ``fields``."""
    onnx = PRESETS[base]
    return Preset(
        name=name,
        summary=summary,
        weights_kinds=("pth",),
        spec_fields={**onnx.spec_fields, "architecture": "depth_anything_v2", **fields},
        default_input_size=(518, 266),
        input_multiples=(14,),
        card=CardFacts(
            source=f"{source}, loaded strictly into CloudyPoints' own implementation and "
            "exported to ONNX at a fixed size",
            licence=licence,
            accuracy=onnx.card.accuracy,
        ),
        speed=onnx.speed,
    )


for _size, (_enc, _params, _licence) in _DA_V2_CHECKPOINTS.items():
    register_preset(
        _da_v2_pth_preset(
            f"depth-anything-v2-{_size}",
            f"Depth Anything V2 {_size.capitalize()} ({_params} M) from the official "
            f"depth_anything_v2_{_enc}.pth: affine-invariant inverse depth",
            "depth-anything-v2-relative",
            {"arch_config": {"encoder": _enc, "head": "relative"}},
            "Depth Anything V2 (https://github.com/DepthAnything/Depth-Anything-V2), "
            f"checkpoint depth_anything_v2_{_enc}.pth (Hugging Face "
            f"depth-anything/Depth-Anything-V2-{_size.capitalize()})",
            _licence,
        )
    )
    for _place, (_data, _max, _infix) in _DA_V2_METRIC.items():
        register_preset(
            _da_v2_pth_preset(
                f"depth-anything-v2-metric-{_place}-{_size}",
                f"Depth Anything V2 {_size.capitalize()} metric {_place} ({_data}, "
                f"sigmoid x {_max:g} m) from depth_anything_v2_metric_{_infix}_{_enc}.pth",
                "depth-anything-v2-metric",
                {
                    "arch_config": {"encoder": _enc, "head": "metric", "max_depth": _max},
                    "max_depth_m": _max,
                },
                "Depth Anything V2 metric depth (https://github.com/DepthAnything/"
                "Depth-Anything-V2/tree/main/metric_depth), checkpoint "
                f"depth_anything_v2_metric_{_infix}_{_enc}.pth",
                _licence,
            )
        )


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {list_presets()}") from None


# -------------------------------------------------------------------------------- importers
#: Weights file suffix -> kind.
_SUFFIX_KINDS: dict[str, str] = {".onnx": "onnx", ".pth": "pth", ".pt": "pth"}
#: Kind -> importer function, or "module:function" imported on first use.
_IMPORTERS: dict[str, Importer | str] = {
    "onnx": "cloudypoints_core.inference.import_onnx:import_onnx",
    "pth": "cloudypoints_core.inference.import_pth:import_pth",
}


def register_importer(kind: str, target: Importer | str, suffixes: tuple[str, ...]) -> None:
    """Register an importer for weights files ending in ``suffixes`` (e.g. ``(".pth",)``)."""
    if not kind or not suffixes:
        raise ConfigError(f"an importer needs a kind and suffixes, got {kind!r}, {suffixes!r}")
    _IMPORTERS[kind] = target
    for suffix in suffixes:
        _SUFFIX_KINDS[suffix.lower()] = kind


def weights_kind(path: Path) -> str:
    """The kind of a weights file from its suffix; ConfigError naming the known ones."""
    kind = _SUFFIX_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"{path}: unknown weights file kind {path.suffix!r}; known: {sorted(_SUFFIX_KINDS)}"
        )
    return kind


def _importer(kind: str) -> Importer:
    target = _IMPORTERS[kind]
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
        _IMPORTERS[kind] = target
    return target


def import_model(
    preset_name: str, weights: Path, out: Path, options: ImportOptions | None = None
) -> Path:
    """Write a model package for ``weights`` of family ``preset_name`` to ``out``; returns it."""
    options = options or ImportOptions()
    preset = get_preset(preset_name)
    weights = Path(weights)
    if not weights.is_file():
        raise ModelError(f"weights file {weights} does not exist")
    kind = weights_kind(weights)
    if kind not in preset.weights_kinds:
        raise ConfigError(
            f"preset {preset.name!r} imports {list(preset.weights_kinds)} weights, not {kind!r} "
            f"({weights.name})"
        )
    missing = [
        f"{key} ({preset.option_help.get(key, '')})".replace(" ()", "")
        for key in preset.required_options
        if getattr(options, key) is None
    ]
    if missing:
        raise ConfigError(f"preset {preset.name!r} needs {', '.join(missing)}")
    if options.camera_size is not None:
        if options.input_size is not None:
            raise ConfigError("give --input-size or --camera-size, not both")
        size = input_size_for_camera(preset, *options.camera_size)
        options = replace(options, input_size=size, camera_size=None)
    if options.max_depth_m is not None and not options.max_depth_m > 0:
        raise ConfigError(
            f"max depth must be a positive number of metres, got {options.max_depth_m}"
        )
    return _importer(kind)(preset, weights, Path(out), options)
