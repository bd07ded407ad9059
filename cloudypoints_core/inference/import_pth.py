"""Import a PyTorch checkpoint (``.pth``) that one of our own networks loads, as a model package.

The preset names the network (``architecture`` and ``arch_config`` among its spec fields, e.g.
``depth_anything_v2`` with ``encoder: vits``); the checkpoint is loaded with ``strict=True``
under its own key names (a wrong file lists its missing / unexpected keys), exported to ONNX at
one fixed input size (``--input-size`` or the preset's default; for ViTs the position embedding
is precomputed for that grid), and ONNX Runtime is compared with PyTorch on two SynthCity frames:
the package is written only when they agree to ``PARITY_RTOL`` of the output's range. The
package (``spec.yaml``, ``model.onnx`` with the spec in its metadata, ``model.pt``, and
``MODEL_CARD.md``) is assembled in a temporary folder beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import ConfigError, ModelError
from cloudypoints_core.inference.presets import ImportOptions, Preset
from cloudypoints_core.inference.spec import ModelSpec
from cloudypoints_core.io import file_sha256, staged_folder

__all__ = ["PARITY_RTOL", "build_pth_spec", "import_pth"]

log = logging.getLogger(__name__)

#: Largest |ONNX Runtime - PyTorch| accepted, relative to the largest |PyTorch output|. Both run
#: float32; a 24-block ViT accumulates a few 1e-6 of relative rounding difference.
PARITY_RTOL = 1e-3


def build_pth_spec(preset: Preset, options: ImportOptions, size: tuple[int, int]) -> ModelSpec:
    """The package spec: the preset's fields, the chosen input size and the user's options."""
    from cloudypoints_core.models import model_info

    fields: dict[str, Any] = dict(preset.spec_fields)
    if "architecture" not in fields:
        raise ConfigError(
            f"preset {preset.name!r} names no architecture; it cannot import .pth weights"
        )
    arch_config = dict(fields.get("arch_config", {}))
    if options.max_depth_m is not None and "max_depth" in arch_config:
        # The head's scale is the one the checkpoint was trained with (80 m outdoor, 20 m
        # indoor); a fine-tuned checkpoint may use another.
        arch_config["max_depth"] = float(options.max_depth_m)
    multiple = model_info(str(fields["architecture"])).input_multiple
    width, height = size
    if width % multiple or height % multiple or width <= 0 or height <= 0:
        raise ConfigError(
            f"input size {width}x{height} is not a positive multiple of {multiple} (the patch "
            f"size of {fields['architecture']}); e.g. {preset.default_input_size[0]}x"
            f"{preset.default_input_size[1]}"
        )
    fields.update(
        name=options.name or f"{preset.name}-{width}x{height}",
        arch_config=arch_config,
        input_width=width,
        input_height=height,
        input_multiple=multiple,
        input_name="image",
        output_name="depth",
        onnx_file="model.onnx",
        weights_file="model.pt",
        spec_version=2,
    )
    if options.max_depth_m is not None:
        fields["max_depth_m"] = float(options.max_depth_m)
    return ModelSpec.from_dict(fields, source=f"preset {preset.name}")


def import_pth(preset: Preset, weights: Path, out: Path, options: ImportOptions) -> Path:
    """Load ``weights`` strictly into the preset's network and write its package to ``out``."""
    from cloudypoints_core.inference.export import export_package, onnx_parity
    from cloudypoints_core.inference.import_onnx import model_card, run_once
    from cloudypoints_core.models import create_model
    from cloudypoints_core.models.weights import load_checkpoint_state, load_strict

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new folder")
    size = options.input_size or preset.default_input_size
    spec = build_pth_spec(preset, options, size)
    model = create_model(spec.architecture, **dict(spec.arch_config))
    load_strict(model, load_checkpoint_state(weights), str(weights))
    model.eval()
    with staged_folder(out) as staging:
        export_package(model, spec, staging)
        parity = onnx_parity(model, staging / "model.onnx", spec)
        diff, rel = parity.max_abs, parity.max_rel
        log.info("ONNX Runtime vs PyTorch: max |difference| %.2e (%.2e relative)", diff, rel)
        if not rel <= PARITY_RTOL:
            raise ModelError(
                f"export parity check failed: ONNX Runtime and PyTorch differ by {diff:.3g} "
                f"({rel:.3g} of the output range, tolerance {PARITY_RTOL:g})"
            )
        card = model_card(preset, spec, weights, file_sha256(weights))
        card += (
            f"\nExported by CloudyPoints at {spec.input_width}x{spec.input_height} (position "
            f"embedding precomputed for that grid); ONNX Runtime vs PyTorch on two SynthCity "
            f"frames: max |difference| {diff:.2e} ({rel:.1e} relative).\n"
        )
        (staging / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        if options.check:
            run_once(staging)
    log.info(
        "imported %s as %s: %s %s, input %dx%d, %s",
        weights,
        out,
        spec.architecture,
        dict(spec.arch_config),
        spec.input_width,
        spec.input_height,
        spec.output_kind,
    )
    return out
