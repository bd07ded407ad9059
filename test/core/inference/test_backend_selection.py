"""Backend registry, device parsing, ``auto`` selection and option routing."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudypoints_core.errors import BackendError, ConfigError, ModelError
from cloudypoints_core.inference import backends
from cloudypoints_core.inference.backends import (
    Backend,
    EnvironmentProbe,
    backend_candidates,
    create_backend,
    get_backend_class,
    list_backends,
    parse_device,
    select_backend,
)
from cloudypoints_core.inference.package import ModelPackage

HAS_CUDA = EnvironmentProbe().cuda_device_count() > 0
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


class FakeProbe(EnvironmentProbe):
    def __init__(
        self, modules: set[str], cuda: int = 0, providers: list[str] | None = None
    ) -> None:
        self.modules = modules
        self.cuda = cuda
        self.providers = providers if providers is not None else ["CPUExecutionProvider"]

    def has_module(self, name: str) -> bool:
        return name in self.modules

    def cuda_device_count(self) -> int:
        return self.cuda

    def onnxruntime_providers(self) -> list[str]:
        return self.providers if "onnxruntime" in self.modules else []


ALL = {"tensorrt", "onnxruntime", "torch"}


# ------------------------------------------------------------------ the real EnvironmentProbe
def _cuda_seen_by_the_libraries() -> bool:
    """Whether torch, ONNX Runtime or the NVIDIA driver see a CUDA GPU, asked directly (not
    through the probe, which also counts GPUs that a CPU-only torch cannot see)."""
    import ctypes

    import onnxruntime
    import torch

    driver = False
    for name in ("libcuda.so.1", "libnvidia-ml.so.1"):
        try:
            ctypes.CDLL(name)
            driver = True
        except OSError:
            pass
    return (
        driver
        or bool(torch.cuda.is_available())
        or ("CUDAExecutionProvider" in onnxruntime.get_available_providers())
    )


def test_real_probe_finds_modules_by_name() -> None:
    probe = EnvironmentProbe()
    assert probe.has_module("numpy") and probe.has_module("onnxruntime")
    assert not probe.has_module("cloudypoints_no_such_module")
    assert not probe.has_module("numpy..bad")  # a malformed name is "not there", not an error


def test_real_probe_lists_the_onnxruntime_providers() -> None:
    import onnxruntime

    assert EnvironmentProbe().onnxruntime_providers() == onnxruntime.get_available_providers()


@pytest.mark.skipif(_cuda_seen_by_the_libraries(), reason="this machine has a CUDA GPU")
def test_real_probe_counts_no_gpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = EnvironmentProbe()
    assert probe.cuda_device_count() == 0
    # Without torch the probe falls back to ONNX Runtime's providers: still none here.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real_find_spec(name, *a),
    )
    assert not probe.has_module("torch")
    assert probe.cuda_device_count() == 0


@pytest.mark.skipif(_cuda_seen_by_the_libraries(), reason="this machine has a CUDA GPU")
def test_auto_with_the_real_probe_runs_on_the_cpu(tiny_package: ModelPackage) -> None:
    selection = select_backend(tiny_package, "auto")
    assert (selection.backend, selection.device) == ("onnxruntime", "cpu")


def _package(
    tmp_path: Path, tiny_package: ModelPackage, onnx: bool = True, weights: bool = True
) -> ModelPackage:
    root = tmp_path / "pkg"
    root.mkdir()
    if onnx:
        shutil.copy(tiny_package.onnx_path, root / "model.onnx")  # type: ignore[arg-type]
    if weights:
        shutil.copy(tiny_package.weights_path, root / "model.pt")  # type: ignore[arg-type]
    return ModelPackage(root=root, spec=tiny_package.spec)


@pytest.mark.parametrize(
    ("modules", "cuda", "providers", "device", "onnx", "weights", "expected"),
    [
        (ALL, 0, None, "cpu", True, True, ("onnxruntime", "cpu")),
        (ALL, 1, None, "cpu", True, True, ("onnxruntime", "cpu")),  # cpu asked: no TensorRT
        ({"torch", "tensorrt"}, 0, None, "cpu", True, True, ("torch", "cpu")),
        (ALL, 0, None, "cpu", False, True, ("torch", "cpu")),
        (ALL, 1, None, "cuda", True, True, ("tensorrt", "cuda:0")),
        (ALL, 2, None, "cuda:1", True, True, ("tensorrt", "cuda:1")),
        (ALL, 1, None, "auto", True, True, ("tensorrt", "cuda:0")),
        (ALL, 0, None, "auto", True, True, ("onnxruntime", "cpu")),
        (
            {"onnxruntime", "torch"},
            1,
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "cuda",
            True,
            True,
            ("onnxruntime", "cuda:0"),
        ),
        ({"onnxruntime", "torch"}, 1, None, "cuda", True, True, ("torch", "cuda:0")),
        (ALL, 1, None, "cuda", False, True, ("torch", "cuda:0")),  # TensorRT needs the ONNX
        (ALL, 0, None, "cuda", True, True, ("onnxruntime", "cpu")),  # absent GPU: CPU fallback
        (ALL, 1, None, "cuda:3", True, True, ("onnxruntime", "cpu")),  # absent ordinal
    ],
)
def test_auto_selection(
    tmp_path: Path,
    tiny_package: ModelPackage,
    modules: set[str],
    cuda: int,
    providers: list[str] | None,
    device: str,
    onnx: bool,
    weights: bool,
    expected: tuple[str, str],
) -> None:
    package = _package(tmp_path, tiny_package, onnx=onnx, weights=weights)
    selection = select_backend(package, device, FakeProbe(modules, cuda, providers))
    assert (selection.backend, selection.device) == expected
    assert selection.reason


def test_auto_falls_back_from_absent_cuda_and_says_so(
    tmp_path: Path, tiny_package: ModelPackage, caplog: pytest.LogCaptureFixture
) -> None:
    package = _package(tmp_path, tiny_package)
    with caplog.at_level(logging.WARNING):
        selection = select_backend(package, "cuda", FakeProbe(ALL, cuda=0))
    assert selection.device == "cpu"
    assert "falling back to cpu" in selection.reason
    assert any("no such CUDA GPU" in r.getMessage() for r in caplog.records)


def test_auto_with_nothing_usable_lists_every_reason(
    tmp_path: Path, tiny_package: ModelPackage
) -> None:
    package = _package(tmp_path, tiny_package, onnx=False)
    with pytest.raises(BackendError, match="onnxruntime on cpu: the package has no ONNX") as info:
        select_backend(package, "cpu", FakeProbe({"onnxruntime"}))
    assert "torch on cpu: not installed" in str(info.value)


def test_gpu_candidates_come_before_cpu_ones(tmp_path: Path, tiny_package: ModelPackage) -> None:
    package = _package(tmp_path, tiny_package)
    found, skipped = backend_candidates(package, "cuda", FakeProbe(ALL, cuda=1))
    assert [(c.backend, c.device) for c in found] == [
        ("tensorrt", "cuda:0"),
        ("torch", "cuda:0"),
        ("onnxruntime", "cpu"),
        ("torch", "cpu"),
    ]
    assert skipped == ["onnxruntime on cuda:0: no CUDAExecutionProvider (install onnxruntime-gpu)"]


@pytest.mark.skipif(HAS_CUDA or HAS_TRT, reason="this machine has a CUDA GPU or TensorRT")
def test_auto_falls_through_failing_backends(
    tiny_package: ModelPackage, caplog: pytest.LogCaptureFixture
) -> None:
    # The probe claims TensorRT and a GPU; on this machine both GPU backends fail when built
    # (TensorRT missing, no CUDA for torch), so auto ends on the CPU and says why.
    with caplog.at_level(logging.INFO):
        backend = create_backend(
            "auto", tiny_package, "cuda", {"model_factory": _factory()}, probe=FakeProbe(ALL, 1)
        )
    assert (backend.name, backend.device) == ("onnxruntime", "cpu")
    assert "tensorrt on cuda:0 failed" in caplog.text
    assert "torch on cuda:0 failed" in caplog.text


def test_auto_does_not_hide_a_broken_package(tmp_path: Path, tiny_package: ModelPackage) -> None:
    package = _package(tmp_path, tiny_package)
    package.onnx_path.write_bytes(b"corrupt")  # type: ignore[union-attr]
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        create_backend("auto", package, "cpu", probe=FakeProbe(ALL))


def test_unknown_backend_lists_known_ones(tiny_package: ModelPackage) -> None:
    with pytest.raises(BackendError) as info:
        create_backend("openvino", tiny_package)
    message = str(info.value)
    assert "'openvino'" in message
    for name in ("auto", "onnxruntime", "torch", "tensorrt"):
        assert name in message


@pytest.mark.parametrize("text", ["cuda:x", "tpu", "", "cuda:-1"])
def test_bad_device_strings(text: str) -> None:
    with pytest.raises(BackendError, match="unknown device"):
        parse_device(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("cpu", "cpu"), ("CUDA", "cuda:0"), ("cuda:2", "cuda:2"), ("gpu", "cuda:0")],
)
def test_device_strings(text: str, expected: str) -> None:
    assert str(parse_device(text)) == expected


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_named_backend_on_absent_cuda_is_a_clear_error(
    name: str, tiny_package: ModelPackage
) -> None:
    with pytest.raises(BackendError, match="cuda"):
        create_backend(
            name, tiny_package, "cuda", {"model_factory": _factory()} if name == "torch" else {}
        )


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
def test_auto_on_absent_cuda_runs_on_the_cpu(tiny_package: ModelPackage) -> None:
    backend = create_backend("auto", tiny_package, "cuda", {"num_threads": 1, "half": True})
    assert backend.device == "cpu"
    out = backend.infer(np.zeros((1, 3, 32, 64), dtype=np.float32))
    assert out.shape == (32, 64)


def _factory() -> Any:
    from inference_fixtures import tiny_factory

    return tiny_factory


def test_named_backend_rejects_options_of_other_backends(tiny_package: ModelPackage) -> None:
    with pytest.raises(ConfigError, match="does not take the options \\['half'\\]"):
        create_backend("onnxruntime", tiny_package, "cpu", {"half": True})


def test_unknown_options_are_rejected_even_for_auto(tiny_package: ModelPackage) -> None:
    with pytest.raises(ConfigError, match="unknown backend options \\['nmu_threads'\\]"):
        create_backend("auto", tiny_package, "cpu", {"nmu_threads": 2})


def test_option_table_matches_the_backend_classes() -> None:
    # The table routes options without importing backends; it must say what the classes take.
    names = backends.backend_option_names()
    for name in list_backends():
        assert set(get_backend_class(name).OPTIONS) == set(names[name]), name


def test_registered_custom_backend_is_created_by_name(
    tiny_package: ModelPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Constant:
        name = "constant"
        OPTIONS = {"value": 1.0}

        def __init__(self, package: ModelPackage, device: str, value: float = 1.0) -> None:
            self.device = device
            self.value = value
            self.shape = (package.spec.input_height, package.spec.input_width)

        output_names = ("depth",)

        def infer(self, batch: np.ndarray) -> np.ndarray:
            return np.full(self.shape, self.value, dtype=np.float32)

        def infer_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            return {"depth": self.infer(batch)[None, None]}

        def close(self) -> None:
            pass

    monkeypatch.setitem(backends._REGISTRY, "constant", Constant)
    monkeypatch.setitem(backends._OPTION_NAMES, "constant", frozenset({"value"}))
    backend = create_backend("constant", tiny_package, "cpu", {"value": 3.0})
    assert isinstance(backend, Backend)
    assert float(backend.infer(np.zeros((1, 3, 32, 64), np.float32))[0, 0]) == 3.0


def test_backend_modules_import_without_their_libraries() -> None:
    # tensorrt_backend must import (and list its options) on machines without TensorRT.
    cls = get_backend_class("tensorrt")
    assert cls.OPTIONS["precision"] is None  # FP16 on TensorRT 10, the ONNX's types on 11
    if importlib.util.find_spec("tensorrt") is None:
        from cloudypoints_core.errors import DependencyError

        with pytest.raises(DependencyError, match="TensorRT is not installed"):
            cls(None, "cuda:0")  # type: ignore[arg-type]
