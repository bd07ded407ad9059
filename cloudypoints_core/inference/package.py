"""A model package on disk: a folder with ``spec.yaml`` and the weights it describes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cloudypoints_core.errors import ModelError
from cloudypoints_core.inference.spec import ModelSpec

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

    def onnx_sha256(self) -> str:
        """Hash of the ONNX file (keys engine caches so a changed model rebuilds its engine)."""
        if self.onnx_path is None or not self.onnx_path.is_file():
            raise ModelError(f"model package {self.root} has no ONNX file")
        digest = hashlib.sha256()
        with self.onnx_path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


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
