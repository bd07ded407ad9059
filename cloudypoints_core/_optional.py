"""Imports of heavy optional libraries with an actionable message when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from cloudypoints_core.errors import DependencyError

_HINTS = {
    "cv2": "pip install opencv-python-headless (or apt install python3-opencv)",
    "torch": "pip install torch==2.13.0 (CPU) or a CUDA build from pytorch.org",
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu for CUDA)",
    "onnx": "pip install onnx",
    "tensorrt": "install TensorRT 10 for your CUDA version (pip install tensorrt or JetPack)",
    "rosbags": "pip install rosbags",
    "matplotlib": "pip install matplotlib",
    "mlflow": "pip install mlflow-skinny",
    "tqdm": "pip install tqdm",
    "yaml": "pip install PyYAML",
    "numba": "pip install numba (or apt install python3-numba)",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise DependencyError naming the feature that needs it and the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _HINTS.get(module.split(".")[0], f"pip install {module}")
        raise DependencyError(
            f"{feature} needs the Python module '{module}': {hint} ({exc})"
        ) from exc
