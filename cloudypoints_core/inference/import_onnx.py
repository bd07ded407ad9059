"""Import an ONNX depth network exported elsewhere as a model package, checked against a preset.

The graph's own input and output names and shapes are read and compared with the preset: one
float input of shape (1, 3, H, W) (batch and spatial sizes fixed, or dynamic and then taken from
``--input-size`` or the preset's default), the depth output and any mask outputs (e.g. ``sky``)
with the same H x W. Whatever does not fit is listed in one error. A dynamic input is fixed to
the chosen size in the written ONNX (packages have one static input size, as engines need).
The package (``spec.yaml``, ``model.onnx`` with the spec in its metadata, ``MODEL_CARD.md``)
is written to a temporary folder beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ConfigError, ModelError
from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model
from cloudypoints_core.inference.package import SPEC_FILE
from cloudypoints_core.inference.presets import ImportOptions, Preset
from cloudypoints_core.inference.spec import ModelSpec
from cloudypoints_core.io import file_sha256, staged_folder

if TYPE_CHECKING:
    import onnx

__all__ = [
    "OnnxSignature",
    "build_spec",
    "import_onnx",
    "model_card",
    "read_signature",
    "run_once",
    "write_onnx_package",
]

log = logging.getLogger(__name__)

#: onnx.TensorProto.FLOAT
_FLOAT = 1
#: Bytes from which a model is saved with external data (protobuf's 2 GiB message limit).
_PROTOBUF_LIMIT = 2**31 - 2**24
Shape = list[int | str]


class OnnxSignature:
    """Names, element types and shapes (ints, or strings for dynamic dims) of a graph's I/O."""

    def __init__(
        self, inputs: dict[str, tuple[int, Shape]], outputs: dict[str, tuple[int, Shape]]
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs

    def describe(self) -> str:
        def fmt(items: dict[str, tuple[int, Shape]]) -> str:
            return ", ".join(f"{name} {shape}" for name, (_, shape) in items.items())

        return f"inputs: {fmt(self.inputs)}; outputs: {fmt(self.outputs)}"


def _shape(value_info: Any) -> tuple[int, Shape]:
    tensor = value_info.type.tensor_type
    dims: Shape = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return int(tensor.elem_type), dims


def read_signature(model: onnx.ModelProto) -> OnnxSignature:
    """The graph inputs (initializers excluded) and outputs of ``model``."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = {vi.name: _shape(vi) for vi in model.graph.input if vi.name not in initializers}
    outputs = {vi.name: _shape(vi) for vi in model.graph.output}
    return OnnxSignature(inputs, outputs)


def _pick(names: dict[str, Any], wanted: tuple[str, ...]) -> str | None:
    for name in wanted:
        if name in names:
            return name
    if not wanted and len(names) == 1:
        return next(iter(names))
    return None


def _check(
    preset: Preset, sig: OnnxSignature, options: ImportOptions
) -> tuple[str, str, tuple[int, int], int]:
    """(input name, output name, input size (W, H), input multiple), or ModelError listing
    every mismatch between the graph and the preset."""
    problems: list[str] = []
    input_name = _pick(sig.inputs, preset.input_names)
    if input_name is None:
        expected = list(preset.input_names) or ["exactly one input"]
        problems.append(f"input: expected one of {expected}, the graph has {list(sig.inputs)}")
    output_name = _pick(sig.outputs, preset.output_names)
    if output_name is None:
        expected = list(preset.output_names) or ["exactly one output"]
        problems.append(
            f"depth output: expected one of {expected}, the graph has {list(sig.outputs)}"
        )
    masks = [m["name"] for m in preset.spec_fields.get("mask_outputs", ())]
    for name in masks:
        if name not in sig.outputs:
            problems.append(
                f"output {name!r} (mask) is missing; the graph has {list(sig.outputs)}"
            )
    size: tuple[int, int] | None = None
    if input_name is not None:
        elem, shape = sig.inputs[input_name]
        if elem != _FLOAT:
            problems.append(f"input {input_name!r} must be float32, got ONNX element type {elem}")
        if len(shape) != 4:
            problems.append(f"input {input_name!r} must be (1, 3, H, W), got {shape}")
        else:
            batch, channels, h, w = shape
            if isinstance(batch, int) and batch != 1:
                problems.append(f"input {input_name!r} has batch {batch}; 1 is needed")
            if isinstance(channels, int) and channels != 3:
                problems.append(f"input {input_name!r} has {channels} channels; 3 (RGB) needed")
            if isinstance(h, int) and isinstance(w, int):
                size = (w, h)
                if options.input_size is not None and options.input_size != size:
                    problems.append(
                        f"the graph's input is fixed at {w}x{h} (WxH); the requested input size "
                        f"{options.input_size[0]}x{options.input_size[1]} does not fit (re-export "
                        "at that size, or leave --input-size / --camera-size out)"
                    )
            elif isinstance(h, int) or isinstance(w, int):
                problems.append(
                    f"input {input_name!r} has one fixed and one dynamic side {shape}; "
                    "export with both fixed or both dynamic"
                )
            else:
                size = options.input_size or preset.default_input_size
    multiple = 0
    if size is not None:
        multiple = next(
            (m for m in preset.input_multiples if size[0] % m == 0 and size[1] % m == 0), 0
        )
        if not multiple:
            problems.append(
                f"input size {size[0]}x{size[1]} is not a multiple of "
                f"{' or '.join(map(str, preset.input_multiples))} (patch size / stride of "
                f"{preset.name}); the default is {preset.default_input_size[0]}x"
                f"{preset.default_input_size[1]}"
            )
        for name in [output_name, *masks]:
            if name is None or name not in sig.outputs:
                continue
            _, shape = sig.outputs[name]
            want = [size[1], size[0]]
            lead_ok = all(not isinstance(d, int) or d == 1 for d in shape[:-2])
            spatial_ok = all(
                not isinstance(d, int) or d == t for d, t in zip(shape[-2:], want, strict=False)
            )
            if not (2 <= len(shape) <= 4 and lead_ok and spatial_ok):
                problems.append(
                    f"output {name!r} has shape {shape}; expected (1, 1, {size[1]}, {size[0]}), "
                    f"(1, {size[1]}, {size[0]}) or ({size[1]}, {size[0]}) (the input's H x W)"
                )
    if problems:
        raise ModelError(
            f"the ONNX graph does not fit preset {preset.name!r}:\n  - "
            + "\n  - ".join(problems)
            + f"\n  (graph {sig.describe()})"
        )
    if input_name is None or output_name is None or size is None:  # unreachable: listed above
        raise ModelError(f"the ONNX graph does not fit preset {preset.name!r}: {sig.describe()}")
    return input_name, output_name, size, multiple


def _fix_input_shape(model: onnx.ModelProto, name: str, size: tuple[int, int]) -> None:
    """Make the input ``name`` static (1, 3, H, W): a package has one input size."""
    for vi in model.graph.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            for dim, value in zip(dims, (1, 3, size[1], size[0]), strict=True):
                dim.Clear()
                dim.dim_value = value


def build_spec(
    preset: Preset,
    options: ImportOptions,
    input_name: str,
    output_name: str,
    size: tuple[int, int],
    multiple: int,
) -> ModelSpec:
    """The package spec: the preset's fields plus what was read from the graph."""
    fields: dict[str, Any] = {"architecture": preset.name, **preset.spec_fields}
    fields.update(
        name=options.name or f"{preset.name}-{size[0]}x{size[1]}",
        input_width=size[0],
        input_height=size[1],
        input_multiple=multiple,
        input_name=input_name,
        output_name=output_name,
        onnx_file="model.onnx",
        weights_file=None,
        spec_version=2,
    )
    if options.max_depth_m is not None:
        fields["max_depth_m"] = float(options.max_depth_m)
    return ModelSpec.from_dict(fields, source=f"preset {preset.name}")


def model_card(preset: Preset, spec: ModelSpec, weights: Path, sha256: str) -> str:
    """MODEL_CARD.md of an imported package."""
    masks = ", ".join(
        f"`{m.name}` (invalid when {'>=' if m.invalid_when == 'above' else '<'} {m.threshold})"
        for m in spec.mask_outputs
    )
    focal = (
        "none (the output is taken as metres as it is)"
        if spec.reference_focal is None
        else f"`{spec.focal_rule}` against {spec.reference_focal:g} px"
    )
    lines = [
        f"# {spec.name}",
        "",
        f"Imported with `cloudypoints import-model --preset {preset.name}` on "
        f"{datetime.date.today().isoformat()}: {preset.summary}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| weights | `{weights.name}` (sha256 `{sha256}`) |",
        f"| source | {preset.card.source} |",
        f"| licence | {preset.card.licence} |",
        f"| published accuracy | {preset.card.accuracy} |",
        f"| input | {spec.input_width}x{spec.input_height} (WxH), `{spec.input_name}`, "
        f"{spec.channel_order.upper()}, mean {list(spec.mean)}, std "
        f"{[round(s, 6) for s in spec.std]} on pixel / 255 |",
        f"| fitting | `{spec.fit_policy}`, interpolation `{spec.interpolation}`, multiple "
        f"{spec.input_multiple}"
        + (f", pad value {list(spec.pad_value)}" if spec.fit_policy == "keep_aspect_pad" else "")
        + " |",
        f"| output | `{spec.output_name}`: `{spec.output_kind}`; focal rule {focal}; valid "
        f"{spec.min_depth_m:g}-{spec.max_depth_m:g} m"
        + (f"; masks {masks}" if masks else "")
        + " |",
    ]
    if preset.card.notes:
        lines += ["", preset.card.notes]
    if spec.output_kind in ("affine_inverse_depth", "relative_inverse_depth"):
        lines += [
            "",
            "Relative model: its output becomes metres only through a scale source (camera "
            "height and pitch for the ground plane, or a fixed scale).",
        ]
    lines += [
        "",
        "Where each convention comes from (repository, file, commit): `docs/models.md` of "
        "CloudyPoints. This card was written by the importer; the accuracy above is the "
        "publisher's, not measured here.",
        "",
    ]
    return "\n".join(lines)


def write_onnx_package(
    model: onnx.ModelProto, spec: ModelSpec, card: str, out: Path, check: bool = True
) -> Path:
    """Write ``model`` (spec embedded), ``spec.yaml`` and ``MODEL_CARD.md`` to the new folder
    ``out``: staged beside it, optionally run once, then renamed (shared by importers)."""
    onnx = require("onnx", "writing a model package")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new folder")
    embed_spec_in_onnx_model(model, spec)
    with staged_folder(out) as staging:
        name = str(spec.onnx_file or "model.onnx")
        # Protobuf cannot serialise 2 GB or more in one message (ViT-g exports): the tensors
        # then go to one external-data file beside the ONNX, which ONNX Runtime reads.
        large = model.ByteSize() >= _PROTOBUF_LIMIT
        onnx.save(
            model,
            str(staging / name),
            save_as_external_data=large,
            all_tensors_to_one_file=True,
            location=f"{name}.data",
        )
        spec.save(staging / SPEC_FILE)
        (staging / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        if check:
            run_once(staging)
    return out


def import_onnx(preset: Preset, weights: Path, out: Path, options: ImportOptions) -> Path:
    """Check ``weights`` (an ONNX file) against ``preset`` and write the package to ``out``."""
    onnx = require("onnx", "importing an ONNX model")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder; choose a new folder")
    try:
        model = onnx.load(str(weights))
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise ModelError(f"{weights} is not a readable ONNX model: {exc}") from exc
    sig = read_signature(model)
    input_name, output_name, size, multiple = _check(preset, sig, options)
    spec = build_spec(preset, options, input_name, output_name, size, multiple)
    _fix_input_shape(model, input_name, size)
    card = model_card(preset, spec, weights, file_sha256(weights))
    write_onnx_package(model, spec, card, out, options.check)
    log.info(
        "imported %s as %s: input %dx%d, %s, %s",
        weights,
        out,
        size[0],
        size[1],
        spec.fit_policy,
        spec.output_kind,
    )
    return out


def run_once(folder: Path) -> None:
    """Load the package through ONNX Runtime and run it once (shape and I/O check)."""
    from cloudypoints_core.inference.backends import create_backend
    from cloudypoints_core.inference.package import load_model_package

    backend = create_backend("onnxruntime", load_model_package(folder), "cpu", {"warmup": True})
    backend.close()
