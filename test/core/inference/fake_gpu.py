"""A fake CUDA runtime and a fake ``tensorrt`` module that behave as the documented APIs do.

They let the TensorRT backend's call sequence run on a machine without a GPU. What they enforce
is what the TensorRT 10 Python API and the CUDA runtime document, not what our code happens to do:

- CUDA: the current device is per host thread (device 0 until ``set_device``); allocations and
  streams belong to the device current when they were made; ``cudaMalloc`` pointers are 256-byte
  aligned.
- Builder: builds for the current GPU (the engine records its compute capability); a network
  with a dynamic input needs an optimization profile; ``platform_has_fast_fp16`` and
  ``BuilderFlag.FP16`` do not exist in TensorRT 11.
- OnnxParser: ``parse(bytes)`` cannot resolve external weights (no folder to look in); with
  ``path=`` or ``parse_from_file`` it can.
- Runtime: an engine built for another compute capability does not deserialize (None).
- Engine/context: tensors by name; dynamic dimensions read -1 from the engine and from the
  context until ``set_input_shape``; ``set_input_shape`` and ``set_tensor_address`` return False
  for unknown names, wrong shapes and bad addresses; ``execute_async_v3`` returns False unless
  every shape and address is set, on the engine's device, with a stream of that device.

The engine "executes" the ONNX graph with ONNX Runtime on the CPU, so its numbers are real.
"""

from __future__ import annotations

import base64
import enum
import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import BackendError
from cloudypoints_core.inference.backends.engine_cache import GpuInfo

AMPERE = GpuInfo("NVIDIA RTX A2000", (8, 6))
ADA = GpuInfo("NVIDIA RTX 4000 Ada", (8, 9))


# ------------------------------------------------------------------------------------ CUDA
@dataclass
class _Allocation:
    device: int
    data: bytearray


class FakeCuda:
    """A CUDA runtime with ``gpus`` devices holding memory in host bytearrays."""

    def __init__(self, gpus: tuple[GpuInfo, ...] = (AMPERE,), misalign: bool = False) -> None:
        self.gpus = gpus
        self.misalign = misalign
        self._local = threading.local()
        self.memory: dict[int, _Allocation] = {}
        self.streams: dict[int, int] = {}
        self._next = itertools.count(1)
        self.calls: list[tuple[str, int]] = []

    # the CudaApi protocol
    def device_count(self) -> int:
        return len(self.gpus)

    def set_device(self, index: int) -> None:
        if not 0 <= index < len(self.gpus):
            raise BackendError(f"CUDA cudaSetDevice failed: cudaErrorInvalidDevice ({index})")
        self._local.device = index
        self.calls.append(("set_device", index))

    def current_device(self) -> int:
        return int(getattr(self._local, "device", 0))

    def device_info(self, index: int) -> GpuInfo:
        return self.gpus[index]

    def malloc(self, nbytes: int) -> int:
        ptr = 0x7F00_0000_0000 + next(self._next) * (1 << 24) + (8 if self.misalign else 0)
        self.memory[ptr] = _Allocation(self.current_device(), bytearray(max(nbytes, 1)))
        return ptr

    def free(self, ptr: int) -> None:
        if ptr not in self.memory:
            raise BackendError(f"CUDA cudaFree failed: invalid pointer {ptr:#x}")
        del self.memory[ptr]

    def stream_create(self) -> int:
        handle = 0x5000 + next(self._next)
        self.streams[handle] = self.current_device()
        return handle

    def stream_destroy(self, stream: int) -> None:
        del self.streams[stream]

    def stream_synchronize(self, stream: int) -> None:
        if stream not in self.streams:
            raise BackendError(f"CUDA cudaStreamSynchronize failed: bad stream {stream:#x}")

    def copy_to_device(self, dst: int, src: npt.NDArray[Any], stream: int) -> None:
        view = self._region(dst, src.nbytes)
        view[:] = np.ascontiguousarray(src).tobytes()

    def copy_to_host(self, dst: npt.NDArray[Any], src: int, stream: int) -> None:
        raw = bytes(self._region(src, dst.nbytes))
        dst[...] = np.frombuffer(raw, dtype=dst.dtype).reshape(dst.shape)

    # helpers for the fake TensorRT
    def _region(self, ptr: int, nbytes: int) -> memoryview:
        alloc = self.memory.get(ptr)
        if alloc is None or nbytes > len(alloc.data):
            raise BackendError(f"CUDA cudaMemcpyAsync failed: invalid pointer/size {ptr:#x}")
        return memoryview(alloc.data)[:nbytes]


# -------------------------------------------------------------------------------- TensorRT
class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"
    UINT8 = "uint8"
    BF16 = "bfloat16"


#: ONNX TensorProto element types -> TensorRT data types.
_ONNX_TYPES = {
    1: DataType.FLOAT,
    2: DataType.UINT8,
    3: DataType.INT8,
    6: DataType.INT32,
    7: DataType.INT64,
    9: DataType.BOOL,
    10: DataType.HALF,
    16: DataType.BF16,
}


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


@dataclass
class _IoTensor:
    name: str
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    dtype: DataType
    is_input: bool


def _graph_io(model: Any) -> list[_IoTensor]:
    def dims(value: Any) -> tuple[int, ...]:
        return tuple(
            int(d.dim_value) if d.HasField("dim_value") else -1
            for d in value.type.tensor_type.shape.dim
        )

    initializers = {t.name for t in model.graph.initializer}
    io = [
        _IoTensor(v.name, dims(v), _ONNX_TYPES[v.type.tensor_type.elem_type], True)
        for v in model.graph.input
        if v.name not in initializers
    ]
    io += [
        _IoTensor(v.name, dims(v), _ONNX_TYPES[v.type.tensor_type.elem_type], False)
        for v in model.graph.output
    ]
    return io


class _Logger:
    WARNING = "warning"
    ERROR = "error"
    INFO = "info"

    def __init__(self, severity: str = "warning") -> None:
        self.severity = severity


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
        self.shapes[name] = (tuple(min), tuple(opt), tuple(max))


@dataclass
class _Config:
    flags: set[Any] = field(default_factory=set)
    profiles: list[_Profile] = field(default_factory=list)
    pools: dict[Any, int] = field(default_factory=dict)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pools[pool] = int(size)

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


@dataclass
class _Network:
    io: list[_IoTensor] = field(default_factory=list)
    onnx: bytes = b""

    @property
    def num_inputs(self) -> int:
        return sum(t.is_input for t in self.io)

    def get_input(self, index: int) -> _IoTensor:
        return [t for t in self.io if t.is_input][index]


class FakeTensorRT:
    """Stands in for the ``tensorrt`` module of the given version (10.x or 11.x)."""

    Logger = _Logger
    DataType = DataType
    TensorIOMode = TensorIOMode
    float32 = DataType.FLOAT
    float16 = DataType.HALF
    int32 = DataType.INT32
    int64 = DataType.INT64

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    def __init__(self, cuda: FakeCuda, version: str = "10.9.0.34") -> None:
        self.cuda = cuda
        self.__version__ = version
        self.major = int(version.split(".")[0])
        flags = {"TF32": 1} if self.major >= 11 else {"FP16": 0, "TF32": 1}
        self.BuilderFlag = enum.Enum("BuilderFlag", flags)  # type: ignore[misc]
        self.NetworkDefinitionCreationFlag = enum.Enum(
            "NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0}
        )
        self.builds: list[dict[str, Any]] = []
        self.parsed: list[str] = []
        fake = self

        class Builder:
            def __init__(self, logger: _Logger) -> None:
                self.device = fake.cuda.current_device()

            def __getattr__(self, name: str) -> Any:
                if name == "platform_has_fast_fp16" and fake.major < 11:
                    return True
                raise AttributeError(name)

            def create_network(self, flags: int = 0) -> _Network:
                return _Network()

            def create_builder_config(self) -> _Config:
                return _Config()

            def create_optimization_profile(self) -> _Profile:
                return _Profile()

            def build_serialized_network(self, network: _Network, config: _Config) -> Any:
                return fake._build(network, config)

        class OnnxParser:
            def __init__(self, network: _Network, logger: _Logger) -> None:
                self.network = network
                self.errors: list[str] = []

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, index: int) -> str:
                return self.errors[index]

            def parse(self, model: bytes, path: str | None = None) -> bool:
                return self._load(model, None if path is None else Path(path).parent)

            def parse_from_file(self, path: str) -> bool:
                fake.parsed.append(path)
                return self._load(Path(path).read_bytes(), Path(path).parent)

            def _load(self, data: bytes, folder: Path | None) -> bool:
                import onnx
                from onnx.external_data_helper import load_external_data_for_model

                model = onnx.load_model_from_string(data)
                external = [
                    t
                    for t in model.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL
                ]
                if external and folder is None:
                    self.errors.append(
                        "Failed to open file for external weights: the model path is unknown"
                    )
                    return False
                if external:
                    try:
                        load_external_data_for_model(model, str(folder))
                    except OSError as exc:
                        self.errors.append(f"Failed to open external weights: {exc}")
                        return False
                self.network.io = _graph_io(model)
                self.network.onnx = model.SerializeToString()
                return True

        class Runtime:
            def __init__(self, logger: _Logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                return fake._deserialize(bytes(data))

        self.Builder = Builder
        self.OnnxParser = OnnxParser
        self.Runtime = Runtime

    def nptype(self, dtype: DataType) -> type:
        if dtype is DataType.BF16:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(dtype.value).type

    # ------------------------------------------------------------------- build and load
    def _build(self, network: _Network, config: _Config) -> bytes | None:
        device = self.cuda.current_device()
        shapes: dict[str, list[int]] = {}
        for t in network.io:
            if t.is_input and any(d < 0 for d in t.shape):
                profiled = [p.shapes[t.name] for p in config.profiles if t.name in p.shapes]
                if not profiled:
                    return None  # "Network has dynamic or shape inputs, but no profile"
                lo, opt, hi = profiled[0]
                if len(lo) != len(t.shape) or lo != hi:
                    return None  # this fake supports fixed profiles only, like our builds
                shapes[t.name] = list(opt)
        record = {
            "cc": list(self.cuda.device_info(device).compute_capability),
            "io": [[t.name, list(t.shape), t.dtype.name, t.is_input] for t in network.io],
            "profile": shapes,
            "fp16": any(getattr(f, "name", "") == "FP16" for f in config.flags),
            "onnx": base64.b64encode(network.onnx).decode("ascii"),
        }
        self.builds.append({"device": device, **record})
        return b"FAKETRT\n" + json.dumps(record).encode("utf-8")

    def _deserialize(self, data: bytes) -> FakeEngine | None:
        if not data.startswith(b"FAKETRT\n"):
            return None
        record = json.loads(data[len(b"FAKETRT\n") :])
        device = self.cuda.current_device()
        if tuple(record["cc"]) != self.cuda.device_info(device).compute_capability:
            return None  # built for another GPU model
        return FakeEngine(self, record, device)


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, record: dict[str, Any], device: int) -> None:
        self.trt = trt
        self.device = device
        self.io = [_IoTensor(n, tuple(s), DataType[d], i) for n, s, d, i in record["io"]]
        self.by_name = {t.name: t for t in self.io}
        self.profile = {k: tuple(v) for k, v in record["profile"].items()}
        self.onnx = base64.b64decode(record["onnx"])
        self._session: Any = None

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def get_tensor_name(self, index: int) -> str:
        return self.io[index].name

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        t = self.by_name.get(name)
        if t is None:
            return TensorIOMode.NONE
        return TensorIOMode.INPUT if t.is_input else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.by_name[name].shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.by_name[name].dtype

    def create_execution_context(self) -> FakeContext | None:
        if self.trt.cuda.current_device() != self.device:
            return None
        return FakeContext(self)

    def run(self, feeds: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        import onnxruntime as ort

        if self._session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(
                self.onnx, sess_options=options, providers=["CPUExecutionProvider"]
            )
        names = [t.name for t in self.io if not t.is_input]
        return dict(zip(names, self._session.run(names, feeds), strict=True))


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self._out_shapes: dict[str, tuple[int, ...]] | None = None

    def set_input_shape(self, name: str, shape: Any) -> bool:
        t = self.engine.by_name.get(name)
        shape = tuple(int(d) for d in shape)
        if t is None or not t.is_input or len(shape) != len(t.shape):
            return False
        if any(e >= 0 and e != s for e, s in zip(t.shape, shape, strict=True)):
            return False
        if name in self.engine.profile and shape != self.engine.profile[name]:
            return False  # outside the optimization profile
        self.shapes[name] = shape
        self._out_shapes = None
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        t = self.engine.by_name[name]
        if t.is_input:
            return self.shapes.get(name, t.shape)
        if any(i.is_input and i.name not in self.shapes for i in self.engine.io):
            return t.shape  # still -1 where dynamic
        if self._out_shapes is None:
            feeds = {
                i.name: np.zeros(self.shapes[i.name], np.dtype(i.dtype.value))
                for i in self.engine.io
                if i.is_input
            }
            self._out_shapes = {k: v.shape for k, v in self.engine.run(feeds).items()}
        return self._out_shapes[name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        alloc = self.engine.trt.cuda.memory.get(int(ptr))
        if name not in self.engine.by_name or alloc is None or int(ptr) % 256:
            return False
        if alloc.device != self.engine.device:
            return False
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        cuda = self.engine.trt.cuda
        if cuda.current_device() != self.engine.device:
            return False
        if cuda.streams.get(stream_handle) != self.engine.device:
            return False
        io = self.engine.io
        if any(t.is_input and t.name not in self.shapes for t in io):
            return False
        if any(t.name not in self.addresses for t in io):
            return False
        feeds = {}
        for t in io:
            if t.is_input:
                dtype = np.dtype(t.dtype.value)
                shape = self.shapes[t.name]
                nbytes = int(np.prod(shape)) * dtype.itemsize
                raw = bytes(cuda._region(self.addresses[t.name], nbytes))
                feeds[t.name] = np.frombuffer(raw, dtype).reshape(shape)
        for name, value in self.engine.run(feeds).items():
            value = np.ascontiguousarray(value)
            cuda._region(self.addresses[name], value.nbytes)[:] = value.tobytes()
        return True
