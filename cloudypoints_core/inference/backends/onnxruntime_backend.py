"""ONNX Runtime backend: the package's ONNX file on the CPU or, with onnxruntime-gpu, CUDA."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cloudypoints_core._optional import require
from cloudypoints_core.errors import BackendError, ConfigError, ModelError
from cloudypoints_core.inference.backends import (
    check_single_input,
    parse_device,
    require_cuda_device,
    validate_batch,
)
from cloudypoints_core.inference.package import ModelPackage
from cloudypoints_core.inference.spec import ModelSpec

log = logging.getLogger(__name__)

_OPT_LEVELS = ("disable", "basic", "extended", "all")


def check_io_shapes(
    spec: ModelSpec,
    inputs: Sequence[tuple[str, Sequence[Any]]],
    outputs: Sequence[tuple[str, Sequence[Any]]],
    source: str,
) -> None:
    """ModelError when the ONNX graph's input/output names or static shapes contradict the spec.

    Symbolic (dynamic) dimensions are accepted; fixed ones must be 1 x 3 x H x W in, H and W from
    the spec. The output may be (1, 1, H, W), (1, H, W) or (H, W): networks exported elsewhere
    (MiDaS, Depth Anything) often drop the channel axis.
    """
    names_in = {name: shape for name, shape in inputs}
    names_out = {name: shape for name, shape in outputs}
    check_single_input(list(names_in), spec.input_name, source)
    if spec.output_name not in names_out:
        raise ModelError(
            f"{source}: the spec names output {spec.output_name!r}, the ONNX graph has "
            f"{sorted(names_out)}"
        )
    h, w = spec.input_height, spec.input_width
    shape_in = list(names_in[spec.input_name])
    if not _fits(shape_in, [1, 3, h, w]):
        raise ModelError(
            f"{source}: ONNX input shape {shape_in} does not match the spec's {[1, 3, h, w]} "
            "(1 x channels x input_height x input_width)"
        )
    shape_out = list(names_out[spec.output_name])
    if not (2 <= len(shape_out) <= 4 and _fits(shape_out, [1] * (len(shape_out) - 2) + [h, w])):
        raise ModelError(
            f"{source}: ONNX output shape {shape_out} does not match the spec's "
            f"{[1, 1, h, w]} (or {[1, h, w]} or {[h, w]})"
        )


def _fits(shape: Sequence[Any], want: Sequence[int]) -> bool:
    """Same rank, and every fixed (integer) dimension equal to the wanted one."""
    return len(shape) == len(want) and all(
        not isinstance(got, int) or got == expected
        for got, expected in zip(shape, want, strict=True)
    )


class OnnxRuntimeBackend:
    """Runs the package's ONNX file with ONNX Runtime.

    Options: ``num_threads`` (intra-op threads; None lets ONNX Runtime use every core),
    ``graph_optimization`` ("all" default, "extended", "basic", "disable"), ``io_binding``
    (bind the input and a preallocated output buffer, avoiding a copy per call), ``warmup``
    (run once at load to validate the output shape and pay the first-call cost early),
    ``allow_spinning`` (intra-op threads busy-wait for work between and after runs: fastest when
    inference has the cores to itself; False when other threads share them, as in the ROS node,
    where the spinning steals the cores its DDS and publishing threads need).
    """

    name = "onnxruntime"
    OPTIONS: ClassVar[Mapping[str, Any]] = {
        "num_threads": None,
        "graph_optimization": "all",
        "io_binding": False,
        "warmup": True,
        "allow_spinning": True,
    }

    def __init__(
        self,
        package: ModelPackage,
        device: str = "cpu",
        *,
        num_threads: int | None = None,
        graph_optimization: str = "all",
        io_binding: bool = False,
        warmup: bool = True,
        allow_spinning: bool = True,
    ) -> None:
        ort = require("onnxruntime", "the onnxruntime inference backend")
        dev = parse_device(device)
        spec = package.spec
        if not package.has_onnx():
            raise ModelError(
                f"model package {package.root} has no ONNX file ({spec.onnx_file!r}); the "
                "onnxruntime backend needs one (use the torch backend or export the model)"
            )
        if graph_optimization not in _OPT_LEVELS:
            raise ConfigError(
                f"graph_optimization must be one of {_OPT_LEVELS}, got {graph_optimization!r}"
            )
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 0):
            raise ConfigError(f"num_threads must be a non-negative integer, got {num_threads!r}")
        if not isinstance(allow_spinning, bool):
            raise ConfigError(f"allow_spinning must be true or false, got {allow_spinning!r}")
        providers: list[Any] = ["CPUExecutionProvider"]
        if dev.kind == "cuda":
            require_cuda_device(self.name, dev)
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    "onnxruntime on cuda needs the CUDAExecutionProvider (pip install "
                    f"onnxruntime-gpu); available providers: {ort.get_available_providers()}"
                )
            providers = [
                ("CUDAExecutionProvider", {"device_id": dev.index}),
                "CPUExecutionProvider",
            ]
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        if num_threads:
            options.intra_op_num_threads = num_threads
        if not allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # One image at a time through a sequential graph: inter-op threads would only compete.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        onnx_path = package.onnx_path
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # ORT raises pybind types (InvalidProtobuf, Fail, ...) only
            raise ModelError(
                f"ONNX Runtime cannot load {onnx_path}: the file is missing, truncated or not an "
                f"ONNX model ({type(exc).__name__}: {exc})"
            ) from exc
        check_io_shapes(
            spec,
            [(i.name, i.shape) for i in self._session.get_inputs()],
            [(o.name, o.shape) for o in self._session.get_outputs()],
            str(onnx_path),
        )
        self.device = str(dev)
        self.spec = spec
        self._shape = (1, 3, spec.input_height, spec.input_width)
        self._input_name = spec.input_name
        self._output_name = spec.output_name
        self.output_names = tuple(str(o.name) for o in self._session.get_outputs())
        rank = {o.name: len(o.shape) for o in self._session.get_outputs()}[self._output_name]
        out_shape = (1,) * (rank - 2) + (spec.input_height, spec.input_width)
        self._output = np.empty(out_shape, dtype=np.float32)
        self._binding = self._session.io_binding() if io_binding else None
        if self._binding is not None and dev.kind == "cpu":
            self._binding.bind_output(
                self._output_name,
                device_type="cpu",
                device_id=0,
                element_type=np.float32,
                shape=self._output.shape,
                buffer_ptr=self._output.ctypes.data,
            )
        elif self._binding is not None:
            self._binding.bind_output(self._output_name, device_type="cuda", device_id=dev.index)
        active = self._session.get_providers()
        if dev.kind == "cuda" and "CUDAExecutionProvider" not in active:
            raise BackendError(f"ONNX Runtime did not enable CUDA for {onnx_path}: {active}")
        log.debug("onnxruntime session for %s: providers %s", onnx_path, active)
        if warmup:
            self.infer(np.zeros(self._shape, dtype=np.float32))

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        validate_batch(batch, self._shape)
        if self._binding is None:
            out = self._session.run([self._output_name], {self._input_name: batch})[0]
        else:
            self._binding.bind_cpu_input(self._input_name, batch)
            self._session.run_with_iobinding(self._binding)
            if self.device == "cpu":
                # The bound buffer is rewritten by the next call: the caller gets its own copy.
                out = self._output.copy()
            else:
                out = self._binding.copy_outputs_to_cpu()[0]
        return self._primary(np.asarray(out))

    def infer_all(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        validate_batch(batch, self._shape)
        # session.run allocates every output afresh, so the caller owns what it gets; the
        # io_binding buffer (primary output only) is not involved.
        outs = self._session.run(None, {self._input_name: batch})
        result = {name: np.asarray(out) for name, out in zip(self.output_names, outs, strict=True)}
        self._primary(result[self._output_name])
        return result

    def _primary(self, out: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """The primary output as (H, W) float32; ModelError when its size is not H x W."""
        if out.shape[-2:] != self._shape[2:] or out.size != self._shape[2] * self._shape[3]:
            raise ModelError(
                f"the ONNX network returned shape {out.shape}, expected "
                f"(1, 1, {self._shape[2]}, {self._shape[3]})"
            )
        return out.reshape(self._shape[2], self._shape[3]).astype(np.float32, copy=False)

    def close(self) -> None:
        self._binding = None
        self._session = None
