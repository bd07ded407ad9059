"""TensorRT 10 backend: an engine built from the package's ONNX, cached on disk, run by name.

Only :func:`build_serialized_engine` and :class:`TensorRTBackend` touch ``tensorrt``; they import
it when called, so this module imports on machines without it. Device memory, streams and the
current device go through :class:`~cloudypoints_core.inference.backends.cuda_api.CudaApi`
(NVIDIA's ``cuda-bindings``; a CUDA build of torch is not needed), which is also the seam the
tests replace with a fake. The TensorRT calls follow the TensorRT 10 Python API:

- everything (builder, runtime, engine, execution context, memory, stream) is created with the
  backend's GPU current, and every call sets it again: CUDA's current device is per thread and
  the ROS node runs inference on a worker thread;
- tensors are addressed by name; a dynamic dimension reads -1 from the engine, so buffer shapes
  come from the execution context after ``set_input_shape``; ``set_input_shape`` and
  ``set_tensor_address`` report failure by returning False, which is raised, never ignored;
- only the spec's input is fed (another graph input is a ModelError); every output is allocated
  with its own dtype (``trt.nptype``), so multi-head networks run and ``infer_all`` returns them;
- precision "fp16" uses ``BuilderFlag.FP16`` (weak typing, deprecated since TensorRT 10.12 and
  removed in 11, where asking for it is a BackendError saying what to do); the default (None)
  is "fp16" where the flag exists and "fp32" (the ONNX's own types) on TensorRT 11, so one
  configuration runs on both; ``platform_has_fast_fp16`` (removed in 11) is not used.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import BackendError, DependencyError, ModelError
from cloudypoints_core.inference.backends import (
    Device,
    check_single_input,
    parse_device,
    validate_batch,
)
from cloudypoints_core.inference.backends.cuda_api import CudaApi, load_cuda_api
from cloudypoints_core.inference.backends.engine_cache import (
    EngineBuildOptions,
    EngineCache,
    EngineKey,
    GpuInfo,
)
from cloudypoints_core.inference.package import ModelPackage

log = logging.getLogger(__name__)

#: The oldest TensorRT whose Python API this module is written against.
MIN_TENSORRT_MAJOR = 10


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
    version = str(getattr(trt, "__version__", ""))
    head = version.split(".")[0]
    if not head.isdigit() or int(head) < MIN_TENSORRT_MAJOR:
        raise BackendError(
            f"TensorRT {version or '(unknown version)'} is installed; CloudyPoints needs "
            f"TensorRT {MIN_TENSORRT_MAJOR} or later"
        )
    return trt


def _cuda_device(device: str | Device, cuda: CudaApi, what: str) -> Device:
    """The parsed CUDA device, checked against the GPUs the CUDA runtime sees."""
    dev = parse_device(str(device))
    if dev.kind != "cuda":
        raise BackendError(f"{what} runs on CUDA devices only, got device {dev}")
    count = cuda.device_count()
    if dev.index >= count:
        raise BackendError(
            f"{what} was asked for device {dev}, but the CUDA runtime sees {count} GPU(s); use "
            "device 'cpu' or backend 'auto'"
        )
    return dev


@contextmanager
def on_device(cuda: CudaApi, index: int) -> Iterator[None]:
    """Make GPU ``index`` current for the calling thread, restoring the previous one after."""
    previous = cuda.current_device()
    cuda.set_device(index)
    try:
        yield
    finally:
        if previous != index:
            cuda.set_device(previous)


def gpu_info(device: Device, cuda: CudaApi | None = None) -> GpuInfo:
    """Name and compute capability of CUDA device ``device`` (through the CUDA runtime)."""
    return (cuda or load_cuda_api()).device_info(device.index)


def engine_key(
    package: ModelPackage, trt_version: str, gpu: GpuInfo, options: EngineBuildOptions
) -> EngineKey:
    spec = package.spec
    onnx_path = package.onnx_path
    return EngineKey(
        model_name=spec.name,
        # The ONNX file and its external weight files, if any.
        onnx_sha256=package.onnx_sha256(),
        tensorrt_version=str(trt_version),
        gpu=gpu,
        options=options,
        input_shape=(1, 3, spec.input_height, spec.input_width),
        source=str(onnx_path.resolve()) if onnx_path is not None else "",
    )


def _fp16_flag(trt: Any) -> Any:
    flag = getattr(getattr(trt, "BuilderFlag", None), "FP16", None)
    if flag is None:
        raise BackendError(
            f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (weak typing was removed in "
            "TensorRT 11: precision comes from the ONNX's own types): set the tensorrt option "
            "precision to 'fp32' to build the ONNX as it is typed, or convert it to FP16 first "
            "(NVIDIA ModelOpt AutoCast, keep_io_types) and build that with precision 'fp32'"
        )
    return flag


def resolve_precision(trt: Any, precision: str | None) -> str:
    """The precision an engine is built with: None means FP16 where TensorRT still has weak
    typing (10.x), else "fp32" (TensorRT 11 takes the ONNX's own types); an explicit "fp16" on
    TensorRT 11 is a BackendError."""
    if precision is None:
        if getattr(getattr(trt, "BuilderFlag", None), "FP16", None) is not None:
            return "fp16"
        log.info(
            "TensorRT %s has no FP16 builder flag: building with the ONNX's own types",
            trt.__version__,
        )
        return "fp32"
    if precision == "fp16":
        _fp16_flag(trt)
    return precision


def build_serialized_engine(
    package: ModelPackage,
    options: EngineBuildOptions,
    cuda: CudaApi | None = None,
    device: str = "cuda:0",
) -> bytes:
    """Parse the package's ONNX and build a serialized engine for its input shape on ``device``.

    The engine is built with ``device`` current: TensorRT builds for (and tunes on) the current
    GPU, and an engine built for another GPU model does not deserialize.
    """
    trt = require_tensorrt()
    cuda = cuda or load_cuda_api()
    spec = package.spec
    onnx_path = package.onnx_path
    if onnx_path is None or not package.has_onnx():
        raise ModelError(f"model package {package.root} has no ONNX file to build an engine from")
    dev = _cuda_device(device, cuda, "building a TensorRT engine")
    with on_device(cuda, dev.index):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        # parse_from_file, not parse(bytes): weights saved as external data are found relative
        # to the file's folder only when the parser knows where the file is.
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
        want = (1, 3, spec.input_height, spec.input_width)
        inputs = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            inputs[str(tensor.name)] = tuple(int(d) for d in tensor.shape)
        check_single_input(list(inputs), spec.input_name, str(onnx_path))
        shape = inputs[spec.input_name]
        if len(shape) != 4 or any(d not in (-1, w) for d, w in zip(shape, want, strict=True)):
            raise ModelError(
                f"{onnx_path}: ONNX input {spec.input_name!r} has shape {list(shape)} (-1: "
                f"dynamic), the spec needs {list(want)}"
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
        if options.precision == "fp16":
            config.set_flag(_fp16_flag(trt))
        if any(d < 0 for d in shape):
            # Dynamic axes: one profile pinned to the spec's shape (min = opt = max).
            profile = builder.create_optimization_profile()
            profile.set_shape(spec.input_name, want, want, want)
            config.add_optimization_profile(profile)
        log.info(
            "building a TensorRT %s engine for %s on %s (%s, workspace %d MiB)",
            trt.__version__,
            spec.name,
            dev,
            options.precision,
            options.workspace_mb,
        )
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {onnx_path}")
    return bytes(serialized)


def build_cached_engine(
    package: ModelPackage,
    device: str = "cuda:0",
    options: EngineBuildOptions | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    cuda: CudaApi | None = None,
) -> tuple[bytes, Path | None, bool]:
    """(engine, path in the cache or None, cache hit?) for ``package`` on ``device``."""
    trt = require_tensorrt()
    cuda = cuda or load_cuda_api()
    dev = _cuda_device(device, cuda, "the tensorrt backend")
    options = options or EngineBuildOptions()
    key = engine_key(package, trt.__version__, cuda.device_info(dev.index), options)
    cache = EngineCache(cache_dir)
    data, hit = cache.get_or_build(
        key, lambda: build_serialized_engine(package, options, cuda, str(dev)), rebuild=rebuild
    )
    path = cache.engine_path(key)
    return data, (path if path.is_file() else None), hit


@dataclass(frozen=True)
class _Tensor:
    """One engine I/O tensor: its device buffer, resolved shape and numpy dtype."""

    name: str
    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


class TensorRTBackend:
    """Runs a cached TensorRT engine built from the package's ONNX (see the module docstring).

    Options: ``precision`` ("fp16", "fp32", or None: the default, see :func:`resolve_precision`),
    ``workspace_mb`` (builder workspace limit),
    ``cache_dir`` (engine cache folder; default per user, see engine_cache), ``rebuild`` (ignore a
    cached engine). Needs ``tensorrt`` (10 or later) and ``cuda-bindings``.
    """

    name = "tensorrt"
    OPTIONS: ClassVar[Mapping[str, Any]] = {
        "precision": None,
        "workspace_mb": 1024,
        "cache_dir": None,
        "rebuild": False,
    }

    def __init__(
        self,
        package: ModelPackage,
        device: str = "cuda:0",
        *,
        precision: str | None = None,
        workspace_mb: int = 1024,
        cache_dir: str | Path | None = None,
        rebuild: bool = False,
    ) -> None:
        trt = require_tensorrt()
        cuda = load_cuda_api()
        self._cuda = cuda
        self._trt = trt
        self._tensors: dict[str, _Tensor] = {}
        self._stream: int | None = None
        self._context: Any = None
        self._engine: Any = None
        self._lock = threading.Lock()
        self.output_names: tuple[str, ...] = ()
        dev = _cuda_device(device, cuda, "the tensorrt backend")
        self._index = dev.index
        options = EngineBuildOptions(
            precision=resolve_precision(trt, precision), workspace_mb=int(workspace_mb)
        )
        spec = package.spec
        self.device = str(dev)
        self.spec = spec
        self._shape = (1, 3, spec.input_height, spec.input_width)
        try:
            with on_device(cuda, dev.index):
                self._load(package, options, cache_dir, rebuild)
        except BaseException:
            self.close()
            raise

    def _load(
        self,
        package: ModelPackage,
        options: EngineBuildOptions,
        cache_dir: str | Path | None,
        rebuild: bool,
    ) -> None:
        trt, cuda, spec = self._trt, self._cuda, self.spec
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        data, _, hit = build_cached_engine(package, self.device, options, cache_dir, rebuild, cuda)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None and hit:
            # A cached engine that passed its checksum but not deserialisation (e.g. a driver
            # update TensorRT cares about): rebuild once.
            log.warning("the cached engine does not deserialize; rebuilding it")
            data, _, _ = build_cached_engine(package, self.device, options, cache_dir, True, cuda)
            self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BackendError(
                f"TensorRT cannot deserialize the engine for {spec.name} on {self.device}"
            )
        engine = self._engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT cannot create an execution context on {self.device}")
        names = [str(engine.get_tensor_name(i)) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        check_single_input(inputs, spec.input_name, f"engine for {spec.name}")
        if spec.output_name not in names:
            raise ModelError(
                f"engine for {spec.name} has tensors {names}, the spec names output "
                f"{spec.output_name!r}"
            )
        if not self._context.set_input_shape(spec.input_name, self._shape):
            raise ModelError(
                f"TensorRT refused input shape {self._shape} for {spec.input_name!r} (engine "
                f"shape {tuple(engine.get_tensor_shape(spec.input_name))}, -1 = dynamic)"
            )
        for name in names:
            # The context, not the engine, knows the shapes once the input shape is set: the
            # engine reports -1 for every dynamic dimension.
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelError(
                    f"engine tensor {name!r} has unresolved shape {shape} after setting the "
                    f"input shape {self._shape}"
                )
            trt_dtype = engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(trt_dtype))
            except TypeError as exc:  # e.g. BF16/FP8: numpy has no such type
                raise ModelError(
                    f"engine tensor {name!r} has dtype {trt_dtype}, which numpy cannot hold"
                ) from exc
            ptr = cuda.malloc(math.prod(shape) * dtype.itemsize)
            self._tensors[name] = _Tensor(name, ptr, shape, dtype)
            if not self._context.set_tensor_address(name, ptr):
                raise BackendError(f"TensorRT refused device address {ptr:#x} for tensor {name!r}")
        out_shape = self._tensors[spec.output_name].shape
        if out_shape[-2:] != self._shape[2:] or math.prod(out_shape) != math.prod(self._shape[2:]):
            raise ModelError(
                f"engine output {spec.output_name!r} has shape {out_shape}, expected "
                f"{(1, 1, self._shape[2], self._shape[3])}"
            )
        self.output_names = tuple(n for n in names if n not in inputs)
        self._stream = cuda.stream_create()

    def _run(self, batch: npt.NDArray[np.float32], names: tuple[str, ...]) -> dict[str, Any]:
        validate_batch(batch, self._shape)
        if self._context is None or self._stream is None:
            raise BackendError("the tensorrt backend is closed")
        cuda, stream = self._cuda, self._stream
        source = self._tensors[self.spec.input_name]
        # One context and one stream: one inference at a time.
        with self._lock, on_device(cuda, self._index):
            host_in = np.ascontiguousarray(batch, dtype=source.dtype)
            cuda.copy_to_device(source.ptr, host_in, stream)
            if not self._context.execute_async_v3(stream):
                raise BackendError(f"TensorRT execute_async_v3 failed on {self.device}")
            # Fresh host arrays: what the caller gets is never overwritten by the next call.
            outs = {n: np.empty(self._tensors[n].shape, self._tensors[n].dtype) for n in names}
            for name, host in outs.items():
                cuda.copy_to_host(host, self._tensors[name].ptr, stream)
            cuda.stream_synchronize(stream)
        return outs

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._run(batch, (self.spec.output_name,))[self.spec.output_name]
        return out.reshape(self._shape[2], self._shape[3]).astype(np.float32, copy=False)

    def infer_all(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        return self._run(batch, self.output_names)

    def close(self) -> None:
        tensors, stream = self._tensors, self._stream
        self._tensors, self._stream = {}, None
        self._context = None
        self._engine = None
        if not tensors and stream is None:
            return
        try:
            with on_device(self._cuda, self._index):
                for tensor in tensors.values():
                    self._cuda.free(tensor.ptr)
                if stream is not None:
                    self._cuda.stream_destroy(stream)
        except BackendError as exc:  # freeing at shutdown must not mask the original error
            log.warning("releasing TensorRT device memory failed: %s", exc)
