"""Every network output by name (``infer_all``), as fresh arrays the caller owns."""

from __future__ import annotations

import numpy as np
import pytest
from inference_fixtures import (
    MULTI_HEAD_OUTPUTS,
    make_multi_head_package,
    multi_head_factory,
    tiny_factory,
)

from cloudypoints_core.inference.backends import Backend, create_backend
from cloudypoints_core.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from cloudypoints_core.inference.backends.torch_backend import TorchBackend
from cloudypoints_core.inference.package import ModelPackage, load_model_package


def _batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def multi_head(tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    return load_model_package(make_multi_head_package(tmp_path_factory.mktemp("multi")))


def _backends(package: ModelPackage, factory: object) -> list[Backend]:
    return [
        OnnxRuntimeBackend(package, "cpu", num_threads=1),
        OnnxRuntimeBackend(package, "cpu", num_threads=1, io_binding=True),
        TorchBackend(package, "cpu", model_factory=factory),  # type: ignore[arg-type]
    ]


def test_single_output_models_name_their_one_output(tiny_package: ModelPackage) -> None:
    for backend in _backends(tiny_package, tiny_factory):
        assert isinstance(backend, Backend)
        assert backend.output_names == ("depth",)
        batch = _batch(1)
        outs = backend.infer_all(batch)
        assert list(outs) == ["depth"]
        assert outs["depth"].shape == (1, 1, 32, 64) and outs["depth"].dtype == np.float32
        np.testing.assert_allclose(outs["depth"][0, 0], backend.infer(batch), rtol=1e-6)


def test_multi_head_outputs_by_onnx_name_agree_between_backends(
    multi_head: ModelPackage,
) -> None:
    batch = _batch(2)
    results = []
    for backend in _backends(multi_head, multi_head_factory):
        assert backend.output_names == MULTI_HEAD_OUTPUTS, backend.name
        outs = backend.infer_all(batch)
        assert tuple(outs) == MULTI_HEAD_OUTPUTS
        assert outs["depth"].shape == (1, 1, 32, 64) and outs["depth"].dtype == np.float32
        assert outs["sky"].shape == (1, 1, 32, 64) and outs["sky"].dtype == np.float32
        assert outs["label"].shape == (1, 32, 64) and outs["label"].dtype == np.int64
        # infer still gives the primary output alone, as (H, W).
        np.testing.assert_allclose(backend.infer(batch), outs["depth"][0, 0], rtol=1e-6)
        results.append(outs)
    for other in results[1:]:
        for name in ("depth", "sky"):
            np.testing.assert_allclose(other[name], results[0][name], rtol=1e-5, atol=1e-5)
        # The label thresholds sky at 0.5: equal except where sky sits on the threshold.
        near = np.abs(results[0]["sky"][:, 0] - 0.5) < 1e-5
        assert np.array_equal(other["label"][~near], results[0]["label"][~near])


def test_infer_all_arrays_survive_the_next_call(multi_head: ModelPackage) -> None:
    for backend in _backends(multi_head, multi_head_factory):
        first = backend.infer_all(_batch(3))
        kept = {name: value.copy() for name, value in first.items()}
        backend.infer_all(_batch(4))
        backend.infer(_batch(5))
        for name in MULTI_HEAD_OUTPUTS:
            assert np.array_equal(first[name], kept[name]), (backend.name, name)


def test_auto_backend_exposes_infer_all(multi_head: ModelPackage) -> None:
    backend = create_backend("auto", multi_head, "cpu", {"num_threads": 1})
    assert set(backend.infer_all(_batch(6))) == set(MULTI_HEAD_OUTPUTS)
