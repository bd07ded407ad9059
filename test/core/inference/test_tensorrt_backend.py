"""The TensorRT backend's call sequence against a fake TensorRT 10/11 and a fake CUDA runtime.

``fake_gpu`` documents what the fakes enforce (the documented API behaviour). Each test named
``test_t<N>_...`` covers item T<N> of issue 12 and failed on the code before the fix.
"""

from __future__ import annotations

import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_gpu import ADA, AMPERE, FakeCuda, FakeTensorRT
from inference_fixtures import (
    MULTI_HEAD_OUTPUTS,
    make_multi_head_package,
    make_tiny_package,
    tiny_factory,
    tiny_network,
    tiny_spec,
)

from cloudypoints_core.errors import BackendError, ModelError
from cloudypoints_core.inference.backends import create_backend
from cloudypoints_core.inference.backends import tensorrt_backend as trt_module
from cloudypoints_core.inference.backends.engine_cache import EngineBuildOptions, EngineCache
from cloudypoints_core.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from cloudypoints_core.inference.backends.tensorrt_backend import (
    TensorRTBackend,
    build_cached_engine,
)
from cloudypoints_core.inference.package import ModelPackage, load_model_package
from cloudypoints_core.inference.spec import ModelSpec


def _batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 64)).astype(np.float32)


@dataclass
class Gpu:
    cuda: FakeCuda
    trt: FakeTensorRT


def install_fake_gpu(
    monkeypatch: pytest.MonkeyPatch,
    gpus: tuple[Any, ...] = (AMPERE,),
    version: str = "10.9.0.34",
    misalign: bool = False,
) -> Gpu:
    """Put a fake ``tensorrt`` module and a fake CUDA runtime where the backend finds them."""
    cuda = FakeCuda(gpus, misalign=misalign)
    trt = FakeTensorRT(cuda, version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_module, "load_cuda_api", lambda: cuda, raising=False)
    return Gpu(cuda, trt)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Gpu:
    return install_fake_gpu(monkeypatch)


def _onnx_reference(package: ModelPackage, batch: np.ndarray) -> dict[str, np.ndarray]:
    return OnnxRuntimeBackend(package, "cpu", num_threads=1, warmup=False).infer_all(batch)


def _export(net: Any, path: Path, spec: ModelSpec, **kwargs: Any) -> None:
    import onnx
    import torch

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, spec.input_height, spec.input_width),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            **kwargs,
        )
    proto = onnx.load(str(path))
    embed_spec_in_onnx_model(proto, spec)
    onnx.save(proto, str(path))


# ------------------------------------------------------------------ the fake's own contract
def test_fake_engine_reports_minus_one_until_the_input_shape_is_set(
    gpu: Gpu, tmp_path: Path
) -> None:
    package = _dynamic_package(tmp_path)
    data, _, _ = build_cached_engine(package, "cuda:0", EngineBuildOptions("fp32"), tmp_path)
    engine = gpu.trt.Runtime(None).deserialize_cuda_engine(data)
    context = engine.create_execution_context()
    assert tuple(engine.get_tensor_shape("image")) == (1, 3, -1, -1)
    assert tuple(context.get_tensor_shape("depth"))[-2:] == (-1, -1)
    assert context.set_input_shape("nope", (1, 3, 32, 64)) is False
    assert context.set_input_shape("image", (1, 3, 64, 64)) is False  # outside the profile
    assert context.set_tensor_address("image", 12345) is False  # not a device allocation
    assert context.set_input_shape("image", (1, 3, 32, 64)) is True
    assert tuple(context.get_tensor_shape("depth")) == (1, 1, 32, 64)


def test_fake_tensorrt_11_lacks_what_tensorrt_11_removed() -> None:
    ten, eleven = FakeTensorRT(FakeCuda(), "10.9.0.34"), FakeTensorRT(FakeCuda(), "11.4.0.106")
    assert ten.Builder(None).platform_has_fast_fp16 is True and ten.BuilderFlag.FP16
    assert not hasattr(eleven.Builder(None), "platform_has_fast_fp16")
    assert not hasattr(eleven.BuilderFlag, "FP16")


# -------------------------------------------------------------------- T1 dynamic shapes
def _dynamic_package(tmp_path: Path) -> ModelPackage:
    import torch

    spec = tiny_spec(name="tiny_dynamic")
    root = tmp_path / "dynamic"
    root.mkdir()
    torch.manual_seed(0)
    axes = {2: "height", 3: "width"}
    _export(
        tiny_network().eval(),
        root / "model.onnx",
        spec,
        dynamic_axes={spec.input_name: axes, spec.output_name: axes},
    )
    spec.save(root / "spec.yaml")
    return load_model_package(root)


def test_t1_dynamic_shape_onnx_runs_like_onnxruntime(gpu: Gpu, tmp_path: Path) -> None:
    package = _dynamic_package(tmp_path)
    backend = TensorRTBackend(package, "cuda:0", precision="fp32", cache_dir=tmp_path / "c")
    batch = _batch(1)
    expected = _onnx_reference(package, batch)["depth"][0, 0]
    np.testing.assert_allclose(backend.infer(batch), expected, rtol=1e-6, atol=1e-6)
    backend.close()
    assert gpu.cuda.memory == {} and gpu.cuda.streams == {}  # close releases everything


# ----------------------------------------------------------------------- T2 other GPU
def test_t2_engine_is_built_loaded_and_run_on_the_requested_gpu(
    monkeypatch: pytest.MonkeyPatch, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    gpu = install_fake_gpu(monkeypatch, gpus=(AMPERE, ADA))
    backend = TensorRTBackend(tiny_package, "cuda:1", precision="fp32", cache_dir=tmp_path)
    assert gpu.trt.builds[-1]["device"] == 1
    assert [e["key"]["gpu"]["name"] for e in EngineCache(tmp_path).entries()] == [ADA.name]
    assert gpu.cuda.current_device() == 0  # the caller's current device is restored
    batch = _batch(2)
    expected = _onnx_reference(tiny_package, batch)["depth"][0, 0]
    # The ROS node runs inference on a worker thread, whose current device starts at 0.
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(backend.infer(batch)))
    worker.start()
    worker.join()
    np.testing.assert_allclose(results[0], expected, rtol=1e-6, atol=1e-6)


def test_t2_build_engine_command_builds_for_its_device(
    monkeypatch: pytest.MonkeyPatch, tiny_package_dir: Path, tmp_path: Path
) -> None:
    from cloudypoints_core.cli.build_engine import build_engine

    gpu = install_fake_gpu(monkeypatch, gpus=(AMPERE, ADA))
    code = build_engine(tiny_package_dir, fp32=True, cache_dir=tmp_path, device="cuda:1")
    assert code == 0
    assert [b["device"] for b in gpu.trt.builds] == [1]
    assert tuple(gpu.trt.builds[0]["cc"]) == ADA.compute_capability
    with pytest.raises(BackendError, match="cuda:2"):
        build_engine(tiny_package_dir, fp32=True, cache_dir=tmp_path, device="cuda:2")


# ------------------------------------------------------------------------ T3 TensorRT 11
@dataclass
class Probe:
    """An EnvironmentProbe stand-in: TensorRT and ONNX Runtime present, ``count`` GPUs."""

    count: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def has_module(self, name: str) -> bool:
        return name in ("tensorrt", "onnxruntime", "torch")

    def cuda_device_count(self) -> int:
        return self.count

    def onnxruntime_providers(self) -> list[str]:
        return list(self.providers)


def test_t3_tensorrt_11_fp16_is_a_backend_error_and_auto_falls_back(
    monkeypatch: pytest.MonkeyPatch, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    install_fake_gpu(monkeypatch, version="11.4.0.106")
    with pytest.raises(BackendError, match="precision to 'fp32'"):
        TensorRTBackend(tiny_package, "cuda:0", precision="fp16", cache_dir=tmp_path)
    backend = create_backend(
        "auto",
        tiny_package,
        "cuda",
        {"precision": "fp16", "cache_dir": str(tmp_path), "num_threads": 1},
        probe=Probe(),  # type: ignore[arg-type]
    )
    assert (backend.name, backend.device) == ("onnxruntime", "cpu")


def test_t3_building_fp16_with_tensorrt_11_is_a_backend_error(
    monkeypatch: pytest.MonkeyPatch, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    install_fake_gpu(monkeypatch, version="11.4.0.106")
    with pytest.raises(BackendError, match="BuilderFlag.FP16"):
        build_cached_engine(tiny_package, "cuda:0", EngineBuildOptions("fp16"), tmp_path)


def test_t3_the_default_precision_builds_on_tensorrt_10_and_11(
    monkeypatch: pytest.MonkeyPatch, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    gpu = install_fake_gpu(monkeypatch, version="11.4.0.106")
    TensorRTBackend(tiny_package, "cuda:0", cache_dir=tmp_path / "a")
    assert gpu.trt.builds[-1]["fp16"] is False
    [entry] = EngineCache(tmp_path / "a").entries()
    assert entry["key"]["options"]["precision"] == "fp32"  # what was built, not what was asked
    gpu = install_fake_gpu(monkeypatch, version="10.9.0.34")
    TensorRTBackend(tiny_package, "cuda:0", cache_dir=tmp_path / "b")
    assert gpu.trt.builds[-1]["fp16"] is True


@pytest.mark.parametrize("version", ["10.9.0.34", "11.4.0.106"])
def test_t3_build_engine_prebuilds_what_the_default_backend_loads(
    monkeypatch: pytest.MonkeyPatch, tiny_package_dir: Path, tmp_path: Path, version: str
) -> None:
    from cloudypoints_core.cli.build_engine import build_engine

    gpu = install_fake_gpu(monkeypatch, version=version)
    assert build_engine(tiny_package_dir, cache_dir=tmp_path) == 0
    TensorRTBackend(load_model_package(tiny_package_dir), "cuda:0", cache_dir=tmp_path)
    assert len(gpu.trt.builds) == 1  # the node's start is a cache hit


def test_t3_tensorrt_11_builds_fp32_and_10_uses_the_fp16_flag(
    monkeypatch: pytest.MonkeyPatch, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    gpu = install_fake_gpu(monkeypatch, version="11.4.0.106")
    TensorRTBackend(tiny_package, "cuda:0", precision="fp32", cache_dir=tmp_path / "a")
    assert gpu.trt.builds[-1]["fp16"] is False
    gpu = install_fake_gpu(monkeypatch, version="10.12.0.36")
    TensorRTBackend(tiny_package, "cuda:0", precision="fp16", cache_dir=tmp_path / "b")
    assert gpu.trt.builds[-1]["fp16"] is True


# ---------------------------------------------------------------------- T4 external data
def _external_package(tmp_path: Path, seed: int) -> Path:
    import onnx

    root = make_tiny_package(tmp_path / "ext", seed=seed)
    proto = onnx.load(str(root / "model.onnx"))
    (root / "model.onnx").unlink()
    onnx.save(
        proto,
        str(root / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    return root


def test_t4_external_weights_are_parsed_and_keyed(gpu: Gpu, tmp_path: Path) -> None:
    root = _external_package(tmp_path, seed=0)
    package = load_model_package(root)
    cache = tmp_path / "cache"
    backend = TensorRTBackend(package, "cuda:0", precision="fp32", cache_dir=cache)
    batch = _batch(3)
    first = backend.infer(batch)
    np.testing.assert_allclose(
        first, _onnx_reference(package, batch)["depth"][0, 0], rtol=1e-6, atol=1e-6
    )
    # Retrained weights, same graph file: the .onnx is byte-identical, only the data changes.
    onnx_bytes = (root / "model.onnx").read_bytes()
    other = _external_package(tmp_path / "other", seed=1)
    shutil.copy(other / "model.onnx.data", root / "model.onnx.data")
    assert (root / "model.onnx").read_bytes() == onnx_bytes
    again = TensorRTBackend(load_model_package(root), "cuda:0", precision="fp32", cache_dir=cache)
    assert len(gpu.trt.builds) == 2  # a new engine, not the stale one
    second = again.infer(batch)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(
        second, _onnx_reference(package, batch)["depth"][0, 0], rtol=1e-6, atol=1e-6
    )


def test_t4_external_weights_build_and_new_weights_rebuild(gpu: Gpu, tmp_path: Path) -> None:
    root = _external_package(tmp_path, seed=0)
    cache = tmp_path / "cache"
    build_cached_engine(load_model_package(root), "cuda:0", EngineBuildOptions("fp32"), cache)
    other = _external_package(tmp_path / "other", seed=1)
    shutil.copy(other / "model.onnx.data", root / "model.onnx.data")
    _, _, hit = build_cached_engine(
        load_model_package(root), "cuda:0", EngineBuildOptions("fp32"), cache
    )
    assert not hit and len(gpu.trt.builds) == 2


# ------------------------------------------------------------ T5 GPUs without a CUDA torch
class FakeNvml:
    """The driver's libnvidia-ml.so.1 as ctypes sees it, with two GPUs."""

    def __init__(self, names: tuple[str, ...] = ("NVIDIA A2", "NVIDIA L4")) -> None:
        self.names = names

    def nvmlInit_v2(self) -> int:
        return 0

    def nvmlShutdown(self) -> int:
        return 0

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        count._obj.value = len(self.names)
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, handle: Any) -> int:
        handle._obj.value = 1000 + index.value
        return 0

    def nvmlDeviceGetName(self, handle: Any, buf: Any, size: Any) -> int:
        buf.value = self.names[handle.value - 1000].encode()
        return 0

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any, major: Any, minor: Any) -> int:
        major._obj.value, minor._obj.value = 8, 9
        return 0


@pytest.fixture
def nvml_two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs seen by the driver; cuda-bindings absent; torch (here) a CPU-only build."""
    import ctypes

    def load(name: str) -> Any:
        if "nvidia-ml" in name:
            return FakeNvml()
        raise OSError(f"{name}: cannot open shared object file")

    try:
        from cloudypoints_core.inference.backends import cuda_api
    except ImportError:  # the code before issue 12 had no discovery of its own
        pass
    else:
        monkeypatch.setattr(cuda_api, "_load_library", load)
        monkeypatch.setattr(
            cuda_api, "_count_with_cuda_runtime", lambda: "cuda-bindings not installed"
        )
    monkeypatch.setattr(ctypes, "CDLL", load)  # what code without the seam would call
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.usefixtures("nvml_two_gpus")
def test_t5_cpu_only_torch_does_not_hide_the_gpus(tiny_package: ModelPackage) -> None:
    import torch

    from cloudypoints_core.inference.backends import EnvironmentProbe, select_backend

    assert torch.version.cuda is None  # the README's CPU set-up: a CPU-only torch
    probe = EnvironmentProbe()
    monkey_providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    probe.onnxruntime_providers = lambda: monkey_providers  # type: ignore[method-assign]
    probe.has_module = lambda name: name != "tensorrt"  # type: ignore[method-assign]
    assert probe.cuda_device_count() == 2
    chosen = select_backend(tiny_package, "cuda:1", probe)
    assert (chosen.backend, chosen.device) == ("onnxruntime", "cuda:1")


@pytest.mark.usefixtures("nvml_two_gpus")
def test_t5_gpu_discovery_names_its_source_and_honours_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudypoints_core.inference.backends.cuda_api import discover_gpus

    found = discover_gpus({})
    assert (found.count, found.via) == (2, "NVML (NVIDIA driver)")
    assert [g.name for g in found.gpus] == ["NVIDIA A2", "NVIDIA L4"]
    assert [note.split(":")[0] for note in found.notes] == ["cuda-bindings (CUDA runtime)"]
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": "1"}).count == 1
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": "-1"}).count == 0


def test_t5_cpu_only_torch_on_a_gpu_machine_is_skipped_by_auto(
    tiny_package: ModelPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from cloudypoints_core.inference.backends import EnvironmentProbe
    from cloudypoints_core.inference.backends.torch_backend import TorchBackend

    assert torch.version.cuda is None
    # A GPU counted without torch (NVML, cuda-bindings); this torch cannot use it.
    monkeypatch.setattr(EnvironmentProbe, "cuda_device_count", lambda self: 1)
    with pytest.raises(BackendError, match="CPU-only build"):
        TorchBackend(tiny_package, "cuda:0", model_factory=tiny_factory)
    only_torch = Probe(count=1)
    only_torch.has_module = lambda name: name == "torch"  # type: ignore[method-assign]
    options = {"model_factory": tiny_factory}
    backend = create_backend("auto", tiny_package, "cuda", options, probe=only_torch)  # type: ignore[arg-type]
    assert (backend.name, backend.device) == ("torch", "cpu")


def test_t5_tensorrt_backend_needs_no_torch(
    gpu: Gpu, tiny_package: ModelPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    backend = TensorRTBackend(tiny_package, "cuda:0", precision="fp32", cache_dir=tmp_path)
    assert backend.infer(_batch(4)).shape == (32, 64)


# --------------------------------------------------------- T6 refusals are not ignored
def test_t6_refused_input_shape_is_a_model_error(
    gpu: Gpu, tiny_package: ModelPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_gpu import FakeContext

    monkeypatch.setattr(FakeContext, "set_input_shape", lambda self, name, shape: False)
    with pytest.raises(ModelError, match="refused input shape"):
        TensorRTBackend(tiny_package, "cuda:0", precision="fp32", cache_dir=tmp_path)
    assert gpu.cuda.memory == {}


def test_t6_refused_tensor_address_is_a_backend_error(
    monkeypatch: pytest.MonkeyPatch, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    gpu = install_fake_gpu(monkeypatch, misalign=True)  # addresses TensorRT rejects
    with pytest.raises(BackendError, match="refused device address"):
        TensorRTBackend(tiny_package, "cuda:0", precision="fp32", cache_dir=tmp_path)
    assert gpu.cuda.memory == {}  # what was allocated before the refusal is freed


def test_t6_failed_execution_is_a_backend_error(
    gpu: Gpu, tiny_package: ModelPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fake_gpu import FakeContext

    backend = TensorRTBackend(tiny_package, "cuda:0", precision="fp32", cache_dir=tmp_path)
    monkeypatch.setattr(FakeContext, "execute_async_v3", lambda self, stream: False)
    with pytest.raises(BackendError, match="execute_async_v3 failed"):
        backend.infer(_batch())


# ------------------------------------------------------------ T7 results the caller owns
def test_t7_tensorrt_results_survive_the_next_call(
    gpu: Gpu, tiny_package: ModelPackage, tmp_path: Path
) -> None:
    backend = TensorRTBackend(tiny_package, "cuda:0", precision="fp32", cache_dir=tmp_path)
    first = backend.infer(_batch(5))
    kept = first.copy()
    backend.infer(_batch(6))
    assert np.array_equal(first, kept)


def test_t7_onnxruntime_io_binding_results_survive_the_next_call(
    tiny_package: ModelPackage,
) -> None:
    backend = OnnxRuntimeBackend(tiny_package, "cpu", io_binding=True, num_threads=1)
    first = backend.infer(_batch(5))
    kept = first.copy()
    backend.infer(_batch(6))
    assert np.array_equal(first, kept)


# ------------------------------------------------------------------ T8 multi-head models
def test_t8_multi_head_engine_returns_every_output(gpu: Gpu, tmp_path: Path) -> None:
    package = load_model_package(make_multi_head_package(tmp_path / "multi"))
    backend = TensorRTBackend(package, "cuda:0", precision="fp32", cache_dir=tmp_path / "c")
    assert backend.output_names == MULTI_HEAD_OUTPUTS
    batch = _batch(7)
    outs = backend.infer_all(batch)
    reference = _onnx_reference(package, batch)
    assert {k: (v.shape, v.dtype) for k, v in outs.items()} == {
        k: (v.shape, v.dtype) for k, v in reference.items()
    }
    assert outs["label"].dtype == np.int64
    for name in MULTI_HEAD_OUTPUTS:
        np.testing.assert_allclose(outs[name], reference[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(backend.infer(batch), reference["depth"][0, 0], rtol=1e-6)


def _two_input_package(tmp_path: Path) -> ModelPackage:
    import onnx
    from onnx import TensorProto, helper

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    spec = tiny_spec(name="two_inputs", weights_file=None)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["mean", "scale"], ["depth"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 64]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, 32, 64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    embed_spec_in_onnx_model(model, spec)
    root = tmp_path / "two"
    root.mkdir()
    onnx.save(model, str(root / "model.onnx"))
    spec.save(root / "spec.yaml")
    return load_model_package(root)


def test_t8_a_second_graph_input_is_named_in_a_model_error(gpu: Gpu, tmp_path: Path) -> None:
    package = _two_input_package(tmp_path)
    with pytest.raises(ModelError, match=r"inputs \['scale'\] besides the image input"):
        TensorRTBackend(package, "cuda:0", precision="fp32", cache_dir=tmp_path / "c")
    with pytest.raises(ModelError, match=r"inputs \['scale'\] besides the image input"):
        OnnxRuntimeBackend(package, "cpu")


# ------------------------------------------------------- T9 eviction by file, not name
def test_t9_two_models_of_one_config_keep_their_engines(gpu: Gpu, tmp_path: Path) -> None:
    a = load_model_package(make_tiny_package(tmp_path / "run_a", seed=0))
    b = load_model_package(make_tiny_package(tmp_path / "run_b", seed=1))
    assert a.spec.name == b.spec.name
    cache = tmp_path / "cache"
    for package in (a, b, a, b):
        TensorRTBackend(package, "cuda:0", precision="fp32", cache_dir=cache).close()
    assert len(gpu.trt.builds) == 2  # the third and fourth starts are cache hits
    assert len(EngineCache(cache).entries()) == 2


def test_t9_alternate_builds_of_same_named_models_hit_the_cache(gpu: Gpu, tmp_path: Path) -> None:
    a = load_model_package(make_tiny_package(tmp_path / "run_a", seed=0))
    b = load_model_package(make_tiny_package(tmp_path / "run_b", seed=1))
    cache = tmp_path / "cache"
    hits = [
        build_cached_engine(p, "cuda:0", EngineBuildOptions("fp32"), cache)[2]
        for p in (a, b, a, b)
    ]
    assert hits == [False, False, True, True]


def test_t9_retraining_one_package_still_supersedes_its_engine(gpu: Gpu, tmp_path: Path) -> None:
    root = make_tiny_package(tmp_path / "run", seed=0)
    cache = tmp_path / "cache"
    TensorRTBackend(load_model_package(root), "cuda:0", precision="fp32", cache_dir=cache)
    make_tiny_package(root, seed=1)  # retrained in place
    TensorRTBackend(load_model_package(root), "cuda:0", precision="fp32", cache_dir=cache)
    assert len(gpu.trt.builds) == 2
    assert len(EngineCache(cache).entries()) == 1


# ------------------------------------------------------------------ the real CUDA bindings
@pytest.fixture
def cudart() -> Iterator[Any]:
    import importlib.util

    if importlib.util.find_spec("cuda") is None:
        pytest.skip("cuda-bindings is not installed (requirements.txt installs it)")
    from cloudypoints_core.inference.backends.cuda_api import _import_cudart

    yield _import_cudart()


def test_cuda_runtime_api_uses_calls_the_installed_bindings_have(cudart: Any) -> None:
    for call in (
        "cudaGetDeviceCount",
        "cudaSetDevice",
        "cudaGetDevice",
        "cudaGetDeviceProperties",
        "cudaMalloc",
        "cudaFree",
        "cudaStreamCreate",
        "cudaStreamDestroy",
        "cudaStreamSynchronize",
        "cudaMemcpyAsync",
        "cudaGetErrorString",
    ):
        assert callable(getattr(cudart, call)), call
    assert cudart.cudaMemcpyKind.cudaMemcpyHostToDevice is not None
    assert cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost is not None


def test_cuda_runtime_api_without_a_driver_raises_backend_errors(cudart: Any) -> None:
    from cloudypoints_core.inference.backends.cuda_api import CudaRuntimeApi, discover_gpus

    api = CudaRuntimeApi(cudart)
    if cudart.cudaGetDeviceCount()[0] == cudart.cudaError_t.cudaSuccess:
        pytest.skip("this machine has a CUDA driver")
    with pytest.raises(BackendError, match="cudaGetDeviceCount failed"):
        api.device_count()
    with pytest.raises(BackendError, match="cudaMalloc failed"):
        api.malloc(1024)
    found = discover_gpus({})
    assert any(note.startswith("cuda-bindings") for note in found.notes)
    # Every call the backend makes reaches the driver with the argument types it passes (a
    # TypeError here would surface only on the first GPU machine).
    host = np.zeros((1, 3, 2, 2), np.float32)
    ptr, stream = 0x7F00_0000_0000, 0x5000
    calls = {
        "cudaSetDevice": lambda: api.set_device(0),
        "cudaGetDevice": api.current_device,
        "cudaGetDeviceProperties": lambda: api.device_info(0),
        "cudaFree": lambda: api.free(ptr),
        "cudaStreamCreate": api.stream_create,
        "cudaStreamDestroy": lambda: api.stream_destroy(stream),
        "cudaStreamSynchronize": lambda: api.stream_synchronize(stream),
        r"cudaMemcpyAsync \(host to device\)": lambda: api.copy_to_device(ptr, host, stream),
        r"cudaMemcpyAsync \(device to host\)": lambda: api.copy_to_host(host, ptr, stream),
    }
    for name, call in calls.items():
        with pytest.raises(BackendError, match=f"CUDA {name} failed: .*driver"):
            call()


# ---------------------------------------------------- the facade on TensorRT, masks included
def test_facade_on_tensorrt_masks_sky_like_onnxruntime(gpu: Gpu, tmp_path: Path) -> None:
    from dataclasses import replace

    from cloudypoints_core.geometry import Intrinsics
    from cloudypoints_core.inference.facade import DepthEstimator
    from cloudypoints_core.inference.spec import MaskOutput

    root = make_multi_head_package(tmp_path / "sky")
    spec = load_model_package(root).spec
    replace(spec, mask_outputs=(MaskOutput("sky", 0.5),)).save(root / "spec.yaml")
    k = Intrinsics(60.0, 60.0, 79.5, 39.5, 160, 80)
    rgb = np.random.default_rng(8).integers(0, 256, (80, 160, 3), dtype=np.uint8)
    on_gpu = DepthEstimator.from_package(
        root, backend="tensorrt", device="cuda:0", precision="fp32", cache_dir=str(tmp_path)
    ).predict(rgb, k)
    on_cpu = DepthEstimator.from_package(root, backend="onnxruntime", num_threads=1).predict(
        rgb, k
    )
    assert on_gpu.backend == "tensorrt"
    masked = np.isnan(on_cpu.depth_m)
    assert 0 < masked.mean() < 1  # the sky head masks some pixels, not all
    assert np.array_equal(np.isnan(on_gpu.depth_m), masked)
    np.testing.assert_allclose(on_gpu.depth_m[~masked], on_cpu.depth_m[~masked], rtol=1e-5)
