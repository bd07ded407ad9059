"""Fixtures of the evaluation tests: a Cityscapes fixture tree and a tiny random model package."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

# The Cityscapes fixture writer lives with the data tests; the stdlib owns the name "test", so it
# is imported by folder rather than as test.core.data.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from cityscapes_fixture import FixtureTree, write_cityscapes_fixture  # noqa: E402


@pytest.fixture(scope="session")
def cs_tree(tmp_path_factory: pytest.TempPathFactory) -> FixtureTree:
    """Fixture tree (256x128, 2 cities x 2 frames per split); treat as read-only."""
    return write_cityscapes_fixture(tmp_path_factory.mktemp("cityscapes_eval"), sequence_splits=())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init registered network exported as a full package (ONNX + state dict)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from cloudypoints_core.inference.export import export_package
    from cloudypoints_core.inference.spec import ModelSpec
    from cloudypoints_core.models import create_model

    torch.manual_seed(0)
    spec = ModelSpec(
        name="tiny_eval",
        architecture="mobile_unet",
        arch_config={"width_mult": 0.5},
        input_width=128,
        input_height=64,
        output_kind="metric_depth",
        train_fx_px=141.4,
        min_depth_m=0.5,
        max_depth_m=80.0,
    )
    model = create_model(spec.architecture, **dict(spec.arch_config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter says it is old
        return export_package(model, spec, tmp_path_factory.mktemp("tiny_eval_pkg"))
