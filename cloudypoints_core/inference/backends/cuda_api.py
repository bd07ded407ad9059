"""The CUDA calls the TensorRT backend makes, behind one narrow Protocol, and GPU discovery.

TensorRT needs device memory, a stream and the right current device; it does not need PyTorch.
:class:`CudaApi` lists exactly what the backend uses, :class:`CudaRuntimeApi` implements it with
NVIDIA's ``cuda-bindings`` (``cuda.bindings.runtime``; the older ``cuda-python`` layout
``cuda.cudart`` is accepted too), and tests substitute a fake that behaves as the CUDA runtime
documents (per-thread current device, allocations that belong to one device).

GPU discovery for ``auto`` and ``cloudypoints doctor`` (:func:`discover_gpus`) asks, in order, the
CUDA runtime (cuda-bindings), NVML through ctypes (the driver's ``libnvidia-ml.so.1``, present
wherever the NVIDIA driver is, except on Jetson), then a CUDA build of torch, so that a CPU-only
torch no longer hides the GPUs. Nothing here imports a heavy library at module import.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from cloudypoints_core.errors import BackendError, DependencyError
from cloudypoints_core.inference.backends.engine_cache import GpuInfo

__all__ = [
    "CUDA_BINDINGS_HINT",
    "CudaApi",
    "CudaRuntimeApi",
    "GpuDiscovery",
    "discover_gpus",
    "load_cuda_api",
]

log = logging.getLogger(__name__)

CUDA_BINDINGS_HINT = (
    "pip install 'cuda-bindings==12.*' for a CUDA 12 driver or 'cuda-bindings==13.*' for CUDA 13 "
    "(NVIDIA's CUDA Python bindings; a CUDA build of torch is not needed)"
)


class CudaApi(Protocol):
    """The CUDA runtime calls the TensorRT backend makes; pointers and streams are ints."""

    def device_count(self) -> int: ...

    def set_device(self, index: int) -> None:
        """Make ``index`` current for the calling thread (CUDA's current device is per thread)."""
        ...

    def current_device(self) -> int: ...

    def device_info(self, index: int) -> GpuInfo: ...

    def malloc(self, nbytes: int) -> int:
        """Device memory on the current device (256-byte aligned, as cudaMalloc guarantees)."""
        ...

    def free(self, ptr: int) -> None: ...

    def stream_create(self) -> int: ...

    def stream_destroy(self, stream: int) -> None: ...

    def stream_synchronize(self, stream: int) -> None: ...

    def copy_to_device(self, dst: int, src: npt.NDArray[Any], stream: int) -> None:
        """Asynchronous host -> device copy of the C-contiguous ``src`` into ``dst``."""
        ...

    def copy_to_host(self, dst: npt.NDArray[Any], src: int, stream: int) -> None:
        """Asynchronous device -> host copy into the C-contiguous ``dst``."""
        ...


def _import_cudart() -> Any:
    """``cuda.bindings.runtime`` (cuda-bindings >= 12.6) or ``cuda.cudart`` (older layout)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise DependencyError(
        "the TensorRT backend needs NVIDIA's CUDA Python bindings for device memory and streams "
        f"(module 'cuda.bindings.runtime' cannot be imported): {CUDA_BINDINGS_HINT}"
    )


class CudaRuntimeApi:
    """:class:`CudaApi` over the CUDA runtime through ``cuda-bindings``.

    Each call returns ``(error, value...)``; a non-success error becomes a BackendError naming the
    call and CUDA's own description.
    """

    def __init__(self, cudart: Any | None = None) -> None:
        self._rt = cudart if cudart is not None else _import_cudart()
        self._success = self._rt.cudaError_t.cudaSuccess

    def _check(self, call: str, result: Any) -> Any:
        if isinstance(result, tuple):
            err, values = result[0], result[1:]
        else:
            err, values = result, ()
        if err != self._success:
            described = self._rt.cudaGetErrorString(err)
            text = described[1] if isinstance(described, tuple) else described
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            hint = ""
            if "InsufficientDriver" in repr(err):
                # No driver at all, or (on a GPU machine) bindings for a newer CUDA major.
                hint = (
                    "; no NVIDIA driver, or one older than these bindings' CUDA: "
                    f"{CUDA_BINDINGS_HINT}"
                )
            raise BackendError(f"CUDA {call} failed: {err!r} ({text}){hint}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        return int(self._check("cudaGetDeviceCount", self._rt.cudaGetDeviceCount()))

    def set_device(self, index: int) -> None:
        self._check("cudaSetDevice", self._rt.cudaSetDevice(int(index)))

    def current_device(self) -> int:
        return int(self._check("cudaGetDevice", self._rt.cudaGetDevice()))

    def device_info(self, index: int) -> GpuInfo:
        props = self._check("cudaGetDeviceProperties", self._rt.cudaGetDeviceProperties(index))
        name = props.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return GpuInfo(name=str(name), compute_capability=(int(props.major), int(props.minor)))

    def malloc(self, nbytes: int) -> int:
        # cudaMalloc(0) returns a null pointer, which TensorRT rejects as a tensor address.
        return int(self._check("cudaMalloc", self._rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self._rt.cudaFree(ptr))

    def stream_create(self) -> int:
        return int(self._check("cudaStreamCreate", self._rt.cudaStreamCreate()))

    def stream_destroy(self, stream: int) -> None:
        self._check("cudaStreamDestroy", self._rt.cudaStreamDestroy(stream))

    def stream_synchronize(self, stream: int) -> None:
        self._check("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))

    def copy_to_device(self, dst: int, src: npt.NDArray[Any], stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            "cudaMemcpyAsync (host to device)",
            self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream),
        )

    def copy_to_host(self, dst: npt.NDArray[Any], src: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            "cudaMemcpyAsync (device to host)",
            self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream),
        )


def load_cuda_api() -> CudaApi:
    """The real CUDA runtime API (DependencyError naming the package when it is missing)."""
    return CudaRuntimeApi()


# ------------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class GpuDiscovery:
    """CUDA GPUs this process can use: how many, which, and which library said so."""

    count: int
    via: str
    gpus: tuple[GpuInfo, ...] = ()
    #: Why each library consulted before ``via`` could not answer.
    notes: tuple[str, ...] = field(default_factory=tuple)


def _count_with_cuda_runtime() -> tuple[int, tuple[GpuInfo, ...]] | str:
    if importlib.util.find_spec("cuda") is None:
        return "cuda-bindings not installed"
    try:
        api = CudaRuntimeApi()
        count = api.device_count()
        return count, tuple(api.device_info(i) for i in range(count))
    except (DependencyError, BackendError) as exc:  # no driver: cudaErrorInsufficientDriver
        return str(exc)


def _count_with_torch() -> tuple[int, tuple[GpuInfo, ...]] | str:
    if importlib.util.find_spec("torch") is None:
        return "torch not installed"
    import torch

    if torch.version.cuda is None:
        # A CPU-only build reports 0 GPUs whatever the machine has: it cannot answer.
        return f"torch {torch.__version__} is a CPU-only build"
    try:
        if not torch.cuda.is_available():
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
        count = int(torch.cuda.device_count())
        infos = []
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            infos.append(GpuInfo(str(props.name), (int(props.major), int(props.minor))))
        return count, tuple(infos)
    except RuntimeError as exc:  # a broken driver install reports through exceptions
        return f"torch CUDA error: {exc}"


#: Where the NVIDIA driver's management library lives (Linux; Windows finds nvml.dll by name).
NVML_LIBRARIES = ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll")


def _load_library(name: str) -> Any:
    """``ctypes.CDLL(name)``; a seam the tests replace with a fake driver library."""
    return ctypes.CDLL(name)


def _visible_subset(count: int, environ: Mapping[str, str]) -> int:
    """How many of ``count`` GPUs CUDA_VISIBLE_DEVICES leaves visible (NVML ignores it)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return count
    n = 0
    for item in visible.split(","):
        item = item.strip()
        # CUDA stops at the first invalid entry (e.g. "-1" hides every GPU).
        if not item or (item.isdigit() and int(item) >= count) or item.startswith("-"):
            break
        n += 1
    return min(n, count)


def _count_with_nvml(environ: Mapping[str, str]) -> tuple[int, tuple[GpuInfo, ...]] | str:
    lib = None
    errors = []
    for name in NVML_LIBRARIES:
        try:
            lib = _load_library(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    if lib is None:
        return "NVML (libnvidia-ml.so.1, installed with the NVIDIA driver) not found"
    try:
        if lib.nvmlInit_v2() != 0:
            return "NVML present but nvmlInit failed (driver not loaded?)"
        try:
            raw = ctypes.c_uint(0)
            if lib.nvmlDeviceGetCount_v2(ctypes.byref(raw)) != 0:
                return "NVML nvmlDeviceGetCount failed"
            total = int(raw.value)
            infos = []
            for i in range(total):
                handle = ctypes.c_void_p()
                if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(handle)):
                    continue
                buf = ctypes.create_string_buffer(96)
                major, minor = ctypes.c_int(0), ctypes.c_int(0)
                name = "?"
                if lib.nvmlDeviceGetName(handle, buf, ctypes.c_uint(96)) == 0:
                    name = buf.value.decode(errors="replace")
                lib.nvmlDeviceGetCudaComputeCapability(
                    handle, ctypes.byref(major), ctypes.byref(minor)
                )
                infos.append(GpuInfo(name, (int(major.value), int(minor.value))))
        finally:
            lib.nvmlShutdown()
    except (AttributeError, OSError) as exc:  # an old driver without the _v2 entry points
        return f"NVML call failed: {exc}"
    count = _visible_subset(total, environ)
    if count < total:
        # NVML numbers every GPU; CUDA numbers only the visible ones, in the listed order, which
        # NVML cannot map without UUIDs: report the count only.
        return count, ()
    return count, tuple(infos)


def discover_gpus(environ: Mapping[str, str] | None = None) -> GpuDiscovery:
    """CUDA GPUs visible to this process, asking the libraries in the module docstring's order."""
    env = os.environ if environ is None else environ
    notes: list[str] = []
    sources: list[tuple[str, Callable[[], tuple[int, tuple[GpuInfo, ...]] | str]]] = [
        ("cuda-bindings (CUDA runtime)", _count_with_cuda_runtime),
        # NVML before torch: it costs nothing, while importing torch takes seconds.
        ("NVML (NVIDIA driver)", lambda: _count_with_nvml(env)),
        # Last: Jetson has no NVML, and its torch wheels are CUDA builds.
        ("torch", _count_with_torch),
    ]
    for via, probe in sources:
        try:
            answer = probe()
        except Exception as exc:  # noqa: BLE001 - discovery must never take the process down
            answer = f"{type(exc).__name__}: {exc}"
        if isinstance(answer, str):
            notes.append(f"{via}: {answer}")
            continue
        count, infos = answer
        return GpuDiscovery(count=count, via=via, gpus=infos, notes=tuple(notes))
    return GpuDiscovery(count=0, via="none", notes=tuple(notes))
