"""Inference backends behind one Protocol, a name-to-class registry and an ``auto`` selection.

Every backend takes a normalised NCHW float32 batch of shape (1, 3, input_height, input_width)
and returns the raw primary network output (the spec's ``output_name``) as an (input_height,
input_width) float32 array from ``infer``, or every output of a multi-head network by its ONNX
name from ``infer_all``; the facade does everything before and after. Backend modules import
their heavy library (onnxruntime, torch, tensorrt) only when the backend is created, so importing
this package is cheap.

``auto`` picks, for the requested device:
- ``cuda``: TensorRT when ``tensorrt`` is importable and a CUDA GPU is present, else ONNX Runtime
  when its CUDA provider is there, else PyTorch with CUDA, and the CPU backends as a last resort;
- ``cpu``: ONNX Runtime, else PyTorch.
A backend needs the package file it runs (TensorRT and ONNX Runtime the ONNX file, PyTorch the
state dict). A CUDA device that is absent makes ``auto`` fall back to the CPU (with a warning);
an explicitly named backend raises :class:`BackendError` instead. When a candidate fails to
start for a reason of the machine (:class:`BackendError`, :class:`DependencyError`) ``auto``
logs it and tries the next; a broken package (:class:`ModelError`) is raised, never hidden.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt

from cloudypoints_core.errors import BackendError, ConfigError, DependencyError, ModelError
from cloudypoints_core.inference.package import ModelPackage

if TYPE_CHECKING:
    from cloudypoints_core.inference.backends.cuda_api import GpuDiscovery

__all__ = [
    "AUTO",
    "Backend",
    "BackendClass",
    "Device",
    "EnvironmentProbe",
    "Selection",
    "backend_candidates",
    "backend_option_names",
    "create_backend",
    "get_backend_class",
    "list_backends",
    "parse_device",
    "register_backend",
    "select_backend",
]

log = logging.getLogger(__name__)

AUTO = "auto"


@runtime_checkable
class Backend(Protocol):
    """A loaded network that turns a normalised batch into its raw output."""

    #: Registry name of the backend ("onnxruntime", "torch", "tensorrt", ...).
    name: str
    #: The device it runs on, normalised ("cpu", "cuda:0").
    device: str

    #: Every output of the network, by its ONNX output name; the spec's primary output is one.
    output_names: tuple[str, ...]

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Primary output (H, W) float32 for a C-contiguous (1, 3, H, W) float32 batch."""
        ...

    def infer_all(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        """Every output, keyed by :attr:`output_names`, for a (1, 3, H, W) float32 batch.

        Arrays keep the shape the network gives them (e.g. (1, 1, H, W)) and its dtype (floating
        outputs of a backend running in FP16 come back as float32). They are fresh arrays the
        caller owns: the next call never overwrites them.
        """
        ...

    def close(self) -> None:
        """Release sessions, engines and device memory; the backend is unusable afterwards."""
        ...


class BackendClass(Protocol):
    """What the registry stores: a class building a :class:`Backend` from a package."""

    #: Option names (keyword arguments) the backend accepts, with their defaults.
    OPTIONS: ClassVar[Mapping[str, Any]]

    def __call__(self, package: ModelPackage, device: str, **options: Any) -> Backend: ...


# Name -> "module:Class"; classes are imported on first use so that asking for ONNX Runtime never
# imports torch (and vice versa).
_REGISTRY: dict[str, str | type] = {
    "tensorrt": "cloudypoints_core.inference.backends.tensorrt_backend:TensorRTBackend",
    "onnxruntime": "cloudypoints_core.inference.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "torch": "cloudypoints_core.inference.backends.torch_backend:TorchBackend",
}

#: Backend modules: their names, for option routing without importing them.
_OPTION_NAMES: dict[str, frozenset[str]] = {
    "tensorrt": frozenset({"precision", "workspace_mb", "cache_dir", "rebuild"}),
    "onnxruntime": frozenset(
        {"num_threads", "graph_optimization", "io_binding", "warmup", "allow_spinning"}
    ),
    "torch": frozenset(
        {"num_threads", "half", "compile", "cuda_graphs", "model_factory", "warmup"}
    ),
}


def register_backend(
    name: str, target: str | type, option_names: frozenset[str] = frozenset()
) -> None:
    """Add (or replace) a backend: ``target`` is a class or a ``"module:Class"`` string."""
    if not name or name == AUTO:
        raise ConfigError(f"backend name must be non-empty and not {AUTO!r}, got {name!r}")
    _REGISTRY[name] = target
    _OPTION_NAMES[name] = frozenset(option_names)


def list_backends() -> list[str]:
    """Registered backend names, in ``auto`` preference order."""
    return list(_REGISTRY)


def backend_option_names() -> dict[str, frozenset[str]]:
    """Option names each registered backend accepts (without importing any backend)."""
    return dict(_OPTION_NAMES)


def get_backend_class(name: str) -> BackendClass:
    """The class registered under ``name``; BackendError naming the known ones otherwise."""
    target = _REGISTRY.get(name)
    if target is None:
        raise BackendError(
            f"unknown inference backend {name!r}; known backends: {[AUTO, *_REGISTRY]}"
        )
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        target = getattr(module, attr)
        _REGISTRY[name] = target
    # A class cannot match BackendClass statically (mypy never matches a ClassVar protocol member
    # or a constructor with keyword-only options against `**options`), so it is asserted here.
    return cast(BackendClass, target)


# ----------------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class Device:
    """A parsed device string: ``kind`` is "cpu" or "cuda"; ``index`` is the CUDA ordinal."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def parse_device(device: str) -> Device:
    """Parse "cpu", "cuda", "cuda:N" (and "gpu" as an alias of "cuda"); BackendError otherwise."""
    text = str(device).strip().lower()
    if text == "cpu":
        return Device("cpu")
    kind, _, index = text.partition(":")
    if kind in ("cuda", "gpu"):
        if not index:
            return Device("cuda", 0)
        if index.isdigit():
            return Device("cuda", int(index))
    raise BackendError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")


class EnvironmentProbe:
    """What ``auto`` needs to know about this machine; tests substitute a fake one."""

    def has_module(self, name: str) -> bool:
        """Whether ``name`` is importable (without importing it)."""
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    def cuda_device_count(self) -> int:
        """Number of CUDA GPUs visible (see :meth:`gpus` for who counted them)."""
        return self.gpus().count

    def gpus(self) -> GpuDiscovery:
        """The GPUs this process sees and which library saw them, without needing torch.

        The CUDA runtime (cuda-bindings), NVML (the driver's library) and a CUDA build of torch
        are asked in turn (see ``cuda_api.discover_gpus``); a CPU-only torch no longer hides the
        GPUs. When none of them can answer, an ONNX Runtime with its CUDA provider is taken to
        mean one GPU (it cannot count them).
        """
        from cloudypoints_core.inference.backends.cuda_api import GpuDiscovery, discover_gpus

        found = discover_gpus()
        if found.via == "none" and "CUDAExecutionProvider" in self.onnxruntime_providers():
            return GpuDiscovery(
                count=1,
                via="onnxruntime CUDAExecutionProvider (assumed 1 GPU, it cannot count)",
                notes=found.notes,
            )
        return found

    def onnxruntime_providers(self) -> list[str]:
        if not self.has_module("onnxruntime"):
            return []
        import onnxruntime

        return list(onnxruntime.get_available_providers())


@dataclass(frozen=True)
class Selection:
    """The outcome of backend selection: which backend, on which device, and why."""

    backend: str
    device: str
    reason: str


def _cuda_present(probe: EnvironmentProbe, dev: Device) -> bool:
    return probe.cuda_device_count() > dev.index


def backend_candidates(
    package: ModelPackage,
    device: str = "cpu",
    probe: EnvironmentProbe | None = None,
) -> tuple[list[Selection], list[str]]:
    """(usable backends in ``auto`` order, why each other one was skipped).

    On a CUDA device the GPU backends come first and the CPU ones after them, as a last resort.
    ``device`` may also be "auto": the first CUDA GPU when there is one, else the CPU.
    """
    probe = probe or EnvironmentProbe()
    if str(device).strip().lower() == AUTO:
        dev = Device("cuda", 0) if probe.cuda_device_count() > 0 else Device("cpu")
        why_device = f"device auto -> {dev}"
    else:
        dev = parse_device(device)
        why_device = f"device {dev} requested"
    if dev.kind == "cuda" and not _cuda_present(probe, dev):
        log.warning(
            "device %s was requested but no such CUDA GPU is present; auto falls back to the CPU",
            dev,
        )
        why_device = f"device {dev} requested but absent, falling back to cpu"
        dev = Device("cpu")
    has_onnx = package.has_onnx()
    has_weights = package.has_weights()
    found: list[Selection] = []
    skipped: list[str] = []

    def consider(name: str, on: Device, missing: str | None, why: str) -> None:
        if missing:
            skipped.append(f"{name} on {on}: {missing}")
        else:
            found.append(Selection(name, str(on), f"{why_device}; {why}"))

    no_onnx = "the package has no ONNX file"
    if dev.kind == "cuda":
        consider(
            "tensorrt",
            dev,
            "module 'tensorrt' is not installed"
            if not probe.has_module("tensorrt")
            else (no_onnx if not has_onnx else None),
            "TensorRT and a CUDA GPU present",
        )
        consider(
            "onnxruntime",
            dev,
            "no CUDAExecutionProvider (install onnxruntime-gpu)"
            if "CUDAExecutionProvider" not in probe.onnxruntime_providers()
            else (no_onnx if not has_onnx else None),
            "ONNX Runtime with CUDA",
        )
        consider(
            "torch",
            dev,
            "not installed"
            if not probe.has_module("torch")
            else (None if has_weights else "the package has no state dict"),
            "PyTorch with CUDA",
        )
    cpu = Device("cpu")
    consider(
        "onnxruntime",
        cpu,
        "not installed"
        if not probe.has_module("onnxruntime")
        else (no_onnx if not has_onnx else None),
        "ONNX Runtime on the CPU"
        + (" (last resort after the GPU backends)" if dev != cpu else ""),
    )
    consider(
        "torch",
        cpu,
        "not installed"
        if not probe.has_module("torch")
        else (None if has_weights else "the package has no state dict"),
        "PyTorch on the CPU" + (" (last resort after the GPU backends)" if dev != cpu else ""),
    )
    return found, skipped


def select_backend(
    package: ModelPackage,
    device: str = "cpu",
    probe: EnvironmentProbe | None = None,
) -> Selection:
    """The backend ``auto`` tries first (see the module docstring); BackendError if none fits."""
    found, skipped = backend_candidates(package, device, probe)
    if not found:
        raise BackendError(f"no backend can run model {package.root}: {'; '.join(skipped)}")
    first = found[0]
    if skipped:
        first = Selection(
            first.backend, first.device, f"{first.reason} (skipped: {'; '.join(skipped)})"
        )
    return first


def _split_options(name: str, options: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """The options ``name`` accepts; others raise (strict) or are dropped with a debug log."""
    accepted = _OPTION_NAMES.get(name, frozenset())
    everything = frozenset().union(*_OPTION_NAMES.values())
    unknown = sorted(set(options) - everything)
    if unknown:
        raise ConfigError(
            f"unknown backend options {unknown}; known options per backend: "
            + ", ".join(f"{k}: {sorted(v)}" for k, v in _OPTION_NAMES.items())
        )
    foreign = sorted(set(options) - accepted)
    if foreign and strict:
        raise ConfigError(
            f"backend {name!r} does not take the options {foreign}; it takes {sorted(accepted)}"
        )
    if foreign:
        log.debug("backend %s ignores options %s (meant for other backends)", name, foreign)
    return {k: v for k, v in options.items() if k in accepted}


def create_backend(
    name: str,
    package: ModelPackage,
    device: str = "cpu",
    options: Mapping[str, Any] | None = None,
    *,
    probe: EnvironmentProbe | None = None,
) -> Backend:
    """Create backend ``name`` (or ``"auto"``) for ``package`` on ``device``.

    ``options`` are backend keyword arguments; with ``auto`` the ones meant for other backends are
    ignored (so one configuration serves every machine), with a named backend they are an error.
    """
    options = dict(options or {})
    if name == AUTO:
        found, skipped = backend_candidates(package, device, probe)
        if not found:
            raise BackendError(f"no backend can run model {package.root}: {'; '.join(skipped)}")
        failures: list[str] = []
        for selection in found:
            cls = get_backend_class(selection.backend)
            try:
                backend = cls(
                    package, selection.device, **_split_options(selection.backend, options, False)
                )
            except (BackendError, DependencyError) as exc:
                # The machine, not the model, is at fault: the next candidate may work. A
                # ModelError (broken package) propagates: hiding it behind another backend
                # would leave a corrupt file unnoticed.
                log.warning(
                    "auto: %s on %s failed (%s); trying the next backend",
                    selection.backend,
                    selection.device,
                    exc,
                )
                failures.append(f"{selection.backend} on {selection.device}: {exc}")
                continue
            log.info(
                "inference backend: %s on %s (%s%s)",
                selection.backend,
                selection.device,
                selection.reason,
                f"; skipped: {'; '.join(skipped + failures)}" if skipped or failures else "",
            )
            return backend
        raise BackendError(f"every backend failed for {package.root}: {'; '.join(failures)}")
    cls = get_backend_class(name)
    dev = parse_device(device)
    backend = cls(package, str(dev), **_split_options(name, options, True))
    log.info("inference backend: %s on %s (requested by name)", name, backend.device)
    return backend


def require_cuda_device(backend: str, dev: Device, probe: EnvironmentProbe | None = None) -> None:
    """BackendError when ``dev`` is a CUDA device this machine does not have."""
    if dev.kind != "cuda":
        return
    count = (probe or EnvironmentProbe()).cuda_device_count()
    if count <= dev.index:
        raise BackendError(
            f"backend {backend!r} was asked for device {dev}, but this machine has "
            f"{count} CUDA GPU(s); use device 'cpu' or backend 'auto'"
        )


def check_single_input(names: list[str], wanted: str, source: str) -> None:
    """ModelError unless the graph's only input is the spec's: CloudyPoints feeds one image."""
    if wanted not in names:
        raise ModelError(f"{source}: the spec names input {wanted!r}, the graph has {names}")
    extra = [n for n in names if n != wanted]
    if extra:
        raise ModelError(
            f"{source}: the graph has inputs {extra} besides the image input {wanted!r}; "
            "CloudyPoints feeds only the image (export the network with the others fixed)"
        )


def validate_batch(batch: npt.NDArray[np.float32], shape: tuple[int, int, int, int]) -> None:
    """BackendError when a batch does not fit the backend's input (a bug in the caller)."""
    if batch.shape != shape or batch.dtype != np.float32:
        raise BackendError(
            f"backend input must be float32 of shape {shape}, got {batch.dtype} {batch.shape}"
        )


#: A factory the torch backend can use instead of the models registry (tests, custom networks).
ModelFactory = Callable[..., Any]
