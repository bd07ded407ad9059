"""ONNX Runtime and PyTorch backends: same numbers, and clear errors for broken packages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from inference_fixtures import make_tiny_package, tiny_factory, tiny_network, tiny_spec

from cloudypoints_core.errors import BackendError, ConfigError, ModelError
from cloudypoints_core.inference.backends import create_backend
from cloudypoints_core.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from cloudypoints_core.inference.backends.torch_backend import TorchBackend
from cloudypoints_core.inference.package import ModelPackage, load_model_package


def _batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 32, 64)).astype(np.float32)


def _copy(tiny_package_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_package_dir, tmp_path / "pkg"))


def test_onnxruntime_and_torch_agree(tiny_package: ModelPackage) -> None:
    ort_backend = create_backend("onnxruntime", tiny_package, "cpu", {"num_threads": 1})
    torch_backend = create_backend("torch", tiny_package, "cpu", {"model_factory": tiny_factory})
    for seed in range(3):
        batch = _batch(seed)
        a = ort_backend.infer(batch).copy()
        b = torch_backend.infer(batch)
        assert a.shape == b.shape == (32, 64) and a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_backends_match_the_network_itself(tiny_package: ModelPackage) -> None:
    # Independent reference: the state dict in a freshly built network, run by hand.
    net = tiny_network(**dict(tiny_package.spec.arch_config)).eval()
    net.load_state_dict(torch.load(str(tiny_package.weights_path), weights_only=True))
    batch = _batch(7)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()[0, 0]
    got = create_backend("onnxruntime", tiny_package).infer(batch)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_io_binding_gives_the_same_output(tiny_package: ModelPackage) -> None:
    plain = OnnxRuntimeBackend(tiny_package, "cpu")
    bound = OnnxRuntimeBackend(tiny_package, "cpu", io_binding=True, graph_optimization="basic")
    for seed in range(2):
        batch = _batch(seed)
        np.testing.assert_allclose(bound.infer(batch), plain.infer(batch), rtol=1e-6, atol=1e-6)


def test_torch_half_option_runs_close_to_float(tiny_package: ModelPackage) -> None:
    batch = _batch(3)
    full = TorchBackend(tiny_package, "cpu", model_factory=tiny_factory).infer(batch)
    # torch 2.x CPU builds (the pinned one included) run FP16 convolutions: a failure is a bug.
    half = TorchBackend(tiny_package, "cpu", model_factory=tiny_factory, half=True).infer(batch)
    np.testing.assert_allclose(half, full, rtol=2e-2, atol=5e-2)


def test_wrong_batch_is_rejected(tiny_package: ModelPackage) -> None:
    backend = create_backend("onnxruntime", tiny_package)
    with pytest.raises(BackendError, match="float32 of shape"):
        backend.infer(np.zeros((1, 3, 64, 64), dtype=np.float32))
    with pytest.raises(BackendError, match="float32 of shape"):
        backend.infer(np.zeros((1, 3, 32, 64), dtype=np.float64))  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"graph_optimization": "max"}, {"num_threads": -1}])
def test_bad_onnxruntime_options(tiny_package: ModelPackage, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        OnnxRuntimeBackend(tiny_package, "cpu", **kwargs)


def test_bad_torch_options(tiny_package: ModelPackage) -> None:
    with pytest.raises(ConfigError, match="cuda_graphs needs device cuda"):
        TorchBackend(tiny_package, "cpu", model_factory=tiny_factory, cuda_graphs=True)
    with pytest.raises(ConfigError, match="num_threads"):
        TorchBackend(tiny_package, "cpu", model_factory=tiny_factory, num_threads=0)


# ------------------------------------------------------------------------ broken ONNX files
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_onnx_is_a_model_error(
    tiny_package_dir: Path, tmp_path: Path, damage: str
) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    onnx_path = root / "model.onnx"
    data = onnx_path.read_bytes()
    onnx_path.write_bytes(
        {
            "garbage": b"\x00not an onnx model" * 50,
            "truncated": data[: len(data) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(ModelError, match="model.onnx"):
        create_backend("onnxruntime", load_model_package(root))


def test_onnx_input_shape_must_match_the_spec(tmp_path: Path) -> None:
    root = make_tiny_package(tmp_path / "pkg", tiny_spec(), export_shape=(64, 64))
    with pytest.raises(
        ModelError, match=r"input shape \[1, 3, 64, 64\] does not match .*\[1, 3, 32, 64\]"
    ):
        create_backend("onnxruntime", load_model_package(root))


def test_onnx_tensor_names_must_match_the_spec(tiny_package_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    spec_path = root / "spec.yaml"
    spec_path.write_text(spec_path.read_text().replace("input_name: image", "input_name: rgb"))
    with pytest.raises(ModelError, match="input 'rgb'.*\\['image'\\]"):
        create_backend("onnxruntime", load_model_package(root))


def test_package_without_onnx_file(tiny_package_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    (root / "model.onnx").unlink()
    package = load_model_package(root)
    with pytest.raises(ModelError, match="has no ONNX file"):
        create_backend("onnxruntime", package)
    # auto then picks torch, which needs the network: here from the test factory.
    backend = create_backend("auto", package, "cpu", {"model_factory": tiny_factory})
    assert backend.name == "torch"


# --------------------------------------------------------------------- broken state dicts
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_weights_are_a_model_error(
    tiny_package_dir: Path, tmp_path: Path, damage: str
) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    weights = root / "model.pt"
    data = weights.read_bytes()
    weights.write_bytes(b"garbage" * 40 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated, corrupt"):
        create_backend("torch", load_model_package(root), "cpu", {"model_factory": tiny_factory})


def test_weights_must_be_a_plain_state_dict(tiny_package_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    torch.save({"epoch": 3}, root / "model.pt")
    with pytest.raises(ModelError, match="state dict of tensors"):
        create_backend("torch", load_model_package(root), "cpu", {"model_factory": tiny_factory})


def test_weights_nested_in_a_training_checkpoint_load_too(
    tiny_package_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    options = {"model_factory": tiny_factory}
    bare = create_backend("torch", load_model_package(root), "cpu", options).infer(_batch()).copy()
    state = torch.load(str(root / "model.pt"), weights_only=True)
    torch.save({"state_dict": state, "epoch": 12}, root / "model.pt")
    nested = create_backend("torch", load_model_package(root), "cpu", options).infer(_batch())
    np.testing.assert_array_equal(bare, nested)
    torch.save({"epoch": 12, "step": 4}, root / "model.pt")
    with pytest.raises(ModelError, match=r"model\.pt holds neither .*keys \['epoch', 'step'\]"):
        create_backend("torch", load_model_package(root), "cpu", options)


def test_weights_with_other_shapes_than_the_spec_says(
    tiny_package_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    spec_path = root / "spec.yaml"
    spec_path.write_text(spec_path.read_text().replace("channels: 6", "channels: 8"))
    with pytest.raises(ModelError, match="wrong shapes") as info:
        create_backend("torch", load_model_package(root), "cpu", {"model_factory": tiny_factory})
    message = str(info.value)
    assert "encode.weight (6, 3, 3, 3) (expected (8, 3, 3, 3))" in message
    assert "'channels': 8" in message


def test_weights_with_missing_and_unexpected_keys(tiny_package_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    state = torch.load(root / "model.pt", weights_only=True)
    state["extra.weight"] = state.pop("decode.weight")
    torch.save(state, root / "model.pt")
    with pytest.raises(
        ModelError, match="missing keys: decode.weight; unexpected keys: extra.weight"
    ):
        create_backend("torch", load_model_package(root), "cpu", {"model_factory": tiny_factory})


def test_training_checkpoint_with_state_dict_entry_loads(
    tiny_package_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_package_dir, tmp_path)
    state = torch.load(root / "model.pt", weights_only=True)
    torch.save({"state_dict": state}, root / "model.pt")
    backend = create_backend(
        "torch", load_model_package(root), "cpu", {"model_factory": tiny_factory}
    )
    assert backend.infer(_batch()).shape == (32, 64)


def test_unknown_architecture_is_a_model_error(tiny_package: ModelPackage) -> None:
    def no_such(architecture: str, **config: Any) -> Any:
        raise KeyError(architecture)

    with pytest.raises(ModelError, match="cannot build architecture 'tiny_test_net'"):
        TorchBackend(tiny_package, "cpu", model_factory=no_such)


def test_network_with_wrong_output_shape(tiny_package: ModelPackage) -> None:
    class Halving(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)[..., ::2]

    def factory(architecture: str, **config: Any) -> Any:
        wrapped = Halving(tiny_factory(architecture, **config))
        # Same parameter names as the package's state dict.
        wrapped.load_state_dict = wrapped.inner.load_state_dict  # type: ignore[method-assign]
        wrapped.state_dict = wrapped.inner.state_dict  # type: ignore[method-assign]
        return wrapped

    with pytest.raises(ModelError, match=r"returned shape \(1, 1, 32, 32\)"):
        TorchBackend(tiny_package, "cpu", model_factory=factory)


def test_registry_network_exported_for_real_runs_the_same_on_both(tmp_path: Path) -> None:
    # The real path: a registry network, exported by inference.export, loaded by name.
    from cloudypoints_core.inference import export
    from cloudypoints_core.inference.spec import ModelSpec
    from cloudypoints_core.models import create_model

    spec = ModelSpec(
        name="mobile_small",
        architecture="mobile_unet",
        arch_config={"width_mult": 0.5},
        input_width=128,
        input_height=64,
        train_fx_px=100.0,
    )
    torch.manual_seed(0)
    export.export_package(
        create_model("mobile_unet", width_mult=0.5).eval(), spec, tmp_path / "pkg"
    )
    package = load_model_package(tmp_path / "pkg")
    batch = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    a = create_backend("onnxruntime", package).infer(batch).copy()
    b = create_backend("torch", package).infer(batch)  # built through the models registry
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unregistered_architecture_through_the_registry(tiny_package: ModelPackage) -> None:
    with pytest.raises(ModelError, match="cannot build architecture 'tiny_test_net'"):
        create_backend("torch", tiny_package)


@pytest.mark.parametrize("io_binding", [False, True])
def test_onnx_output_without_channel_axis_is_accepted(tmp_path: Path, io_binding: bool) -> None:
    # Networks exported elsewhere (MiDaS, Depth Anything) return (1, H, W).
    import onnx

    from cloudypoints_core.inference.onnx_meta import embed_spec_in_onnx_model

    class Squeezed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_network()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)[:, 0]

    spec = tiny_spec(output_kind="relative_inverse_depth", train_fx_px=None, weights_file=None)
    root = tmp_path / "pkg"
    root.mkdir()
    net = Squeezed().eval()
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 32, 64),),
        str(root / "model.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["depth"],
    )
    proto = onnx.load(str(root / "model.onnx"))
    embed_spec_in_onnx_model(proto, spec)
    onnx.save(proto, str(root / "model.onnx"))
    spec.save(root / "spec.yaml")
    backend = OnnxRuntimeBackend(load_model_package(root), "cpu", io_binding=io_binding)
    batch = _batch(2)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()[0]
    np.testing.assert_allclose(backend.infer(batch), expected, rtol=1e-5, atol=1e-5)


def _cuda_count() -> int:
    from cloudypoints_core.inference.backends import EnvironmentProbe

    return EnvironmentProbe().cuda_device_count()


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_count() == 0, reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "options",
    [{}, {"half": False}, {"half": False, "cuda_graphs": True}],
    ids=["fp16", "fp32", "cuda-graphs"],
)
def test_torch_on_cuda_matches_the_cpu(
    tiny_package: ModelPackage, options: dict[str, Any]
) -> None:
    batch = _batch(4)
    reference = create_backend("onnxruntime", tiny_package).infer(batch).copy()
    backend = TorchBackend(tiny_package, "cuda", model_factory=tiny_factory, **options)
    tolerance = 5e-2 if not options else 1e-3
    for _ in range(2):  # the second call replays the captured graph
        np.testing.assert_allclose(backend.infer(batch), reference, rtol=tolerance, atol=tolerance)
    backend.close()


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers()
    or _cuda_count() == 0,
    reason="needs onnxruntime-gpu and a CUDA GPU",
)
@pytest.mark.parametrize("io_binding", [False, True])
def test_onnxruntime_on_cuda_matches_the_cpu(tiny_package: ModelPackage, io_binding: bool) -> None:
    batch = _batch(5)
    reference = create_backend("onnxruntime", tiny_package).infer(batch).copy()
    backend = OnnxRuntimeBackend(tiny_package, "cuda", io_binding=io_binding)
    np.testing.assert_allclose(backend.infer(batch), reference, rtol=1e-3, atol=1e-3)
