"""An "oracle" relative depth model for tests: an ONNX network that reads exact depth encoded in
the image and answers with affine inverse depth ``a / z + b`` (known ``a`` and ``b``).

The red channel holds log-depth (:func:`encode_depth`): ``(ln z - ln min) / (ln max - ln min)``
in 256 steps (about 2 % of depth per step for 0.5-100 m, so the decoded depth is within 1 %),
green and blue are 0. The network is exported from torch with the legacy exporter
(``dynamo=False``, opset 17), the way ``cloudypoints_core.inference.export`` does, so the whole
chain (preprocess, backend, output mapping, scale-and-shift fit) runs on it unchanged and the
test knows the truth. Pure torch/onnx: shared by the core tests and the ROS tests.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.inference.spec import ModelSpec

MIN_M, MAX_M = 0.5, 100.0


def encode_depth(depth_m: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB with log-depth in red (sky and invalid: the far end)."""
    z = np.where(np.isfinite(depth_m), depth_m, MAX_M)
    z = np.clip(z, MIN_M, MAX_M)
    u = (np.log(z) - math.log(MIN_M)) / (math.log(MAX_M) - math.log(MIN_M))
    rgb = np.zeros(depth_m.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = np.round(u * 255.0).astype(np.uint8)
    return rgb


def oracle_spec(width: int, height: int, name: str = "oracle_affine") -> ModelSpec:
    return ModelSpec(
        name=name,
        architecture="oracle_affine",
        input_width=width,
        input_height=height,
        output_kind="affine_inverse_depth",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        min_depth_m=MIN_M,
        max_depth_m=80.0,
        weights_file=None,
    )


def oracle_network(a: float, b: float) -> Any:
    """(1, 3, H, W) image in [0, 1] -> (1, 1, H, W) ``a / z + b`` with z decoded from red."""
    import torch
    from torch import nn

    class Oracle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            u = x[:, 0:1]
            log_z = math.log(MIN_M) + u * (math.log(MAX_M) - math.log(MIN_M))
            return a * torch.exp(-log_z) + b

    return Oracle().eval()


def export_oracle_onnx(path: Path, width: int, height: int, a: float, b: float) -> Path:
    """The bare ONNX (input ``image``, output ``depth``, no spec) as a user would download it:
    what ``cloudypoints import-model --preset midas-v21-small`` takes."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            oracle_network(a, b),
            (torch.zeros(1, 3, height, width),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["depth"],
        )
    return path


def make_oracle_package(root: Path, width: int, height: int, a: float, b: float) -> Path:
    """Write spec.yaml and model.onnx (spec in its metadata) into ``root``; returns ``root``."""
    import onnx

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    spec = oracle_spec(width, height)
    root.mkdir(parents=True, exist_ok=True)
    path = export_oracle_onnx(root / "model.onnx", width, height, a, b)
    proto = onnx.load(str(path))
    embed_spec_in_onnx_model(proto, spec)
    onnx.save(proto, str(path))
    spec.save(root / "spec.yaml")
    return root
