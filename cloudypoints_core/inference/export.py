"""ONNX export of a depth network with its spec embedded, model packages, and a parity check.

``export_onnx`` traces the network at the spec's fixed input shape (1, 3, H, W) with the
TorchScript exporter (``dynamo=False``: it folds BatchNorm into the convolutions and needs no extra
packages), stores the spec as YAML in the ONNX metadata, checks the graph with ``onnx.checker`` and
writes the file atomically. ``export_package`` writes a whole package folder (``spec.yaml``,
``model.onnx``, ``model.pt`` holding the state dict only). ``onnx_parity`` runs ONNX Runtime and
PyTorch on the same SynthCity frames and returns the largest absolute difference and that
relative to the output's largest magnitude, for ``cloudypoints export`` and the .pth importer.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ModelError
from cloudypoints_core.inference.spec import ModelSpec
from cloudypoints_core.io import atomic_write_bytes

if TYPE_CHECKING:
    import torch

__all__ = [
    "Parity",
    "export_onnx",
    "export_package",
    "load_torch_model",
    "normalise_batch",
    "onnx_parity",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def _onnx_bytes(model: torch.nn.Module, spec: ModelSpec, opset: int) -> bytes:
    torch = require("torch", "ONNX export")
    dummy = torch.zeros(1, 3, spec.input_height, spec.input_width, dtype=torch.float32)
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    # Networks whose graph depends on the input size beyond shapes (a ViT's position embedding
    # resampled to the patch grid) precompute that part for the export size: the graph then
    # holds a constant, not a bicubic resize TensorRT would have to run on every frame.
    fix_input_size = getattr(model, "fix_input_size", None)
    if callable(fix_input_size):
        fix_input_size(spec.input_height, spec.input_width)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Python ints taken from tensor shapes are constants on purpose: the export is at
            # one fixed input size.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (dummy,),
                buffer,
                input_names=[spec.input_name],
                output_names=[spec.output_name],
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types for unsupported ops
        raise ModelError(f"ONNX export of {spec.architecture!r} failed: {exc}") from exc
    finally:
        if callable(fix_input_size):
            fix_input_size(None)
        model.train(was_training)
    return buffer.getvalue()


def export_onnx(
    model: torch.nn.Module, spec: ModelSpec, path: str | Path, opset: int = DEFAULT_OPSET
) -> Path:
    """Export ``model`` to ``path`` at the spec's fixed input shape, spec in the metadata.

    Input and output tensors are named ``spec.input_name`` / ``spec.output_name``; the graph is
    validated with ``onnx.checker`` before the file is (atomically) written. Returns the path.
    """
    onnx = require("onnx", "ONNX export")
    proto = onnx.load_from_string(_onnx_bytes(model, spec, opset))
    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    embed_spec_in_onnx_model(proto, spec)
    proto.producer_name = "cloudypoints"
    proto.doc_string = f"CloudyPoints depth network {spec.name} ({spec.architecture})"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError and shape-inference errors
        raise ModelError(f"exported ONNX graph of {spec.name!r} is invalid: {exc}") from exc
    out = Path(path)
    atomic_write_bytes(out, proto.SerializeToString())
    log.info(
        "exported %s (%dx%d, opset %d) to %s",
        spec.name,
        spec.input_width,
        spec.input_height,
        opset,
        out,
    )
    return out


def export_package(
    model: torch.nn.Module,
    spec: ModelSpec,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    model_card: str | None = None,
) -> Path:
    """Write a model package folder: spec.yaml, model.onnx, model.pt (and MODEL_CARD.md if given).

    Each file is written atomically; ``model.pt`` holds the float32 state dict only (tensors, so
    ``torch.load(weights_only=True)`` reads it), never metadata: that lives in spec.yaml and the
    ONNX metadata. Returns the folder.
    """
    torch = require("torch", "writing a model package")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = replace(
        spec,
        onnx_file=spec.onnx_file or "model.onnx",
        weights_file=spec.weights_file or "model.pt",
    )
    export_onnx(model, spec, out / str(spec.onnx_file), opset=opset)
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(out / str(spec.weights_file), buffer.getvalue())
    if model_card is not None:
        atomic_write_bytes(out / "MODEL_CARD.md", model_card.encode("utf-8"))
    # The spec last: a reader that sees spec.yaml finds the files it names.
    spec.save(out / "spec.yaml")
    return out


def load_torch_model(spec: ModelSpec, weights_path: str | Path) -> torch.nn.Module:
    """The spec's network with the state dict at ``weights_path`` loaded strictly, in eval mode."""
    require("torch", "loading a torch model")
    from cloudypoints_core.models import create_model
    from cloudypoints_core.models.weights import load_checkpoint_state

    model = create_model(spec.architecture, **dict(spec.arch_config))
    state = load_checkpoint_state(weights_path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"weights file {weights_path} does not fit network {spec.architecture!r} with "
            f"{dict(spec.arch_config)}: {exc}"
        ) from exc
    return model.eval()


def normalise_batch(rgb: npt.NDArray[np.uint8], spec: ModelSpec) -> npt.NDArray[np.float32]:
    """(H, W, 3) uint8 RGB at the spec's input size -> (1, 3, H, W) float32 network input."""
    if rgb.shape != (spec.input_height, spec.input_width, 3) or rgb.dtype != np.uint8:
        raise ModelError(
            f"expected a {spec.input_width}x{spec.input_height} uint8 RGB image, got "
            f"{rgb.dtype} {rgb.shape}"
        )
    img = rgb[..., ::-1] if spec.channel_order == "bgr" else rgb
    x = (img.astype(np.float32) / 255.0 - np.asarray(spec.mean, np.float32)) / np.asarray(
        spec.std, np.float32
    )
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against PyTorch on the same frames, in the network's output units."""

    #: Largest |ONNX Runtime - PyTorch| over all frames and pixels (metres for a metric head).
    max_abs: float
    #: ``max_abs`` divided by the largest |PyTorch output|: the figure for outputs without a
    #: fixed unit (relative inverse depth); ``max_abs`` itself when the output is all zero.
    max_rel: float


def onnx_parity(
    model: torch.nn.Module,
    onnx_path: str | Path,
    spec: ModelSpec,
    seeds: Sequence[int] = (1_000_000, 1_000_001),
    images: Sequence[npt.NDArray[np.uint8]] | None = None,
) -> Parity:
    """ONNX Runtime against PyTorch on the SynthCity frames of ``seeds`` (held out of training).

    ``images`` (uint8 RGB at the input size) replaces the rendered frames when given.
    ModelError when the two outputs differ in shape.
    """
    torch = require("torch", "the export parity check")
    ort = require("onnxruntime", "the export parity check")
    if images is None:
        from cloudypoints_core.data.synthcity import render_frame

        images = [render_frame(int(s), spec.input_width, spec.input_height).rgb for s in seeds]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval()
    worst, peak = 0.0, 0.0
    for rgb in images:
        x = normalise_batch(np.asarray(rgb), spec)
        (onnx_out,) = session.run([spec.output_name], {spec.input_name: x})
        with torch.no_grad():
            torch_out = model(torch.from_numpy(x)).numpy()
        if onnx_out.shape != torch_out.shape:
            raise ModelError(f"ONNX output shape {onnx_out.shape} != torch {torch_out.shape}")
        worst = max(worst, float(np.max(np.abs(onnx_out - torch_out))))
        peak = max(peak, float(np.max(np.abs(torch_out))))
    return Parity(max_abs=worst, max_rel=worst / peak if peak > 0 else worst)
