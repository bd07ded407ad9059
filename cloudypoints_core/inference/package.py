"""A model package on disk: a folder with ``spec.yaml`` and the weights it describes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudypoints_core.errors import ModelError
from cloudypoints_core.inference.spec import ModelSpec
from cloudypoints_core.io import file_sha256

SPEC_FILE = "spec.yaml"
#: The bundled default model, shipped inside the Python package so that source checkouts, pip
#: installs and colcon installs all find it without a download.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


def default_model_path() -> Path:
    """Folder of the bundled default model package."""
    return DEFAULT_MODEL_DIR


@dataclass(frozen=True)
class ModelPackage:
    """A validated model package: its folder and its spec; file paths resolved and checked."""

    root: Path
    spec: ModelSpec

    @property
    def onnx_path(self) -> Path | None:
        return self.root / self.spec.onnx_file if self.spec.onnx_file else None

    @property
    def weights_path(self) -> Path | None:
        return self.root / self.spec.weights_file if self.spec.weights_file else None

    def has_onnx(self) -> bool:
        return self.onnx_path is not None and self.onnx_path.is_file()

    def has_weights(self) -> bool:
        return self.weights_path is not None and self.weights_path.is_file()

    def onnx_external_files(self) -> list[Path]:
        """Files holding the ONNX model's external weights (tensors saved beside the .onnx).

        Large exports (over protobuf's 2 GiB limit, or saved with ``save_as_external_data``) keep
        their weights there; an engine built from the ONNX depends on them as much as on the file.
        """
        if self.onnx_path is None or not self.onnx_path.is_file():
            raise ModelError(f"model package {self.root} has no ONNX file")
        from cloudypoints_core._optional import require

        onnx = require("onnx", "reading an ONNX model's external weights")
        try:
            model = onnx.load_model(str(self.onnx_path), load_external_data=False)
        except Exception as exc:  # protobuf raises DecodeError and friends, not one base class
            raise ModelError(f"{self.onnx_path} is not a readable ONNX model: {exc}") from exc
        locations: set[str] = set()

        def visit(graph: Any) -> None:
            tensors = list(graph.initializer)
            for node in graph.node:
                for attr in node.attribute:
                    tensors.extend([attr.t, *attr.tensors])
                    for sub in [attr.g, *attr.graphs]:
                        if sub.ByteSize():
                            visit(sub)
            for tensor in tensors:
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    entries = {e.key: e.value for e in tensor.external_data}
                    if "location" in entries:
                        locations.add(entries["location"])

        visit(model.graph)
        base = self.onnx_path.parent
        files = sorted(base / loc for loc in locations)
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelError(
                f"{self.onnx_path} keeps weights in external files that are missing: {missing}"
            )
        return files

    def onnx_sha256(self) -> str:
        """Hash of the ONNX file and its external weight files, if any (keys engine caches, so
        new weights rebuild the engine); for a self-contained file, the file's own sha256."""
        if self.onnx_path is None or not self.onnx_path.is_file():
            raise ModelError(f"model package {self.root} has no ONNX file")
        digest = file_sha256(self.onnx_path)
        external = self.onnx_external_files()
        if not external:
            return digest
        combined = hashlib.sha256(digest.encode("ascii"))
        for path in external:
            rel = path.relative_to(self.onnx_path.parent).as_posix()
            combined.update(f"\0{rel}\0{file_sha256(path)}".encode())
        return combined.hexdigest()


def load_model_package(path: str | os.PathLike[str] | None = None) -> ModelPackage:
    """Load and validate the package at ``path`` (a folder, its spec.yaml, or an .onnx file).

    ``None`` means the bundled default. A bare ONNX file is accepted when its metadata carries the
    spec (as ``export_onnx`` writes it).
    """
    root = default_model_path() if path is None or str(path) in ("", "default") else Path(path)
    if root.is_file() and root.suffix == ".onnx":
        from cloudypoints_core.inference.onnx_meta import read_spec_from_onnx

        spec = read_spec_from_onnx(root)
        spec = ModelSpec.from_dict({**spec.to_dict(), "onnx_file": root.name}, source=str(root))
        return ModelPackage(root=root.parent.resolve(), spec=spec)
    if root.is_file() and root.name == SPEC_FILE:
        root = root.parent
    if not root.exists():
        raise ModelError(f"model package {root} does not exist")
    if not root.is_dir():
        raise ModelError(
            f"model package {root} must be a folder with {SPEC_FILE} or an .onnx file"
        )
    spec = ModelSpec.load(root / SPEC_FILE)
    package = ModelPackage(root=root.resolve(), spec=spec)
    missing = [
        str(p)
        for p in (package.onnx_path, package.weights_path)
        if p is not None and not p.is_file()
    ]
    if not package.has_onnx() and not package.has_weights():
        raise ModelError(f"model package {root}: none of its weight files exist: {missing}")
    return package
