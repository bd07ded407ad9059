"""Read and write the model spec stored in an ONNX file's metadata."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cloudypoints_core._optional import require
from cloudypoints_core.errors import ModelError
from cloudypoints_core.inference.spec import ONNX_METADATA_KEY, ModelSpec

if TYPE_CHECKING:
    import onnx


def read_spec_from_onnx(path: str | Path) -> ModelSpec:
    """The spec embedded in ``path``'s metadata; ModelError if absent or the file is not ONNX."""
    onnx = require("onnx", "reading a model spec from ONNX metadata")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise ModelError(f"{path} is not a readable ONNX model: {exc}") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    if ONNX_METADATA_KEY not in meta:
        raise ModelError(
            f"{path} has no '{ONNX_METADATA_KEY}' metadata; export it with cloudypoints export or "
            "put a spec.yaml beside it"
        )
    return ModelSpec.from_yaml(meta[ONNX_METADATA_KEY], source=f"{path} metadata")


def embed_spec_in_onnx_model(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Set (replace) the spec metadata entry of an in-memory ``onnx.ModelProto``."""
    props = model.metadata_props
    for i in reversed(range(len(props))):
        if props[i].key == ONNX_METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = spec.to_yaml()
