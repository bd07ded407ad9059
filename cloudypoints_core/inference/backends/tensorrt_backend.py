"""TensorRT 10 backend: an engine built from the package's ONNX, cached on disk, run by name.

Only :func:`build_serialized_engine` and :class:`TensorRTBackend` touch ``tensorrt``; they import
it when called, so this module imports on machines without it. Device buffers are torch CUDA
tensors owned by the backend and allocated once; execution uses ``set_tensor_address`` and
``execute_async_v3`` on a stream of the backend's own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import BackendError, DependencyError, ModelError
from cloudypoints_core.inference.backends import (
    Device,
    parse_device,
    require_cuda_device,
    validate_batch,
)
from cloudypoints_core.inference.backends.engine_cache import (
    EngineBuildOptions,
    EngineCache,
    EngineKey,
    GpuInfo,
)
from cloudypoints_core.inference.package import ModelPackage

log = logging.getLogger(__name__)


def require_tensorrt() -> Any:
    """The ``tensorrt`` module (version 10 or later), or DependencyError/BackendError."""
    try:
        trt = require("tensorrt", "the TensorRT backend and build-engine")
    except DependencyError as exc:
        raise DependencyError(
            "TensorRT is not installed (the Python module 'tensorrt' cannot be imported); the "
            "tensorrt backend and build-engine need TensorRT 10 for your CUDA version "
            "(pip install tensorrt, or JetPack on Jetson). Other backends: onnxruntime, torch"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise BackendError(
            f"TensorRT {trt.__version__} is installed; CloudyPoints needs TensorRT 10 or later"
        )
    return trt


def gpu_info(device: Device) -> GpuInfo:
    """Name and compute capability of CUDA device ``device`` (through torch)."""
    torch = require("torch", "the TensorRT backend (device buffers)")
    props = torch.cuda.get_device_properties(device.index)
    return GpuInfo(name=str(props.name), compute_capability=(int(props.major), int(props.minor)))


def engine_key(
    package: ModelPackage, trt_version: str, gpu: GpuInfo, options: EngineBuildOptions
) -> EngineKey:
    spec = package.spec
    return EngineKey(
        model_name=spec.name,
        onnx_sha256=package.onnx_sha256(),
        tensorrt_version=str(trt_version),
        gpu=gpu,
        options=options,
        input_shape=(1, 3, spec.input_height, spec.input_width),
    )


def build_serialized_engine(package: ModelPackage, options: EngineBuildOptions) -> bytes:
    """Parse the package's ONNX and build a serialized engine for its fixed input shape."""
    trt = require_tensorrt()
    spec = package.spec
    onnx_path = package.onnx_path
    if onnx_path is None or not package.has_onnx():
        raise ModelError(f"model package {package.root} has no ONNX file to build an engine from")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    onnx_bytes = Path(onnx_path).read_bytes()
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {package.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.precision == "fp16":
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; building FP16 anyway as requested")
        config.set_flag(trt.BuilderFlag.FP16)
    shape = (1, 3, spec.input_height, spec.input_width)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, shape, shape, shape)
    config.add_optimization_profile(profile)
    log.info(
        "building a TensorRT %s engine for %s (%s, workspace %d MiB)",
        trt.__version__,
        spec.name,
        options.precision,
        options.workspace_mb,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {package.onnx_path}")
    return bytes(serialized)


def build_cached_engine(
    package: ModelPackage,
    device: str = "cuda:0",
    options: EngineBuildOptions | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
) -> tuple[bytes, Path | None, bool]:
    """(engine, path in the cache or None, cache hit?) for ``package`` on ``device``."""
    trt = require_tensorrt()
    dev = parse_device(device)
    if dev.kind != "cuda":
        raise BackendError(f"TensorRT engines run on CUDA devices only, got device {dev}")
    require_cuda_device("tensorrt", dev)
    options = options or EngineBuildOptions()
    key = engine_key(package, trt.__version__, gpu_info(dev), options)
    cache = EngineCache(cache_dir)
    data, hit = cache.get_or_build(
        key, lambda: build_serialized_engine(package, options), rebuild=rebuild
    )
    path = cache.engine_path(key)
    return data, (path if path.is_file() else None), hit


class TensorRTBackend:
    """Runs a cached TensorRT engine built from the package's ONNX (see the module docstring).

    Options: ``precision`` ("fp16" default or "fp32"), ``workspace_mb`` (builder workspace limit),
    ``cache_dir`` (engine cache folder; default per user, see engine_cache), ``rebuild`` (ignore a
    cached engine).
    """

    name = "tensorrt"
    OPTIONS: ClassVar[Mapping[str, Any]] = {
        "precision": "fp16",
        "workspace_mb": 1024,
        "cache_dir": None,
        "rebuild": False,
    }

    def __init__(
        self,
        package: ModelPackage,
        device: str = "cuda:0",
        *,
        precision: str = "fp16",
        workspace_mb: int = 1024,
        cache_dir: str | Path | None = None,
        rebuild: bool = False,
    ) -> None:
        trt = require_tensorrt()
        torch = require("torch", "the TensorRT backend (device buffers)")
        self._torch = torch
        dev = parse_device(device)
        if dev.kind != "cuda":
            raise BackendError(f"the tensorrt backend runs on CUDA devices only, got {dev}")
        require_cuda_device(self.name, dev)
        options = EngineBuildOptions(precision=precision, workspace_mb=int(workspace_mb))
        spec = package.spec
        self.device = str(dev)
        self.spec = spec
        self._shape = (1, 3, spec.input_height, spec.input_width)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        data, _, hit = build_cached_engine(package, str(dev), options, cache_dir, rebuild)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None and hit:
            # A cached engine that passed its checksum but not deserialisation (e.g. a driver
            # update TensorRT cares about): rebuild once.
            log.warning("the cached engine does not deserialize; rebuilding it")
            data, _, _ = build_cached_engine(package, str(dev), options, cache_dir, True)
            self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BackendError(f"TensorRT cannot deserialize the engine for {spec.name}")
        self._context = self._engine.create_execution_context()
        torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        self._device = torch.device(str(dev))
        self._stream = torch.cuda.Stream(self._device)
        self._buffers: dict[str, Any] = {}
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        for name in names:
            shape = tuple(self._engine.get_tensor_shape(name))
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                shape = self._shape
                self._context.set_input_shape(name, shape)
            dtype = self._engine.get_tensor_dtype(name)
            if dtype not in torch_dtypes:
                raise ModelError(f"engine tensor {name!r} has unsupported dtype {dtype}")
            buffer = torch.empty(shape, dtype=torch_dtypes[dtype], device=self._device)
            self._buffers[name] = buffer
            self._context.set_tensor_address(name, buffer.data_ptr())
        for required in (spec.input_name, spec.output_name):
            if required not in self._buffers:
                raise ModelError(
                    f"engine for {spec.name} has tensors {names}, the spec names {required!r}"
                )
        out_shape = tuple(self._buffers[spec.output_name].shape)
        if out_shape[-2:] != self._shape[2:] or math.prod(out_shape) != math.prod(self._shape[2:]):
            raise ModelError(
                f"engine output {spec.output_name!r} has shape {out_shape}, expected "
                f"{(1, 1, self._shape[2], self._shape[3])}"
            )
        # Pinned host buffers make the host<->device copies asynchronous on our stream.
        self._host_in = torch.empty(self._shape, dtype=torch.float32).pin_memory()
        self._host_out = torch.empty(out_shape, dtype=torch.float32).pin_memory()
        self._input = self._buffers[spec.input_name]
        self._output = self._buffers[spec.output_name]

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        validate_batch(batch, self._shape)
        torch = self._torch
        self._host_in.numpy()[...] = batch
        with torch.cuda.stream(self._stream):
            self._input.copy_(self._host_in, non_blocking=True)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed")
            self._host_out.copy_(self._output, non_blocking=True)
        self._stream.synchronize()
        return self._host_out.numpy().reshape(self._shape[2], self._shape[3])

    def close(self) -> None:
        self._buffers = {}
        self._context = None
        self._engine = None
